"""Money: one cart turns into at most one live order, bounded holds, a private callback.

Each test is named after the failure it guards against; all run against the fake Paystack over
real HTTP, and the racing ones on SQLite and PostgreSQL.
"""

import asyncio
import random
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from storefront.background.paystack_serving import paystack_client_for
from storefront.config import app_settings
from storefront.db.engine import sessionmaker_for
from storefront.db.transactions import write_transaction
from storefront.models import (
    Cart,
    CartItem,
    Order,
    OrderLine,
    OutboxEmail,
    Payment,
    Product,
    WalletEntry,
    utcnow,
)
from storefront.services.payments.reconciliation import reconcile_once
from storefront.services.payments.settings import payment_settings
from storefront.services.wallet import select_ledger_mismatches
from tests.conftest import CSRF_TOKEN, wallet_of
from tests.fake_paystack import FakePaystack
from tests.fixtures_checkout import checkout_form
from tests.fixtures_paystack import drain_background_tasks, paystack_form, paystack_overrides

ADMIN_EMAIL = "admin@example.com"
SLOW_INITIALIZE_SECONDS = 2.0


@pytest.fixture(name="extra_overrides")
def _extra_overrides() -> dict[str, object]:
    return {}


@pytest.fixture(name="app_overrides")
def _app_overrides(
    fake_paystack: FakePaystack, extra_overrides: dict[str, object]
) -> dict[str, object]:
    overrides: dict[str, object] = {
        "ADMIN_EMAIL": ADMIN_EMAIL,
        "RATELIMIT_ENABLED": False,
        # Paystack's slow initialize must still be an answer, not a timeout.
        "PAYSTACK_TIMEOUT_SECONDS": 10,
    }
    overrides.update(extra_overrides)
    return paystack_overrides(fake_paystack, **overrides)


async def _scalar(app, statement):
    async with sessionmaker_for(app)() as db_session:
        return await db_session.scalar(statement)


async def _orders_of(app, user) -> list[Order]:
    async with sessionmaker_for(app)() as db_session:
        return list(
            await db_session.scalars(
                select(Order).where(Order.user_id == user.id).order_by(Order.id)
            )
        )


async def _cart_quantities(app, user) -> dict[int, int]:
    async with sessionmaker_for(app)() as db_session:
        rows = await db_session.execute(
            select(CartItem.product_id, CartItem.quantity)
            .join(Cart, Cart.id == CartItem.cart_id)
            .where(Cart.user_id == user.id)
        )
        return {product_id: quantity for product_id, quantity in rows}


async def _order_quantities(app, order_id: int) -> dict[int, int]:
    async with sessionmaker_for(app)() as db_session:
        rows = await db_session.execute(
            select(OrderLine.product_id, OrderLine.quantity).where(OrderLine.order_id == order_id)
        )
        return {product_id: quantity for product_id, quantity in rows}


async def _stock(app, product: Product) -> int:
    return await _scalar(app, select(Product.stock).where(Product.id == product.id))


async def _payment(app, reference: str) -> Payment:
    async with sessionmaker_for(app)() as db_session:
        payment = await db_session.scalar(select(Payment).where(Payment.reference == reference))
        assert payment is not None
        return payment


async def _backdate_order(app, order_number: str, minutes: int) -> None:
    """The order and its attempts were made `minutes` ago."""
    moment = utcnow() - timedelta(minutes=minutes)
    async with sessionmaker_for(app)() as db_session, write_transaction(db_session):
        order_id = await db_session.scalar(select(Order.id).where(Order.number == order_number))
        await db_session.execute(
            update(Order).where(Order.id == order_id).values(created_at=moment, updated_at=moment)
        )
        await db_session.execute(
            update(Payment)
            .where(Payment.order_id == order_id)
            .values(created_at=moment, updated_at=moment)
        )


def _reconcile(app, minutes_from_now: float):
    return reconcile_once(
        sessionmaker_for(app),
        paystack_client_for(app),
        payment_settings(app_settings(app)),
        now=utcnow() + timedelta(minutes=minutes_from_now),
    )


# One cart, two orders ------------------------------------------------------------------------


@pytest.mark.both_databases
async def test_one_cart_two_orders_twenty_racing_submits_make_one_order_and_one_charge(
    app, fake_paystack, make_user, make_product, fill_cart, shopper_client, session
):
    fake_paystack.initialize_delay_seconds = SLOW_INITIALIZE_SECONDS
    user = await make_user(balance_minor=1_000_000)
    product = await make_product(price_minor=10_000, stock=100)
    await fill_cart(user, [(product, 2)])
    clients = [await shopper_client(user) for _ in range(20)]
    targets = ["/pay/wallet"] * 10 + ["/paystack/init"] * 10
    random.shuffle(targets)

    answers = await asyncio.gather(
        *(
            client.post(
                target,
                form=paystack_form() if target == "/paystack/init" else checkout_form(),
            )
            for client, target in zip(clients, targets, strict=True)
        )
    )

    [order] = await _orders_of(app, user)
    payments_from_wallet = await _scalar(
        app,
        select(func.count()).select_from(WalletEntry).where(WalletEntry.kind == "payment"),
    )
    assert payments_from_wallet + len(fake_paystack.transactions) == 1
    if order.payment_method == "wallet":
        assert order.status == "paid"
        assert (await wallet_of(session, user)).balance_minor == 1_000_000 - 20_000
    else:
        assert order.status == "pending_payment"
        assert (await wallet_of(session, user)).balance_minor == 1_000_000
    assert await select_ledger_mismatches(session) == []
    assert await _stock(app, product) == 98
    assert await _cart_quantities(app, user) == {}
    winners = [answer for answer in answers if answer.status_code in (204, 303)]
    assert len(winners) == 1
    for answer in answers:
        if answer in winners:
            continue
        assert answer.status_code == 409
        html = await answer.get_data(as_text=True)
        assert order.number in html and f'href="/orders/{order.number}"' in html


@pytest.mark.both_databases
async def test_one_cart_two_orders_an_item_added_in_another_tab_during_initialize_is_kept(
    app, fake_paystack, make_user, make_product, fill_cart, shopper_client
):
    fake_paystack.initialize_delay_seconds = SLOW_INITIALIZE_SECONDS
    user = await make_user()
    ordered = await make_product(price_minor=10_000, stock=10)
    added_later = await make_product(price_minor=2_500, stock=10)
    await fill_cart(user, [(ordered, 1)])
    paying_tab, other_tab = await shopper_client(user), await shopper_client(user)

    init = asyncio.create_task(paying_tab.post("/paystack/init", form=paystack_form()))
    for _ in range(500):
        if fake_paystack.api_requests("/transaction/initialize"):
            break
        await asyncio.sleep(0.01)
    assert not init.done()  # Paystack is still thinking
    added = await other_tab.post(
        "/cart/items",
        form={"csrf_token": CSRF_TOKEN, "product_id": str(added_later.id), "quantity": "1"},
    )
    answer = await init

    assert added.status_code in (200, 303)
    assert answer.status_code == 303
    [order] = await _orders_of(app, user)
    in_order = await _order_quantities(app, order.id)
    in_cart = await _cart_quantities(app, user)
    assert in_order == {ordered.id: 1}
    assert in_cart == {added_later.id: 1}  # not silently emptied with the order's lines


async def test_one_cart_two_orders_a_refused_initialize_puts_the_lines_back_in_the_cart(
    app, fake_paystack, make_user, make_product, make_coupon, fill_cart, shopper_client
):
    user = await make_user()
    product = await make_product(price_minor=10_000, stock=5)
    coupon = await make_coupon(kind="percent", value=1000, max_uses=5)
    await fill_cart(user, [(product, 2)], coupon.code)
    client = await shopper_client(user)
    fake_paystack.fail_next("invalid_key", "/transaction/initialize")

    answer = await client.post("/paystack/init", form=paystack_form())

    assert answer.status_code == 409
    [order] = await _orders_of(app, user)
    assert order.status == "cancelled"
    assert await _stock(app, product) == 5
    assert await _cart_quantities(app, user) == {product.id: 2}
    assert await _scalar(app, select(Cart.coupon_code).where(Cart.user_id == user.id)) == (
        coupon.code
    )


async def test_one_cart_two_orders_a_second_submit_after_an_unclear_initialize_is_sent_to_the_order(
    app, fake_paystack, make_user, make_product, fill_cart, shopper_client
):
    user = await make_user(balance_minor=100_000)
    product = await make_product(price_minor=10_000, stock=5)
    await fill_cart(user, [(product, 1)])
    client = await shopper_client(user)
    fake_paystack.fail_next("server_error", "/transaction/initialize")

    first = await client.post("/paystack/init", form=paystack_form())
    again = await client.post("/pay/wallet", form=checkout_form())
    fragment = await client.post(
        "/paystack/init", form=paystack_form(), headers={"HX-Request": "true"}
    )

    [order] = await _orders_of(app, user)
    assert first.status_code == 303 and order.status == "pending_payment"
    for answer in (again, fragment):
        assert answer.status_code == 409
        html = await answer.get_data(as_text=True)
        assert f"Your order {order.number} is waiting for payment" in html
        assert f'href="/orders/{order.number}"' in html
    assert await _stock(app, product) == 4


# Unpaid Paystack orders hoard stock ----------------------------------------------------------


async def test_unpaid_orders_hoard_stock_a_new_checkout_replaces_the_pending_order(
    app, fake_paystack, make_user, make_product, fill_cart, shopper_client
):
    user = await make_user()
    first_product = await make_product(price_minor=10_000, stock=5)
    second_product = await make_product(price_minor=5_000, stock=5)
    await fill_cart(user, [(first_product, 2)])
    client = await shopper_client(user)
    assert (await client.post("/paystack/init", form=paystack_form())).status_code == 303
    [first_reference] = list(fake_paystack.transactions)
    await fill_cart(user, [(second_product, 1)])

    answer = await client.post("/paystack/init", form=paystack_form())

    assert answer.status_code == 303
    first, second = await _orders_of(app, user)
    assert (first.status, second.status) == ("cancelled", "pending_payment")
    assert await _order_quantities(app, second.id) == {second_product.id: 1}
    closed = await _payment(app, first_reference)
    assert closed.status == "abandoned" and second.number in closed.failure_reason
    assert await _stock(app, first_product) == 5
    assert await _stock(app, second_product) == 4
    # The replaced order's items are back in the cart, so nothing is lost.
    assert await _cart_quantities(app, user) == {first_product.id: 2}
    pending = await _scalar(
        app,
        select(func.count())
        .select_from(Order)
        .where(Order.user_id == user.id, Order.status == "pending_payment"),
    )
    assert pending == 1


@pytest.mark.both_databases
async def test_unpaid_orders_hoard_stock_a_late_success_for_a_replaced_order_goes_to_the_wallet(
    app, client, fake_paystack, make_user, make_product, fill_cart, shopper_client, session
):
    user = await make_user()
    product = await make_product(price_minor=10_000, stock=5)
    await fill_cart(user, [(product, 2)])
    shopper = await shopper_client(user)
    assert (await shopper.post("/paystack/init", form=paystack_form())).status_code == 303
    [replaced] = list(fake_paystack.transactions)
    await fill_cart(user, [(product, 1)])
    assert (await shopper.post("/paystack/init", form=paystack_form())).status_code == 303
    fake_paystack.mark_paid(replaced)  # the shopper paid on the first Paystack page anyway

    answers = await asyncio.gather(
        *(fake_paystack.deliver_webhook(app.test_client(), replaced) for _ in range(5))
    )
    await drain_background_tasks(app)
    await fake_paystack.deliver_webhook(client, replaced)
    await drain_background_tasks(app)

    assert [answer.status_code for answer in answers] == [200] * 5
    entries = list(
        await session.execute(
            select(WalletEntry.kind, WalletEntry.amount_minor, WalletEntry.source_reference)
        )
    )
    assert [tuple(entry) for entry in entries] == [("refund", 20_000, replaced)]
    assert (await wallet_of(session, user)).balance_minor == 20_000
    assert await select_ledger_mismatches(session) == []
    first, _second = await _orders_of(app, user)
    assert first.status == "cancelled"
    admin_emails = await _scalar(
        app,
        select(func.count())
        .select_from(OutboxEmail)
        .where(OutboxEmail.dedupe_key == f"payment_credited:{replaced}"),
    )
    assert admin_emails == 1  # the admin is told, once


@pytest.mark.parametrize("extra_overrides", [{"PAYSTACK_MAX_UNITS_PER_PRODUCT": 3}])
async def test_unpaid_orders_hoard_stock_units_one_pending_order_holds_are_capped(
    app, fake_paystack, make_user, make_product, fill_cart, shopper_client, snapshot
):
    user = await make_user(balance_minor=1_000_000)
    product = await make_product(name="Solar Lantern", price_minor=1_000, stock=50)
    await fill_cart(user, [(product, 4)])
    client = await shopper_client(user)
    before = await snapshot()

    answer = await client.post("/paystack/init", form=paystack_form())

    assert answer.status_code == 422
    html = await answer.get_data(as_text=True)
    assert "at most 3 of Solar Lantern" in html
    assert await snapshot() == before
    assert fake_paystack.requests == []
    # The wallet pays at once and holds nothing, so it is not capped.
    assert (await client.post("/pay/wallet", form=checkout_form())).status_code == 303


async def test_unpaid_orders_hoard_stock_the_default_cap_is_ten_units(app):
    assert app.config["PAYSTACK_MAX_UNITS_PER_PRODUCT"] == 10


async def test_unpaid_orders_hoard_stock_paying_again_after_the_deadline_is_refused(
    app, fake_paystack, make_user, make_product, fill_cart, shopper_client
):
    user = await make_user()
    product = await make_product(price_minor=10_000, stock=5)
    await fill_cart(user, [(product, 2)])
    client = await shopper_client(user)
    assert (await client.post("/paystack/init", form=paystack_form())).status_code == 303
    [order] = await _orders_of(app, user)
    await _backdate_order(app, order.number, minutes=31)

    again = await client.post(
        f"/paystack/orders/{order.number}/pay", form={"csrf_token": CSRF_TOKEN}
    )

    assert again.status_code == 409
    assert "time to pay for it is up" in await again.get_data(as_text=True)
    assert len(fake_paystack.api_requests("/transaction/initialize")) == 1


@pytest.mark.both_databases
async def test_unpaid_orders_hoard_stock_pay_again_does_not_extend_the_hold(
    app, fake_paystack, make_user, make_product, fill_cart, shopper_client
):
    user = await make_user()
    product = await make_product(price_minor=10_000, stock=5)
    await fill_cart(user, [(product, 2)])
    client = await shopper_client(user)
    assert (await client.post("/paystack/init", form=paystack_form())).status_code == 303
    [order] = await _orders_of(app, user)
    await _backdate_order(app, order.number, minutes=29)
    again = await client.post(
        f"/paystack/orders/{order.number}/pay", form={"csrf_token": CSRF_TOKEN}
    )
    assert again.status_code == 303  # one minute of the hold is left

    report = await _reconcile(app, minutes_from_now=1.5)  # just past the first deadline

    assert report.checked == 2 and report.statuses == {"abandoned": 2}
    [order] = await _orders_of(app, user)
    assert order.status == "cancelled"
    assert await _stock(app, product) == 5


async def test_unpaid_orders_hoard_stock_an_attempt_paid_at_the_deadline_still_counts(
    app, fake_paystack, make_user, make_product, fill_cart, shopper_client
):
    user = await make_user()
    product = await make_product(price_minor=10_000, stock=5)
    await fill_cart(user, [(product, 2)])
    client = await shopper_client(user)
    assert (await client.post("/paystack/init", form=paystack_form())).status_code == 303
    [order] = await _orders_of(app, user)
    await _backdate_order(app, order.number, minutes=29)
    assert (
        await client.post(f"/paystack/orders/{order.number}/pay", form={"csrf_token": CSRF_TOKEN})
    ).status_code == 303
    fake_paystack.mark_paid(list(fake_paystack.transactions)[-1])

    report = await _reconcile(app, minutes_from_now=1.5)

    assert report.statuses == {"abandoned": 1, "success": 1}
    [order] = await _orders_of(app, user)
    assert order.status == "paid"
    assert await _stock(app, product) == 3


# The callback shows details only to the payment's owner --------------------------------------


async def test_callback_details_are_shown_only_to_the_payments_owner(
    app, fake_paystack, make_user, start_order_payment, shopper_client
):
    started = await start_order_payment()
    fake_paystack.mark_paid(started.reference)
    url = f"/paystack/callback?reference={started.reference}"
    stranger = await shopper_client(await make_user())
    anonymous = app.test_client()

    for visitor in (stranger, anonymous):
        answer = await visitor.get(url)
        assert answer.status_code == 200
        html = await answer.get_data(as_text=True)
        assert "We are checking your payment" in html
        for secret in ("180.00", started.order_number, "Payment received", "Order "):
            assert secret not in html.split("<main", 1)[-1], secret
    owner = await started.client.get(url)
    html = await owner.get_data(as_text=True)
    assert "Payment received" in html and "GH₵ 180.00" in html and started.order_number in html


@pytest.mark.parametrize("extra_overrides", [{"RATELIMIT_ENABLED": True}])
async def test_callback_verify_is_rate_limited_per_client_address(
    app, fake_paystack, start_order_payment
):
    started = await start_order_payment()
    url = f"/paystack/callback?reference={started.reference}"

    answers = [await started.client.get(url) for _ in range(21)]

    assert [answer.status_code for answer in answers] == [200] * 20 + [429]
    assert "Retry-After" in answers[-1].headers
    assert "Too many attempts" in await answers[-1].get_data(as_text=True)
    assert len(fake_paystack.api_requests("/transaction/verify/")) == 20


async def test_unpaid_orders_hoard_stock_the_order_page_offers_paying_until_the_deadline(
    app, fake_paystack, make_user, make_product, fill_cart, shopper_client
):
    user = await make_user()
    product = await make_product(price_minor=10_000, stock=5)
    await fill_cart(user, [(product, 1)])
    client = await shopper_client(user)
    assert (await client.post("/paystack/init", form=paystack_form())).status_code == 303
    [order] = await _orders_of(app, user)

    page = await (await client.get(f"/orders/{order.number}")).get_data(as_text=True)
    assert f'action="/paystack/orders/{order.number}/pay"' in page
    await _backdate_order(app, order.number, minutes=31)
    late = await (await client.get(f"/orders/{order.number}")).get_data(as_text=True)
    assert "/pay" not in late.split('id="order"', 1)[1]
    assert "The time to pay for this order is up" in late


@pytest.mark.both_databases
async def test_unpaid_orders_hoard_stock_a_late_success_for_a_closed_topup_goes_to_the_wallet(
    app, client, fake_paystack, make_user, shopper_client, session
):
    user = await make_user()
    shopper = await shopper_client(user)
    answer = await shopper.post(
        "/account/wallet/topup", form={"csrf_token": CSRF_TOKEN, "amount": "50.00"}
    )
    assert answer.status_code == 303
    [reference] = list(fake_paystack.transactions)
    await _reconcile(app, minutes_from_now=31)  # never paid: closed as abandoned
    assert (await _payment(app, reference)).status == "abandoned"
    fake_paystack.mark_paid(reference)  # ...but the shopper paid on a page left open

    for _ in range(2):
        await fake_paystack.deliver_webhook(client, reference)
        await drain_background_tasks(app)

    entries = await session.execute(
        select(WalletEntry.kind, WalletEntry.amount_minor, WalletEntry.source_reference)
    )
    assert [tuple(entry) for entry in entries] == [("topup", 5_000, reference)]
    assert (await wallet_of(session, user)).balance_minor == 5_000
    assert await select_ledger_mismatches(session) == []
