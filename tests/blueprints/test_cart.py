"""Cart pages and forms: add / change / remove as htmx fragments (with the out-of-band badge) and
as no-JS 303 flows; every bad input gets a message and changes nothing."""

import asyncio
import re
import sqlite3

import pytest
from sqlalchemy import event, func, select

from storefront.db.engine import sessionmaker_for
from storefront.db.transactions import write_transaction
from storefront.models import Cart, CartItem, Product
from storefront.web.cart_badge import BADGE_COOKIE
from tests.conftest import CSRF_TOKEN
from tests.fixtures_shop import badge_cookie, counted_statements

HTMX = {"HX-Request": "true"}


@pytest.fixture(name="app_overrides")
def _app_overrides():
    return {"RATELIMIT_ENABLED": False}


async def post_add(client, product_id, quantity="1", htmx=False, **extra):
    form = {"csrf_token": CSRF_TOKEN, "product_id": str(product_id), "quantity": quantity}
    form.update(extra)
    return await client.post("/cart/items", form=form, headers=HTMX if htmx else {})


async def post_quantity(client, product_id, quantity, htmx=False):
    return await client.post(
        f"/cart/items/{product_id}",
        form={"csrf_token": CSRF_TOKEN, "quantity": quantity},
        headers=HTMX if htmx else {},
    )


async def browser_cart(client) -> dict:
    """The session's cart token and the badge cookie's count."""
    async with client.session_transaction() as browser_session:
        state = dict(browser_session)
    return {**state, "cart_count": badge_cookie(client)}


async def cart_rows(app) -> dict[int, dict[int, int]]:
    """Every cart's lines, read fresh: {cart_id: {product_id: quantity}}."""
    async with sessionmaker_for(app)() as db_session:
        carts = {cart_id: {} for cart_id in (await db_session.scalars(select(Cart.id))).all()}
        for cart_id, product_id, quantity in await db_session.execute(
            select(CartItem.cart_id, CartItem.product_id, CartItem.quantity)
        ):
            carts[cart_id][product_id] = quantity
        return carts


async def flashes_after(client, response) -> str:
    assert response.status_code == 303
    page = await client.get(response.headers["Location"])
    return await page.get_data(as_text=True)


def badge_count(body: str) -> int:
    match = re.search(r'<a href="/cart" id="cart-badge"[^>]*>Cart <span class="count">(\d+)', body)
    assert match, body
    return int(match[1])


async def test_empty_cart_page_creates_nothing(app, client):
    response = await client.get("/cart")
    body = await response.get_data(as_text=True)
    assert response.status_code == 200
    assert "Your cart is empty" in body
    assert "cart_token" not in await browser_cart(client)
    assert await cart_rows(app) == {}


async def test_add_without_js_redirects_back_with_a_flash(app, client, add_product):
    product = await add_product(name="Kente Scarf", stock=5, slug="kente-scarf")
    response = await post_add(client, product.id, "2", next="/products/kente-scarf")
    assert response.status_code == 303
    assert response.headers["Location"] == "/products/kente-scarf"
    state = await browser_cart(client)
    assert state["cart_count"] == 2 and state["cart_token"]
    [(cart_id, lines)] = (await cart_rows(app)).items()
    assert lines == {product.id: 2}
    page = await client.get("/cart")
    body = await page.get_data(as_text=True)
    assert "Added 2 × Kente Scarf to your cart (2 in cart)." in body
    assert badge_count(body) == 2


@pytest.mark.parametrize("next_url", ["//evil.example/x", "https://evil.example/", "cart", ""])
async def test_add_never_redirects_off_site(client, add_product, next_url):
    product = await add_product()
    response = await post_add(client, product.id, next=next_url)
    assert response.headers["Location"] == "/cart"


async def test_add_with_htmx_returns_the_form_and_the_badge_out_of_band(app, client, add_product):
    product = await add_product(name="Shea Butter", stock=5)
    await post_add(client, product.id, "1", htmx=True)
    response = await post_add(client, product.id, "1", htmx=True)
    body = await response.get_data(as_text=True)
    assert response.status_code == 200
    assert "HX-Request" in response.headers["Vary"]
    assert response.headers["HX-Trigger"] == "cart-updated"
    assert f'id="add-form-{product.id}"' in body
    assert "Added — 2 in cart" in body
    assert 'id="cart-badge"' in body and 'hx-swap-oob="true"' in body
    assert badge_count(body) == 2
    assert "<html" not in body
    assert (await browser_cart(client))["cart_count"] == 2
    assert list((await cart_rows(app)).values()) == [{product.id: 2}]


@pytest.mark.both_databases
async def test_racing_adds_to_one_cart_stay_within_stock(app, client, add_product):
    scarce = await add_product(stock=5)
    other = await add_product(stock=50)
    assert (await post_add(client, other.id, htmx=True)).status_code == 200
    responses = await asyncio.gather(*(post_add(client, scarce.id, htmx=True) for _ in range(12)))
    assert sorted(response.status_code for response in responses) == [200] * 5 + [422] * 7
    bodies = [await response.get_data(as_text=True) for response in responses]
    # Each add saw every add before it: the badges of the five that went in count 2..6.
    assert sorted(badge_count(body) for body in bodies if "Added" in body) == [2, 3, 4, 5, 6]
    assert list((await cart_rows(app)).values()) == [{other.id: 1, scarce.id: 5}]


@pytest.mark.parametrize("shopper", ["guest", "customer"])
async def test_a_repeat_add_on_sqlite_goes_through_the_batch_writer(
    app, client, add_product, make_user, shopper
):
    if shopper == "customer":
        client_sign_in(client, await make_user())
    product = await add_product(stock=10)
    await post_add(client, product.id, htmx=True)
    with counted_statements(app) as statements:
        response = await post_add(client, product.id, "2", htmx=True)
    assert "Added — 3 in cart" in await response.get_data(as_text=True)
    # The request's own (aiosqlite) engine wrote nothing (a customer is looked up there): the
    # add went to the batch writer.
    assert not [
        sql for sql in statements if not sql.lstrip().upper().startswith(("BEGIN", "SELECT"))
    ]
    assert len(statements) == (0 if shopper == "guest" else 2)
    assert list((await cart_rows(app)).values()) == [{product.id: 3}]


async def test_a_repeat_add_rewrites_the_badge_cookie_not_the_session(app, client, add_product):
    product = await add_product(stock=10)
    first = await post_add(client, product.id, htmx=True)
    assert any(h.startswith("storefront_session=") for h in first.headers.get_all("Set-Cookie"))
    again = await post_add(client, product.id, htmx=True)
    set_cookies = again.headers.get_all("Set-Cookie")
    assert [h.split("=", 1)[0] for h in set_cookies] == [BADGE_COOKIE]
    attributes = set_cookies[0].lower()
    assert set_cookies[0].startswith(f"{BADGE_COOKIE}=2;")
    assert "httponly" in attributes and "samesite=lax" in attributes and "path=/" in attributes
    assert badge_cookie(client) == 2


@pytest.mark.parametrize("forged", ["abc", "-1", "1234567", "²", "1e3", ""])
async def test_a_forged_badge_cookie_shows_zero(client, forged):
    client.set_cookie("localhost", BADGE_COOKIE, forged, path="/")
    for path in ("/", "/cart"):
        response = await client.get(path)
        assert response.status_code == 200
        assert badge_count(await response.get_data(as_text=True)) == 0


async def test_badge_counts_items_across_products(client, add_product):
    first = await add_product()
    second = await add_product()
    await post_add(client, first.id, "2", htmx=True)
    response = await post_add(client, second.id, "3", htmx=True)
    assert badge_count(await response.get_data(as_text=True)) == 5
    page = await client.get("/cart")
    assert badge_count(await page.get_data(as_text=True)) == 5


async def test_cart_page_shows_lines_totals_coupon_form_and_checkout(client, add_product):
    tea = await add_product(name="Hibiscus Tea", price_minor=2_550, stock=5)
    soap = await add_product(name="Black Soap", price_minor=1_000, stock=5)
    await post_add(client, tea.id, "2")
    await post_add(client, soap.id, "1")
    response = await client.get("/cart")
    body = await response.get_data(as_text=True)
    assert response.status_code == 200
    assert f'id="cart-line-{tea.id}"' in body and f'id="cart-line-{soap.id}"' in body
    assert "GH₵ 25.50 each" in body and "GH₵ 51.00" in body
    assert '<span id="cart-subtotal">GH₵ 61.00</span>' in body
    assert '<strong id="cart-total">GH₵ 61.00</strong>' in body
    assert 'name="code"' in body and 'action="/cart/coupon"' in body
    assert 'href="/checkout"' in body


async def test_prices_come_from_the_database_not_the_form(app, client, add_product):
    product = await add_product(price_minor=5_000, stock=5)
    await post_add(client, product.id, "1", price_minor="1", price="0.01", unit_price_minor="1")
    async with sessionmaker_for(app)() as db_session, write_transaction(db_session):
        (await db_session.get(Product, product.id)).price_minor = 6_000
    body = await (await client.get("/cart")).get_data(as_text=True)
    assert '<span id="cart-subtotal">GH₵ 60.00</span>' in body


async def test_change_quantity_with_htmx_swaps_line_totals_and_badge(app, client, add_product):
    product = await add_product(name="Phone Case", price_minor=3_000, stock=6)
    await post_add(client, product.id, "1")
    response = await post_quantity(client, product.id, "4", htmx=True)
    body = await response.get_data(as_text=True)
    assert response.status_code == 200
    assert "HX-Request" in response.headers["Vary"]
    assert response.headers["HX-Trigger"] == "cart-updated"
    assert body.lstrip().startswith(f'<li class="cart-line" id="cart-line-{product.id}"')
    assert 'value="4"' in body and "GH₵ 120.00" in body
    assert '<div id="cart-summary" class="panel cart-summary" hx-swap-oob="true">' in body
    assert '<strong id="cart-total">GH₵ 120.00</strong>' in body
    assert badge_count(body) == 4
    assert list((await cart_rows(app)).values()) == [{product.id: 4}]
    assert (await browser_cart(client))["cart_count"] == 4


async def test_change_quantity_without_js(app, client, add_product):
    product = await add_product(name="Phone Case", stock=6)
    await post_add(client, product.id, "1")
    response = await post_quantity(client, product.id, "3")
    assert response.headers["Location"] == "/cart"
    body = await flashes_after(client, response)
    assert "Phone Case: quantity now 3." in body
    assert badge_count(body) == 3
    assert list((await cart_rows(app)).values()) == [{product.id: 3}]


async def test_remove_with_htmx_removes_the_line_and_updates_totals(app, client, add_product):
    keep = await add_product(name="Keep", price_minor=1_000)
    drop = await add_product(name="Drop", price_minor=2_000)
    await post_add(client, keep.id, "1")
    await post_add(client, drop.id, "2")
    response = await post_quantity(client, drop.id, "0", htmx=True)
    body = await response.get_data(as_text=True)
    assert response.status_code == 200
    assert response.headers["HX-Trigger"] == "cart-updated"
    assert "<li" not in body  # the swap of the line's <li> with nothing removes it
    assert 'id="cart-summary"' in body and 'hx-swap-oob="true"' in body
    assert '<strong id="cart-total">GH₵ 10.00</strong>' in body
    assert badge_count(body) == 1
    assert list((await cart_rows(app)).values()) == [{keep.id: 1}]


async def test_removing_the_last_line_shows_the_empty_cart(app, client, add_product):
    product = await add_product()
    await post_add(client, product.id, "1")
    response = await post_quantity(client, product.id, "0", htmx=True)
    body = await response.get_data(as_text=True)
    assert "Your cart is empty" in body and badge_count(body) == 0
    assert (await browser_cart(client))["cart_count"] == 0


async def test_remove_without_js(app, client, add_product):
    product = await add_product(name="Drop")
    await post_add(client, product.id, "2")
    response = await post_quantity(client, product.id, "0")
    body = await flashes_after(client, response)
    assert "Removed Drop." in body and badge_count(body) == 0
    assert list((await cart_rows(app)).values()) == [{}]


ADD_REFUSALS = [
    ("abc", "Enter the quantity as a whole number"),
    ("1.5", "Enter the quantity as a whole number"),
    ("-1", "The quantity cannot be negative."),
    ("0", "Choose at least 1."),
    ("", "Enter a quantity."),
    ("6", "Only 5 of Kente Cloth in stock"),
    ("4", "Only 5 of Kente Cloth in stock; you already have 2 in your cart."),
    ("99999999999999", "far more than we have"),
]


@pytest.mark.parametrize(("quantity", "message"), ADD_REFUSALS)
@pytest.mark.parametrize("htmx", [True, False], ids=["htmx", "no-js"])
async def test_bad_add_quantities_change_nothing(app, client, add_product, quantity, message, htmx):
    product = await add_product(name="Kente Cloth", stock=5)
    await post_add(client, product.id, "2")
    before_rows, before_session = await cart_rows(app), await browser_cart(client)
    response = await post_add(client, product.id, quantity, htmx=htmx)
    if htmx:
        body = await response.get_data(as_text=True)
        assert response.status_code == 422
        assert f'id="add-form-{product.id}"' in body and "HX-Trigger" not in response.headers
        assert 'id="cart-badge"' not in body
    else:
        body = await flashes_after(client, response)
    assert message in body
    assert await cart_rows(app) == before_rows
    after_session = await browser_cart(client)
    assert after_session.get("cart_count") == before_session["cart_count"] == 2


@pytest.mark.both_databases
@pytest.mark.parametrize("quantity", ["6", "abc"])
async def test_a_refused_add_shows_the_form_from_the_refusal(app, client, add_product, quantity):
    """The refusal carries the product to show: the view reads nothing after the add."""
    product = await add_product(name="Kente Cloth", stock=5)
    await post_add(client, product.id, "2")
    with counted_statements(app) as statements:
        response = await post_add(client, product.id, quantity, htmx=True)
    body = await response.get_data(as_text=True)
    assert response.status_code == 422
    assert f'id="add-form-{product.id}"' in body and 'max="5"' in body
    product_reads = [sql for sql in statements if sql.startswith("SELECT") and "products" in sql]
    assert len(product_reads) == 1, statements


@pytest.mark.parametrize("htmx", [True, False], ids=["htmx", "no-js"])
@pytest.mark.parametrize("which", ["unknown", "inactive", "not-a-number", "missing"])
async def test_bad_products_on_a_first_add_create_no_cart(app, client, add_product, which, htmx):
    inactive = await add_product(is_active=False)
    product_id = {
        "unknown": "987654",
        "inactive": str(inactive.id),
        "not-a-number": "abc",
        "missing": "",
    }[which]
    response = await post_add(client, product_id, "1", htmx=htmx)
    if htmx:
        assert response.status_code == 422
        body = await response.get_data(as_text=True)
    else:
        body = await flashes_after(client, response)
    assert "does not exist" in body
    assert await cart_rows(app) == {}
    assert "cart_token" not in await browser_cart(client)


async def test_out_of_stock_product_refused(app, client, add_product):
    product = await add_product(name="Sold Out", stock=0)
    response = await post_add(client, product.id, "1", htmx=True)
    assert response.status_code == 422
    assert "Sold Out is out of stock." in await response.get_data(as_text=True)
    assert await cart_rows(app) == {}


QUANTITY_REFUSALS = [
    ("abc", "Enter the quantity as a whole number"),
    ("-2", "The quantity cannot be negative."),
    ("2.0", "Enter the quantity as a whole number"),
    ("", "Enter a quantity."),
    ("6", "Only 5 of Beads in stock."),
]


@pytest.mark.parametrize(("quantity", "message"), QUANTITY_REFUSALS)
@pytest.mark.parametrize("htmx", [True, False], ids=["htmx", "no-js"])
async def test_bad_quantity_changes_change_nothing(
    app, client, add_product, quantity, message, htmx
):
    product = await add_product(name="Beads", stock=5)
    await post_add(client, product.id, "2")
    before = await cart_rows(app)
    response = await post_quantity(client, product.id, quantity, htmx=htmx)
    if htmx:
        body = await response.get_data(as_text=True)
        assert response.status_code == 422
        assert f'id="cart-line-{product.id}"' in body and 'value="2"' in body
        assert "hx-swap-oob" not in body
    else:
        body = await flashes_after(client, response)
    assert message in body
    assert await cart_rows(app) == before
    assert (await browser_cart(client))["cart_count"] == 2


@pytest.mark.parametrize("htmx", [True, False], ids=["htmx", "no-js"])
@pytest.mark.parametrize("target", ["not-in-cart", "unknown", "not-a-number"])
async def test_changing_a_line_that_is_not_there(app, client, add_product, target, htmx):
    in_cart = await add_product()
    elsewhere = await add_product()
    await post_add(client, in_cart.id, "1")
    before = await cart_rows(app)
    product_id = {"not-in-cart": elsewhere.id, "unknown": 424242, "not-a-number": "x1"}[target]
    response = await post_quantity(client, product_id, "1", htmx=htmx)
    if htmx:
        assert response.status_code == 422
        body = await response.get_data(as_text=True)
    else:
        body = await flashes_after(client, response)
    assert "not in your cart" in body or "does not exist" in body
    assert await cart_rows(app) == before


async def test_raising_an_inactive_products_quantity_is_refused(app, client, add_product):
    product = await add_product(name="Retired", stock=5)
    await post_add(client, product.id, "1")
    async with sessionmaker_for(app)() as db_session, write_transaction(db_session):
        (await db_session.get(Product, product.id)).is_active = False
    response = await post_quantity(client, product.id, "2", htmx=True)
    assert response.status_code == 422
    assert "Retired is no longer sold" in await response.get_data(as_text=True)
    body = await (await client.get("/cart")).get_data(as_text=True)
    assert "This product is no longer sold" in body and 'id="checkout-link"' not in body


async def test_posts_without_csrf_are_refused(app, client, add_product):
    product = await add_product()
    response = await client.post(
        "/cart/items", form={"product_id": str(product.id), "quantity": "1"}
    )
    assert response.status_code == 403
    assert await cart_rows(app) == {}


async def test_signed_in_customer_adds_to_their_own_cart(app, client, add_product, make_user):
    user = await make_user()
    client_sign_in(client, user)
    product = await add_product()
    await post_add(client, product.id, "2", htmx=True)
    async with sessionmaker_for(app)() as db_session:
        cart = await db_session.scalar(select(Cart).where(Cart.user_id == user.id))
        assert cart is not None
        assert (
            await db_session.scalar(
                select(func.sum(CartItem.quantity)).where(CartItem.cart_id == cart.id)
            )
            == 2
        )
    assert "cart_token" not in await browser_cart(client)


def client_sign_in(client, user):
    from tests.conftest import sign_in

    sign_in(client, user)


async def test_a_guest_token_never_opens_a_customers_cart(app, client, add_product, make_user):
    user = await make_user()
    product = await add_product(name="Private")
    client_sign_in(client, user)
    await post_add(client, product.id, "1")
    async with sessionmaker_for(app)() as db_session:
        user_cart = await db_session.scalar(select(Cart).where(Cart.user_id == user.id))
    guest = app.test_client()
    async with guest.session_transaction() as browser_session:
        browser_session["csrf_token"] = CSRF_TOKEN
        browser_session["cart_token"] = user_cart.token
    body = await (await guest.get("/cart")).get_data(as_text=True)
    assert "Private" not in body and "Your cart is empty" in body


async def test_cart_page_query_count_does_not_grow_with_lines(app, client, add_product):
    engine = app.extensions["db_engine"]
    statements: list[str] = []

    def count(_conn, _cursor, statement, *_args):
        statements.append(statement)

    async def queries_for_cart_page() -> int:
        statements.clear()
        event.listen(engine.sync_engine, "before_cursor_execute", count)
        try:
            response = await client.get("/cart")
        finally:
            event.remove(engine.sync_engine, "before_cursor_execute", count)
        assert response.status_code == 200
        return len(statements)

    first = await add_product()
    await post_add(client, first.id, "1")
    with_one_line = await queries_for_cart_page()
    for _ in range(9):
        await post_add(client, (await add_product()).id, "1")
    with_ten_lines = await queries_for_cart_page()
    assert with_ten_lines == with_one_line
    assert with_one_line <= 4


async def test_viewing_the_cart_does_not_rewrite_the_session_cookie(client, add_product):
    product = await add_product()
    await post_add(client, product.id, "1", htmx=True)
    response = await client.get("/cart")
    assert "storefront_session" not in response.headers.get("Set-Cookie", "")


@pytest.mark.parametrize(
    "app_overrides", [{"RATELIMIT_ENABLED": False, "SQLITE_BUSY_TIMEOUT_MS": 50}]
)
@pytest.mark.parametrize("htmx", [True, False], ids=["htmx", "no-js"])
async def test_a_locked_database_answers_503_and_changes_nothing(
    app, client, database_url, add_product, htmx
):
    first, second = await add_product(stock=10), await add_product(stock=10)
    await post_add(client, first.id, htmx=True)
    before_rows, before_badge = await cart_rows(app), badge_cookie(client)
    # Another process holds SQLite's write lock for longer than the busy timeout allows.
    locker = sqlite3.connect(database_url.split("///", 1)[1], isolation_level=None)
    try:
        locker.execute("BEGIN IMMEDIATE")
        repeat = await post_add(client, first.id, htmx=htmx)  # the batch writer's path
        new_line = await post_add(client, second.id, htmx=htmx)  # a write transaction's path
        locker.execute("ROLLBACK")
    finally:
        locker.close()
    for response in (repeat, new_line):
        body = await response.get_data(as_text=True)
        assert response.status_code == 503, body
        assert response.headers["Retry-After"] == "5"
        assert "very busy" in body and "locked" not in body
        assert ("<html" in body) is not htmx
    assert await cart_rows(app) == before_rows
    assert badge_cookie(client) == before_badge
    assert (await post_add(client, first.id, htmx=True)).status_code == 200
