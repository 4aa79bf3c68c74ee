"""Write transactions and turns: how a request writes, and in which order it waits.

Lock order: a write's turn (one write per cart at a time in a worker), then the SQLite writer
gate, then a pooled connection. A request never waits for a turn or the gate (write_transaction,
or the batch writer's queue) while its session holds a pooled connection: it ends the request's
read transaction first. Otherwise about 15 requests that loaded the customer and queued for the
gate would hold every connection of the pool while the writer holding the gate waited for one;
on PostgreSQL, one account's parallel adds would hold them all waiting for its cart's row lock.
"""

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, TypeVar

from quart import g, has_app_context
from sqlalchemy import inspect, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncSession

from storefront.db.engine import WRITE_OPTION, dialect_name
from storefront.db.errors import is_refusal, is_transient_database_error
from storefront.db.sqlite_writer import sqlite_writer_gate

log = logging.getLogger(__name__)

T = TypeVar("T")

WRITE_ATTEMPTS = 5


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
    on_sqlite = dialect_name(session) == "sqlite"
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
    (take_turn), without holding a pooled connection. Objects the caller still needs should
    be detached beforehand, because a rollback expires every object in the session.
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
