"""Engine and sessions: made in the serving lifespan, one session per request.

Lock order: a write's turn (one write per cart at a time in a worker), then the SQLite writer
gate, then a pooled connection. A request never waits for a turn or the gate (write_transaction,
or the batch writer's queue) while its session holds a pooled connection: it ends the request's
read transaction first. Otherwise about 15 requests that loaded the customer and queued for the
gate would hold every connection of the pool while the writer holding the gate waited for one;
on PostgreSQL, one account's parallel adds would hold them all waiting for its cart's row lock.
"""

import asyncio
import fcntl
import logging
import os
import sqlite3
import weakref
from collections.abc import AsyncIterator, Hashable
from contextlib import AsyncExitStack, asynccontextmanager
from types import TracebackType
from typing import Any, cast

from quart import Quart, current_app, g, has_app_context
from sqlalchemy import event, inspect, select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
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
# PostgreSQL: connection exceptions (class 08), too many connections, shut down or starting up.
UNAVAILABLE_SQLSTATES = frozenset({"53300", "57P01", "57P02", "57P03"})
DRIVER_MODULES = ("sqlalchemy.", "asyncpg", "aiosqlite")

log = logging.getLogger(__name__)


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


def is_database_unavailable(error: BaseException) -> bool:
    """The database could not be reached or dropped the connection (PostgreSQL restarting,
    pg_terminate_backend, a closed port), or no pooled connection came free in time: the pool
    replaces broken connections, so the same request a moment later can succeed."""
    if isinstance(error, PoolTimeoutError):
        return True
    if isinstance(error, DBAPIError):
        sqlstate = str(getattr(error.orig, "sqlstate", None) or "")
        return (
            error.connection_invalidated
            or sqlstate.startswith("08")
            or sqlstate in UNAVAILABLE_SQLSTATES
        )
    # Connecting: asyncpg's socket errors (refused, unreachable, timed out) come through bare.
    return isinstance(error, OSError) and _raised_in_driver(error.__traceback__)


def _raised_in_driver(trace: TracebackType | None) -> bool:
    while trace is not None:
        if str(trace.tb_frame.f_globals.get("__name__", "")).startswith(DRIVER_MODULES):
            return True
        trace = trace.tb_next
    return False


def is_database_busy(error: BaseException) -> bool:
    """A failure that is the database's state, not the request: answer 503 with Retry-After."""
    return is_transient_database_error(error) or is_database_unavailable(error)


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


async def release_request_connection(session: AsyncSession | None = None) -> None:
    """End the read transactions of `session` and of the request's session, handing their pooled
    connections back (their objects stay loaded: expire_on_commit=False). Call before waiting
    for a turn or the SQLite writer gate: those come first, then a connection."""
    if session is not None and session.in_transaction():
        await session.commit()
    request_session = g.get("db_session") if has_app_context() else None
    if (
        request_session is not None
        and request_session is not session
        and request_session.in_transaction()
    ):
        await request_session.commit()


class _Turn:
    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


_turns: dict[Hashable, _Turn] = {}


@asynccontextmanager
async def take_turn(key: Hashable, session: AsyncSession | None = None) -> AsyncIterator[None]:
    """One write per key (a cart) at a time in this worker, first come first served; a request
    that must wait hands its pooled connection back first (release_request_connection)."""
    turn = _turns.get(key)
    if turn is None:
        turn = _turns[key] = _Turn()
    turn.users += 1
    try:
        if turn.lock.locked():
            await release_request_connection(session)
        async with turn.lock:
            yield
    finally:
        turn.users -= 1
        if not turn.users:
            del _turns[key]


def waiting_for_turn(key: Hashable) -> int:
    """Writes of this worker holding or waiting for the key's turn."""
    turn = _turns.get(key)
    return turn.users if turn is not None else 0


@asynccontextmanager
async def write_transaction(
    session: AsyncSession, turn: Hashable | None = None
) -> AsyncIterator[AsyncSession]:
    """Open the session's transaction as a writer (SQLite: BEGIN IMMEDIATE); commit or roll back.

    A read transaction the request already began (loading the customer) is ended first on
    SQLite, which must start writers with BEGIN IMMEDIATE, and which must not hold a pooled
    connection while it waits for the writer gate; on PostgreSQL (read committed: each
    statement sees what is committed) it simply goes on as the write transaction, which saves
    a commit, a connection checkout and a BEGIN. The session keeps its objects either way
    (expire_on_commit=False).

    With `turn` (a key such as the cart's), writes with the same key take turns in this worker
    (take_turn): a shopper's parallel writes to one cart wait without a connection.

    A write refused by an exception is rolled back, and the objects the rollback expired are
    loaded again as committed, so the caller can still read them and render its message.
    """
    on_sqlite = session.bind is not None and session.bind.dialect.name == "sqlite"
    try:
        async with AsyncExitStack() as stack:
            if turn is not None:
                await stack.enter_async_context(take_turn(turn, session))
            if session.in_transaction() and not on_sqlite:
                try:
                    yield session
                except BaseException:
                    await session.rollback()
                    raise
                await session.commit()
                return
            await release_request_connection(session)
            gate = sqlite_writer_gate(session.bind)
            if gate is not None:
                await stack.enter_async_context(gate.hold())
            async with session.begin():
                await session.connection(execution_options={WRITE_OPTION: True})
                yield session
    except Exception as error:
        if is_refusal(error):
            await reload_expired(session)
        raise


def is_refusal(error: Exception) -> bool:
    """The write said no (a rule, a constraint), as opposed to the database failing under it."""
    if isinstance(error, DBAPIError):
        return isinstance(error, IntegrityError)
    return not isinstance(error, (PoolTimeoutError, OSError, sqlite3.Error))


async def reload_expired(session: AsyncSession) -> None:
    """Load again, one query per class, what a rollback expired in the session: templates read
    attributes synchronously and cannot load them. Best effort: on failure they stay expired."""
    identities: dict[type[Any], list[Any]] = {}
    for state in session.sync_session.identity_map.all_states():
        if state.expired and state.identity is not None and len(state.identity) == 1:
            identities.setdefault(state.class_, []).append(state.identity[0])
    try:
        for model, keys in identities.items():
            key_column = inspect(model).primary_key[0]
            await session.execute(select(model).where(key_column.in_(keys)))
    except Exception:  # the refusal is what the caller must answer; this is only a courtesy
        log.warning("could not reload objects after a refused write", exc_info=True)


@asynccontextmanager
async def serve_database(app: Quart) -> AsyncIterator[None]:
    """Create the engine for the serving lifetime and dispose of it afterwards."""
    url = app.config["DATABASE_URL"]
    timeout = app.config["DATABASE_TIMEOUT_SECONDS"]
    # Busy, not stuck: a request waits this long for a pooled (or, on PostgreSQL, a new)
    # connection, then answers 503 with Retry-After.
    limits: dict[str, Any] = {"pool_timeout": timeout}
    if not is_sqlite(url):
        limits["connect_args"] = {"timeout": timeout}
    elif ":memory:" in url or url.rstrip("/").endswith(":"):
        limits = {}  # one static connection, no pool to wait for
    engine = make_engine(url, app.config["SQLITE_BUSY_TIMEOUT_MS"], **limits)
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
