"""What a database error means for the request: busy (503, try again) or not."""

import sqlite3
from types import TracebackType

from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

# PostgreSQL: serialization failure, deadlock, lock not available.
TRANSIENT_SQLSTATES = frozenset({"40001", "40P01", "55P03"})
TRANSIENT_MESSAGES = ("database is locked", "database table is locked", "deadlock detected")
# PostgreSQL: connection exceptions (class 08), too many connections, shut down or starting up.
UNAVAILABLE_SQLSTATES = frozenset({"53300", "57P01", "57P02", "57P03"})
DRIVER_MODULES = ("sqlalchemy.", "asyncpg", "aiosqlite")


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
