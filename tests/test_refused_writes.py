"""Error paths after a failed write: whatever refuses a write (a rule in a service, a constraint),
the view can still read and render its message, with JavaScript (htmx) and without, signed in,
on SQLite and PostgreSQL. Every form route of app.url_map has a refusal here; a route added
tomorrow fails test_every_form_route_has_a_refusal until it gets one. A checkout that meets a
lock another connection holds is retried, or ends ShopBusy, and the view still renders the
customer it loaded before the write."""

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from quart import Quart
from quart.testing import QuartClient
from sqlalchemy import func, select
from werkzeug.datastructures import MultiDict

from storefront.db.engine import dialect_name, sessionmaker_for
from storefront.db.sqlite_writer import sqlite_file_path
from storefront.db.transactions import ShopBusy, write_transaction
from storefront.models import Cart, CartItem, Order, User, Wallet
from tests.conftest import CSRF_TOKEN, sign_in
from tests.fake_paystack import FakePaystack
from tests.fixtures_paystack import paystack_overrides
from tests.test_policy import UNSAFE_METHODS

pytestmark = pytest.mark.both_databases

HTMX = {"HX-Request": "true"}


# A write meeting a held lock gives up after this long (SQLite busy_timeout; PostgreSQL's
# lock_timeout is set to the same below), so the lock-conflict tests end in about a second.
LOCK_WAIT_MS = 200


@pytest.fixture(name="app_overrides")
def _app_overrides(fake_paystack: FakePaystack) -> dict[str, Any]:
    return paystack_overrides(
        fake_paystack, RATELIMIT_ENABLED=False, SQLITE_BUSY_TIMEOUT_MS=LOCK_WAIT_MS
    )


@dataclass
class Shop:
    app: Quart
    shopper: User
    owner: User
    beads_id: int  # stock 5; the shopper's cart holds 2
    other_id: int  # in stock, not in the cart


@dataclass(frozen=True)
class Refusal:
    """A request the shop must refuse, and words its answer (or the page it leads to) shows."""

    path: str
    form: MultiDict[str, str]
    message: str
    owner: bool = False


def form(*pairs: tuple[str, str]) -> MultiDict[str, str]:
    return MultiDict([("csrf_token", CSRF_TOKEN), *pairs])


def refusals(shop: Shop) -> dict[str, list[Refusal]]:
    """Route rule → the refusals driven on it."""
    beads, other = shop.beads_id, shop.other_id
    return {
        "/cart/items": [
            Refusal("/cart/items", form(("product_id", str(beads)), ("quantity", "9")), "in stock"),
        ],
        "/cart/items/<product_id>": [
            # Above stock, 0 for a product not in the cart, a repeated quantity field.
            Refusal(f"/cart/items/{beads}", form(("quantity", "6")), "Only 5 of Beads in stock"),
            Refusal(f"/cart/items/{other}", form(("quantity", "0")), "not in your cart"),
            Refusal(
                f"/cart/items/{beads}",
                form(("quantity", "9"), ("quantity", "1")),
                "Only 5 of Beads in stock",
            ),
        ],
        "/api/validate-coupon": [
            Refusal("/api/validate-coupon", form(("code", "NOPE")), "the code NOPE"),
        ],
        "/cart/coupon": [Refusal("/cart/coupon", form(("code", "NOPE")), "the code NOPE")],
        "/register": [
            Refusal(
                "/register",
                form(
                    ("name", "Copy"),
                    ("email", shop.shopper.email),
                    ("password", "another long password"),
                    ("password_confirm", "another long password"),
                ),
                "We could not create an account with this email",
            )
        ],
        "/login": [
            Refusal(
                "/login",
                form(("email", shop.shopper.email), ("password", "wrong password!")),
                "do not match an account",
            )
        ],
        "/password/forgot": [
            Refusal("/password/forgot", form(("email", "not an address")), "email address")
        ],
        "/password/reset/<token>": [
            Refusal("/password/reset/forged-token", form(("password", "x")), "link")
        ],
        "/pay/wallet": [
            Refusal(
                "/pay/wallet",
                form(("payment_method", "wallet"), ("delivery", "pickup"), ("phone", "0241234567")),
                "wallet",
            )
        ],
        "/paystack/init": [
            Refusal(
                "/paystack/init",
                form(("payment_method", "paystack"), ("delivery", "nowhere")),
                "delivery",
            )
        ],
        "/paystack/orders/<number>/pay": [
            Refusal("/paystack/orders/CW-999999/pay", form(), "was not found")
        ],
        "/account/wallet/topup": [
            Refusal("/account/wallet/topup", form(("amount", "0.01")), "smallest top-up")
        ],
        "/admin/emails/<int:email_id>/retry": [
            Refusal("/admin/emails/424242/retry", form(), "No email #424242", owner=True)
        ],
        "/admin/emails/retry-dead": [
            Refusal("/admin/emails/retry-dead", form(), "There are no dead emails", owner=True)
        ],
        "/admin/test-email": [
            Refusal("/admin/test-email", form(("to", "not an address")), "address", owner=True)
        ],
        # Refused inside the write (the category is checked there), and before it.
        "/admin/products": [
            Refusal(
                "/admin/products",
                form(("name", "Beads 2"), ("price", "12"), ("category_id", "424242")),
                "That category is gone",
                owner=True,
            ),
            Refusal(
                "/admin/products",
                form(("name", ""), ("price", "12")),
                "Enter the product",
                owner=True,
            ),
        ],
        "/admin/products/<int:product_id>": [
            Refusal(
                f"/admin/products/{beads}",
                form(("name", "Beads"), ("price", "500"), ("category_id", "424242")),
                "That category is gone",
                owner=True,
            )
        ],
        "/admin/products/<int:product_id>/images": [
            Refusal(
                f"/admin/products/{beads}/images",
                form(),
                "Choose a photo to upload",
                owner=True,
            )
        ],
        "/admin/products/<int:product_id>/images/<int:image_id>/move": [
            Refusal(
                f"/admin/products/{beads}/images/424242/move",
                form(("direction", "up")),
                "has no photo #424242",
                owner=True,
            )
        ],
        "/admin/products/<int:product_id>/images/<int:image_id>/delete": [
            Refusal(
                f"/admin/products/{beads}/images/424242/delete",
                form(),
                "has no photo #424242",
                owner=True,
            )
        ],
        "/admin/customers/<int:user_id>/role": [
            Refusal(
                f"/admin/customers/{shop.owner.id}/role",
                form(("role", "staff")),
                "is the only owner",
                owner=True,
            )
        ],
        "/admin/products/<int:product_id>/stock": [
            Refusal(
                f"/admin/products/{beads}/stock",
                form(("change", "-9"), ("reason", "Counted")),
                "would leave -4. Nothing changed.",
                owner=True,
            )
        ],
        "/admin/categories": [
            Refusal("/admin/categories", form(("name", " ")), "Give the category a name", True)
        ],
        "/admin/categories/<int:category_id>": [
            Refusal("/admin/categories/424242", form(("name", "Gone")), "no such category", True)
        ],
        "/admin/categories/<int:category_id>/move": [
            Refusal(
                "/admin/categories/424242/move", form(("direction", "up")), "no such category", True
            )
        ],
        "/admin/categories/<int:category_id>/delete": [
            Refusal("/admin/categories/424242/delete", form(), "no such category", owner=True)
        ],
        "/admin/coupons": [
            Refusal(
                "/admin/coupons",
                form(
                    ("code", "BACKWARDS"),
                    ("kind", "percent"),
                    ("value", "10"),
                    ("starts_at", "2026-12-02T00:00"),
                    ("ends_at", "2026-12-01T00:00"),
                ),
                "must end after it starts",
                owner=True,
            )
        ],
        "/admin/coupons/<int:coupon_id>": [
            Refusal("/admin/coupons/424242", form(("max_uses", "5")), "no such coupon", True)
        ],
        "/admin/coupons/<int:coupon_id>/end": [
            Refusal("/admin/coupons/424242/end", form(), "no such coupon", owner=True)
        ],
    }


# Routes with nothing to refuse: signing out, taking a coupon off; the webhook answers Paystack
# in JSON (tests/test_serving_under_load.py refuses its malformed bodies).
NOTHING_TO_REFUSE = {
    "/logout",
    "/account/logout-everywhere",
    "/cart/coupon/remove",
    "/paystack/webhook",
}


NO_JS_ONLY = {"/cart/coupon"}


@pytest.fixture(name="shop")
async def _shop(app: Quart, make_user: Any, add_product: Any) -> Shop:
    shopper = await make_user(name="Refused Rita")
    owner = await make_user(role="owner", name="Owner Olu")
    beads = await add_product(name="Beads", stock=5, price_minor=50_000)
    other = await add_product(name="Other", stock=5)
    async with sessionmaker_for(app)() as db_session, write_transaction(db_session):
        cart = Cart(token="refused-writes-cart", user_id=shopper.id)
        db_session.add(cart)
        await db_session.flush()
        db_session.add(CartItem(cart_id=cart.id, product_id=beads.id, quantity=2))
    return Shop(app, shopper, owner, beads.id, other.id)


def form_routes(app: Quart) -> set[str]:
    return {
        rule.rule
        for rule in app.url_map.iter_rules()
        if set(rule.methods or ()) & UNSAFE_METHODS and rule.endpoint != "static"
    }


async def test_every_form_route_has_a_refusal(shop: Shop) -> None:
    assert form_routes(shop.app) - NOTHING_TO_REFUSE == set(refusals(shop))


async def answer_text(client: QuartClient, response: Any) -> str:
    """The answer's text; for a no-JS redirect, the page it leads to (where the flash shows)."""
    if response.status_code in (302, 303):
        response = await client.get(response.headers["Location"])
    return await response.get_data(as_text=True)


async def cart_lines(app: Quart, user_id: int) -> dict[int, int]:
    async with sessionmaker_for(app)() as db_session:
        rows = await db_session.execute(
            select(CartItem.product_id, CartItem.quantity)
            .join(Cart, Cart.id == CartItem.cart_id)
            .where(Cart.user_id == user_id)
        )
        return {product_id: quantity for product_id, quantity in rows}


Signed = Callable[[User], Awaitable[QuartClient]]


@pytest.mark.parametrize("htmx", [True, False], ids=["htmx", "no-js"])
async def test_error_paths_after_a_failed_write_answer_4xx_with_their_message(
    shop: Shop, htmx: bool
) -> None:
    failures = []
    lines_before = await cart_lines(shop.app, shop.shopper.id)
    for rule, cases in refusals(shop).items():
        for case in cases:
            client = shop.app.test_client()
            async with client.session_transaction() as browser_session:
                browser_session["csrf_token"] = CSRF_TOKEN
            sign_in(client, shop.owner if case.owner else shop.shopper)
            response = await client.post(case.path, form=case.form, headers=HTMX if htmx else {})
            status = response.status_code
            text = re.sub(r"\s+", " ", await answer_text(client, response))
            # Without JS a form posts, redirects and flashes; /cart/coupon is that form only (the
            # page's htmx form posts /api/validate-coupon), so it redirects an htmx post too.
            redirect_ok = status == 303 and (not htmx or rule in NO_JS_ONLY)
            if not (400 <= status < 500 or redirect_ok) or case.message not in text:
                failures.append(f"{rule} {case.path} {dict(case.form)}: {status} {text[-400:]!r}")
    assert failures == [], "\n".join(failures)
    assert await cart_lines(shop.app, shop.shopper.id) == lines_before


# Lock conflicts: a retried write and ShopBusy, through the checkout view ------------------------

WALLET_FORM = form(("payment_method", "wallet"), ("delivery", "pickup"), ("phone", "0241234567"))


@asynccontextmanager
async def carts_locked(app: Quart, database_url: str) -> AsyncIterator[None]:
    """Another connection holds the lock a checkout needs (SQLite: the write lock; PostgreSQL:
    the carts' rows) until the block ends; the app's writes give up after LOCK_WAIT_MS."""
    engine = app.extensions["db_engine"]
    if dialect_name(database_url) == "sqlite":
        import sqlite3

        holder = sqlite3.connect(sqlite_file_path(engine) or "", isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        return
    import asyncpg

    dsn = database_url.replace("postgresql+asyncpg://", "postgresql://")
    holder = await asyncpg.connect(dsn)
    try:
        database = await holder.fetchval("SELECT current_database()")
        await holder.execute(f'ALTER DATABASE "{database}" SET lock_timeout = {LOCK_WAIT_MS}')
        await engine.dispose()  # the pool's next connections start with the lock timeout
        async with holder.transaction():
            await holder.execute("SELECT id FROM carts FOR UPDATE")
            yield
    finally:
        await holder.close()


async def wallet_shopper(shop: Shop, make_user: Any) -> User:
    """A signed-in shopper's account with money enough for one Beads in the cart."""
    shopper = await make_user(name="Waiting Wendy", balance_minor=100_000)
    async with sessionmaker_for(shop.app)() as db_session, write_transaction(db_session):
        cart = Cart(token="waiting-cart", user_id=shopper.id)
        db_session.add(cart)
        await db_session.flush()
        db_session.add(CartItem(cart_id=cart.id, product_id=shop.beads_id, quantity=1))
    return shopper


async def balance_and_orders(app: Quart, user_id: int) -> tuple[int | None, int]:
    async with sessionmaker_for(app)() as db_session:
        balance = await db_session.scalar(
            select(Wallet.balance_minor).where(Wallet.user_id == user_id)
        )
        orders = await db_session.scalar(
            select(func.count()).select_from(Order).where(Order.user_id == user_id)
        )
        return balance, orders or 0


async def test_a_checkout_retried_after_a_lock_conflict_uses_the_customer_it_loaded(
    shop: Shop, make_user: Any, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    shopper = await wallet_shopper(shop, make_user)
    client = shop.app.test_client()
    async with client.session_transaction() as browser_session:
        browser_session["csrf_token"] = CSRF_TOKEN
    sign_in(client, shopper)
    caplog.set_level(logging.WARNING, logger="storefront.db.transactions")

    async with carts_locked(shop.app, database_url):
        paying = asyncio.create_task(client.post("/pay/wallet", form=WALLET_FORM))
        while "hit a lock conflict" not in caplog.text:
            assert not paying.done(), (await paying).status_code
            await asyncio.sleep(0.01)
    response = await paying

    assert response.status_code == 303, await response.get_data(as_text=True)
    assert response.headers["Location"].startswith("/orders/")
    assert await balance_and_orders(shop.app, shopper.id) == (50_000, 1)  # Beads cost 500.00


@pytest.mark.parametrize("htmx", [True, False], ids=["htmx", "no-js"])
async def test_a_checkout_that_ends_shop_busy_renders_the_customer_it_loaded(
    shop: Shop, make_user: Any, database_url: str, htmx: bool
) -> None:
    shopper = await wallet_shopper(shop, make_user)
    client = shop.app.test_client()
    async with client.session_transaction() as browser_session:
        browser_session["csrf_token"] = CSRF_TOKEN
    sign_in(client, shopper)

    async with carts_locked(shop.app, database_url):
        response = await client.post("/pay/wallet", form=WALLET_FORM, headers=HTMX if htmx else {})

    text = await response.get_data(as_text=True)
    assert response.status_code == 503, text
    assert response.headers["Retry-After"] == "5"
    assert str(ShopBusy()) in text
    if not htmx:
        assert "Waiting Wendy" in text  # the page's header reads the customer after the rollbacks
    assert await balance_and_orders(shop.app, shopper.id) == (100_000, 0)
