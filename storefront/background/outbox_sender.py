"""The outbox sender: one asyncio task per app that drains due emails through the transport.

It opens its own sessions and passes ids and plain values between them, never ORM objects.
"""

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, fields
from datetime import datetime

from quart import Quart
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from storefront.config import Settings, app_settings
from storefront.db.engine import sessionmaker_for
from storefront.db.transactions import write_transaction
from storefront.lib.mail.message import DeliveryError
from storefront.lib.mail.transports import Transport, choose_transport
from storefront.models import utcnow
from storefront.models.outbox import OutboxStatus
from storefront.services.outbox.composing import accept_smtputf8_addresses, email_environment
from storefront.services.outbox.delivery import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_CLAIM_SECONDS,
    ClaimedEmail,
    claim_due_emails,
    mark_failed,
    mark_sent,
    release_claims,
    select_due_email_exists,
)
from storefront.services.outbox.queueing import register_wake_event, unregister_wake_event

log = logging.getLogger(__name__)

# Parallel SMTP connections per pass: a mail server answers each command in a round trip, so
# one connection leaves both ends idle most of the time.
DEFAULT_SEND_CONCURRENCY = 4
RECORD_EVERY = 10
RECORD_WITHIN_SECONDS = 0.1


@dataclass
class BatchResult:
    """What one drain pass did."""

    claimed: int = 0
    sent: int = 0
    retrying: int = 0
    dead: int = 0
    released: int = 0


async def send_due_batch(
    sessionmaker: async_sessionmaker[AsyncSession],
    transport: Transport,
    *,
    now: datetime | None = None,
    limit: int = DEFAULT_BATCH_SIZE,
    claim_seconds: int = DEFAULT_CLAIM_SECONDS,
    concurrency: int = DEFAULT_SEND_CONCURRENCY,
    stop: asyncio.Event | None = None,
) -> BatchResult:
    """Claim due rows, send them and record each outcome (attempts, backoff, dead, sent).

    Up to `concurrency` lanes each hold one transport batch (one SMTP connection) and take the
    next claimed row until none is left. `now` pins the clock (tests); `stop` set mid-batch
    lets the sends in flight finish and releases the rows not yet started."""

    def clock() -> datetime:
        return now if now is not None else utcnow()

    result = BatchResult()
    async with sessionmaker() as session:
        if not await select_due_email_exists(session, clock()):
            return result
        async with write_transaction(session):
            claimed = await claim_due_emails(session, clock(), limit, claim_seconds)
    result.claimed = len(claimed)
    if not claimed:
        return result
    # Stop early rather than keep sending on a claim that may expire meanwhile.
    send_deadline = time.monotonic() + claim_seconds / 2
    waiting = deque(claimed)
    unsent = {email.id for email in claimed}

    # Outcomes are written in groups (one transaction per RECORD_EVERY outcomes or per
    # RECORD_WITHIN_SECONDS): a transaction per email cost twice the CPU of sending it, on the
    # web worker's loop. Only a killed process can lose a group; those rows are sent again when
    # their claim expires (at least once, never lost).
    unrecorded: list[tuple[ClaimedEmail, str | DeliveryError]] = []
    write_lock = asyncio.Lock()
    last_write = time.monotonic()

    async def write_unrecorded() -> None:
        nonlocal last_write
        async with write_lock:
            if not unrecorded:
                return
            outcomes = unrecorded[:]
            unrecorded.clear()
            last_write = time.monotonic()
            await _write_outcomes(sessionmaker, outcomes, clock(), result)
            unsent.difference_update(email.id for email, _ in outcomes)

    async def record(email: ClaimedEmail, outcome: str | DeliveryError) -> None:
        unrecorded.append((email, outcome))
        if (
            len(unrecorded) >= RECORD_EVERY
            or time.monotonic() - last_write >= RECORD_WITHIN_SECONDS
        ):
            await write_unrecorded()

    async def lane() -> None:
        async with transport.batch() as mail_batch:
            while waiting:
                if (stop is not None and stop.is_set()) or time.monotonic() > send_deadline:
                    return
                email = waiting.popleft()
                try:
                    outcome: str | DeliveryError = await mail_batch.send(email.outgoing())
                except DeliveryError as error:
                    outcome = error
                except Exception as error:
                    # Whatever one email raises is that email's failure (retried, then dead),
                    # never the batch's: escaping would stop the other lanes, and the same row
                    # would come first again next pass.
                    log.exception("email %s failed unexpectedly", email.id)
                    outcome = DeliveryError(f"{type(error).__name__}: {error}")
                await record(email, outcome)

    try:
        async with asyncio.TaskGroup() as lanes:
            for _ in range(max(1, min(concurrency, len(claimed)))):
                lanes.create_task(lane())
    finally:
        # Also on cancellation or error: record what was sent, hand the rest back now rather
        # than when the claim expires.
        try:
            await write_unrecorded()
            if unsent:
                async with sessionmaker() as session, write_transaction(session):
                    result.released = await release_claims(session, sorted(unsent))
        except Exception:
            log.exception("outbox pass not fully recorded; its rows retry when claims expire")
    return result


async def _write_outcomes(
    sessionmaker: async_sessionmaker[AsyncSession],
    outcomes: list[tuple[ClaimedEmail, str | DeliveryError]],
    now: datetime,
    result: BatchResult,
) -> None:
    """Record several send outcomes in one write transaction."""
    sent_by_transport: dict[str, list[int]] = {}
    failed_statuses: list[tuple[ClaimedEmail, DeliveryError, str | None]] = []
    async with sessionmaker() as session, write_transaction(session):
        for email, outcome in outcomes:
            if isinstance(outcome, DeliveryError):
                status = await mark_failed(
                    session, email.id, str(outcome), permanent=outcome.permanent, now=now
                )
                failed_statuses.append((email, outcome, status))
            else:
                sent_by_transport.setdefault(outcome, []).append(email.id)
        for transport_name, email_ids in sent_by_transport.items():
            await mark_sent(session, email_ids, transport_name, now)
    result.sent += sum(len(email_ids) for email_ids in sent_by_transport.values())
    for email, error, status in failed_statuses:
        if status == OutboxStatus.DEAD:
            result.dead += 1
            log.error("email %s to %s is dead: %s", email.id, email.to_address, error)
        else:
            result.retrying += 1
            log.warning("email %s failed, will retry: %s", email.id, error)


async def drain_outbox(
    sessionmaker: async_sessionmaker[AsyncSession],
    transport: Transport,
    *,
    now: datetime | None = None,
    limit: int = DEFAULT_BATCH_SIZE,
    concurrency: int = DEFAULT_SEND_CONCURRENCY,
) -> BatchResult:
    """Send batches until nothing is due (tests and benchmarks)."""
    total = BatchResult()
    while True:
        result = await send_due_batch(
            sessionmaker,
            transport,
            now=now,
            limit=limit,
            concurrency=concurrency,
        )
        for field in fields(BatchResult):
            name = field.name
            setattr(total, name, getattr(total, name) + getattr(result, name))
        if result.claimed < limit:
            return total


class OutboxSender:
    """The app-lifetime task: drain due rows, then sleep until woken or the poll timer fires."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        transport: Transport,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        poll_seconds: float = 5.0,
        claim_seconds: int = DEFAULT_CLAIM_SECONDS,
        concurrency: int = DEFAULT_SEND_CONCURRENCY,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.transport = transport
        self.batch_size = batch_size
        self.poll_seconds = poll_seconds
        self.claim_seconds = claim_seconds
        self.concurrency = concurrency
        self.wake_event = asyncio.Event()
        self.stop_event = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        register_wake_event(self.wake_event)
        self.task = asyncio.create_task(self.run(), name="outbox-sender")

    async def run(self) -> None:
        while not self.stop_event.is_set():
            # Cleared before the pass, so a commit during the pass still wakes the next one.
            self.wake_event.clear()
            try:
                result = await send_due_batch(
                    self.sessionmaker,
                    self.transport,
                    limit=self.batch_size,
                    claim_seconds=self.claim_seconds,
                    concurrency=self.concurrency,
                    stop=self.stop_event,
                )
            except Exception:
                log.exception("outbox sender pass failed; trying again after the poll interval")
                result = BatchResult()
            if self.stop_event.is_set():
                break
            if result.claimed >= self.batch_size:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake_event.wait(), self.poll_seconds)

    async def stop(self, grace_seconds: float = 30.0) -> None:
        """Let the send in flight finish and release the rest; cancel after grace_seconds."""
        unregister_wake_event(self.wake_event)
        self.stop_event.set()
        self.wake_event.set()
        task, self.task = self.task, None
        if task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(task), grace_seconds)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def mail_transport(settings: Settings) -> Transport:
    """The transport the MAIL_* and SENDGRID_* settings choose."""
    return choose_transport(
        settings.mail_default_sender,
        timeout=float(settings.mail_timeout_seconds),
        smtp_server=settings.mail_server,
        smtp_port=settings.mail_port,
        use_ssl=settings.mail_use_ssl,
        use_starttls=settings.mail_use_tls,
        username=settings.mail_username,
        password=settings.mail_password,
        sendgrid_api_key=settings.sendgrid_api_key,
        sendgrid_base_url=settings.sendgrid_base_url,
    )


def sender_for(app: Quart, transport: Transport | None = None) -> OutboxSender:
    """An OutboxSender configured from the app's settings."""
    settings = app_settings(app)
    return OutboxSender(
        sessionmaker_for(app),
        transport or mail_transport(settings),
        batch_size=settings.outbox_batch_size,
        poll_seconds=float(settings.outbox_poll_seconds),
        claim_seconds=settings.outbox_claim_seconds,
        concurrency=settings.outbox_send_concurrency,
    )


@asynccontextmanager
async def serve_outbox_sender(app: Quart) -> AsyncIterator[None]:
    """Serving hook: run the sender task while the app serves (when OUTBOX_SENDER_ENABLED)."""
    settings = app_settings(app)
    email_environment.globals["shop_name"] = settings.shop_name
    accept_smtputf8_addresses(settings.mail_smtputf8)
    try:
        if not settings.outbox_sender_enabled:
            yield
            return
        sender = sender_for(app)
        app.extensions["outbox_sender"] = sender
        sender.start()
        log.info("outbox sender started (transport: %s)", sender.transport.name)
        try:
            yield
        finally:
            await sender.stop(float(app.config["BACKGROUND_TASK_SHUTDOWN_TIMEOUT"]))
            app.extensions.pop("outbox_sender", None)
    finally:
        accept_smtputf8_addresses(False)
