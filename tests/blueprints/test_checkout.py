"""GET /checkout and POST /pay/wallet: the whole payment or none of it, on both databases."""

import asyncio
import re
import sqlite3

import pytest
from sqlalchemy import func, select

from storefront.db.engine import sessionmaker_for
from storefront.models import (
    Cart,
    CartItem,
    Coupon,
    CouponRedemption,
    Order,
    OrderLine,
    OutboxEmail,
    Product,
    Wallet,
    WalletEntry,
)
from storefront.services.wallet import select_ledger_mismatches
from tests.conftest import wallet_of
from tests.fixtures_checkout import CHECKOUT_ADDRESS, CHECKOUT_PHONE, checkout_form, stock_of
from tests.fixtures_shop import badge_cookie, set_badge_cookie

HX = {"HX-Request": "true"}
ADMIN_EMAIL = "orders-desk@example.com"
# Races fire many requests at once: the rate limits would refuse most of them.
RACE_OVERRIDES = [{"ADMIN_EMAIL": ADMIN_EMAIL, "RATELIMIT_ENABLED": False}]


@pytest.fixture(name="app_overrides")
def _app_overrides() -> dict[str, object]:
    return {"ADMIN_EMAIL": ADMIN_EMAIL}


async def _count(session, model, *where) -> int:
    return await session.scalar(select(func.count()).select_from(model).where(*where))


def _text(body: bytes) -> str:
    return body.decode()


# --- GET /checkout -------------------------------------------------------------------------


async def test_checkout_requires_login(client):
    response = await client.get("/checkout")
    assert response.status_code == 303
    assert response.headers["Location"] == "/login?next=/checkout"


async def test_empty_cart_goes_back_to_cart_with_message(client, make_user, sign_in):
    user = await make_user()
    sign_in(client, user)
    response = await client.get("/checkout")
    assert response.status_code == 303
    assert response.headers["Location"] == "/cart"
    async with client.session_transaction() as client_session:
        flashes = client_session.get("_flashes", [])
    assert any("cart is empty" in message for _category, message in flashes)


async def test_checkout_page_shows_lines_totals_balance_and_choices(
    client, make_user, sign_in, make_product, make_coupon, fill_cart
):
    user = await make_user(balance_minor=50_000)
    phone = await make_product(name="Tecno Spark 20", price_minor=120_000, stock=4)
    cable = await make_product(name="USB-C cable", price_minor=2_500, stock=1)
    coupon = await make_coupon(kind="fixed", value=5_000)
    await fill_cart(user, [(phone, 1), (cable, 2)], coupon_code=coupon.code)
    sign_in(client, user)

    response = await client.get("/checkout")
    assert response.status_code == 200
    page = _text(await response.get_data())
    assert "Tecno Spark 20" in page and "USB-C cable" in page
    assert "GH₵ 1,200.00" in page and "GH₵ 50.00" in page
    assert "Only 1 left" in page  # the cable line asks for 2 of 1
    # subtotal 1,250.00, coupon -50.00, total 1,200.00
    assert "GH₵ 1,250.00" in page and f"Coupon {coupon.code}" in page
    assert 'name="total_minor" value="120000"' in page
    assert 'id="wallet-balance">GH₵ 500.00' in page
    assert "Top up your wallet" in page  # 500 < 1,200
    for name in (
        'name="delivery" value="address"',
        'name="delivery" value="pickup"',
        'name="phone"',
        'name="address"',
        'name="payment_method" value="wallet"',
    ):
        assert name in page
    assert 'value="paystack"' not in page
    assert "Paystack) is not available" in page


@pytest.mark.parametrize(
    "app_overrides",
    [
        {
            "ADMIN_EMAIL": ADMIN_EMAIL,
            "PAYSTACK_PUBLIC_KEY": "pk_test_x",
            "PAYSTACK_SECRET_KEY": "sk_x",
        }
    ],
)
async def test_paystack_choice_shown_when_configured(
    client, make_user, sign_in, make_product, fill_cart
):
    user = await make_user()
    await fill_cart(user, [(await make_product(), 1)])
    sign_in(client, user)
    page = _text(await (await client.get("/checkout")).get_data())
    assert 'name="payment_method" value="paystack" formaction="/paystack/init"' in page
    assert "is not available" not in page


# --- POST /pay/wallet: the happy path ------------------------------------------------------


@pytest.mark.both_databases
async def test_wallet_checkout_moves_everything_once(
    app, client, session, make_user, sign_in, make_product, make_coupon, fill_cart
):
    user = await make_user(balance_minor=300_000, name="Ama Mensah")
    phone = await make_product(name="Infinix Hot 40", price_minor=100_000, stock=5)
    case = await make_product(name="Phone case", price_minor=5_000, stock=3)
    coupon = await make_coupon(kind="percent", value=1000, max_uses=10)  # 10 %
    cart = await fill_cart(user, [(case, 2), (phone, 2)], coupon_code=coupon.code)
    sign_in(client, user)
    set_badge_cookie(client, 4)

    # subtotal 2 × 1,000 + 2 × 50 = 2,100.00; 10 % off = 210.00; total 1,890.00
    response = await client.post("/pay/wallet", form=checkout_form(total_minor=189_000))

    assert response.status_code == 303, await response.get_data()
    order = await session.scalar(select(Order).where(Order.user_id == user.id))
    assert order is not None
    assert response.headers["Location"] == f"/orders/{order.number}"
    assert re.fullmatch(r"CW-\d{6}", order.number) and order.number == f"CW-{order.id:06d}"
    assert (order.status, order.payment_method) == ("paid", "wallet")
    assert order.paid_at is not None
    assert (order.subtotal_minor, order.discount_minor, order.total_minor) == (
        210_000,
        21_000,
        189_000,
    )
    assert order.coupon_code == coupon.code
    assert (order.delivery, order.phone, order.address) == (
        "address",
        CHECKOUT_PHONE,
        CHECKOUT_ADDRESS,
    )
    assert order.email == user.email

    lines = list(
        await session.scalars(
            select(OrderLine).where(OrderLine.order_id == order.id).order_by(OrderLine.product_id)
        )
    )
    assert [
        (line.product_id, line.name, line.unit_price_minor, line.quantity, line.line_total_minor)
        for line in lines
    ] == [
        (phone.id, "Infinix Hot 40", 100_000, 2, 200_000),
        (case.id, "Phone case", 5_000, 2, 10_000),
    ]

    assert (await wallet_of(session, user)).balance_minor == 300_000 - 189_000
    entry = await session.scalar(select(WalletEntry).where(WalletEntry.kind == "payment"))
    assert (entry.amount_minor, entry.source_reference, entry.balance_after_minor) == (
        -189_000,
        order.number,
        111_000,
    )
    assert await stock_of(session, phone) == 3
    assert await stock_of(session, case) == 1
    assert await session.scalar(select(Coupon.uses).where(Coupon.id == coupon.id)) == 1
    redemption = await session.scalar(select(CouponRedemption))
    assert (redemption.order_id, redemption.user_id) == (order.id, user.id)

    emails = list(await session.scalars(select(OutboxEmail).order_by(OutboxEmail.id)))
    assert sorted((email.to_address, email.status, email.dedupe_key) for email in emails) == [
        (ADMIN_EMAIL, "pending", f"admin_new_order:{order.number}"),
        (user.email, "pending", f"order_confirmation:{order.number}"),
    ]
    assert all(order.number in email.subject or order.number in email.text_body for email in emails)

    assert await _count(session, CartItem, CartItem.cart_id == cart.id) == 0
    assert await session.scalar(select(Cart.coupon_code).where(Cart.id == cart.id)) is None
    assert badge_cookie(client) == 0
    assert await select_ledger_mismatches(session) == []

    order_page = await client.get(response.headers["Location"])
    assert order_page.status_code == 200
    assert "Infinix Hot 40" in _text(await order_page.get_data())


async def test_htmx_success_uses_hx_redirect(
    client, session, make_user, sign_in, make_product, fill_cart
):
    user = await make_user(balance_minor=10_000)
    await fill_cart(user, [(await make_product(price_minor=4_000), 1)])
    sign_in(client, user)
    response = await client.post("/pay/wallet", form=checkout_form(4_000), headers=HX)
    assert response.status_code == 204
    order = await session.scalar(select(Order))
    assert response.headers["HX-Redirect"] == f"/orders/{order.number}"


@pytest.mark.parametrize("app_overrides", [{"ADMIN_EMAIL": ""}])
async def test_no_admin_email_queues_only_the_customer_mail(
    client, session, make_user, sign_in, make_product, fill_cart
):
    user = await make_user(balance_minor=10_000)
    await fill_cart(user, [(await make_product(price_minor=4_000), 1)])
    sign_in(client, user)
    response = await client.post("/pay/wallet", form=checkout_form(4_000))
    assert response.status_code == 303
    emails = list(await session.scalars(select(OutboxEmail)))
    assert [email.to_address for email in emails] == [user.email]


async def test_pickup_needs_no_address(
    client, session, make_user, sign_in, make_product, fill_cart
):
    user = await make_user(balance_minor=10_000)
    await fill_cart(user, [(await make_product(price_minor=4_000), 1)])
    sign_in(client, user)
    response = await client.post(
        "/pay/wallet", form=checkout_form(4_000, delivery="pickup", address="")
    )
    assert response.status_code == 303
    order = await session.scalar(select(Order))
    assert (order.delivery, order.address) == ("pickup", "")


# --- every failure leaves everything as it was ----------------------------------------------


async def _assert_refused(client, snapshot, form, *expected_texts, status=422, headers=None):
    before = await snapshot()
    response = await client.post("/pay/wallet", form=form, headers=headers or {})
    body = _text(await response.get_data())
    assert response.status_code == status, body
    for expected in expected_texts:
        assert expected in body, (expected, body)
    assert await snapshot() == before
    return body


@pytest.mark.both_databases
async def test_insufficient_balance_changes_nothing_and_says_by_how_much(
    client, make_user, sign_in, make_product, make_coupon, fill_cart, snapshot
):
    # The debit is the last step: stock, coupon use and the order were already written.
    user = await make_user(balance_minor=10_000)
    product = await make_product(name="Headphones", price_minor=25_000, stock=2)
    coupon = await make_coupon(kind="fixed", value=1_000, max_uses=5)
    await fill_cart(user, [(product, 1)], coupon_code=coupon.code)
    sign_in(client, user)
    body = await _assert_refused(
        client,
        snapshot,
        checkout_form(24_000),
        "Your wallet holds GH₵ 100.00",
        "top up at least GH₵ 140.00",
        'href="/account/wallet"',
    )
    assert "<html" in body  # without htmx: the whole page, with the error in it


@pytest.mark.both_databases
async def test_out_of_stock_names_the_line(
    app, client, session, make_user, sign_in, make_product, fill_cart, snapshot
):
    user = await make_user(balance_minor=100_000)
    first = await make_product(name="Alpha charger", price_minor=1_000, stock=5)
    scarce = await make_product(name="Zeta powerbank", price_minor=2_000, stock=3)
    await fill_cart(user, [(first, 1), (scarce, 3)])
    sign_in(client, user)
    async with sessionmaker_for(app)() as other:
        await other.execute(
            Product.__table__.update().where(Product.id == scarce.id).values(stock=2)
        )
        await other.commit()
    body = await _assert_refused(
        client, snapshot, checkout_form(7_000), "Only 2 of Zeta powerbank left", headers=HX
    )
    assert "<html" not in body and 'id="checkout"' in body  # htmx: only the section


@pytest.mark.both_databases
async def test_product_withdrawn_is_refused(
    app, client, make_user, sign_in, make_product, fill_cart, snapshot
):
    user = await make_user(balance_minor=100_000)
    product = await make_product(name="Old model", price_minor=1_000, stock=5)
    await fill_cart(user, [(product, 1)])
    sign_in(client, user)
    async with sessionmaker_for(app)() as other:
        await other.execute(
            Product.__table__.update().where(Product.id == product.id).values(is_active=False)
        )
        await other.commit()
    await _assert_refused(client, snapshot, checkout_form(1_000), "Old model is no longer sold")


@pytest.mark.both_databases
async def test_coupon_used_up_meanwhile_is_refused(
    app, client, make_user, sign_in, make_product, make_coupon, fill_cart, snapshot
):
    user = await make_user(balance_minor=100_000)
    product = await make_product(price_minor=10_000, stock=5)
    coupon = await make_coupon(kind="fixed", value=1_000, max_uses=1)
    await fill_cart(user, [(product, 1)], coupon_code=coupon.code)
    sign_in(client, user)
    async with sessionmaker_for(app)() as other:
        await other.execute(Coupon.__table__.update().where(Coupon.id == coupon.id).values(uses=1))
        await other.commit()
    await _assert_refused(
        client, snapshot, checkout_form(9_000), "coupon can no longer be used", "fully used"
    )


@pytest.mark.both_databases
async def test_price_changed_since_the_page_is_refused(
    app, client, make_user, sign_in, make_product, fill_cart, snapshot
):
    user = await make_user(balance_minor=100_000)
    product = await make_product(price_minor=10_000, stock=5)
    await fill_cart(user, [(product, 2)])
    sign_in(client, user)
    page = _text(await (await client.get("/checkout")).get_data())
    assert 'name="total_minor" value="20000"' in page
    async with sessionmaker_for(app)() as other:
        await other.execute(
            Product.__table__.update().where(Product.id == product.id).values(price_minor=12_000)
        )
        await other.commit()
    body = await _assert_refused(
        client,
        snapshot,
        checkout_form(20_000),
        "Prices changed",
        "GH₵ 240.00",
        'name="total_minor" value="24000"',  # the form now carries the new total
    )
    assert "Nothing was charged" in body


@pytest.mark.both_databases
async def test_empty_cart_is_refused(client, make_user, sign_in, snapshot):
    user = await make_user(balance_minor=100_000)
    sign_in(client, user)
    await _assert_refused(client, snapshot, checkout_form(), "Your cart is empty")


async def test_a_shopper_without_a_wallet_is_refused_not_failed(
    app, client, make_user, sign_in, make_product, fill_cart, snapshot
):
    user = await make_user()
    await fill_cart(user, [(await make_product(price_minor=1_000), 1)])
    async with sessionmaker_for(app)() as other:
        await other.execute(Wallet.__table__.delete().where(Wallet.user_id == user.id))
        await other.commit()
    sign_in(client, user)
    await _assert_refused(client, snapshot, checkout_form(1_000), "Your wallet cannot pay")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"phone": ""}, "Enter a phone number"),
        ({"phone": "call me"}, "Enter a phone number like"),
        ({"address": "  "}, "Enter the delivery address"),
        ({"delivery": "drone"}, "Choose delivery to an address or pickup"),
        ({"total_minor": "12.50"}, "checkout form was damaged"),
        ({"payment_method": "paystack"}, "use the Paystack button"),
    ],
)
async def test_bad_form_input_is_refused_in_place(
    client, make_user, sign_in, make_product, fill_cart, snapshot, fields, message
):
    user = await make_user(balance_minor=100_000)
    await fill_cart(user, [(await make_product(price_minor=1_000), 1)])
    sign_in(client, user)
    form = {**checkout_form(1_000), **fields}
    body = await _assert_refused(client, snapshot, form, message, headers=HX)
    assert "<html" not in body


async def test_pay_wallet_needs_csrf_token(
    client, make_user, sign_in, make_product, fill_cart, snapshot
):
    user = await make_user(balance_minor=100_000)
    await fill_cart(user, [(await make_product(price_minor=1_000), 1)])
    sign_in(client, user)
    form = checkout_form(1_000)
    del form["csrf_token"]
    await _assert_refused(client, snapshot, form, status=403)


@pytest.mark.parametrize(
    "app_overrides", [{"ADMIN_EMAIL": ADMIN_EMAIL, "SQLITE_BUSY_TIMEOUT_MS": 50}]
)
async def test_database_locked_never_reaches_the_shopper(
    client, database_url, make_user, sign_in, make_product, fill_cart, snapshot, monkeypatch
):
    # Another process holds SQLite's write lock for longer than the busy timeout allows.
    import storefront.db.transactions as transactions

    monkeypatch.setattr(transactions, "WRITE_ATTEMPTS", 3)
    user = await make_user(balance_minor=100_000)
    await fill_cart(user, [(await make_product(price_minor=1_000), 1)])
    sign_in(client, user)
    before = await snapshot()
    locker = sqlite3.connect(database_url.split("///", 1)[1], isolation_level=None)
    try:
        locker.execute("BEGIN IMMEDIATE")
        response = await client.post("/pay/wallet", form=checkout_form(1_000), headers=HX)
        body = _text(await response.get_data())
        locker.execute("ROLLBACK")
    finally:
        locker.close()
    assert await snapshot() == before
    assert response.status_code == 503, body
    assert "very busy" in body and "Nothing was charged" in body
    assert "locked" not in body
    assert response.headers["Retry-After"] == "5"

    retry = await client.post("/pay/wallet", form=checkout_form(1_000))
    assert retry.status_code == 303


# --- races through the HTTP endpoint --------------------------------------------------------


async def _assert_invariants(session, responses):
    for response in responses:
        assert response.status_code < 500, await response.get_data()
        if response.status_code >= 400:
            body = _text(await response.get_data())
            assert 'class="error"' in body
            assert "locked" not in body and "deadlock" not in body.lower()
    assert await select_ledger_mismatches(session) == []
    assert await _count(session, Product, Product.stock < 0) == 0


@pytest.mark.both_databases
@pytest.mark.parametrize("app_overrides", RACE_OVERRIDES)
async def test_race_fifty_shoppers_for_the_last_five_units(
    session, make_user, shopper_client, make_product, fill_cart
):
    product = await make_product(name="Last PS5", price_minor=50_000, stock=5)
    shoppers = [await make_user(balance_minor=100_000) for _ in range(50)]
    clients = []
    for shopper in shoppers:
        await fill_cart(shopper, [(product, 1)])
        clients.append(await shopper_client(shopper))

    responses = await asyncio.gather(
        *(client.post("/pay/wallet", form=checkout_form(50_000), headers=HX) for client in clients)
    )

    statuses = sorted(response.status_code for response in responses)
    assert statuses == [204] * 5 + [422] * 45
    assert await stock_of(session, product) == 0
    assert await _count(session, Order, Order.status == "paid") == 5
    assert await _count(session, Order) == 5
    assert await _count(session, WalletEntry, WalletEntry.kind == "payment") == 5
    assert await _count(session, OutboxEmail) == 10
    numbers = list(await session.scalars(select(Order.number)))
    assert len(set(numbers)) == 5
    for response in responses:
        if response.status_code == 422:
            assert "Last PS5 is out of stock" in _text(await response.get_data())
    await _assert_invariants(session, responses)


@pytest.mark.both_databases
@pytest.mark.parametrize("app_overrides", RACE_OVERRIDES)
@pytest.mark.parametrize("balance_minor", [30_000, 1_000_000])
async def test_race_one_shopper_submits_twenty_times(
    session, make_user, shopper_client, make_product, fill_cart, balance_minor
):
    # With balance for one order, or for many: the cart is paid for once either way.
    user = await make_user(balance_minor=balance_minor)
    product = await make_product(price_minor=20_000, stock=100)
    await fill_cart(user, [(product, 1)])
    clients = [await shopper_client(user) for _ in range(20)]

    responses = await asyncio.gather(
        *(client.post("/pay/wallet", form=checkout_form(20_000)) for client in clients)
    )

    # The others are told which order took the cart: one cart turns into at most one order.
    assert sorted(response.status_code for response in responses) == [303] + [409] * 19
    assert await _count(session, Order) == 1
    number = await session.scalar(select(Order.number))
    for response in responses:
        if response.status_code == 409:
            assert f"Your order {number} already took the items in your cart" in _text(
                await response.get_data()
            )
    assert await _count(session, WalletEntry, WalletEntry.kind == "payment") == 1
    assert (await wallet_of(session, user)).balance_minor == balance_minor - 20_000
    assert await stock_of(session, product) == 99
    await _assert_invariants(session, responses)


@pytest.mark.both_databases
@pytest.mark.parametrize("app_overrides", RACE_OVERRIDES)
async def test_race_twenty_shoppers_for_three_coupon_uses(
    session, make_user, shopper_client, make_product, make_coupon, fill_cart
):
    product = await make_product(price_minor=10_000, stock=100)
    coupon = await make_coupon(kind="fixed", value=2_000, max_uses=10, uses=7)
    clients = []
    for _ in range(20):
        shopper = await make_user(balance_minor=50_000)
        await fill_cart(shopper, [(product, 1)], coupon_code=coupon.code)
        clients.append(await shopper_client(shopper))

    responses = await asyncio.gather(
        *(client.post("/pay/wallet", form=checkout_form(8_000), headers=HX) for client in clients)
    )

    assert sorted(response.status_code for response in responses) == [204] * 3 + [422] * 17
    assert await session.scalar(select(Coupon.uses).where(Coupon.id == coupon.id)) == 10
    assert await _count(session, CouponRedemption) == 3
    assert await _count(session, Order) == 3
    assert await stock_of(session, product) == 97
    for response in responses:
        if response.status_code == 422:
            assert "fully used" in _text(await response.get_data())
    await _assert_invariants(session, responses)
