"""The SQLite batch writer: queued writes share one transaction, each atomic on its own, and
the batch waits its turn at the same writer gate as every other write."""

import asyncio
from contextlib import asynccontextmanager

import pytest
from sqlalchemy import text

from storefront.db.engine import make_engine, make_sessionmaker
from storefront.db.sqlite_batches import SQLiteBatchWriter, sqlite_batch_writer
from storefront.db.transactions import write_transaction


@pytest.fixture(name="engine")
async def _engine(tmp_path):
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'batches.db'}")
    async with engine.begin() as connection:
        await connection.execute(text("CREATE TABLE notes (body TEXT UNIQUE NOT NULL)"))
    yield engine
    await engine.dispose()


@pytest.fixture(name="writer")
async def _writer(engine):
    writer = SQLiteBatchWriter(engine, busy_timeout_ms=5_000)
    writer.start()
    yield writer
    await writer.close()


def insert_note(body: str):
    def write(connection):
        connection.execute(text("INSERT INTO notes (body) VALUES (:body)"), {"body": body})
        return connection.execute(text("SELECT count(*) FROM notes")).scalar_one()

    return write


def insert_then_fail(body: str):
    def write(connection):
        connection.execute(text("INSERT INTO notes (body) VALUES (:body)"), {"body": body})
        raise ValueError(f"{body} failed after writing")

    return write


async def notes(writer) -> list[str]:
    rows = await writer.run(lambda c: c.execute(text("SELECT body FROM notes")).scalars().all())
    return sorted(rows)


async def test_writes_queued_together_share_one_transaction(writer):
    counts = await asyncio.gather(*(writer.run(insert_note(f"n{i}")) for i in range(20)))
    # Each write saw the ones before it in the same batch: counts run 1..20 in queue order.
    assert counts == list(range(1, 21))
    assert len(await notes(writer)) == 20


async def test_a_failing_write_changes_nothing_and_the_rest_of_its_batch_commits(writer):
    results = await asyncio.gather(
        writer.run(insert_note("first")),
        writer.run(insert_then_fail("broken")),
        writer.run(insert_note("broken")),  # the failed write's row is gone: no conflict
        writer.run(insert_note("first")),  # a constraint error is that write's alone
        writer.run(insert_note("last")),
        return_exceptions=True,
    )
    assert results[0] == 1
    assert isinstance(results[1], ValueError)
    assert results[2] == 2
    assert "UNIQUE" in str(results[3])
    assert results[4] == 3
    assert await notes(writer) == ["broken", "first", "last"]


async def test_a_batch_waits_for_a_write_transaction_that_holds_the_gate(engine, writer):
    async with make_sessionmaker(engine)() as session, write_transaction(session):
        await session.execute(text("INSERT INTO notes (body) VALUES ('held')"))
        queued = asyncio.ensure_future(writer.run(insert_note("queued")))
        await asyncio.sleep(0.2)
        assert not queued.done()
    assert await queued == 2


async def test_close_applies_what_is_queued_then_refuses(engine):
    writer = SQLiteBatchWriter(engine, busy_timeout_ms=5_000)
    writer.start()
    pending = [asyncio.ensure_future(writer.run(insert_note(f"n{i}"))) for i in range(5)]
    await asyncio.sleep(0)
    await writer.close()
    assert sorted(await asyncio.gather(*pending)) == [1, 2, 3, 4, 5]
    with pytest.raises(RuntimeError):
        await writer.run(insert_note("late"))


@pytest.mark.both_databases
async def test_the_app_has_a_batch_writer_only_on_a_sqlite_file(app):
    on_sqlite = app.config["DATABASE_URL"].startswith("sqlite")
    served = app.extensions["db_engine"]
    assert (sqlite_batch_writer(served) is not None) == on_sqlite
    async with make_sessionmaker(served)() as session:
        assert sqlite_batch_writer(session.bind) is sqlite_batch_writer(served)
    # An engine no serving app made (a script's, a test's) writes without one.
    other = make_engine(app.config["DATABASE_URL"])
    try:
        assert sqlite_batch_writer(other) is None
    finally:
        await other.dispose()


async def test_a_failing_gate_refuses_the_waiting_writes_and_the_writer_goes_on(
    writer, monkeypatch
):
    @asynccontextmanager
    async def broken_hold():
        raise OSError("no locks available")
        yield

    monkeypatch.setattr(writer._gate, "hold", broken_hold)
    results = await asyncio.gather(
        *(writer.run(insert_note(f"n{i}")) for i in range(3)), return_exceptions=True
    )
    assert all(isinstance(result, OSError) for result in results)
    monkeypatch.undo()
    assert await writer.run(insert_note("after")) == 1
