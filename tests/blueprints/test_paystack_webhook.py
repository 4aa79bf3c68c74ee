"""POST /paystack/webhook: the signature check, storing each event once, settling in the
background, and a charge reported after its payment was closed."""

import json
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from storefront.background.paystack_serving import paystack_client_for
from storefront.config import app_settings
from storefront.db.engine import sessionmaker_for
from storefront.models import WalletEntry, WebhookEvent, utcnow
from storefront.services.payments.reconciliation import reconcile_once
from storefront.services.payments.settings import payment_settings
from tests.conftest import wallet_of
from tests.fake_paystack import FakePaystack
from tests.fixtures_paystack import (
    count_rows,
    drain_background_tasks,
    paystack_overrides,
    queued_emails,
    read_order,
    read_payment,
)

ADMIN_EMAIL = "admin@example.com"


@pytest.fixture(name="extra_overrides")
def _extra_overrides() -> dict[str, object]:
    """Parametrize this to change one test's config on top of the fake's."""
    return {}


@pytest.fixture(name="app_overrides")
def _app_overrides(
    fake_paystack: FakePaystack, extra_overrides: dict[str, object]
) -> dict[str, object]:
    return paystack_overrides(
        fake_paystack, ADMIN_EMAIL=ADMIN_EMAIL, RATELIMIT_ENABLED=False, **extra_overrides
    )


@pytest.mark.parametrize("tampering", ["missing", "wrong", "truncated", "altered_body", "empty"])
async def test_webhook_with_a_bad_signature_is_refused_and_changes_nothing(
    app, client, fake_paystack, start_order_payment, snapshot, tampering
):
    started = await start_order_payment()
    fake_paystack.mark_paid(started.reference)
    body = fake_paystack.webhook_body(started.reference)
    signature = fake_paystack.sign(body)
    headers = {"Content-Type": "application/json", "x-paystack-signature": signature}
    if tampering == "missing":
        del headers["x-paystack-signature"]
    elif tampering == "wrong":
        headers["x-paystack-signature"] = fake_paystack.sign(b"something else")
    elif tampering == "truncated":
        headers["x-paystack-signature"] = signature[:64]
    elif tampering == "empty":
        headers["x-paystack-signature"] = ""
    else:
        body = body.replace(b'"amount":18000', b'"amount":18001')
    before = await snapshot()
    verifies = len(fake_paystack.api_requests("/transaction/verify/"))

    answer = await client.post("/paystack/webhook", data=body, headers=headers)
    await drain_background_tasks(app)

    assert answer.status_code == 401
    assert await snapshot() == before
    assert await count_rows(app, events=select(func.count()).select_from(WebhookEvent)) == {
        "events": 0
    }
    assert (await read_payment(app, started.reference)).status == "pending"
    assert len(fake_paystack.api_requests("/transaction/verify/")) == verifies


async def test_webhook_alone_settles_the_order(app, client, fake_paystack, start_order_payment):
    started = await start_order_payment()
    fake_paystack.mark_paid(started.reference)

    answer = await fake_paystack.deliver_webhook(client, started.reference)
    assert answer.status_code == 200
    await drain_background_tasks(app)

    assert (await read_order(app, started.order_number)).status == "paid"
    assert len(await queued_emails(app)) == 2


async def test_webhook_answers_200_even_when_paystack_verify_fails(
    app, client, fake_paystack, start_order_payment
):
    started = await start_order_payment()
    fake_paystack.mark_paid(started.reference)
    fake_paystack.fail_next("server_error", "/transaction/verify/")

    answer = await fake_paystack.deliver_webhook(client, started.reference)
    await drain_background_tasks(app)

    assert answer.status_code == 200
    assert (await read_payment(app, started.reference)).status == "pending"
    # Paystack's retry (or the reconciler) finishes it later.
    await fake_paystack.deliver_webhook(client, started.reference)
    await drain_background_tasks(app)
    assert (await read_order(app, started.order_number)).status == "paid"


async def test_unknown_references_and_other_events_are_stored_and_acknowledged(
    app, client, fake_paystack, snapshot
):
    before = await snapshot()
    bodies = [
        {"event": "charge.success", "data": {"reference": "not-ours-123", "status": "success"}},
        {"event": "refund.processed", "data": {"transaction_reference": "T685312322670591"}},
        {"event": "transfer.success", "data": {"reference": "TRF-1"}},
        {"event": "transfer.success", "data": {"reference": "TRF-1"}},  # a retry: stored once
    ]
    for payload in bodies:
        raw = json.dumps(payload).encode()
        answer = await client.post(
            "/paystack/webhook",
            data=raw,
            headers={
                "Content-Type": "application/json",
                "x-paystack-signature": fake_paystack.sign(raw),
            },
        )
        assert answer.status_code == 200
    await drain_background_tasks(app)

    async with sessionmaker_for(app)() as db_session:
        stored = list(
            await db_session.execute(
                select(WebhookEvent.event, WebhookEvent.reference).order_by(WebhookEvent.id)
            )
        )
    assert [tuple(row) for row in stored] == [
        ("charge.success", "not-ours-123"),
        ("refund.processed", "T685312322670591"),
        ("transfer.success", "TRF-1"),
    ]
    after = await snapshot()
    assert after == before
    assert fake_paystack.api_requests("/transaction/verify/") == []


async def test_signed_webhook_with_a_broken_body_is_400(app, client, fake_paystack):
    for raw in (b"not json", b"[1,2]", b'{"event": "charge.success"}'):
        answer = await client.post(
            "/paystack/webhook",
            data=raw,
            headers={
                "Content-Type": "application/json",
                "x-paystack-signature": fake_paystack.sign(raw),
            },
        )
        assert answer.status_code == 400


async def test_a_charge_reported_after_the_payment_was_closed_goes_to_the_wallet(
    app, client, fake_paystack, start_order_payment, session
):
    started = await start_order_payment()
    reconcile = (
        sessionmaker_for(app),
        paystack_client_for(app),
        payment_settings(app_settings(app)),
    )
    await reconcile_once(*reconcile, now=utcnow() + timedelta(minutes=31))
    assert (await read_payment(app, started.reference)).status == "abandoned"
    fake_paystack.mark_paid(started.reference)  # the shopper paid on a page left open for hours

    await fake_paystack.deliver_webhook(client, started.reference)
    await drain_background_tasks(app)

    assert (await read_order(app, started.order_number)).status == "cancelled"
    # The shopper's money is not lost: it is in their wallet, and the admin is told.
    entries = await session.execute(
        select(WalletEntry.kind, WalletEntry.amount_minor, WalletEntry.source_reference)
    )
    assert [tuple(entry) for entry in entries] == [("refund", 18_000, started.reference)]
    assert (await wallet_of(session, started.user)).balance_minor == 18_000
    assert await queued_emails(app) == [("payment_credited", ADMIN_EMAIL)]
