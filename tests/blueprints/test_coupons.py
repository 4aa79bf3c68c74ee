"""Coupon endpoint and form: JSON, htmx fragment and no-JS answers; every refusal says why and
leaves the cart's coupon as it was."""

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import select

from storefront.db.engine import sessionmaker_for
from storefront.db.transactions import write_transaction
from storefront.models import Cart, Order, utcnow
from storefront.services.coupons import use_coupon
from tests.conftest import CSRF_TOKEN, sign_in

HTMX = {"HX-Request": "true"}


@pytest.fixture(name="app_overrides")
def _app_overrides():
    return {"RATELIMIT_ENABLED": False}


async def add(client, product, quantity: int) -> None:
    response = await client.post(
        "/cart/items",
        form={"csrf_token": CSRF_TOKEN, "product_id": str(product.id), "quantity": str(quantity)},
        headers=HTMX,
    )
    assert response.status_code == 200


async def validate(client, code, htmx=False, as_json=False):
    if as_json:
        return await client.post(
            "/api/validate-coupon", json={"code": code}, headers={"X-CSRF-Token": CSRF_TOKEN}
        )
    return await client.post(
        "/api/validate-coupon",
        form={"csrf_token": CSRF_TOKEN, "code": code},
        headers=HTMX if htmx else {},
    )


async def cart_coupons(app) -> list[str | None]:
    async with sessionmaker_for(app)() as db_session:
        return list((await db_session.scalars(select(Cart.coupon_code).order_by(Cart.id))).all())


@pytest.fixture(name="cart_of_200")
async def _cart_of_200(client, add_product):
    """A guest cart holding GH₵ 200.00 of one product (2 × 100.00, 5 in stock)."""
    product = await add_product(name="Smartwatch", price_minor=10_000, stock=5)
    await add(client, product, 2)
    return product


async def test_ten_percent_of_200_cedis_as_json(app, client, cart_of_200, add_coupon):
    await add_coupon("WELCOME10", "percent", 1000)
    response = await validate(client, "WELCOME10", as_json=True)
    assert response.status_code == 200
    payload = await response.get_json()
    assert payload == {
        "valid": True,
        "code": "WELCOME10",
        "message": "WELCOME10 applied: GH₵ 20.00 off.",
        "subtotal_minor": 20_000,
        "discount_minor": 2_000,
        "total_minor": 18_000,
        "subtotal": "GH₵ 200.00",
        "discount": "GH₵ 20.00",
        "total": "GH₵ 180.00",
    }
    assert await cart_coupons(app) == ["WELCOME10"]


async def test_form_encoded_lowercase_code_with_spaces_is_accepted(
    app, client, cart_of_200, add_coupon
):
    await add_coupon("WELCOME10")
    response = await validate(client, "  welcome10  ")
    assert response.status_code == 200
    payload = await response.get_json()
    assert payload["valid"] is True and payload["code"] == "WELCOME10"
    assert await cart_coupons(app) == ["WELCOME10"]


async def test_fixed_discount_capped_at_subtotal(app, client, cart_of_200, add_coupon):
    await add_coupon("BIGFIXED", "fixed", 50_000)
    payload = await (await validate(client, "BIGFIXED", as_json=True)).get_json()
    assert payload["discount_minor"] == 20_000 and payload["total_minor"] == 0


async def test_htmx_answer_shows_the_discount_and_new_total(app, client, cart_of_200, add_coupon):
    await add_coupon("WELCOME10")
    response = await validate(client, "welcome10", htmx=True)
    body = await response.get_data(as_text=True)
    assert response.status_code == 200
    assert "HX-Request" in response.headers["Vary"]
    assert response.headers["HX-Trigger"] == "cart-updated"
    assert body.lstrip().startswith('<div id="cart-summary"')
    assert '<span id="cart-discount">&minus;GH₵ 20.00</span>' in body
    assert '<strong id="cart-total">GH₵ 180.00</strong>' in body
    assert "WELCOME10 applied: GH₵ 20.00 off." in body


async def test_coupon_form_without_js(app, client, cart_of_200, add_coupon):
    await add_coupon("WELCOME10")
    response = await client.post(
        "/cart/coupon", form={"csrf_token": CSRF_TOKEN, "code": "Welcome10"}
    )
    assert response.status_code == 303 and response.headers["Location"] == "/cart"
    body = await (await client.get("/cart")).get_data(as_text=True)
    assert "WELCOME10 applied: GH₵ 20.00 off." in body
    assert '<strong id="cart-total">GH₵ 180.00</strong>' in body
    assert await cart_coupons(app) == ["WELCOME10"]


async def test_removing_the_coupon(app, client, cart_of_200, add_coupon):
    await add_coupon("WELCOME10")
    await validate(client, "WELCOME10")
    response = await client.post(
        "/cart/coupon/remove", form={"csrf_token": CSRF_TOKEN}, headers=HTMX
    )
    body = await response.get_data(as_text=True)
    assert response.status_code == 200
    assert '<strong id="cart-total">GH₵ 200.00</strong>' in body and "cart-discount" not in body
    assert await cart_coupons(app) == [None]
    await validate(client, "WELCOME10")
    response = await client.post("/cart/coupon/remove", form={"csrf_token": CSRF_TOKEN})
    assert response.status_code == 303
    assert "Coupon removed." in await (await client.get("/cart")).get_data(as_text=True)
    assert await cart_coupons(app) == [None]


def _window(kind: str) -> dict:
    now = utcnow()
    if kind == "expired":
        return {"ends_at": now - timedelta(minutes=1)}
    return {"starts_at": now + timedelta(days=2)}


REFUSALS = [
    ("unknown", "NOSUCH", None, "We don't know the code NOSUCH"),
    ("empty", "", None, "Enter a coupon code."),
    ("blank", "    ", None, "Enter a coupon code."),
    ("inactive", "SLEEPY", {"is_active": False}, "The code SLEEPY is no longer active."),
    ("expired", "OLD", "expired", "The code OLD expired on"),
    ("not-started", "SOON", "future", "The code SOON starts on"),
    ("min-subtotal", "BIG", {"min_subtotal_minor": 25_000}, "add GH₵ 50.00 more"),
    ("exhausted", "USEDUP", {"max_uses": 3, "uses": 3}, "The code USEDUP has been fully used."),
]


@pytest.mark.parametrize(
    ("code", "coupon_kwargs", "message"),
    [case[1:] for case in REFUSALS],
    ids=[case[0] for case in REFUSALS],
)
@pytest.mark.parametrize("answer", ["json", "htmx", "no-js"])
async def test_refusals_say_why_and_keep_the_cart_coupon(
    app, client, cart_of_200, add_coupon, code, coupon_kwargs, message, answer
):
    await add_coupon("KEEPME", "fixed", 500)
    assert (await validate(client, "KEEPME")).status_code == 200
    if coupon_kwargs is not None:
        kwargs = _window(coupon_kwargs) if isinstance(coupon_kwargs, str) else coupon_kwargs
        await add_coupon(code, **kwargs)
    if answer == "json":
        response = await validate(client, code, as_json=True)
        payload = await response.get_json()
        assert response.status_code == 422
        assert payload["valid"] is False and message in payload["message"]
        assert payload["discount_minor"] == 0 and payload["total_minor"] == 20_000
    elif answer == "htmx":
        response = await validate(client, code, htmx=True)
        body = await response.get_data(as_text=True)
        assert response.status_code == 422
        assert message in body.replace("&#39;", "'")
        assert "HX-Trigger" not in response.headers
        # The cart still has its earlier coupon, and the fragment says so.
        assert '<strong id="cart-total">GH₵ 195.00</strong>' in body
    else:
        response = await client.post("/cart/coupon", form={"csrf_token": CSRF_TOKEN, "code": code})
        assert response.status_code == 303
        body = await (await client.get("/cart")).get_data(as_text=True)
        assert message in body.replace("&#39;", "'")
    assert await cart_coupons(app) == ["KEEPME"]


async def test_per_customer_limit_when_signed_in(app, client, make_user, add_product, add_coupon):
    user = await make_user()
    sign_in(client, user)
    await add_coupon("ONCE", max_uses_per_customer=1)
    product = await add_product(price_minor=10_000)
    await add(client, product, 1)
    async with sessionmaker_for(app)() as db_session, write_transaction(db_session):
        order = Order(
            number=f"T-{uuid.uuid4().hex[:10]}",
            user_id=user.id,
            email=user.email,
            payment_method="wallet",
            subtotal_minor=10_000,
            total_minor=10_000,
        )
        db_session.add(order)
        await db_session.flush()
        await use_coupon(db_session, "ONCE", user.id, order.id, 10_000, utcnow())
    response = await validate(client, "once", as_json=True)
    assert response.status_code == 422
    assert "already used the code ONCE" in (await response.get_json())["message"]
    assert await cart_coupons(app) == [None]


async def test_without_a_cart_nothing_is_created(app, client, add_coupon):
    await add_coupon("WELCOME10")
    response = await validate(client, "WELCOME10", as_json=True)
    assert response.status_code == 422
    assert "Add something to your cart" in (await response.get_json())["message"]
    assert await cart_coupons(app) == []


@pytest.mark.parametrize("payload", [{"code": 10}, {"code": None}, ["WELCOME10"], "x"])
async def test_odd_json_bodies_get_a_message(app, client, cart_of_200, add_coupon, payload):
    await add_coupon("WELCOME10")
    response = await client.post(
        "/api/validate-coupon", json=payload, headers={"X-CSRF-Token": CSRF_TOKEN}
    )
    assert response.status_code == 422
    assert (await response.get_json())["message"] == "Enter a coupon code."
    assert await cart_coupons(app) == [None]


async def test_coupon_stops_applying_when_the_cart_shrinks_below_the_minimum(
    app, client, cart_of_200, add_coupon
):
    await add_coupon("BIG150", min_subtotal_minor=15_000)
    assert (await validate(client, "BIG150")).status_code == 200
    response = await client.post(
        f"/cart/items/{cart_of_200.id}",
        form={"csrf_token": CSRF_TOKEN, "quantity": "1"},
        headers=HTMX,
    )
    body = await response.get_data(as_text=True)
    assert response.status_code == 200
    assert "The code BIG150 needs a subtotal of at least GH₵ 150.00; add GH₵ 50.00 more." in body
    assert "cart-discount" not in body
    assert '<strong id="cart-total">GH₵ 100.00</strong>' in body
    page = await (await client.get("/cart")).get_data(as_text=True)
    assert "needs a subtotal of at least GH₵ 150.00" in page
    # Growing the cart again brings the discount back: the code stays on the cart.
    await client.post(
        f"/cart/items/{cart_of_200.id}",
        form={"csrf_token": CSRF_TOKEN, "quantity": "2"},
        headers=HTMX,
    )
    page = await (await client.get("/cart")).get_data(as_text=True)
    assert '<span id="cart-discount">&minus;GH₵ 20.00</span>' in page


async def test_without_csrf_the_api_refuses(app, client, cart_of_200, add_coupon):
    await add_coupon("WELCOME10")
    response = await client.post("/api/validate-coupon", json={"code": "WELCOME10"})
    assert response.status_code == 403
    assert "error" in await response.get_json()
    assert await cart_coupons(app) == [None]
