"""Group commit for SQLite: small, hot writes queued in one worker share one transaction.

Through aiosqlite every statement, cursor, fetch and commit is a hop to the connection's thread,
and a writer holds SQLite's one write lock through all of them: a cart add took ~25 hops under a
lock of its own. The batch writer owns a plain (synchronous) connection on a thread of its own.
Each time it holds the writer gate it takes every write queued in this worker meanwhile and
applies them in one hop and one transaction, each in a savepoint: a write that raises changes
nothing and the others still commit. A write queued while no batch runs starts one at once, so
a quiet shop waits for nothing.

A caller waits for the writer gate through the queue, so it first hands back the request's
pooled connection (end_read): the gate comes first, then a connection.

What it buys, measured on the cart add's benchmark row: docs/PERFORMANCE.md.
"""

import asyncio
import logging
import sqlite3
import weakref
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any, TypeVar, cast

from quart import Quart
from sqlalchemy import create_engine
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from storefront.config import app_settings
from storefront.db.engine import WRITE_OPTION, configure_sqlite
from storefront.db.sqlite_writer import sqlite_file_path, sqlite_writer_gate
from storefront.db.transactions import end_read

T = TypeVar("T")
BatchWrite = Callable[[Connection], T]

log = logging.getLogger(__name__)


class SQLiteBatchWriter:
    """Applies queued writes of one SQLite file engine in batches; start() before use."""

    def __init__(self, engine: AsyncEngine, busy_timeout_ms: int) -> None:
        gate = sqlite_writer_gate(engine)
        if gate is None:
            raise ValueError("the batch writer needs a SQLite database file")
        self._gate = gate
        self._engine = create_engine(engine.url.set(drivername="sqlite"), pool_size=1)
        configure_sqlite(self._engine, busy_timeout_ms)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-batch")
        self._connection: Connection | None = None  # opened and used on self._thread only
        self._queued: list[tuple[BatchWrite[Any], asyncio.Future[Any]]] = []
        self._in_flight: list[tuple[BatchWrite[Any], asyncio.Future[Any]]] = []
        self._wakeup = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None

    @property
    def waiting(self) -> int:
        """Writes queued for the next batch."""
        return len(self._queued)

    def start(self) -> None:
        self._task = asyncio.create_task(self._apply_forever(), name="sqlite-batch-writer")

    async def run(self, write: BatchWrite[T], session: AsyncSession | None = None) -> T:
        """Apply `write(connection)` in the next batch's transaction; its result or its error.
        The read transactions of `session` and of the request's session end first."""
        if self._closing or self._task is None:
            raise RuntimeError("the SQLite batch writer is not running")
        await end_read(session)
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queued.append((write, future))
        self._wakeup.set()
        return await future

    async def close(self) -> None:
        """Apply what is queued, then stop the task and close the connection."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            await self._task
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._thread, self._close_connection)
        self._thread.shutdown(wait=True)
        self._engine.dispose()

    async def _apply_forever(self) -> None:
        while True:
            await self._wakeup.wait()
            try:
                await self._apply_queued()
            except Exception as error:  # the writer gate failed (its lock file): refuse, go on
                log.exception("SQLite batch writer: the writes it held are refused")
                self._wakeup.clear()
                for _, future in self._in_flight + self._queued:
                    if not future.done():
                        future.set_exception(error)
                self._in_flight, self._queued = [], []
            if self._closing and not self._queued:
                return

    async def _apply_queued(self) -> None:
        async with self._gate.hold():
            self._wakeup.clear()
            self._in_flight = [
                (write, future) for write, future in self._queued if not future.done()
            ]
            self._queued = []
            outcomes = await self._apply_in_thread([write for write, _ in self._in_flight])
        for (_, future), (result, error) in zip(self._in_flight, outcomes, strict=True):
            if future.done():  # the caller went away; its write stands or falls with the rest
                continue
            if error is None:
                future.set_result(result)
            else:
                future.set_exception(error)
        self._in_flight = []

    async def _apply_in_thread(
        self, writes: list[BatchWrite[Any]]
    ) -> list[tuple[Any, Exception | None]]:
        if not writes:
            return []
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self._thread, self._apply, writes
            )
        except Exception as error:  # the transaction itself failed: nothing committed
            return [(None, error)] * len(writes)

    def _apply(self, writes: list[BatchWrite[Any]]) -> list[tuple[Any, Exception | None]]:
        if self._connection is None:
            self._connection = self._engine.connect().execution_options(**{WRITE_OPTION: True})
        connection = self._connection
        # Savepoints straight on the driver: SQLAlchemy's begin_nested() cost as much as an add.
        driver = cast(sqlite3.Connection, connection.connection.driver_connection)
        outcomes: list[tuple[Any, Exception | None]] = []
        try:
            with connection.begin():
                for write in writes:
                    driver.execute("SAVEPOINT batch_write")
                    try:
                        outcomes.append((write(connection), None))
                    except Exception as error:
                        driver.execute("ROLLBACK TO batch_write")
                        outcomes.append((None, error))
                    driver.execute("RELEASE batch_write")
        except BaseException:
            self._close_connection()
            raise
        return outcomes

    def _close_connection(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


_batch_writers: "weakref.WeakKeyDictionary[Engine, SQLiteBatchWriter]" = weakref.WeakKeyDictionary()


@asynccontextmanager
async def serve_sqlite_batch_writer(app: Quart) -> AsyncIterator[None]:
    """A batch writer per worker for the app's engine while serving, on a SQLite file only."""
    engine: AsyncEngine = app.extensions["db_engine"]
    if sqlite_file_path(engine) is None:
        yield
        return
    try:
        writer = SQLiteBatchWriter(engine, app_settings(app).sqlite_busy_timeout_ms)
    except OSError as error:  # e.g. the database's directory is missing; /readyz reports it
        log.warning("no SQLite batch writer: %s", error)
        yield
        return
    writer.start()
    _batch_writers[engine.sync_engine] = writer
    try:
        yield
    finally:
        _batch_writers.pop(engine.sync_engine, None)
        await writer.close()


def sqlite_batch_writer(bind: object) -> SQLiteBatchWriter | None:
    """The batch writer serving this engine (a session's bind), else None: another database,
    or an engine that no serving app made (a script's, a test's own)."""
    if not isinstance(bind, AsyncEngine):
        return None
    return _batch_writers.get(bind.sync_engine)
