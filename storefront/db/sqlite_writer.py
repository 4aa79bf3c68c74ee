"""The SQLite writer gate: one writer at a time per database file, queued without polling."""

import asyncio
import fcntl
import os
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import cast

from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from storefront.db.engine import dialect_name


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
    if not isinstance(bind, AsyncEngine) or dialect_name(bind) != "sqlite":
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
