"""Error paths after a failed write: whatever refuses a write (a rule in a service, a constraint),
the view can still read and render its message, with JavaScript (htmx) and without, signed in,
on SQLite and PostgreSQL. Every form route of app.url_map has a refusal here; a route added
tomorrow fails test_every_form_route_has_a_refusal until it gets one."""

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from quart import Quart
from quart.testing import QuartClient
from sqlalchemy import select
from werkzeug.datastructures import MultiDict

from storefront.db.engine import sessionmaker_for
from storefront.db.transactions import write_transaction
from storefront.models import Cart, CartItem, User
from tests.conftest import CSRF_TOKEN, sign_in
from tests.fake_paystack import FakePaystack
from tests.fixtures_paystack import paystack_overrides
from tests.test_policy import UNSAFE_METHODS

pytestmark = pytest.mark.both_databases

HTMX = {"HX-Request": "true"}


@pytest.fixture(name="app_overrides")
def _app_overrides(fake_paystack: FakePaystack) -> dict[str, Any]:
    return paystack_overrides(fake_paystack, RATELIMIT_ENABLED=False)


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
        "/admin/customers/<int:user_id>/role": [
            Refusal(
                f"/admin/customers/{shop.owner.id}/role",
                form(("role", "staff")),
                "is the only owner",
                owner=True,
            )
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
