"""Queueing composed emails as pending rows in the caller's transaction, and waking this
process's senders once that transaction commits."""

import asyncio
from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, event
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from storefront.db.engine import dialect_name
from storefront.models import OutboxEmail, utcnow
from storefront.models.outbox import OutboxStatus
from storefront.services.outbox.composing import ComposedEmail, compose_email

# Senders in this process wait on these; a commit that queued email sets them.
_wake_events: set[asyncio.Event] = set()
_QUEUED_FLAG = "outbox_queued"
_LISTENING_FLAG = "outbox_listening"


def _pending_row(email: ComposedEmail, now: datetime) -> dict[str, Any]:
    return {
        "to_address": email.to_address,
        "subject": email.subject,
        "text_body": email.text_body,
        "html_body": email.html_body,
        "status": OutboxStatus.PENDING,
        "attempts": 0,
        "next_attempt_at": now,
        "last_error": "",
        "transport": "",
        "dedupe_key": email.dedupe_key,
        "created_at": now,
    }


# Built once per dialect: checkout queues two emails per order.
_outbox_emails = cast(Table, OutboxEmail.__table__)
_INSERT_PENDING = {
    "postgresql": postgresql_insert(_outbox_emails).on_conflict_do_nothing(
        index_elements=["dedupe_key"]
    ),
    "sqlite": sqlite_insert(_outbox_emails).on_conflict_do_nothing(index_elements=["dedupe_key"]),
}


async def queue_email(
    session: AsyncSession, to: str, template: str, context: dict[str, Any], dedupe_key: str
) -> OutboxEmail | None:
    """Render an email and insert it as pending in the caller's transaction; a repeated key is a
    no-op (None)."""
    email = compose_email(to, template, context, dedupe_key)
    connection = await session.connection()
    insert = postgresql_insert if dialect_name(connection) == "postgresql" else sqlite_insert
    statement = (
        insert(OutboxEmail)
        .values(**_pending_row(email, utcnow()))
        .on_conflict_do_nothing(index_elements=["dedupe_key"])
        .returning(OutboxEmail)
    )
    queued = (await session.scalars(statement)).one_or_none()
    if queued is not None:
        wake_after_commit(session)
    return queued


async def queue_emails(session: AsyncSession, emails: Sequence[ComposedEmail]) -> None:
    """Insert composed emails as pending in the caller's transaction, in one statement; a
    repeated key is skipped."""
    if not emails:
        return
    now = utcnow()
    connection = await session.connection()
    await connection.execute(
        _INSERT_PENDING[dialect_name(connection)], [_pending_row(email, now) for email in emails]
    )
    # Even when every key was a repeat: a sender woken for nothing finds nothing due.
    wake_after_commit(session)


def wake_after_commit(session: AsyncSession) -> None:
    """Wake this process's senders once the session's transaction commits (not if it rolls
    back)."""
    sync_session = session.sync_session
    sync_session.info[_QUEUED_FLAG] = True
    if sync_session.info.get(_LISTENING_FLAG):
        return
    sync_session.info[_LISTENING_FLAG] = True
    event.listen(sync_session, "after_commit", _on_commit)
    event.listen(sync_session, "after_rollback", _on_rollback)


def _on_commit(sync_session: Session) -> None:
    if sync_session.info.pop(_QUEUED_FLAG, False):
        wake_senders()


def _on_rollback(sync_session: Session) -> None:
    sync_session.info.pop(_QUEUED_FLAG, None)


def register_wake_event(wake: asyncio.Event) -> None:
    """A sender in this process wants to hear about commits that queued email."""
    _wake_events.add(wake)


def unregister_wake_event(wake: asyncio.Event) -> None:
    _wake_events.discard(wake)


def wake_senders() -> None:
    """Wake every outbox sender running in this process (after a commit that queued email)."""
    for wake in list(_wake_events):
        wake.set()
