"""A row's way out: claimed by one sender, then sent, retried with backoff, or dead; dead rows
put back by an admin."""

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import ColumnElement, CursorResult, Executable, and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from storefront.db.engine import dialect_name
from storefront.lib.mail.message import OutgoingEmail
from storefront.models import OutboxEmail
from storefront.models.outbox import OutboxStatus
from storefront.services.outbox.queueing import wake_after_commit

MAX_ATTEMPTS = 5
# The waits after the 1st to 4th failed attempt; the 5th failure is final, so no wait follows it.
BACKOFF_MINUTES = (1, 2, 4, 8)
DEFAULT_BATCH_SIZE = 50
DEFAULT_CLAIM_SECONDS = 300


@dataclass(frozen=True)
class ClaimedEmail:
    """Plain values of a claimed row: what the sender needs, detached from any session."""

    id: int
    to_address: str
    subject: str
    text_body: str
    html_body: str
    dedupe_key: str
    attempts: int

    def outgoing(self) -> OutgoingEmail:
        digest = hashlib.sha256(self.dedupe_key.encode()).hexdigest()[:16]
        return OutgoingEmail(
            to_address=self.to_address,
            subject=self.subject,
            text_body=self.text_body,
            html_body=self.html_body,
            reference=f"outbox.{self.id}.{digest}",
        )


async def _execute_for_rowcount(session: AsyncSession, statement: Executable) -> int:
    result = cast(CursorResult[Any], await session.execute(statement))
    return result.rowcount


def backoff_delay(failed_attempts: int) -> timedelta:
    """How long to wait after the nth failed attempt (1-based)."""
    index = min(max(failed_attempts, 1), len(BACKOFF_MINUTES)) - 1
    return timedelta(minutes=BACKOFF_MINUTES[index])


def _due(now: datetime) -> ColumnElement[bool]:
    return or_(
        and_(OutboxEmail.status == OutboxStatus.PENDING, OutboxEmail.next_attempt_at <= now),
        and_(OutboxEmail.status == OutboxStatus.SENDING, OutboxEmail.claimed_until < now),
    )


def _claimed(row: OutboxEmail) -> ClaimedEmail:
    return ClaimedEmail(
        id=row.id,
        to_address=row.to_address,
        subject=row.subject,
        text_body=row.text_body,
        html_body=row.html_body,
        dedupe_key=row.dedupe_key,
        attempts=row.attempts,
    )


async def select_due_email_exists(session: AsyncSession, now: datetime) -> bool:
    """Anything to send now? (a read, so an idle poll takes no write lock)"""
    return (await session.scalar(select(OutboxEmail.id).where(_due(now)).limit(1))) is not None


async def claim_due_emails(
    session: AsyncSession,
    now: datetime,
    limit: int = DEFAULT_BATCH_SIZE,
    claim_seconds: int = DEFAULT_CLAIM_SECONDS,
) -> list[ClaimedEmail]:
    """Mark up to `limit` due rows as `sending` until now + claim_seconds; run inside
    write_transaction. Rows another worker holds are never returned."""
    claimed_until = now + timedelta(seconds=claim_seconds)
    connection = await session.connection()
    due_ids = (
        select(OutboxEmail.id)
        .where(_due(now))
        .order_by(OutboxEmail.next_attempt_at, OutboxEmail.id)
        .limit(limit)
    )
    if dialect_name(connection) == "postgresql":
        # Rows locked by a concurrent claimer are skipped, not waited for.
        due_ids = due_ids.with_for_update(skip_locked=True)
        ids = list((await session.scalars(due_ids)).all())
        if not ids:
            return []
        id_filter = OutboxEmail.id.in_(ids)
    else:
        # SQLite: write_transaction holds the write lock (BEGIN IMMEDIATE), so the subquery and
        # the conditional update below see no concurrent claimer.
        id_filter = OutboxEmail.id.in_(due_ids.scalar_subquery())
    claim = (
        update(OutboxEmail)
        .where(id_filter, _due(now))
        .values(status=OutboxStatus.SENDING, claimed_until=claimed_until)
        .returning(OutboxEmail)
        .execution_options(synchronize_session=False)
    )
    rows = (await session.scalars(claim)).all()
    return sorted((_claimed(row) for row in rows), key=lambda email: email.id)


async def mark_sent(
    session: AsyncSession, email_ids: Sequence[int], transport: str, now: datetime
) -> int:
    """Record deliveries; returns how many rows were still ours to mark (claimed, unsent)."""
    marked = await _execute_for_rowcount(
        session,
        update(OutboxEmail)
        .where(OutboxEmail.id.in_(list(email_ids)), OutboxEmail.status == OutboxStatus.SENDING)
        .values(
            status=OutboxStatus.SENT,
            attempts=OutboxEmail.attempts + 1,
            sent_at=now,
            claimed_until=None,
            transport=transport,
        )
        .execution_options(synchronize_session=False),
    )
    return marked


async def mark_failed(
    session: AsyncSession, email_id: int, error: str, *, permanent: bool, now: datetime
) -> str | None:
    """Record a failed attempt: retry later with backoff, or dead after MAX_ATTEMPTS or a
    permanent refusal. Returns the new status (None when the row was no longer ours)."""
    attempts = await session.scalar(
        select(OutboxEmail.attempts).where(
            OutboxEmail.id == email_id, OutboxEmail.status == OutboxStatus.SENDING
        )
    )
    if attempts is None:
        return None
    failed_attempts = attempts + 1
    dead = permanent or failed_attempts >= MAX_ATTEMPTS
    new_status = OutboxStatus.DEAD if dead else OutboxStatus.PENDING
    changed = await _execute_for_rowcount(
        session,
        update(OutboxEmail)
        .where(
            OutboxEmail.id == email_id,
            OutboxEmail.status == OutboxStatus.SENDING,
            OutboxEmail.attempts == attempts,
        )
        .values(
            status=new_status,
            attempts=failed_attempts,
            # PostgreSQL text cannot hold NUL, and a server's reply is not ours to trust.
            last_error=error.replace("\x00", "")[:2000],
            claimed_until=None,
            next_attempt_at=now if dead else now + backoff_delay(failed_attempts),
        )
        .execution_options(synchronize_session=False),
    )
    return new_status if changed == 1 else None


async def release_claims(session: AsyncSession, email_ids: Sequence[int]) -> int:
    """Give claimed rows back unsent (shutdown): due again at once, no attempt counted."""
    if not email_ids:
        return 0
    released = await _execute_for_rowcount(
        session,
        update(OutboxEmail)
        .where(OutboxEmail.id.in_(list(email_ids)), OutboxEmail.status == OutboxStatus.SENDING)
        .values(status=OutboxStatus.PENDING, claimed_until=None)
        .execution_options(synchronize_session=False),
    )
    return released


async def retry_dead_emails(
    session: AsyncSession, now: datetime, email_id: int | None = None
) -> int:
    """Put dead rows (one, or all) back in the queue with a fresh set of attempts."""
    statement = (
        update(OutboxEmail)
        .where(OutboxEmail.status == OutboxStatus.DEAD)
        .values(status=OutboxStatus.PENDING, attempts=0, next_attempt_at=now, claimed_until=None)
        .execution_options(synchronize_session=False)
    )
    if email_id is not None:
        statement = statement.where(OutboxEmail.id == email_id)
    retried = await _execute_for_rowcount(session, statement)
    if retried:
        wake_after_commit(session)
    return retried
