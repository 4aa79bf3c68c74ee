"""The unit of work: how a request reads, how it writes, and in which order it waits.

A request reads through its session (db/engine.py get_session), which begins a read transaction
on its first query. A write is `write_transaction` (or `run_write_with_retries`, which runs one
again on lock conflicts), the same on SQLite and PostgreSQL: it ends the request's read first,
then takes the write's turn, then (SQLite) the writer gate, then begins the write (SQLite: BEGIN
IMMEDIATE) and commits it or rolls it back. Whatever ends a write without its commit (a refusal,
a lock conflict, ShopBusy, a cancelled request), the objects the request loaded before it keep
the values they had, without a query: a rolled-back write changed nothing, so the view renders
its message from them. Views never commit, roll back or expunge.

Lock order: a write's turn (one write per cart at a time in a worker), then the SQLite writer
gate, then a pooled connection. A request never waits for a turn or the gate (write_transaction,
or the batch writer's queue) while its session holds a pooled connection: it ends its read first
(end_read). Otherwise about 15 requests that loaded the customer and queued for the gate would
hold every connection of the pool while the writer holding the gate waited for one; on
PostgreSQL, one account's parallel adds would hold them all waiting for its cart's row lock.
"""

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, TypeVar

from quart import g, has_app_context
from sqlalchemy import inspect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from storefront.db.engine import WRITE_OPTION
from storefront.db.errors import is_transient_database_error
from storefront.db.sqlite_writer import sqlite_writer_gate

log = logging.getLogger(__name__)

T = TypeVar("T")

WRITE_ATTEMPTS = 5
# session.info key: set while the session is inside write_transaction.
WRITING = "storefront_writing"


class NestedWrite(RuntimeError):
    """A write or an end of read inside a write transaction: it would commit half a write."""


async def end_read(session: AsyncSession | None = None) -> None:
    """End the read transactions of `session` and of the request's session, handing their
    pooled connections back; what they loaded stays loaded (expire_on_commit=False).

    Call before waiting for something that needs no database: a network call, a password
    hash. write_transaction calls it before waiting for a turn or the SQLite writer gate."""
    request_session = g.get("db_session") if has_app_context() else None
    readings = [session] if session is not None else []
    if request_session is not None and request_session is not session:
        readings.append(request_session)
    for reading in readings:
        if reading.info.get(WRITING):
            raise NestedWrite("a read cannot end inside a write transaction")
        if reading.in_transaction():
            await reading.commit()


class _Turn:
    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


_turns: dict[Hashable, _Turn] = {}


@asynccontextmanager
async def take_turn(key: Hashable) -> AsyncIterator[None]:
    """One write per key (a cart) at a time in this worker, first come first served. The
    caller holds no pooled connection while it waits (write_transaction ends its read first)."""
    turn = _turns.get(key)
    if turn is None:
        turn = _turns[key] = _Turn()
    turn.users += 1
    try:
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
    """Run the block as one write (SQLite: BEGIN IMMEDIATE): commit it, or roll it back.

    The session's read transaction, if any, is ended first (end_read), on both databases. With
    `turn` (a key such as the cart's), writes with the same key take turns in this worker
    (take_turn). If the block raises, or the commit fails, the write is rolled back and the
    objects the session held before it get back the values they had (a rollback would leave
    them expired, and templates cannot load attributes); objects first loaded inside the
    write stay expired, since what they held may never have been committed.
    """
    if session.info.get(WRITING):
        raise NestedWrite("write_transaction inside a write transaction")
    loaded = _remember_loaded(session)
    try:
        await end_read(session)
        async with AsyncExitStack() as stack:
            if turn is not None:
                await stack.enter_async_context(take_turn(turn))
            gate = sqlite_writer_gate(session.bind)
            if gate is not None:
                await stack.enter_async_context(gate.hold())
            session.info[WRITING] = True
            stack.callback(session.info.pop, WRITING, None)
            async with session.begin():
                await session.connection(execution_options={WRITE_OPTION: True})
                yield session
    except BaseException:
        _restore_loaded(session, loaded)
        raise


_Loaded = list[tuple[object, dict[str, Any]]]


def _remember_loaded(session: AsyncSession) -> _Loaded:
    """Every object in the session with the values of its loaded columns (the models have no
    relationships: views query what templates show)."""
    loaded: _Loaded = []
    for instance in session:
        state = inspect(instance)
        values = {
            column.key: state.dict[column.key]
            for column in state.mapper.column_attrs
            if column.key in state.dict
        }
        loaded.append((instance, values))
    return loaded


def _restore_loaded(session: AsyncSession, loaded: _Loaded) -> None:
    """Give the objects still in the session back the values a rollback unloaded."""
    for instance, values in loaded:
        state = inspect(instance)
        if state.session is not session.sync_session:
            continue
        unloaded = state.unloaded
        for key, value in values.items():
            if key in unloaded:
                set_committed_value(instance, key, value)


class ShopBusy(Exception):
    """Lock conflicts or a pool that stayed busy: nothing changed; the message is fit for the
    shopper (503 with Retry-After)."""

    def __init__(self) -> None:
        super().__init__(
            "The shop is very busy right now and could not take your order. "
            "Nothing was charged; please try again in a moment."
        )


async def run_write_with_retries(
    session: AsyncSession,
    work: Callable[[AsyncSession], Awaitable[T]],
    attempts: int = WRITE_ATTEMPTS,
    turn: Hashable | None = None,
) -> T:
    """Run `work` in one write transaction, again on lock conflicts; ShopBusy if they persist.

    With `turn` (a cart's key), writes with the same key take turns in this worker first
    (take_turn), without holding a pooled connection. Each attempt is a write_transaction, so
    the objects the caller loaded before stay readable whichever way it ends.
    """
    for attempt in range(1, attempts + 1):
        try:
            async with write_transaction(session, turn):
                return await work(session)
        except PoolTimeoutError as error:
            log.warning("write gave up waiting for a database connection: %s", error)
            raise ShopBusy() from error
        except DBAPIError as error:
            if not is_transient_database_error(error):
                raise
            log.warning("write attempt %d of %d hit a lock conflict: %s", attempt, attempts, error)
            if attempt == attempts:
                raise ShopBusy() from error
            await asyncio.sleep(random.uniform(0.005, 0.03) * attempt)
    raise ShopBusy()
