"""Engine and sessions: made in the serving lifespan, one session per request."""

import asyncio
import fcntl
import os
import sqlite3
import weakref
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, cast

from quart import Quart, current_app, g
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

WRITE_OPTION = "storefront_write"
# PostgreSQL: serialization failure, deadlock, lock not available.
TRANSIENT_SQLSTATES = frozenset({"40001", "40P01", "55P03"})
TRANSIENT_MESSAGES = ("database is locked", "database table is locked", "deadlock detected")


def is_transient_database_error(error: BaseException) -> bool:
    """A lock or serialization conflict that the same transaction, run again, can get past
    (SQLAlchemy's wrapped errors, and sqlite3's own from the batch writer's driver calls)."""
    original: object = error.orig if isinstance(error, DBAPIError) else error
    if not isinstance(error, DBAPIError) and not isinstance(error, sqlite3.OperationalError):
        return False
    sqlstate = getattr(original, "sqlstate", None) or getattr(original, "pgcode", None)
    if sqlstate in TRANSIENT_SQLSTATES:
        return True
    text = str(original).lower()
    return any(message in text for message in TRANSIENT_MESSAGES)


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def make_engine(url: str, busy_timeout_ms: int = 30_000, **kwargs: Any) -> AsyncEngine:
    """Create an engine; SQLite gets WAL, foreign keys, busy_timeout and BEGIN IMMEDIATE writes."""
    if not is_sqlite(url):
        kwargs.setdefault("pool_pre_ping", True)
        return create_async_engine(url, **kwargs)
    engine = create_async_engine(url, connect_args={"timeout": busy_timeout_ms / 1000}, **kwargs)
    configure_sqlite(engine.sync_engine, busy_timeout_ms)
    return engine


def configure_sqlite(engine: Engine, busy_timeout_ms: int) -> None:
    """Connection settings and transaction starts for every SQLite engine, async or not."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event decide how each transaction starts.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        # A deferred transaction that later upgrades to a write lock fails with
        # "database is locked" whatever busy_timeout says; writers take the lock up front.
        if connection.get_execution_options().get(WRITE_OPTION):
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            connection.exec_driver_sql("BEGIN")


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


class SQLiteWriterGate:
    """Queues one engine's writers: an asyncio lock inside the process, a file lock across.

    SQLite admits one writer at a time, and a writer that finds the database locked waits in
    SQLite's busy handler, which polls with sleeps of up to 100 ms. Tasks of one worker queue on
    the asyncio lock; worker processes queue on flock(), which wakes the next one as soon as the
    holder lets go. BEGIN IMMEDIATE still guards against writers that do not use the gate.
    """

    def __init__(self, database_path: str) -> None:
        self.lock = asyncio.Lock()
        self.lock_file = os.open(f"{database_path}.writer-lock", os.O_RDWR | os.O_CREAT, 0o600)

    @asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        async with self.lock:
            await self._lock_file()
            try:
                yield
            finally:
                fcntl.flock(self.lock_file, fcntl.LOCK_UN)

    async def _lock_file(self) -> None:
        try:
            fcntl.flock(self.lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        waiting = asyncio.ensure_future(
            asyncio.to_thread(fcntl.flock, self.lock_file, fcntl.LOCK_EX)
        )
        try:
            await asyncio.shield(waiting)
        except asyncio.CancelledError:
            # The thread may still get the lock after we gave up: hand it straight back.
            waiting.add_done_callback(lambda _: fcntl.flock(self.lock_file, fcntl.LOCK_UN))
            raise


_sqlite_writer_gates: "weakref.WeakKeyDictionary[Engine, SQLiteWriterGate]" = (
    weakref.WeakKeyDictionary()
)


def sqlite_file_path(bind: object) -> str | None:
    """The database file of a SQLite engine, or None (another database, or in memory)."""
    if not isinstance(bind, AsyncEngine) or bind.dialect.name != "sqlite":
        return None
    database_path = bind.url.database
    if not database_path or database_path == ":memory:":
        return None
    return database_path


def sqlite_writer_gate(bind: object) -> SQLiteWriterGate | None:
    """The one writer gate of a SQLite file engine (None for other databases)."""
    database_path = sqlite_file_path(bind)
    if database_path is None:
        return None
    engine = cast(AsyncEngine, bind).sync_engine
    gate = _sqlite_writer_gates.get(engine)
    if gate is None:
        gate = _sqlite_writer_gates[engine] = SQLiteWriterGate(database_path)
        weakref.finalize(engine, os.close, gate.lock_file)
    return gate


@asynccontextmanager
async def write_transaction(session: AsyncSession) -> AsyncIterator[AsyncSession]:
    """Open the session's transaction as a writer (SQLite: BEGIN IMMEDIATE); commit or roll back.

    A read transaction the request already began (loading the customer) is ended first on
    SQLite, which must start writers with BEGIN IMMEDIATE; on PostgreSQL (read committed: each
    statement sees what is committed) it simply goes on as the write transaction, which saves
    a commit, a connection checkout and a BEGIN. The session keeps its objects either way
    (expire_on_commit=False).
    """
    on_sqlite = session.bind is not None and session.bind.dialect.name == "sqlite"
    if session.in_transaction() and not on_sqlite:
        try:
            yield session
        except BaseException:
            await session.rollback()
            raise
        await session.commit()
        return
    if session.in_transaction():
        await session.commit()
    gate = sqlite_writer_gate(session.bind)
    async with AsyncExitStack() as stack:
        if gate is not None:
            await stack.enter_async_context(gate.hold())
        async with session.begin():
            await session.connection(execution_options={WRITE_OPTION: True})
            yield session


@asynccontextmanager
async def serve_database(app: Quart) -> AsyncIterator[None]:
    """Create the engine for the serving lifetime and dispose of it afterwards."""
    engine = make_engine(app.config["DATABASE_URL"], app.config["SQLITE_BUSY_TIMEOUT_MS"])
    app.extensions["db_engine"] = engine
    app.extensions["db_sessionmaker"] = make_sessionmaker(engine)
    try:
        yield
    finally:
        app.extensions.pop("db_sessionmaker", None)
        app.extensions.pop("db_engine", None)
        await engine.dispose()


def sessionmaker_for(app: Quart) -> async_sessionmaker[AsyncSession]:
    """The app's sessionmaker, for background tasks that open their own sessions."""
    return app.extensions["db_sessionmaker"]


def get_session() -> AsyncSession:
    """The request's session, opened on first use and closed at teardown."""
    if "db_session" not in g:
        g.db_session = sessionmaker_for(current_app)()  # type: ignore[attr-defined]
    return g.db_session


async def close_session(_exc: BaseException | None = None) -> None:
    db_session = g.pop("db_session", None)
    if db_session is not None:
        await db_session.close()
