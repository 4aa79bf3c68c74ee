"""Write transactions: which database errors are transient, retries on lock conflicts, ShopBusy
(moved here from tests/services/test_checkout.py with run_write_with_retries), and the unit of
work: a write ends the request's read first and, however it fails, leaves what the request
loaded readable, the same on SQLite and PostgreSQL."""

import re
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import event, inspect, select, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncSession

from storefront.db.engine import get_session, sessionmaker_for
from storefront.db.errors import is_transient_database_error
from storefront.db.transactions import (
    WRITE_ATTEMPTS,
    NestedWrite,
    ShopBusy,
    end_read,
    run_write_with_retries,
    write_transaction,
)
from storefront.models import User


class _FakeOriginal(Exception):
    def __init__(self, message: str, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


@pytest.mark.parametrize(
    ("message", "sqlstate", "transient"),
    [
        ("database is locked", None, True),
        ("deadlock detected", "40P01", True),
        ("could not serialize access due to concurrent update", "40001", True),
        ("lock not available", "55P03", True),
        ("no such table: orders", None, False),
    ],
)
def test_transient_errors_are_recognised(message, sqlstate, transient):
    error = OperationalError("SELECT 1", {}, _FakeOriginal(message, sqlstate))
    assert is_transient_database_error(error) is transient
    # sqlite3's own error, as the batch writer's driver calls raise it, unwrapped.
    if sqlstate is None:
        assert is_transient_database_error(sqlite3.OperationalError(message)) is transient


async def test_lock_conflicts_are_retried_until_they_pass(app, session):
    calls = 0

    async def work(_session) -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise OperationalError("UPDATE", {}, _FakeOriginal("database is locked"))
        return "placed"

    assert await run_write_with_retries(session, work) == "placed"
    assert calls == 3


async def test_persistent_lock_conflicts_become_shop_busy(app, session):
    calls = 0

    async def work(_session) -> None:
        nonlocal calls
        calls += 1
        raise OperationalError("UPDATE", {}, _FakeOriginal("deadlock detected", "40P01"))

    with pytest.raises(ShopBusy):
        await run_write_with_retries(session, work)
    assert calls == WRITE_ATTEMPTS


async def test_other_database_errors_are_not_retried(app, session):
    calls = 0

    async def work(_session) -> None:
        nonlocal calls
        calls += 1
        raise IntegrityError("INSERT", {}, _FakeOriginal("UNIQUE constraint failed"))

    with pytest.raises(IntegrityError):
        await run_write_with_retries(session, work)
    assert calls == 1


# The unit of work, on both databases ---------------------------------------------------------


class Refused(Exception):
    """A service saying no."""


def lock_conflict() -> OperationalError:
    return OperationalError("UPDATE", {}, _FakeOriginal("database is locked"))


@pytest.fixture(name="request_session")
async def _request_session(app) -> AsyncIterator[AsyncSession]:
    """The session a request gets (get_session in an app context), closed at its teardown."""
    async with app.app_context():
        yield get_session()


async def stored_name(app, user_id: int) -> str | None:
    async with sessionmaker_for(app)() as other_session:
        return await other_session.scalar(select(User.name).where(User.id == user_id))


async def rename_then(
    session: AsyncSession, customer: User, error: Exception | None, returns: str = "written"
) -> str:
    """A write that renames the customer (flushed, so the database holds the uncommitted
    name), then raises `error`, or returns what it read of the customer."""
    customer.name = "Uncommitted Name"
    await session.flush()
    if error is not None:
        raise error
    return f"{returns} for {customer.email}"


@pytest.mark.both_databases
@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (Refused("no"), Refused),
        (lock_conflict(), ShopBusy),
        (PoolTimeoutError("no connection came free"), ShopBusy),
    ],
    ids=["refused", "lock-conflicts-until-busy", "pool-timeout-busy"],
)
async def test_objects_loaded_before_a_failed_write_stay_readable(
    app, request_session, make_user, error, expected
):
    user = await make_user(name="Ama Mensah")
    customer = await request_session.get(User, user.id)
    assert customer is not None

    with pytest.raises(expected):
        await run_write_with_retries(
            request_session, lambda session: rename_then(session, customer, error)
        )

    # Read synchronously, as a template does: an expired attribute would raise MissingGreenlet.
    assert (customer.email, customer.name, customer.role) == (user.email, "Ama Mensah", "customer")
    assert not inspect(customer).expired
    assert not request_session.in_transaction()
    assert await stored_name(app, user.id) == "Ama Mensah"
    # The session goes on reading.
    assert await request_session.scalar(select(User.name).where(User.id == user.id)) == "Ama Mensah"


@pytest.mark.both_databases
async def test_a_retried_write_reads_the_customer_it_was_given(app, request_session, make_user):
    user = await make_user(name="Ama Mensah")
    customer = await request_session.get(User, user.id)
    assert customer is not None
    attempts = []

    async def write(session: AsyncSession) -> str:
        attempts.append(customer.name)  # attempt 2 sees the name as committed, not attempt 1's
        return await rename_then(session, customer, lock_conflict() if len(attempts) == 1 else None)

    assert await run_write_with_retries(request_session, write) == f"written for {user.email}"
    assert attempts == ["Ama Mensah", "Ama Mensah"]
    assert customer.name == "Uncommitted Name"  # attempt 2 committed it
    assert await stored_name(app, user.id) == "Uncommitted Name"


@pytest.mark.both_databases
async def test_a_write_ends_the_read_first_and_leaves_no_transaction(
    app, request_session, make_user
):
    """The same sequence of transactions on both databases: the request's read is committed
    before the write begins, and nothing is left open after it, however it ends."""
    user = await make_user()
    happened: list[str] = []
    for name in ("after_begin", "after_commit", "after_rollback"):
        event.listen(
            request_session.sync_session,
            name,
            lambda *_args, name=name: happened.append(name.removeprefix("after_")),
        )

    await request_session.get(User, user.id)  # the read
    async with write_transaction(request_session):
        happened.append("write")
    assert not request_session.in_transaction()
    await request_session.scalar(select(User.id))  # another read
    with pytest.raises(Refused):
        async with write_transaction(request_session):
            happened.append("write")
            raise Refused("no")
    assert not request_session.in_transaction()

    assert happened == [
        *("begin", "commit", "begin", "write", "commit"),
        *("begin", "commit", "begin", "write", "rollback"),
    ]


@pytest.mark.both_databases
async def test_a_read_before_a_refused_write_shows_no_uncommitted_value(
    app, request_session, make_user
):
    user = await make_user(name="Ama Mensah")
    customer = await request_session.get(User, user.id)
    assert customer is not None
    seen_inside = None

    with pytest.raises(Refused):
        async with write_transaction(request_session) as session:
            await session.execute(update(User).where(User.id == user.id).values(name="Inside"))
            seen_inside = await session.scalar(select(User.name).where(User.id == user.id))
            customer.name = "Also Inside"
            raise Refused("no")

    assert seen_inside == "Inside"
    assert customer.name == "Ama Mensah"
    assert await request_session.scalar(select(User.name).where(User.id == user.id)) == (
        "Ama Mensah"
    )


async def test_end_read_hands_the_connection_back_and_keeps_what_was_loaded(
    app, request_session, make_user
):
    user = await make_user(name="Ama Mensah")
    customer = await request_session.get(User, user.id)
    assert customer is not None and request_session.in_transaction()
    await end_read()  # the request's session, as before a network call
    assert not request_session.in_transaction()
    assert customer.name == "Ama Mensah" and not inspect(customer).expired


async def test_a_write_inside_a_write_is_refused_before_it_commits_half(
    app, request_session, make_user
):
    user = await make_user(name="Ama Mensah")
    with pytest.raises(NestedWrite):
        async with write_transaction(request_session):
            await request_session.execute(
                update(User).where(User.id == user.id).values(name="Half")
            )
            async with write_transaction(request_session):
                pass
    assert await stored_name(app, user.id) == "Ama Mensah"


TRANSACTION_CALL = re.compile(r"\.(commit|rollback|expunge|expunge_all)\(")


def test_views_and_request_plumbing_never_commit_roll_back_or_expunge():
    """Views and web/ read through the request's session and write through write_transaction
    or run_write_with_retries; the session is closed at teardown in db/engine.py."""
    package = Path(__file__).resolve().parents[2] / "storefront"
    found = [
        f"{path.relative_to(package)}:{number}: {line.strip()}"
        for folder in ("blueprints", "web")
        for path in sorted((package / folder).rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if TRANSACTION_CALL.search(line)
    ]
    assert found == []
