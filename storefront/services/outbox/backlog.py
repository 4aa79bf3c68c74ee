"""What the outbox holds: counts per status and the oldest unsent row's age (/readyz, the admin
page), and the rows the admin pages list."""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from storefront.models import OutboxEmail
from storefront.models.outbox import OutboxStatus


@dataclass(frozen=True)
class OutboxBacklog:
    """Unsent work for /readyz and the admin page."""

    counts: dict[str, int]
    oldest_pending_age_seconds: int | None

    @property
    def backlog(self) -> int:
        return self.counts.get(OutboxStatus.PENDING, 0) + self.counts.get(OutboxStatus.SENDING, 0)


def _backlog_statement(statuses: Sequence[str]) -> Select[str, int, datetime]:
    unsent = aliased(OutboxEmail)
    # Ids grow in insertion order, so the lowest unsent id is the oldest unsent row.
    oldest_unsent_id = (
        select(func.min(unsent.id)).where(
            unsent.status.in_((OutboxStatus.PENDING, OutboxStatus.SENDING))
        )
    ).scalar_subquery()
    oldest = aliased(OutboxEmail)
    oldest_created_at = (
        select(oldest.created_at).where(oldest.id == oldest_unsent_id)
    ).scalar_subquery()
    return (
        select(OutboxEmail.status, func.count(), oldest_created_at)
        .where(OutboxEmail.status.in_(statuses))
        .group_by(OutboxEmail.status)
    )


# Built once: constructing the aliases costs more than running the query.
_UNSENT_STATUSES = (OutboxStatus.PENDING, OutboxStatus.SENDING, OutboxStatus.DEAD)
_BACKLOG_UNSENT = _backlog_statement(_UNSENT_STATUSES)
_BACKLOG_ALL = _backlog_statement(tuple(OutboxStatus))


async def select_outbox_backlog(
    session: AsyncSession, now: datetime, count_sent: bool = False
) -> OutboxBacklog:
    """Row counts per status and the age of the oldest unsent row, in one query.

    Sent rows pile up forever, so they are counted only when asked (the admin page); /readyz
    reads the (status, next_attempt_at) index for the counts and a single row for the age."""
    statuses = tuple(OutboxStatus) if count_sent else _UNSENT_STATUSES
    rows = await session.execute(_BACKLOG_ALL if count_sent else _BACKLOG_UNSENT)
    counts: dict[str, int] = dict.fromkeys(statuses, 0)
    oldest_at: datetime | None = None
    for status, count, created_at in rows.all():
        counts[status] = count
        oldest_at = created_at
    age = None if oldest_at is None else max(0, int((now - oldest_at).total_seconds()))
    return OutboxBacklog(counts=counts, oldest_pending_age_seconds=age)


async def select_outbox_emails(
    session: AsyncSession,
    status: str | None = None,
    limit: int = 50,
    offset: int = 0,
    key_prefix: str | None = None,
) -> list[OutboxEmail]:
    """Rows for the admin pages, newest first, optionally of one status or dedupe-key prefix."""
    statement = select(OutboxEmail).order_by(OutboxEmail.id.desc()).limit(limit).offset(offset)
    if status is not None:
        statement = statement.where(OutboxEmail.status == status)
    if key_prefix is not None:
        statement = statement.where(OutboxEmail.dedupe_key.startswith(key_prefix, autoescape=True))
    return list((await session.scalars(statement)).all())
