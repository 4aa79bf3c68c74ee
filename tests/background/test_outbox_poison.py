"""Poison messages: one email that cannot be built or sent fails alone (retry with backoff,
then dead, its error recorded) and never stops the emails queued behind it."""

from contextlib import asynccontextmanager
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from storefront.background.outbox_sender import drain_outbox
from storefront.db.engine import sessionmaker_for
from storefront.db.transactions import write_transaction
from storefront.lib.mail.message import OutgoingEmail
from storefront.lib.mail.transports import SmtpTransport
from storefront.models import OutboxEmail
from storefront.services.outbox.queueing import queue_email
from tests.fixtures_mail import smtp_config, wait_until

SENDER = "CyberWorld Test <shop@cyberworld.test>"
T0 = datetime(2030, 1, 1, 12, 0, 0)
POISON = "rénée@example.com"
GOOD_COUNT = 20


async def insert_poison_row(app, to_address: str, next_attempt_at: datetime) -> int:
    """A row as an older release (or a MAIL_SMTPUTF8 shop) queued it: due before the rest."""
    async with sessionmaker_for(app)() as session, write_transaction(session):
        row = OutboxEmail(
            to_address=to_address,
            subject="Your receipt",
            text_body="Akwaaba\n",
            html_body="<p>Akwaaba</p>",
            status="pending",
            attempts=0,
            next_attempt_at=next_attempt_at,
            dedupe_key=f"poison:{to_address}",
        )
        session.add(row)
        await session.flush()
        return row.id


async def queue_good_emails(app, count: int = GOOD_COUNT) -> set[str]:
    addresses = {f"shopper{number}@example.com" for number in range(count)}
    async with sessionmaker_for(app)() as session, write_transaction(session):
        for address in sorted(addresses):
            await queue_email(session, address, "test_email", {"sent_by": "tests"}, address)
    return addresses


async def read_row(app, row_id: int) -> OutboxEmail:
    async with sessionmaker_for(app)() as session:
        row = await session.scalar(select(OutboxEmail).where(OutboxEmail.id == row_id))
    assert row is not None
    return row


async def drain_until_dead(app, transport, row_id: int) -> list[timedelta]:
    """Retry the poison row each time it is due; return the waits it was given."""
    now, waits = T0, []
    for _ in range(10):
        row = await read_row(app, row_id)
        if row.status != "pending":
            break
        waits.append(row.next_attempt_at - now)
        now = row.next_attempt_at
        await drain_outbox(sessionmaker_for(app), transport, now=now)
    return waits


@pytest.mark.both_databases
async def test_one_non_ascii_address_does_not_stop_the_20_emails_behind_it(app, ascii_smtp_server):
    poison_id = await insert_poison_row(app, POISON, T0 - timedelta(minutes=1))
    good = await queue_good_emails(app)
    transport = SmtpTransport("127.0.0.1", ascii_smtp_server.port, SENDER, timeout=5)

    result = await drain_outbox(sessionmaker_for(app), transport, now=T0)

    assert (result.sent, result.retrying, result.dead) == (GOOD_COUNT, 1, 0)
    received = await ascii_smtp_server.wait_for(GOOD_COUNT)
    assert sorted(rcpt for item in received for rcpt in item.rcpt_tos) == sorted(good)
    row = await read_row(app, poison_id)
    assert (row.status, row.attempts) == ("pending", 1)
    assert "SMTPUTF8" in row.last_error
    assert row.next_attempt_at == T0 + timedelta(minutes=1)

    waits = await drain_until_dead(app, transport, poison_id)
    row = await read_row(app, poison_id)
    assert (row.status, row.attempts) == ("dead", 5)
    assert waits == [timedelta(minutes=minutes) for minutes in (1, 2, 4, 8)]
    assert "SMTPUTF8" in row.last_error
    assert len(ascii_smtp_server.received) == GOOD_COUNT  # nothing sent twice


@pytest.mark.both_databases
async def test_an_address_smtp_cannot_carry_is_dead_at_once_and_the_rest_go(app, ascii_smtp_server):
    # A header-injecting address that slipped past validation: never written into a header.
    poison_id = await insert_poison_row(
        app, "ama@example.com\r\nBcc: victim@example.com", T0 - timedelta(minutes=1)
    )
    good = await queue_good_emails(app)
    transport = SmtpTransport("127.0.0.1", ascii_smtp_server.port, SENDER, timeout=5)

    result = await drain_outbox(sessionmaker_for(app), transport, now=T0)

    assert (result.sent, result.dead) == (GOOD_COUNT, 1)
    received = await ascii_smtp_server.wait_for(GOOD_COUNT)
    assert sorted(rcpt for item in received for rcpt in item.rcpt_tos) == sorted(good)
    assert all("victim" not in str(item.message) for item in received)
    row = await read_row(app, poison_id)
    assert (row.status, row.attempts) == ("dead", 1)
    assert "cannot be sent" in row.last_error


class BrokenForOneAddress:
    """A transport whose batch raises an unexpected error (not a DeliveryError) for one
    address, as a bug in a transport or a library would; the rest goes through real SMTP."""

    def __init__(self, transport: SmtpTransport, broken_address: str) -> None:
        self.transport = transport
        self.broken_address = broken_address
        self.name = transport.name

    @asynccontextmanager
    async def batch(self):
        async with self.transport.batch() as smtp_batch:
            yield _BrokenBatch(smtp_batch, self.broken_address)


class _BrokenBatch:
    def __init__(self, smtp_batch, broken_address: str) -> None:
        self.smtp_batch = smtp_batch
        self.broken_address = broken_address

    async def send(self, email: OutgoingEmail) -> str:
        if email.to_address == self.broken_address:
            raise RuntimeError("transport bug\x00")  # NUL: PostgreSQL text refuses it
        return await self.smtp_batch.send(email)


@pytest.mark.both_databases
async def test_any_unexpected_error_is_that_emails_failure_not_the_batchs(app, ascii_smtp_server):
    good = await queue_good_emails(app)
    broken = "shopper0@example.com"
    transport = BrokenForOneAddress(
        SmtpTransport("127.0.0.1", ascii_smtp_server.port, SENDER, timeout=5), broken
    )

    result = await drain_outbox(sessionmaker_for(app), transport, now=T0)

    assert (result.sent, result.retrying) == (GOOD_COUNT - 1, 1)
    received = await ascii_smtp_server.wait_for(GOOD_COUNT - 1)
    assert {rcpt for item in received for rcpt in item.rcpt_tos} == good - {broken}
    async with sessionmaker_for(app)() as session:
        row = await session.scalar(select(OutboxEmail).where(OutboxEmail.dedupe_key == broken))
    assert row is not None
    assert (row.status, row.attempts) == ("pending", 1)
    assert "RuntimeError: transport bug" in row.last_error


@pytest.fixture(name="app_overrides")
def _app_overrides(request, ascii_smtp_server) -> dict:
    overrides = smtp_config(ascii_smtp_server, OUTBOX_POLL_SECONDS=60, OUTBOX_BATCH_SIZE=50)
    overrides["OUTBOX_SENDER_ENABLED"] = (
        request.node.get_closest_marker("sender_enabled") is not None
    )
    return overrides


@pytest.mark.sender_enabled
async def test_the_sender_task_delivers_everything_queued_behind_a_poison_email(
    app, ascii_smtp_server
):
    poison_id = await insert_poison_row(app, POISON, datetime(2000, 1, 1))
    good = await queue_good_emails(app)  # the commit wakes the sender task

    received = await ascii_smtp_server.wait_for(GOOD_COUNT, within_seconds=10)
    assert {rcpt for item in received for rcpt in item.rcpt_tos} == good

    async def poison_failed_once() -> bool:
        row = await read_row(app, poison_id)
        return (row.status, row.attempts) == ("pending", 1)

    await wait_until(poison_failed_once, within_seconds=5)
    assert "SMTPUTF8" in (await read_row(app, poison_id)).last_error
