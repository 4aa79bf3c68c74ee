"""The transactional email outbox: queue in the caller's transaction, claim, send, retry."""

import asyncio
import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, cast

from email_validator import EmailNotValidError, validate_email
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from sqlalchemy import (
    ColumnElement,
    CursorResult,
    Executable,
    Select,
    Table,
    and_,
    event,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, aliased

from storefront.db.engine import dialect_name
from storefront.lib.mail import OutgoingEmail
from storefront.lib.money import format_minor
from storefront.models import STATE_ENUMS, OutboxEmail, utcnow
from storefront.models.outbox import OutboxStatus

EMAIL_TEMPLATE_FOLDER = Path(__file__).resolve().parent.parent.parent / "templates" / "emails"
SUBJECT_MAX_LENGTH = 300
DEDUPE_KEY_MAX_LENGTH = 200

email_environment = Environment(
    loader=FileSystemLoader(str(EMAIL_TEMPLATE_FOLDER)),
    autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)
email_environment.filters["money"] = format_minor
email_environment.globals["shop_name"] = "CyberWorld Storefront"
email_environment.globals.update({enum.__name__: enum for enum in STATE_ENUMS})

# Senders in this process wait on these; a commit that queued email sets them.
_wake_events: set[asyncio.Event] = set()
_QUEUED_FLAG = "outbox_queued"
_LISTENING_FLAG = "outbox_listening"


class InvalidEmailAddress(ValueError):
    """The recipient address is not one we can send to; the message says why (with the address,
    for logs), `reason` says it to the person who typed it."""

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason or message


# MAIL_SMTPUTF8: the operator's mail server takes addresses with non-ASCII letters before the @.
# One setting per process, like the mail server; serve_outbox_sender sets it from the config.
_accepts_smtputf8 = False


def accept_smtputf8_addresses(accepted: bool) -> None:
    """Say whether addresses that need SMTPUTF8 can be delivered (MAIL_SMTPUTF8)."""
    global _accepts_smtputf8
    _accepts_smtputf8 = accepted


def render_email(template: str, context: Mapping[str, Any]) -> tuple[str, str, str]:
    """Render (subject, text body, html body) of templates/emails/<template>.*."""
    subject = email_environment.get_template(f"{template}.subject.txt").render(context)
    text_body = email_environment.get_template(f"{template}.txt").render(context)
    html_body = email_environment.get_template(f"{template}.html").render(context)
    # A subject is one header line: newlines would let content inject headers.
    subject = re.sub(r"\s+", " ", subject).strip()[:SUBJECT_MAX_LENGTH]
    return subject, text_body, html_body


def normalise_address(to: str) -> str:
    """The address as we store and send it; InvalidEmailAddress when it is malformed or the
    shop cannot deliver to it. Registration and compose_email both check addresses here.

    The rule: an internationalised domain is fine (it travels as punycode); a non-ASCII part
    before the @ needs SMTPUTF8 end to end, so it is accepted only when MAIL_SMTPUTF8 says the
    mail server offers it."""
    if not isinstance(to, str) or not to.strip():
        raise InvalidEmailAddress("An email address is required.")
    typed = to.strip()
    try:
        # test_environment: accept the reserved .test domain that staging and tests use; an
        # undeliverable address is refused by the mail server and goes dead, visible to admins.
        validated = validate_email(typed, check_deliverability=False, test_environment=True)
    except EmailNotValidError as error:
        raise InvalidEmailAddress(
            f"{typed!r} is not a valid email address: {error}",
            f"Enter a valid email address ({error}).",
        ) from None
    if validated.smtputf8 and not _accepts_smtputf8:
        letters = " ".join(sorted({char for char in validated.local_part if not char.isascii()}))
        raise InvalidEmailAddress(
            f"{typed!r} cannot be delivered: it needs SMTPUTF8 and MAIL_SMTPUTF8 is off",
            f"We cannot send email to an address with {letters} before the @ sign; "
            "please use another address.",
        )
    return validated.normalized


@dataclass(frozen=True)
class ComposedEmail:
    """An email rendered for a checked address, ready to queue."""

    to_address: str
    subject: str
    text_body: str
    html_body: str
    dedupe_key: str


def compose_email(
    to: str, template: str, context: Mapping[str, Any], dedupe_key: str
) -> ComposedEmail:
    """Check the address and key and render the email; InvalidEmailAddress names a bad address."""
    to_address = normalise_address(to)
    if not dedupe_key or len(dedupe_key) > DEDUPE_KEY_MAX_LENGTH:
        raise ValueError(f"dedupe_key must be 1 to {DEDUPE_KEY_MAX_LENGTH} characters")
    subject, text_body, html_body = render_email(template, context)
    return ComposedEmail(to_address, subject, text_body, html_body, dedupe_key)


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
        _wake_after_commit(session)
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
    _wake_after_commit(session)


def _wake_after_commit(session: AsyncSession) -> None:
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


@dataclass(frozen=True)
class OutboxBacklog:
    """Unsent work for /readyz and the admin page."""

    counts: dict[str, int]
    oldest_pending_age_seconds: int | None

    @property
    def backlog(self) -> int:
        return self.counts.get(OutboxStatus.PENDING, 0) + self.counts.get(OutboxStatus.SENDING, 0)


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
        _wake_after_commit(session)
    return retried


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
