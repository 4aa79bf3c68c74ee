"""Engine and sessions: made in the serving lifespan, one session per request."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from quart import Quart, current_app, g
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from storefront.config import app_settings

WRITE_OPTION = "storefront_write"


def dialect_name(
    target: str | AsyncSession | AsyncEngine | AsyncConnection | Engine | Connection | None,
) -> str:
    """The database behind a URL, session, engine or connection: "sqlite", "postgresql"
    ("" for a session without a bind). The one place code asks which database it runs on."""
    if isinstance(target, str):
        return target.split(":", 1)[0].split("+", 1)[0]
    bind = target.bind if isinstance(target, AsyncSession) else target
    return bind.dialect.name if bind is not None else ""


def make_engine(url: str, busy_timeout_ms: int = 30_000, **kwargs: Any) -> AsyncEngine:
    """Create an engine; SQLite gets WAL, foreign keys, busy_timeout and BEGIN IMMEDIATE writes."""
    if dialect_name(url) != "sqlite":
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


@asynccontextmanager
async def serve_database(app: Quart) -> AsyncIterator[None]:
    """Create the engine for the serving lifetime and dispose of it afterwards."""
    settings = app_settings(app)
    url = settings.database_url
    timeout = settings.database_timeout_seconds
    # Busy, not stuck: a request waits this long for a pooled (or, on PostgreSQL, a new)
    # connection, then answers 503 with Retry-After.
    limits: dict[str, Any] = {"pool_timeout": timeout}
    if dialect_name(url) != "sqlite":
        limits["connect_args"] = {"timeout": timeout}
    elif ":memory:" in url or url.rstrip("/").endswith(":"):
        limits = {}  # one static connection, no pool to wait for
    engine = make_engine(url, settings.sqlite_busy_timeout_ms, **limits)
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
    # A session that never began a transaction and holds no objects has nothing to close (a
    # guest's cart add that the batch writer applied); closing it anyway costs ~20 µs.
    if db_session is not None and (db_session.in_transaction() or db_session.identity_map):
        await db_session.close()
