"""The reconciler: stale pending payments re-verified with Paystack and settled once, each by
one worker; attempts closed when their order's hold is over; the task running while serving."""

import asyncio
from datetime import timedelta

import pytest

from storefront.background.paystack_serving import paystack_client_for
from storefront.config import app_settings
from storefront.db.engine import sessionmaker_for
from storefront.models import utcnow
from storefront.services.payments.reconciliation import reconcile_once
from storefront.services.payments.settings import payment_settings
from tests.fake_paystack import FakePaystack
from tests.fixtures_paystack import (
    paystack_overrides,
    queued_emails,
    read_coupon_uses,
    read_order,
    read_payment,
    read_stock,
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


async def test_initialize_timeout_alone_is_released_by_the_reconciler(
    app, fake_paystack, start_order_payment
):
    fake_paystack.fail_next("timeout", "/transaction/initialize")
    started = await start_order_payment()
    assert (await read_payment(app, started.reference)).status == "pending"

    report = await reconcile_once(
        sessionmaker_for(app),
        paystack_client_for(app),
        payment_settings(app_settings(app)),
        now=utcnow() + timedelta(minutes=31),
    )

    assert report.checked == 1
    assert (await read_payment(app, started.reference)).status == "abandoned"
    assert (await read_order(app, started.order_number)).status == "cancelled"
    assert await read_stock(app, started.product) == 5
    assert await read_coupon_uses(app, started.coupon) == (0, 0)


async def test_reconciler_finishes_a_payment_whose_callback_never_came(
    app, fake_paystack, start_order_payment
):
    started = await start_order_payment()
    fake_paystack.mark_paid(started.reference)
    reconcile = (
        sessionmaker_for(app),
        paystack_client_for(app),
        payment_settings(app_settings(app)),
    )

    too_soon = await reconcile_once(*reconcile, now=utcnow() + timedelta(minutes=1))
    assert too_soon.checked == 0
    report = await reconcile_once(*reconcile, now=utcnow() + timedelta(minutes=4))

    assert report.checked == 1 and report.statuses == {"success": 1}
    assert (await read_order(app, started.order_number)).status == "paid"
    assert len(await queued_emails(app)) == 2
    again = await reconcile_once(*reconcile, now=utcnow() + timedelta(minutes=60))
    assert again.checked == 0


@pytest.mark.both_databases
async def test_two_reconcilers_at_once_check_each_payment_once(
    app, fake_paystack, start_order_payment
):
    started = [await start_order_payment() for _ in range(3)]
    for payment in started:
        fake_paystack.mark_paid(payment.reference)
    verifies_before = len(fake_paystack.api_requests("/transaction/verify/"))
    reconcile = (
        sessionmaker_for(app),
        paystack_client_for(app),
        payment_settings(app_settings(app)),
    )
    later = utcnow() + timedelta(minutes=5)

    reports = await asyncio.gather(*(reconcile_once(*reconcile, now=later) for _ in range(4)))

    assert sum(report.checked for report in reports) == 3
    assert len(fake_paystack.api_requests("/transaction/verify/")) - verifies_before == 3
    for payment in started:
        assert (await read_order(app, payment.order_number)).status == "paid"
    assert len(await queued_emails(app)) == 6


async def test_reconciler_leaves_pending_like_statuses_pending(
    app, fake_paystack, start_order_payment
):
    started = await start_order_payment()
    fake_paystack.mark_status(started.reference, "ongoing")
    reconcile = (
        sessionmaker_for(app),
        paystack_client_for(app),
        payment_settings(app_settings(app)),
    )

    report = await reconcile_once(*reconcile, now=utcnow() + timedelta(minutes=90))

    assert report.statuses == {"pending": 1}
    assert (await read_order(app, started.order_number)).status == "pending_payment"
    assert await read_stock(app, started.product) == 3


@pytest.mark.parametrize(
    "extra_overrides",
    [
        {
            "RECONCILER_ENABLED": True,
            "RECONCILER_INTERVAL_SECONDS": 1,
            "PAYSTACK_RECONCILE_AFTER_MINUTES": 0,
        }
    ],
)
async def test_the_reconciler_runs_while_the_app_serves(app, fake_paystack, start_order_payment):
    started = await start_order_payment()
    fake_paystack.mark_paid(started.reference)

    for _ in range(80):
        if (await read_order(app, started.order_number)).status == "paid":
            break
        await asyncio.sleep(0.1)

    assert (await read_order(app, started.order_number)).status == "paid"
    assert len(await queued_emails(app)) == 2
