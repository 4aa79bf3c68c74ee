"""Paystack's webhook events, stored once per (event, reference) and marked when processed;
the follow-up's write, in a session of its own."""

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from storefront.db.engine import dialect_name
from storefront.db.transactions import run_write_with_retries
from storefront.models import WebhookEvent
from storefront.services.payments.state import SessionFactory, rowcount

T = TypeVar("T")


async def record_webhook_event(
    session: AsyncSession, event: str, reference: str, payload: dict[str, Any], now: datetime
) -> bool:
    """Store a webhook once per (event, reference); False when it was already stored."""
    connection = await session.connection()
    insert = postgresql_insert if dialect_name(connection) == "postgresql" else sqlite_insert
    stored = await session.execute(
        insert(WebhookEvent)
        .values(event=event[:64], reference=reference[:100], payload=payload, received_at=now)
        .on_conflict_do_nothing(index_elements=["event", "reference"])
    )
    return rowcount(stored) == 1


async def mark_webhook_processed(
    session: AsyncSession, event: str, reference: str, now: datetime
) -> None:
    await session.execute(
        update(WebhookEvent)
        .where(
            WebhookEvent.event == event[:64],
            WebhookEvent.reference == reference[:100],
            WebhookEvent.processed_at.is_(None),
        )
        .values(processed_at=now)
        .execution_options(synchronize_session=False)
    )


async def run_in_new_session(
    sessionmaker: SessionFactory, work: Callable[[AsyncSession], Awaitable[T]]
) -> T:
    """One write transaction in a session of its own (background tasks)."""
    async with sessionmaker() as session:
        return await run_write_with_retries(session, work)
