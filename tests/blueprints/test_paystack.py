"""Paystack checkout and top-up end to end, against the fake Paystack over real HTTP."""

import asyncio
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy import func, select, update

from storefront.background.paystack_serving import paystack_client_for
from storefront.blueprints.checkout import PAYSTACK_HIDDEN_REASON
from storefront.blueprints.paystack import TOPUP_UNAVAILABLE
from storefront.config import app_settings
from storefront.db.engine import sessionmaker_for
from storefront.db.transactions import write_transaction
from storefront.lib.paystack import sign_webhook_body
from storefront.models import (
    CartItem,
    Order,
    Payment,
    WalletEntry,
    WebhookEvent,
    utcnow,
)
from storefront.services.payments.reconciliation import reconcile_once
from storefront.services.payments.settings import payment_settings
from storefront.services.wallet import select_ledger_mismatches
from tests.conftest import CSRF_TOKEN, reconfigure, wallet_of
from tests.fake_paystack import FakePaystack
from tests.fixtures_paystack import (
    count_rows,
    drain_background_tasks,
    paystack_form,
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


async def _cart_items(app, user) -> int:
    async with sessionmaker_for(app)() as db_session:
        from storefront.models import Cart

        return await db_session.scalar(
            select(func.count())
            .select_from(CartItem)
            .join(Cart, Cart.id == CartItem.cart_id)
            .where(Cart.user_id == user.id)
        )


async def _follow_paystack_checkout(authorization_url: str, outcome: str = "success") -> str:
    """Be the shopper on Paystack's page: pay (or not), and get sent back to our callback."""
    async with httpx.AsyncClient() as browser:
        answer = await browser.get(authorization_url, params={"outcome": outcome})
    assert answer.status_code == 302
    return answer.headers["Location"]


async def _backdate(app, reference: str, minutes: int) -> None:
    """The payment, and its order if it has one, were made `minutes` ago."""
    async with sessionmaker_for(app)() as db_session, write_transaction(db_session):
        moment = utcnow() - timedelta(minutes=minutes)
        order_id = await db_session.scalar(
            update(Payment)
            .where(Payment.reference == reference)
            .values(created_at=moment, updated_at=moment)
            .returning(Payment.order_id)
        )
        await db_session.execute(
            update(Order).where(Order.id == order_id).values(created_at=moment)
        )


# Happy path ---------------------------------------------------------------------------------


async def test_happy_path_init_redirect_pay_callback(app, fake_paystack, start_order_payment):
    started = await start_order_payment()

    assert started.response.status_code == 303
    transaction = fake_paystack.only_transaction()
    assert (
        started.authorization_url == f"{fake_paystack.base_url}/checkout/{transaction.access_code}"
    )
    # What we asked Paystack for: int pesewas, our reference, a callback without a query of ours.
    [sent] = fake_paystack.api_requests("/transaction/initialize")
    body = sent.json()
    assert body["amount"] == 18_000 and type(body["amount"]) is int  # 2 × 100.00 − 10 %
    assert body["currency"] == "GHS"
    assert body["reference"] == started.reference
    assert body["email"] == started.user.email
    assert body["callback_url"] == "http://shop.test/paystack/callback"
    assert body["metadata"] == {"purpose": "order", "order_number": started.order_number}
    # Reserved while the shopper is on Paystack: stock and coupon held, cart emptied.
    order = await read_order(app, started.order_number)
    assert (order.status, order.payment_method, order.total_minor) == (
        "pending_payment",
        "paystack",
        18_000,
    )
    payment = await read_payment(app, started.reference)
    assert (payment.status, payment.amount_minor, payment.currency) == ("pending", 18_000, "GHS")
    assert payment.authorization_url == started.authorization_url
    assert await read_stock(app, started.product) == 3
    assert await read_coupon_uses(app, started.coupon) == (1, 1)
    assert await _cart_items(app, started.user) == 0

    callback = await _follow_paystack_checkout(started.authorization_url)
    assert callback.startswith("http://shop.test/paystack/callback?trxref=")
    parts = urlsplit(callback)
    assert parse_qs(parts.query)["reference"] == [started.reference]
    page = await started.client.get(f"{parts.path}?{parts.query}")

    assert page.status_code == 200
    html = await page.get_data(as_text=True)
    assert "Payment received" in html and started.order_number in html
    order = await read_order(app, started.order_number)
    assert order.status == "paid" and order.paid_at is not None
    assert (await read_payment(app, started.reference)).status == "success"
    assert await read_stock(app, started.product) == 3
    assert await read_coupon_uses(app, started.coupon) == (1, 1)
    assert await queued_emails(app) == [
        ("order_confirmation", started.user.email),
        ("admin_new_order", ADMIN_EMAIL),
    ]


async def test_refreshing_the_callback_gives_nothing_twice(app, fake_paystack, start_order_payment):
    started = await start_order_payment()
    fake_paystack.mark_paid(started.reference)
    for _ in range(3):
        page = await started.client.get(f"/paystack/callback?reference={started.reference}")
        assert page.status_code == 200
        assert "Payment received" in await page.get_data(as_text=True)

    assert len(await queued_emails(app)) == 2
    assert await read_coupon_uses(app, started.coupon) == (1, 1)
    # Once settled, a refresh reads our own record instead of asking Paystack again.
    assert len(fake_paystack.api_requests("/transaction/verify/")) == 1


async def test_htmx_init_answers_204_with_hx_redirect(app, fake_paystack, start_order_payment):
    started = await start_order_payment(**{"HX-Request": "true"})

    assert started.response.status_code == 204
    assert started.response.headers["HX-Redirect"] == started.authorization_url
    assert started.authorization_url.startswith(fake_paystack.base_url)


# Exactly once under races --------------------------------------------------------------------


@pytest.mark.both_databases
async def test_callbacks_and_webhooks_racing_settle_the_order_once(
    app, fake_paystack, start_order_payment, shopper_client
):
    started = await start_order_payment()
    fake_paystack.mark_paid(started.reference)
    clients = [await shopper_client(started.user) for _ in range(10)]

    answers = await asyncio.gather(
        *(client.get(f"/paystack/callback?reference={started.reference}") for client in clients),
        *(fake_paystack.deliver_webhook(app.test_client(), started.reference) for _ in range(10)),
    )
    await drain_background_tasks(app)

    assert [answer.status_code for answer in answers] == [200] * 20
    order = await read_order(app, started.order_number)
    assert order.status == "paid"
    assert (await read_payment(app, started.reference)).status == "success"
    assert sorted(await queued_emails(app)) == sorted(
        [("order_confirmation", started.user.email), ("admin_new_order", ADMIN_EMAIL)]
    )
    assert await read_coupon_uses(app, started.coupon) == (1, 1)
    assert await read_stock(app, started.product) == 3
    counts = await count_rows(
        app,
        paid_orders=select(func.count()).select_from(Order).where(Order.status == "paid"),
        events=select(func.count()).select_from(WebhookEvent),
        processed=select(func.count())
        .select_from(WebhookEvent)
        .where(WebhookEvent.processed_at.is_not(None)),
    )
    assert counts == {"paid_orders": 1, "events": 1, "processed": 1}


async def _start_topup(app, fake_paystack, shopper_client, make_user, amount: str = "50.00"):
    user = await make_user()
    client = await shopper_client(user)
    response = await client.post(
        "/account/wallet/topup", form={"csrf_token": CSRF_TOKEN, "amount": amount}
    )
    assert response.status_code == 303, await response.get_data(as_text=True)
    transaction = fake_paystack.only_transaction()
    assert response.headers["Location"].endswith(transaction.access_code)
    return user, client, transaction.reference


@pytest.mark.both_databases
async def test_topup_raced_by_callbacks_and_webhooks_credits_once(
    app, fake_paystack, shopper_client, make_user, session
):
    user, _client, reference = await _start_topup(app, fake_paystack, shopper_client, make_user)
    [sent] = fake_paystack.api_requests("/transaction/initialize")
    assert sent.json()["amount"] == 5000
    assert sent.json()["metadata"] == {"purpose": "wallet_topup", "user_id": user.id}
    fake_paystack.mark_paid(reference)
    clients = [await shopper_client(user) for _ in range(10)]

    answers = await asyncio.gather(
        *(client.get(f"/paystack/callback?reference={reference}") for client in clients),
        *(fake_paystack.deliver_webhook(app.test_client(), reference) for _ in range(10)),
    )
    await drain_background_tasks(app)

    assert sorted(answer.status_code for answer in answers) == [200] * 10 + [303] * 10
    entries = list(
        await session.execute(
            select(WalletEntry.kind, WalletEntry.amount_minor, WalletEntry.source_reference)
        )
    )
    assert [tuple(entry) for entry in entries] == [("topup", 5000, reference)]
    assert (await wallet_of(session, user)).balance_minor == 5000
    assert await select_ledger_mismatches(session) == []
    assert await queued_emails(app) == [("wallet_topup_receipt", user.email)]


async def test_topup_callback_shows_the_wallet(app, fake_paystack, shopper_client, make_user):
    user, client, reference = await _start_topup(
        app, fake_paystack, shopper_client, make_user, "GH₵ 1,234.50"
    )
    access_code = fake_paystack.transaction(reference).access_code
    callback = await _follow_paystack_checkout(f"{fake_paystack.base_url}/checkout/{access_code}")
    parts = urlsplit(callback)
    answer = await client.get(f"{parts.path}?{parts.query}")

    assert answer.status_code == 303 and answer.headers["Location"] == "/account/wallet"
    wallet_page = await client.get("/account/wallet")
    html = await wallet_page.get_data(as_text=True)
    assert "Your wallet was topped up with GH₵ 1,234.50." in html
    assert "GH₵ 1,234.50" in html


@pytest.mark.parametrize(
    ("amount", "message"),
    [
        ("0.99", "The smallest top-up is GH₵ 1.00."),
        ("5000.01", "The largest top-up is GH₵ 5,000.00."),
        ("abc", "Enter an amount like 50 or 50.00."),
        ("-5", "The amount cannot be negative."),
        ("1.005", "Use at most 2 decimal places"),
        ("", "Enter an amount like 50 or 50.00."),
    ],
)
async def test_topup_refuses_bad_amounts_in_place(
    app, fake_paystack, shopper_client, make_user, amount, message
):
    client = await shopper_client(await make_user())
    form = {"csrf_token": CSRF_TOKEN, "amount": amount}

    fragment = await client.post("/account/wallet/topup", form=form, headers={"HX-Request": "true"})
    page = await client.post("/account/wallet/topup", form=form)

    assert fragment.status_code == page.status_code == 422
    fragment_html = await fragment.get_data(as_text=True)
    assert message in fragment_html and fragment_html.lstrip().startswith("<form")
    page_html = await page.get_data(as_text=True)
    assert message in page_html and "<html" in page_html
    assert fake_paystack.requests == []
    assert await count_rows(app, payments=select(func.count()).select_from(Payment)) == {
        "payments": 0
    }


# No value without a matching success ---------------------------------------------------------


@pytest.mark.parametrize(
    ("outcome", "payment_status", "reason_part", "admin_told"),
    [
        ("underpaid", "failed", "but the payment is for GH₵ 180.00", True),
        ("wrong_currency", "failed", "charged in NGN but the payment is in GHS", True),
        ("failed", "failed", "Paystack says the payment failed", False),
        ("abandoned", "abandoned", "Not completed on Paystack within 30 minutes", False),
    ],
)
async def test_no_value_without_a_full_success_and_the_reservation_is_released(
    app, fake_paystack, start_order_payment, outcome, payment_status, reason_part, admin_told
):
    started = await start_order_payment()
    if outcome == "underpaid":
        fake_paystack.mark_paid(started.reference, amount_minor=17_900)
    elif outcome == "wrong_currency":
        fake_paystack.mark_paid(started.reference, currency="NGN")
    elif outcome == "failed":
        fake_paystack.mark_status(started.reference, "failed")
    else:
        fake_paystack.mark_status(started.reference, "abandoned")
        await _backdate(app, started.reference, minutes=31)

    page = await started.client.get(f"/paystack/callback?reference={started.reference}")
    again = await started.client.get(f"/paystack/callback?reference={started.reference}")

    assert page.status_code == again.status_code == 200
    assert "Payment not completed" in await page.get_data(as_text=True)
    payment = await read_payment(app, started.reference)
    assert payment.status == payment_status
    assert reason_part in payment.failure_reason
    order = await read_order(app, started.order_number)
    assert order.status == "cancelled" and order.paid_at is None
    assert await read_stock(app, started.product) == 5
    assert await read_coupon_uses(app, started.coupon) == (0, 0)
    expected = [("payment_problem", ADMIN_EMAIL)] if admin_told else []
    assert await queued_emails(app) == expected


async def test_fresh_abandoned_status_keeps_the_payment_pending(
    app, fake_paystack, start_order_payment
):
    started = await start_order_payment()  # Paystack says "abandoned" until the shopper pays

    page = await started.client.get(f"/paystack/callback?reference={started.reference}")

    assert page.status_code == 200
    html = await page.get_data(as_text=True)
    assert "Waiting for Paystack" in html and "Check again" in html
    assert f"/paystack/orders/{started.order_number}/pay" in html
    assert (await read_payment(app, started.reference)).status == "pending"
    assert (await read_order(app, started.order_number)).status == "pending_payment"
    assert await read_stock(app, started.product) == 3


async def test_unknown_callback_reference_is_404(app, client, fake_paystack):
    for reference in ("never-issued", "bad ref", ""):
        answer = await client.get("/paystack/callback", query_string={"reference": reference})
        assert answer.status_code == 404
    assert fake_paystack.requests == []


# Initialize errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("failure", "message"),
    [
        ("invalid_key", "Invalid key"),
        ("duplicate_reference", "Duplicate Transaction Reference"),
        ("currency_not_supported", "Currency not supported by merchant"),
    ],
)
async def test_paystack_refusing_initialize_releases_the_reservation_and_keeps_the_cart(
    app, fake_paystack, start_order_payment, failure, message
):
    fake_paystack.fail_next(failure, "/transaction/initialize")

    started = await start_order_payment()

    assert started.response.status_code == 409
    html = await started.response.get_data(as_text=True)
    assert f"Paystack could not start this payment: {message}. Nothing was charged." in html
    payment = await read_payment(app, started.reference)
    assert payment.status == "failed" and message in payment.failure_reason
    assert (await read_order(app, started.order_number)).status == "cancelled"
    assert await read_stock(app, started.product) == 5
    assert await read_coupon_uses(app, started.coupon) == (0, 0)
    assert await _cart_items(app, started.user) == 1  # nothing lost: pay again or by wallet
    assert await queued_emails(app) == []


async def test_htmx_refusal_swaps_the_message_into_checkout(
    app, fake_paystack, start_order_payment
):
    fake_paystack.fail_next("invalid_key", "/transaction/initialize")

    started = await start_order_payment(**{"HX-Request": "true"})

    assert started.response.status_code == 409
    html = await started.response.get_data(as_text=True)
    assert html.lstrip().startswith('<section id="checkout"') and "Invalid key" in html


async def test_a_currency_paystack_does_not_take_is_refused_for_real(
    app, fake_paystack, start_order_payment
):
    reconfigure(app, {"PAYSTACK_CURRENCY": "NGN"})  # the fake merchant takes GHS only

    started = await start_order_payment()

    assert started.response.status_code == 409
    assert "Currency not supported by merchant" in await started.response.get_data(as_text=True)
    assert (await read_order(app, started.order_number)).status == "cancelled"
    assert await read_stock(app, started.product) == 5


async def test_initialize_timeout_keeps_the_reservation_for_a_retry_and_the_reconciler(
    app, fake_paystack, start_order_payment
):
    fake_paystack.fail_next("timeout", "/transaction/initialize")

    started = await start_order_payment()

    assert started.response.status_code == 303
    assert started.response.headers["Location"] == (
        f"/paystack/callback?reference={started.reference}"
    )
    first = await read_payment(app, started.reference)
    assert first.status == "pending" and first.authorization_url == ""
    assert (await read_order(app, started.order_number)).status == "pending_payment"
    assert await read_stock(app, started.product) == 3
    assert await _cart_items(app, started.user) == 0  # the order holds the items
    page = await started.client.get(started.response.headers["Location"])
    html = await page.get_data(as_text=True)
    assert "Paystack did not answer in time" in html  # the flash
    assert "Pay again with Paystack" in html

    retry = await started.client.post(
        f"/paystack/orders/{started.order_number}/pay", form={"csrf_token": CSRF_TOKEN}
    )

    assert retry.status_code == 303
    initializes = [r.json() for r in fake_paystack.api_requests("/transaction/initialize")]
    assert len(initializes) == 2
    second_reference = initializes[1]["reference"]
    assert second_reference != started.reference  # a new attempt, a new reference
    assert initializes[1]["amount"] == 18_000
    fake_paystack.mark_paid(second_reference)
    await started.client.get(f"/paystack/callback?reference={second_reference}")
    assert (await read_order(app, started.order_number)).status == "paid"

    # The first attempt, never payable, is closed by the reconciler without touching the order.
    report = await reconcile_once(
        sessionmaker_for(app),
        paystack_client_for(app),
        payment_settings(app_settings(app)),
        now=utcnow() + timedelta(minutes=31),
    )
    assert report.checked == 1
    assert (await read_payment(app, started.reference)).status == "abandoned"
    assert (await read_order(app, started.order_number)).status == "paid"
    assert await read_stock(app, started.product) == 3
    assert await read_coupon_uses(app, started.coupon) == (1, 1)


@pytest.mark.parametrize("failure", ["server_error", "malformed"])
async def test_unclear_initialize_answers_are_treated_like_timeouts(
    app, fake_paystack, start_order_payment, failure
):
    fake_paystack.fail_next(failure, "/transaction/initialize")

    started = await start_order_payment()

    assert started.response.status_code == 303
    assert (await read_payment(app, started.reference)).status == "pending"
    assert await read_stock(app, started.product) == 3


async def test_paying_again_is_only_for_the_owners_pending_order(
    app, fake_paystack, start_order_payment, shopper_client, make_user
):
    started = await start_order_payment()
    stranger = await shopper_client(await make_user())
    form = {"csrf_token": CSRF_TOKEN}

    assert (
        await stranger.post(f"/paystack/orders/{started.order_number}/pay", form=form)
    ).status_code == 404
    assert (
        await started.client.post("/paystack/orders/CW-999999/pay", form=form)
    ).status_code == 404
    fake_paystack.mark_paid(started.reference)
    await started.client.get(f"/paystack/callback?reference={started.reference}")
    paid = await started.client.post(f"/paystack/orders/{started.order_number}/pay", form=form)
    assert paid.status_code == 409
    assert "is not awaiting a Paystack payment" in await paid.get_data(as_text=True)
    assert len(fake_paystack.api_requests("/transaction/initialize")) == 1


# Configuration -------------------------------------------------------------------------------


async def test_a_free_order_is_not_sent_to_paystack(
    app, fake_paystack, make_user, make_product, make_coupon, fill_cart, shopper_client
):
    user = await make_user()
    product = await make_product(price_minor=1000, stock=5)
    coupon = await make_coupon(code="FREEBIE", kind="fixed", value=5000)
    await fill_cart(user, [(product, 1)], coupon.code)
    client = await shopper_client(user)

    answer = await client.post("/paystack/init", form=paystack_form())

    assert answer.status_code == 422
    assert "use the wallet button instead" in await answer.get_data(as_text=True)
    assert await read_stock(app, product) == 5
    assert fake_paystack.requests == []


WITHOUT_KEYS = pytest.mark.parametrize(
    "app_overrides", [{"RATELIMIT_ENABLED": False, "ADMIN_EMAIL": ADMIN_EMAIL}]
)


@WITHOUT_KEYS
async def test_without_keys_paystack_is_hidden_and_refused_with_the_reason(
    app, make_user, make_product, fill_cart, shopper_client, snapshot
):
    user = await make_user()
    product = await make_product(price_minor=1000, stock=5)
    await fill_cart(user, [(product, 1)])
    client = await shopper_client(user)
    assert app.config["PAYSTACK_ENABLED"] is False
    assert "paystack_client" not in app.extensions

    checkout = await (await client.get("/checkout")).get_data(as_text=True)
    assert 'formaction="/paystack/init"' not in checkout
    assert PAYSTACK_HIDDEN_REASON in checkout
    before = await snapshot()

    init = await client.post("/paystack/init", form=paystack_form())
    assert init.status_code == 409
    assert PAYSTACK_HIDDEN_REASON in await init.get_data(as_text=True)
    topup = await client.post(
        "/account/wallet/topup", form={"csrf_token": CSRF_TOKEN, "amount": "50"}
    )
    assert topup.status_code == 409
    assert TOPUP_UNAVAILABLE in await topup.get_data(as_text=True)
    raw = b'{"event":"charge.success","data":{"reference":"x"}}'
    webhook = await client.post(
        "/paystack/webhook",
        data=raw,
        headers={
            "Content-Type": "application/json",
            "x-paystack-signature": sign_webhook_body("", raw),
        },
    )
    assert webhook.status_code == 401
    assert (await client.get("/paystack/callback?reference=abc")).status_code == 404
    assert await snapshot() == before


async def test_a_refused_retry_says_why_and_the_first_attempt_keeps_the_items(
    app, fake_paystack, start_order_payment
):
    started = await start_order_payment()
    fake_paystack.fail_next("invalid_key", "/transaction/initialize")

    retry = await started.client.post(
        f"/paystack/orders/{started.order_number}/pay", form={"csrf_token": CSRF_TOKEN}
    )

    assert retry.status_code == 409
    assert "Paystack could not start this payment: Invalid key" in await retry.get_data(
        as_text=True
    )
    assert (await read_order(app, started.order_number)).status == "pending_payment"
    assert (await read_payment(app, started.reference)).status == "pending"
    assert await read_stock(app, started.product) == 3
