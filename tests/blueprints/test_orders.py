"""Order pages and the wallet page: own data only, lines as sold, ledger newest first."""

import pytest
from sqlalchemy import update

from storefront.db.engine import sessionmaker_for
from storefront.db.transactions import write_transaction
from storefront.models import Product, utcnow
from storefront.services.cart import select_cart_for_user
from storefront.services.checkout.placement import place_wallet_order
from storefront.services.wallet import credit_wallet
from tests.conftest import reconfigure

HX = {"HX-Request": "true"}


async def _place_order(app, fill_cart, user, items, delivery="address"):
    cart = await fill_cart(user, items)
    async with sessionmaker_for(app)() as db_session, write_transaction(db_session):
        cart = await select_cart_for_user(db_session, user.id)
        return await place_wallet_order(
            db_session, user, cart, delivery, "0241234567", "5 Ring Road, Accra", utcnow()
        )


def _text(body: bytes) -> str:
    return body.decode()


@pytest.mark.both_databases
async def test_order_page_shows_lines_as_sold_to_the_owner(
    app, client, make_user, sign_in, make_product, fill_cart
):
    user = await make_user(balance_minor=100_000)
    product = await make_product(name="Laptop bag", price_minor=20_000, stock=5)
    order = await _place_order(app, fill_cart, user, [(product, 2)])
    # The shop renames and reprices the product later: the order keeps what was sold.
    async with sessionmaker_for(app)() as db_session, write_transaction(db_session):
        await db_session.execute(
            update(Product)
            .where(Product.id == product.id)
            .values(name="Laptop bag v2", price_minor=99_000)
        )
    sign_in(client, user)

    response = await client.get(f"/orders/{order.number}")

    assert response.status_code == 200
    page = _text(await response.get_data())
    assert order.number in page and "Paid" in page
    assert "Laptop bag" in page and "Laptop bag v2" not in page
    assert "GH₵ 200.00" in page and "GH₵ 400.00" in page and "GH₵ 990.00" not in page
    assert "5 Ring Road, Accra" in page and "0241234567" in page
    fragment = _text(await (await client.get(f"/orders/{order.number}", headers=HX)).get_data())
    assert "<html" not in fragment and 'id="order"' in fragment


@pytest.mark.both_databases
async def test_someone_elses_order_is_not_found(
    app, client, make_user, sign_in, make_product, fill_cart
):
    owner = await make_user(balance_minor=100_000)
    order = await _place_order(app, fill_cart, owner, [(await make_product(), 1)])
    sign_in(client, await make_user())
    response = await client.get(f"/orders/{order.number}")
    assert response.status_code == 404
    assert order.number not in _text(await response.get_data())
    assert (await client.get("/orders/CW-999999")).status_code == 404
    assert (await client.get("/orders/" + "9" * 200)).status_code == 404


async def test_admin_sees_any_order(app, client, make_user, sign_in, make_product, fill_cart):
    owner = await make_user(balance_minor=100_000)
    order = await _place_order(app, fill_cart, owner, [(await make_product(), 1)])
    sign_in(client, await make_user(role="owner"))
    response = await client.get(f"/orders/{order.number}")
    assert response.status_code == 200
    assert owner.email in _text(await response.get_data())


@pytest.mark.parametrize("path", ["/account/orders", "/orders/CW-000001", "/account/wallet"])
async def test_pages_need_login(client, path):
    response = await client.get(path)
    assert response.status_code == 303
    assert response.headers["Location"].startswith("/login?next=")


async def test_order_list_shows_own_orders_newest_first(
    app, client, make_user, sign_in, make_product, fill_cart
):
    user = await make_user(balance_minor=100_000)
    other = await make_user(balance_minor=100_000)
    product = await make_product(price_minor=1_000, stock=50)
    first = await _place_order(app, fill_cart, user, [(product, 1)])
    second = await _place_order(app, fill_cart, user, [(product, 2)])
    foreign = await _place_order(app, fill_cart, other, [(product, 1)])
    sign_in(client, user)

    page = _text(await (await client.get("/account/orders")).get_data())

    assert first.number in page and second.number in page
    assert foreign.number not in page
    assert page.index(second.number) < page.index(first.number)


async def test_order_list_empty_and_paged(client, make_user, sign_in):
    sign_in(client, await make_user())
    assert "not placed any orders" in _text(await (await client.get("/account/orders")).get_data())
    later = _text(await (await client.get("/account/orders?page=7")).get_data())
    assert "no orders on this page" in later
    nonsense = await client.get("/account/orders?page=abc")
    assert nonsense.status_code == 200


@pytest.mark.both_databases
async def test_wallet_page_shows_balance_and_ledger_newest_first_paged(
    app, client, make_user, sign_in, make_product, fill_cart
):
    user = await make_user(balance_minor=100_000)
    async with sessionmaker_for(app)() as db_session, write_transaction(db_session):
        for number in range(1, 25):
            await credit_wallet(
                db_session, user.id, 100, kind="topup", source_reference=f"TOPUP-{number:03d}"
            )
    order = await _place_order(app, fill_cart, user, [(await make_product(price_minor=500), 1)])
    sign_in(client, user)

    first = _text(await (await client.get("/account/wallet")).get_data())

    assert 'id="wallet-balance">GH₵ 1,019.00' in first  # 1,000 + 24 × 1.00 − 5.00
    # Newest first: the payment, then top-up 24 down to 6; the rest is on page 2.
    assert first.index(order.number) < first.index("TOPUP-024") < first.index("TOPUP-006")
    assert f'href="/orders/{order.number}"' in first
    assert "TOPUP-005" not in first and "Page 1 of 2" in first
    second = _text(await (await client.get("/account/wallet?page=2", headers=HX)).get_data())
    assert "TOPUP-005" in second and "TOPUP-001" in second and "TOPUP-024" not in second
    assert "<html" not in second and 'id="ledger"' in second


async def test_wallet_topup_form_only_when_paystack_is_set_up(app, client, make_user, sign_in):
    sign_in(client, await make_user())
    assert not app.config["PAYSTACK_ENABLED"]  # the test app has no Paystack keys
    without = _text(await (await client.get("/account/wallet")).get_data())
    assert 'action="/account/wallet/topup"' not in without
    assert "not available" in without

    reconfigure(app, {"PAYSTACK_ENABLED": True})
    with_form = _text(await (await client.get("/account/wallet")).get_data())
    assert 'action="/account/wallet/topup"' in with_form
    assert 'name="amount"' in with_form and 'name="csrf_token"' in with_form
