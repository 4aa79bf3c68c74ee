"""The outbox against a real aiosmtpd server: queue in the caller's transaction, claim, send,
retry with backoff, dead letters, concurrent senders and a sender killed mid-batch."""

import asyncio
import os
import signal
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from storefront import create_app
from storefront.background.outbox_sender import (
    DEFAULT_SEND_CONCURRENCY,
    RECORD_EVERY,
    drain_outbox,
    send_due_batch,
)
from storefront.db.engine import sessionmaker_for
from storefront.db.transactions import write_transaction
from storefront.lib.mail.transports import SendGridTransport, SmtpTransport, choose_transport
from storefront.models import Order, OrderLine, OutboxEmail, utcnow
from storefront.services.outbox.backlog import select_outbox_backlog
from storefront.services.outbox.composing import InvalidEmailAddress, compose_email
from storefront.services.outbox.delivery import (
    DEFAULT_CLAIM_SECONDS,
    claim_due_emails,
    retry_dead_emails,
)
from storefront.services.outbox.queueing import (
    queue_email,
    queue_emails,
    register_wake_event,
    unregister_wake_event,
)
from tests.fixtures_mail import smtp_config, wait_until
from tests.live import free_port

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SENDER = "CyberWorld Test <shop@cyberworld.test>"
T0 = datetime(2030, 1, 1, 12, 0, 0)


def smtp_transport(server, timeout: float = 5) -> SmtpTransport:
    return SmtpTransport("127.0.0.1", server.port, SENDER, timeout=timeout)


async def insert_order(app, user, number: str = "CW-000123") -> tuple[Order, list[OrderLine]]:
    async with sessionmaker_for(app)() as session, write_transaction(session):
        order = Order(
            number=number,
            user_id=user.id,
            email=user.email,
            status="paid",
            payment_method="wallet",
            subtotal_minor=25_000,
            discount_minor=2_500,
            total_minor=22_500,
            currency="GHS",
            coupon_code="TENOFF",
            phone="024 123 4567",
            delivery="address",
            address="12 Oxford Street, Osu, Accra",
        )
        session.add(order)
        await session.flush()
        lines = [
            OrderLine(
                order_id=order.id,
                name="Wireless Mouse",
                unit_price_minor=5_000,
                quantity=3,
                line_total_minor=15_000,
            ),
            OrderLine(
                order_id=order.id,
                name="USB-C Hub <4 ports>",
                unit_price_minor=10_000,
                quantity=1,
                line_total_minor=10_000,
            ),
        ]
        session.add_all(lines)
    return order, lines


async def queue_test_emails(app, count: int, prefix: str = "bulk") -> None:
    async with sessionmaker_for(app)() as session, write_transaction(session):
        for number in range(count):
            await queue_email(
                session,
                f"shopper{number}@example.com",
                "test_email",
                {"sent_by": "tests"},
                f"{prefix}:{number}",
            )


async def row_by_key(app, dedupe_key: str) -> OutboxEmail:
    async with sessionmaker_for(app)() as session:
        row = await session.scalar(select(OutboxEmail).where(OutboxEmail.dedupe_key == dedupe_key))
    assert row is not None
    return row


async def status_counts(app) -> dict[str, int]:
    async with sessionmaker_for(app)() as session:
        rows = await session.execute(
            select(OutboxEmail.status, func.count()).group_by(OutboxEmail.status)
        )
        return dict(rows.all())


# Queueing


@pytest.mark.both_databases
async def test_order_emails_arrive_with_recipient_subject_text_and_html(
    app, make_user, smtp_server
):
    user = await make_user(email="ama@example.com")
    order, lines = await insert_order(app, user)
    context = {"order": order, "lines": lines, "order_url": "https://shop.test/orders/CW-000123"}
    async with sessionmaker_for(app)() as session, write_transaction(session):
        await queue_email(session, order.email, "order_confirmation", context, "order:1:customer")
        await queue_email(session, "admin@shop.test", "admin_new_order", context, "order:1:admin")

    result = await drain_outbox(sessionmaker_for(app), smtp_transport(smtp_server))

    assert result.sent == 2
    received = {item.rcpt_tos[0]: item for item in await smtp_server.wait_for(2)}
    customer, admin = received["ama@example.com"], received["admin@shop.test"]
    assert customer.message["Subject"] == "Your CyberWorld Storefront order CW-000123"
    assert admin.message["Subject"] == "New order CW-000123: GH₵ 225.00"
    for item in (customer, admin):
        assert item.message.get_content_type() == "multipart/alternative"
        for body in (item.text, item.html):
            assert "CW-000123" in body
            assert "Wireless Mouse" in body
            assert "GH₵ 250.00" in body  # subtotal
            assert "GH₵ 25.00" in body and "TENOFF" in body  # discount
            assert "GH₵ 225.00" in body  # total
            assert "12 Oxford Street, Osu, Accra" in body
            assert "https://shop.test/orders/CW-000123" in body
    assert "USB-C Hub <4 ports>" in customer.text
    assert "USB-C Hub &lt;4 ports&gt;" in customer.html  # HTML part is escaped
    assert "<4 ports>" not in customer.html
    assert "ama@example.com" in admin.text
    assert await status_counts(app) == {"sent": 2}


async def test_queue_email_renders_every_template(app, session):
    contexts = {
        "wallet_topup_receipt": {
            "user": {"name": "Ama"},
            "amount_minor": 5_000,
            "balance_after_minor": 12_550,
            "reference": "TOPUP-1",
        },
        "password_reset": {
            "user": {"name": "Ama"},
            "reset_url": "https://shop.test/password/reset/abc",
            "expires_minutes": 30,
        },
        "payment_problem": {
            "payment": {
                "reference": "PS-9",
                "purpose": "order",
                "amount_minor": 22_500,
                "currency": "GHS",
                "status": "failed",
                "user_id": 7,
            },
            "reason": "Amount paid does not match the order",
            "order": None,
        },
        "test_email": {"sent_by": "boss@shop.test"},
    }
    async with write_transaction(session):
        rows = {
            template: await queue_email(session, "ops@shop.test", template, context, template)
            for template, context in contexts.items()
        }
    assert rows["wallet_topup_receipt"].subject == "Wallet top-up of GH₵ 50.00 received"
    assert "GH₵ 125.50" in rows["wallet_topup_receipt"].text_body
    assert "https://shop.test/password/reset/abc" in rows["password_reset"].html_body
    assert "30 minutes" in rows["password_reset"].text_body
    assert rows["payment_problem"].subject == "Payment problem: PS-9"
    assert "does not match" in rows["payment_problem"].html_body
    assert "boss@shop.test" in rows["test_email"].text_body
    for row in rows.values():
        assert row.status == "pending" and row.attempts == 0
        assert row.html_body.lstrip().startswith("<!doctype html>")


@pytest.mark.both_databases
async def test_repeated_dedupe_key_is_a_no_op(app, session):
    async with write_transaction(session):
        first = await queue_email(session, "a@example.com", "test_email", {"sent_by": "x"}, "k")
        again = await queue_email(session, "b@example.com", "test_email", {"sent_by": "y"}, "k")
    async with write_transaction(session):
        later = await queue_email(session, "c@example.com", "test_email", {"sent_by": "z"}, "k")
    assert first is not None and again is None and later is None
    rows = (await session.scalars(select(OutboxEmail))).all()
    assert [(row.to_address, row.dedupe_key) for row in rows] == [("a@example.com", "k")]


@pytest.mark.both_databases
async def test_queue_emails_inserts_them_together_and_skips_repeated_keys(app, session):
    async with write_transaction(session):
        await queue_email(session, "a@example.com", "test_email", {"sent_by": "x"}, "k1")
    emails = [
        compose_email(f"{name}@Example.COM", "test_email", {"sent_by": name}, key)
        for name, key in (("b", "k1"), ("c", "k2"), ("d", "k3"))
    ]
    async with write_transaction(session):
        await queue_emails(session, emails)
        await queue_emails(session, [])
    rows = (await session.scalars(select(OutboxEmail).order_by(OutboxEmail.id))).all()
    assert [(row.to_address, row.dedupe_key) for row in rows] == [
        ("a@example.com", "k1"),
        ("c@example.com", "k2"),
        ("d@example.com", "k3"),
    ]
    for row in rows:
        assert (row.status, row.attempts, row.last_error) == ("pending", 0, "")
        assert row.subject == "Test email from CyberWorld Storefront"
        assert row.next_attempt_at == row.created_at
    assert "requested by d." in rows[2].text_body


def test_compose_email_refuses_a_bad_address_or_key():
    with pytest.raises(InvalidEmailAddress):
        compose_email("not-an-email", "test_email", {"sent_by": "x"}, "key")
    with pytest.raises(ValueError, match="dedupe_key"):
        compose_email("a@example.com", "test_email", {"sent_by": "x"}, "")


async def test_queue_emails_wakes_senders_after_commit_only(app, session):
    wake = asyncio.Event()
    register_wake_event(wake)
    try:

        class CheckoutFailed(Exception):
            pass

        email = compose_email("a@example.com", "test_email", {"sent_by": "x"}, "wake-1")
        with pytest.raises(CheckoutFailed):
            async with write_transaction(session):
                await queue_emails(session, [email])
                raise CheckoutFailed
        assert not wake.is_set()
        assert await status_counts(app) == {}
        async with write_transaction(session):
            await queue_emails(session, [email])
            assert not wake.is_set()
        assert wake.is_set()
        assert await status_counts(app) == {"pending": 1}
    finally:
        unregister_wake_event(wake)


@pytest.mark.both_databases
async def test_concurrent_same_key_queues_once(app):
    async def queue_once(number: int) -> bool:
        async with sessionmaker_for(app)() as own, write_transaction(own):
            row = await queue_email(
                own, f"x{number}@example.com", "test_email", {"sent_by": "x"}, "same-key"
            )
        return row is not None

    assert sum(await asyncio.gather(*(queue_once(n) for n in range(8)))) == 1
    assert await status_counts(app) == {"pending": 1}


@pytest.mark.both_databases
async def test_email_rolls_back_with_the_callers_transaction(app, make_user):
    user = await make_user()

    class CheckoutFailed(Exception):
        pass

    with pytest.raises(CheckoutFailed):
        async with sessionmaker_for(app)() as session, write_transaction(session):
            await queue_email(session, user.email, "test_email", {"sent_by": "x"}, "rolled-back")
            raise CheckoutFailed
    assert await status_counts(app) == {}


@pytest.mark.parametrize("address", ["", "not-an-email", "two@@example.com", "a@b", "x" * 300])
async def test_invalid_address_is_refused_before_anything_commits(app, make_user, address):
    user = await make_user()
    with pytest.raises(InvalidEmailAddress) as refused:
        async with sessionmaker_for(app)() as session, write_transaction(session):
            session.add(
                Order(
                    number="CW-000999",
                    user_id=user.id,
                    email=user.email,
                    payment_method="wallet",
                    subtotal_minor=100,
                    total_minor=100,
                )
            )
            await session.flush()
            await queue_email(session, address, "test_email", {"sent_by": "x"}, "bad-address")
    assert str(refused.value)
    async with sessionmaker_for(app)() as session:
        assert await session.scalar(select(func.count()).select_from(Order)) == 0
    assert await status_counts(app) == {}


async def test_subject_cannot_inject_headers(app, session):
    async with write_transaction(session):
        row = await queue_email(
            session,
            "ops@shop.test",
            "payment_problem",
            {
                "payment": {
                    "reference": "X\r\nBcc: victim@example.com",
                    "purpose": "order",
                    "amount_minor": 1,
                    "currency": "GHS",
                    "status": "failed",
                    "user_id": 1,
                },
                "reason": "r",
                "order": None,
            },
            "inject",
        )
    assert "\n" not in row.subject and "\r" not in row.subject


# Retries, backoff and dead letters


@pytest.mark.both_databases
async def test_smtp_down_then_back_delivers_with_attempts_and_backoff(app, smtp_server):
    await queue_test_emails(app, 1, prefix="down")
    smtp_server.stop()
    sessions = sessionmaker_for(app)
    transport = smtp_transport(smtp_server, timeout=2)

    first = await send_due_batch(sessions, transport, now=T0)
    row = await row_by_key(app, "down:0")
    assert (first.claimed, first.retrying) == (1, 1)
    assert (row.status, row.attempts) == ("pending", 1)
    assert row.next_attempt_at == T0 + timedelta(minutes=1)
    assert "SMTP error" in row.last_error and row.claimed_until is None

    early = await send_due_batch(sessions, transport, now=T0 + timedelta(seconds=59))
    assert early.claimed == 0  # backoff respected

    smtp_server.start()
    later = await send_due_batch(sessions, transport, now=T0 + timedelta(minutes=1))
    assert later.sent == 1
    row = await row_by_key(app, "down:0")
    assert (row.status, row.attempts, row.transport) == ("sent", 2, "smtp")
    assert row.sent_at == T0 + timedelta(minutes=1)
    assert len(await smtp_server.wait_for(1)) == 1


async def test_permanent_rejection_is_dead_at_once(app, smtp_server):
    smtp_server.handler.refused_recipients["shopper0@example.com"] = "550 5.1.1 No such user"
    await queue_test_emails(app, 2, prefix="reject")

    result = await send_due_batch(sessionmaker_for(app), smtp_transport(smtp_server), now=T0)

    assert (result.dead, result.sent) == (1, 1)
    rejected = await row_by_key(app, "reject:0")
    assert (rejected.status, rejected.attempts) == ("dead", 1)
    assert "550" in rejected.last_error
    assert [item.rcpt_tos for item in await smtp_server.wait_for(1)] == [["shopper1@example.com"]]


async def test_flaky_server_delivers_after_retries(app, smtp_server):
    smtp_server.handler.transient_failures = 2
    await queue_test_emails(app, 1, prefix="flaky")
    sessions, transport = sessionmaker_for(app), smtp_transport(smtp_server)

    await send_due_batch(sessions, transport, now=T0)
    await send_due_batch(sessions, transport, now=T0 + timedelta(minutes=1))
    row = await row_by_key(app, "flaky:0")
    assert (row.status, row.attempts) == ("pending", 2)
    assert row.next_attempt_at == T0 + timedelta(minutes=3)
    assert "451" in row.last_error
    await send_due_batch(sessions, transport, now=T0 + timedelta(minutes=3))

    row = await row_by_key(app, "flaky:0")
    assert (row.status, row.attempts) == ("sent", 3)
    assert smtp_server.handler.attempts == 3
    assert len(await smtp_server.wait_for(1)) == 1


@pytest.mark.both_databases
async def test_five_failures_make_a_row_dead_with_backoff_1_2_4_8(app):
    await queue_test_emails(app, 1, prefix="dying")
    transport = SmtpTransport("127.0.0.1", free_port(), SENDER, timeout=2)
    sessions = sessionmaker_for(app)
    now, waits = T0, []
    for _ in range(5):
        assert (await send_due_batch(sessions, transport, now=now)).claimed == 1
        row = await row_by_key(app, "dying:0")
        if row.status == "pending":
            waits.append(row.next_attempt_at - now)
            # Nothing is due until the wait is over.
            assert (await send_due_batch(sessions, transport, now=now)).claimed == 0
            now = row.next_attempt_at
    assert waits == [timedelta(minutes=minutes) for minutes in (1, 2, 4, 8)]
    assert (row.status, row.attempts) == ("dead", 5)
    assert "SMTP error" in row.last_error
    later = await send_due_batch(sessions, transport, now=now + timedelta(days=1))
    assert later.claimed == 0


@pytest.mark.both_databases
async def test_retry_dead_puts_rows_back_with_fresh_attempts(app, session):
    await queue_test_emails(app, 3, prefix="dead")
    async with write_transaction(session):
        await session.execute(
            OutboxEmail.__table__.update()
            .where(OutboxEmail.dedupe_key.in_(["dead:0", "dead:1"]))
            .values(status="dead", attempts=5, last_error="550 gone")
        )
    first = await row_by_key(app, "dead:0")
    async with write_transaction(session):
        assert await retry_dead_emails(session, T0, email_id=first.id) == 1
    assert (await status_counts(app)) == {"pending": 2, "dead": 1}
    async with write_transaction(session):
        assert await retry_dead_emails(session, T0) == 1
    async with write_transaction(session):
        assert await retry_dead_emails(session, T0) == 0
    row = await row_by_key(app, "dead:0")
    assert (row.status, row.attempts, row.next_attempt_at) == ("pending", 0, T0)
    assert row.last_error == "550 gone"  # kept for the admin until the next attempt


# Claims and concurrent senders


@pytest.mark.both_databases
async def test_concurrent_claims_never_overlap(app):
    await queue_test_emails(app, 60, prefix="claim")

    async def claim() -> list[int]:
        async with sessionmaker_for(app)() as own, write_transaction(own):
            return [email.id for email in await claim_due_emails(own, utcnow(), limit=7)]

    claimed = [
        email_id for ids in await asyncio.gather(*(claim() for _ in range(12))) for email_id in ids
    ]
    assert len(claimed) == len(set(claimed)) == 60
    assert await status_counts(app) == {"sending": 60}


@pytest.mark.both_databases
async def test_two_app_senders_deliver_200_emails_exactly_once(database_url, smtp_server):
    config = {
        "DATABASE_URL": database_url,
        "SECRET_KEY": "test-secret-key-that-is-long-enough-0123456789",
        "OUTBOX_SENDER_ENABLED": True,
        "OUTBOX_BATCH_SIZE": 10,
        "OUTBOX_POLL_SECONDS": 1,
        "RECONCILER_ENABLED": False,
        "SENDGRID_API_KEY": "",
        **smtp_config(smtp_server),
    }
    from storefront.db.engine import make_engine
    from storefront.models import Base

    engine = make_engine(database_url)
    async with engine.begin() as connection:
        await connection.run_sync(Base.metadata.create_all)
    await engine.dispose()
    first_app, second_app = create_app(config), create_app(config)
    async with first_app.test_app(), second_app.test_app():
        senders = [one.extensions["outbox_sender"] for one in (first_app, second_app)]
        await queue_test_emails(first_app, 200, prefix="pair")
        await smtp_server.wait_for(200, within_seconds=60)
        await asyncio.sleep(0.5)  # a duplicate would arrive now
        counts = await status_counts(first_app)
        transports = {sender.transport.name for sender in senders}
    message_ids = smtp_server.handler.message_ids()
    assert len(message_ids) == len(set(message_ids)) == 200
    assert counts == {"sent": 200}
    assert transports == {"smtp"}
    assert all(sender.task is None for sender in senders)


@pytest.mark.both_databases
async def test_sender_killed_mid_batch_loses_nothing(app, database_url, smtp_server):
    await queue_test_emails(app, 20, prefix="killed")
    smtp_server.handler.data_delay_seconds = 0.1
    worker = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        KILLABLE_WORKER,
        database_url,
        str(smtp_server.port),
        cwd=PROJECT_ROOT,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
    )
    try:
        await wait_until(lambda: len(smtp_server.received) >= 3, within_seconds=30)
    finally:
        worker.send_signal(signal.SIGKILL)
        await worker.wait()
    smtp_server.handler.data_delay_seconds = 0
    stranded = await status_counts(app)
    assert stranded.get("sending", 0) > 0  # claimed by the dead worker

    sessions, transport = sessionmaker_for(app), smtp_transport(smtp_server)
    # A restart honours the dead worker's claim until it expires...
    await drain_outbox(sessions, transport)
    assert (await status_counts(app)).get("sending") == stranded["sending"]
    # ...then takes the rows over.
    after_expiry = utcnow() + timedelta(seconds=DEFAULT_CLAIM_SECONDS + 1)
    await drain_outbox(sessions, transport, now=after_expiry)

    assert await status_counts(app) == {"sent": 20}
    message_ids = smtp_server.handler.message_ids()
    recipients = {item.rcpt_tos[0] for item in smtp_server.received}
    assert recipients == {f"shopper{number}@example.com" for number in range(20)}
    # Only what was sent but not yet recorded at the kill goes out twice.
    assert len(message_ids) - len(set(message_ids)) <= RECORD_EVERY + DEFAULT_SEND_CONCURRENCY


KILLABLE_WORKER = """
import asyncio, sys
from storefront.db.engine import make_engine, make_sessionmaker
from storefront.lib.mail.transports import SmtpTransport
from storefront.background.outbox_sender import send_due_batch

async def main(database_url, port):
    engine = make_engine(database_url)
    transport = SmtpTransport("127.0.0.1", int(port), "shop@cyberworld.test", timeout=5)
    await send_due_batch(make_sessionmaker(engine), transport, limit=50)

asyncio.run(main(*sys.argv[1:]))
"""


# The sender task


@pytest.fixture(name="app_overrides")
def _app_overrides(request, smtp_server) -> dict:
    """Point the app at the test SMTP server; a test marked sender_enabled runs the task."""
    overrides = smtp_config(smtp_server, OUTBOX_POLL_SECONDS=60, OUTBOX_BATCH_SIZE=5)
    overrides["OUTBOX_SENDER_ENABLED"] = (
        request.node.get_closest_marker("sender_enabled") is not None
    )
    return overrides


@pytest.mark.sender_enabled
async def test_sender_task_wakes_on_commit_not_on_the_timer(app, smtp_server):
    sender = app.extensions["outbox_sender"]
    assert sender.poll_seconds == 60
    await asyncio.sleep(0.1)  # let it finish its first (empty) pass and go to sleep
    await queue_test_emails(app, 3, prefix="wake")
    received = await smtp_server.wait_for(3, within_seconds=5)
    assert {item.message["Subject"] for item in received} == {
        "Test email from CyberWorld Storefront"
    }
    await wait_until(_all_sent(app, 3), within_seconds=5)


def _all_sent(app, count: int):
    async def check() -> bool:
        return await status_counts(app) == {"sent": count}

    return check


@pytest.mark.sender_enabled
async def test_dead_rows_retried_wake_the_sender(app, smtp_server, session):
    smtp_server.handler.refused_recipients["shopper0@example.com"] = "550 5.1.1 No such user"
    await queue_test_emails(app, 1, prefix="revive")
    await wait_until(lambda: _status_is(app, "revive:0", "dead"), within_seconds=5)
    smtp_server.handler.refused_recipients.clear()
    async with write_transaction(session):
        assert await retry_dead_emails(session, utcnow()) == 1
    await smtp_server.wait_for(1, within_seconds=5)
    await wait_until(lambda: _status_is(app, "revive:0", "sent"), within_seconds=5)


async def _status_is(app, dedupe_key: str, status: str) -> bool:
    return (await row_by_key(app, dedupe_key)).status == status


async def test_stopping_finishes_the_send_in_flight_and_releases_the_rest(
    database_url, smtp_server
):
    from storefront.db.engine import make_engine
    from storefront.models import Base

    engine = make_engine(database_url)
    async with engine.begin() as connection:
        await connection.run_sync(Base.metadata.create_all)
    await engine.dispose()
    smtp_server.handler.data_delay_seconds = 0.3
    stopping_app = create_app(
        {
            "DATABASE_URL": database_url,
            "SECRET_KEY": "test-secret-key-that-is-long-enough-0123456789",
            "OUTBOX_SENDER_ENABLED": True,
            "OUTBOX_BATCH_SIZE": 10,
            "RECONCILER_ENABLED": False,
            **smtp_config(smtp_server),
        }
    )
    async with stopping_app.test_app():
        sender = stopping_app.extensions["outbox_sender"]
        task = sender.task
        await queue_test_emails(stopping_app, 10, prefix="stop")
        await smtp_server.wait_for(1, within_seconds=5)
    # Shut down: the task is finished, not pending; nothing is left claimed.
    assert task.done() and not task.cancelled()
    assert not [pending for pending in asyncio.all_tasks() if pending.get_name() == "outbox-sender"]
    engine = make_engine(database_url)
    async with engine.connect() as connection:
        rows = (
            await connection.execute(select(OutboxEmail.status, OutboxEmail.claimed_until))
        ).all()
    await engine.dispose()
    statuses = [status for status, _ in rows]
    assert "sending" not in statuses
    assert statuses.count("sent") == len(smtp_server.received) < 10
    assert statuses.count("pending") == 10 - statuses.count("sent")
    assert all(claimed_until is None for _, claimed_until in rows)


# SendGrid fallback through the configured transport


async def test_sendgrid_fallback_when_smtp_fails(app, fake_sendgrid):
    await queue_test_emails(app, 1, prefix="fallback")
    transport = choose_transport(
        SENDER,
        timeout=2,
        smtp_server="127.0.0.1",
        smtp_port=free_port(),
        sendgrid_api_key="SG.fallback",
        sendgrid_base_url=fake_sendgrid.base_url,
    )

    result = await send_due_batch(sessionmaker_for(app), transport, now=T0)

    assert result.sent == 1
    row = await row_by_key(app, "fallback:0")
    assert (row.status, row.transport, row.attempts) == ("sent", "sendgrid", 1)
    [request] = fake_sendgrid.requests
    assert request.headers["Authorization"] == "Bearer SG.fallback"
    assert request.body["personalizations"] == [{"to": [{"email": "shopper0@example.com"}]}]
    assert request.body["subject"] == "Test email from CyberWorld Storefront"
    assert [part["type"] for part in request.body["content"]] == ["text/plain", "text/html"]
    assert "requested by tests" in request.body["content"][0]["value"]
    assert request.body["content"][1]["value"] == row.html_body
    assert request.body["custom_args"]["outbox_reference"].startswith(f"outbox.{row.id}.")


async def test_sendgrid_only_when_no_smtp(app, fake_sendgrid):
    transport = choose_transport(
        "shop@localhost", sendgrid_api_key="SG.only", sendgrid_base_url=fake_sendgrid.base_url
    )
    assert isinstance(transport, SendGridTransport)
    await queue_test_emails(app, 2, prefix="sg")
    assert (await send_due_batch(sessionmaker_for(app), transport)).sent == 2
    assert len(fake_sendgrid.requests) == 2


# Backlog for /readyz


async def test_backlog_counts_and_oldest_pending_age(app, session):
    assert (await select_outbox_backlog(session, T0)).oldest_pending_age_seconds is None
    await session.rollback()
    await queue_test_emails(app, 3, prefix="age")
    now = utcnow() + timedelta(seconds=5)
    async with write_transaction(session):
        await session.execute(
            OutboxEmail.__table__.update()
            .where(OutboxEmail.dedupe_key == "age:0")
            .values(created_at=now - timedelta(seconds=90))
        )
        await session.execute(
            OutboxEmail.__table__.update()
            .where(OutboxEmail.dedupe_key == "age:1")
            .values(status="dead", created_at=now - timedelta(hours=5))
        )
    backlog = await select_outbox_backlog(session, now)
    assert backlog.counts == {"pending": 2, "sending": 0, "dead": 1}  # sent not counted
    with_sent = await select_outbox_backlog(session, now, count_sent=True)
    assert with_sent.counts == {"pending": 2, "sending": 0, "sent": 0, "dead": 1}
    assert backlog.backlog == 2
    assert backlog.oldest_pending_age_seconds == 90
