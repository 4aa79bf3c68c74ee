"""The cart page, add / change / remove (htmx fragments or no-JS 303s) and coupons."""

from typing import Any

from quart import (
    Blueprint,
    Response,
    flash,
    make_response,
    redirect,
    render_template,
    request,
)
from quart import session as browser_session
from quart_rate_limiter import rate_limit
from sqlalchemy.ext.asyncio import AsyncSession
from werkzeug.wrappers import Response as WerkzeugResponse

from storefront.db.engine import get_session
from storefront.db.transactions import write_transaction
from storefront.lib.money import format_minor
from storefront.models import Cart, utcnow
from storefront.services.cart import (
    CartError,
    CartTotals,
    cart_turn,
    parse_product_id,
    parse_quantity,
    price_cart,
    select_cart_lines,
    select_current_cart,
)
from storefront.services.cart_add import add_to_cart
from storefront.services.cart_changes import set_cart_coupon, set_cart_quantity
from storefront.services.coupons import CouponCheck, evaluate_coupon, normalise_code
from storefront.web.auth import current_customer
from storefront.web.cart_badge import show_badge_count
from storefront.web.htmx import is_htmx, render_fragment, safe_next_path
from storefront.web.security import per_minute
from storefront.web.static_files import asset_url

blueprint = Blueprint("cart", __name__)

AnyResponse = Response | WerkzeugResponse

CART_TOKEN_KEY = "cart_token"
CART_UPDATED = "cart-updated"


async def current_cart(db_session: AsyncSession) -> Cart | None:
    """The request's cart: the customer's own when signed in, else the session token's."""
    customer = await current_customer()
    return await select_current_cart(
        db_session, customer.id if customer else None, browser_session.get(CART_TOKEN_KEY)
    )


async def remember_cart(cart_token: str | None, item_count: int) -> None:
    """Keep the session's cart token (guests) and the badge count current; touch only changes."""
    customer = await current_customer()
    if (
        cart_token is not None
        and customer is None
        and browser_session.get(CART_TOKEN_KEY) != cart_token
    ):
        browser_session[CART_TOKEN_KEY] = cart_token
    show_badge_count(item_count)


async def _fragments(status: int, *parts: tuple[str, dict[str, Any]]) -> AnyResponse:
    body = "".join([await render_fragment(template, **context) for template, context in parts])
    response = await make_response(body, status)
    response.headers["Vary"] = "HX-Request"
    if status < 400:
        response.headers["HX-Trigger"] = CART_UPDATED
    return response


async def _back(url: str, message: str, category: str) -> AnyResponse:
    await flash(message, category)
    response = redirect(url, 303)
    response.headers["Vary"] = "HX-Request"
    return response


def _badge(item_count: int) -> tuple[str, dict[str, Any]]:
    return "_cart_badge.html", {"oob": True, "cart_count": item_count}


@blueprint.get("/cart")
async def show_cart() -> str:
    """The cart page: lines, totals, coupon form and the way to checkout."""
    db_session = get_session()
    customer = await current_customer()
    cart = await current_cart(db_session)
    totals = await price_cart(db_session, cart, customer.id if customer else None)
    await remember_cart(cart.token if cart else None, totals.item_count)
    return await render_template(
        "cart/page.html", totals=totals, cart_count=totals.item_count, asset_url=asset_url
    )


@blueprint.post("/cart/items")
async def add_item() -> AnyResponse:
    """Add a product to the cart (creating the cart on the first add)."""
    form = await request.form
    next_url = safe_next_path(form.get("next")) or "/cart"
    try:
        product_id = parse_product_id(form.get("product_id"))
        customer = await current_customer()
        change = await add_to_cart(
            get_session(),
            customer.id if customer else None,
            browser_session.get(CART_TOKEN_KEY),
            product_id,
            form.get("quantity", "1"),
        )
    except CartError as refusal:
        return await _add_refused(refusal, next_url)
    await remember_cart(change.cart_token, change.item_count)
    if not is_htmx():
        return await _back(
            next_url,
            f"Added {change.added} × {change.product.name} to your cart "
            f"({change.quantity} in cart).",
            "ok",
        )
    form_context = {
        "product": change.product,
        "message": f"Added — {change.quantity} in cart",
        "message_class": "ok",
        "next_url": next_url,
    }
    return await _fragments(200, ("cart/_add_form.html", form_context), _badge(change.item_count))


async def _add_refused(refusal: CartError, next_url: str) -> AnyResponse:
    if not is_htmx():
        return await _back(next_url, str(refusal), "error")
    if refusal.product is None:
        return await _fragments(422, ("cart/_message.html", {"message": str(refusal)}))
    form_context = {
        "product": refusal.product,
        "message": str(refusal),
        "message_class": "error",
        "next_url": next_url,
    }
    return await _fragments(422, ("cart/_add_form.html", form_context))


@blueprint.post("/cart/items/<product_id>")
async def set_item_quantity(product_id: str) -> AnyResponse:
    """Set a line's quantity; 0 removes the line."""
    form = await request.form
    db_session = get_session()
    try:
        parsed_id = parse_product_id(product_id)
        quantity = parse_quantity(form.get("quantity"), allow_zero=True)
        customer = await current_customer()
        turn = cart_turn(customer.id if customer else None, browser_session.get(CART_TOKEN_KEY))
        async with write_transaction(db_session, turn):
            cart = await current_cart(db_session)
            change = await set_cart_quantity(db_session, cart, parsed_id, quantity)
            totals = await price_cart(db_session, cart, customer.id if customer else None)
    except CartError as error:
        return await _quantity_refused(db_session, product_id, str(error))
    await remember_cart(change.cart_token, change.item_count)
    name = change.product.name
    message = f"Removed {name}." if quantity == 0 else f"{name}: quantity now {quantity}."
    if totals.coupon_message:
        message += " " + totals.coupon_message
    if not is_htmx():
        return await _back("/cart", message, "ok")
    parts: list[tuple[str, dict[str, Any]]] = []
    if quantity:
        line = next(line for line in totals.lines if line.product_id == change.product.id)
        parts.append(
            ("cart/_line.html", {"line": line, "message": message, "asset_url": asset_url})
        )
    parts.append(("cart/_summary.html", {"totals": totals, "oob": True}))
    parts.append(_badge(change.item_count))
    return await _fragments(200, *parts)


async def _quantity_refused(
    db_session: AsyncSession, raw_product_id: str, message: str
) -> AnyResponse:
    if not is_htmx():
        return await _back("/cart", message, "error")
    cart = await current_cart(db_session)
    line = None
    if cart is not None and raw_product_id.isdigit():
        lines = await select_cart_lines(db_session, cart.id)
        line = next((line for line in lines if str(line.product_id) == raw_product_id), None)
    if line is None:
        return await _fragments(422, ("cart/_message.html", {"message": message}))
    context = {"line": line, "message": message, "message_class": "error", "asset_url": asset_url}
    return await _fragments(422, ("cart/_line.html", context))


async def _apply_coupon() -> tuple[CouponCheck, CartTotals, str]:
    """Check the posted code against the current cart; store it on the cart when valid."""
    if request.is_json:
        payload = await request.get_json(silent=True)
        raw_code = payload.get("code") if isinstance(payload, dict) else None
    else:
        raw_code = (await request.form).get("code")
    typed = raw_code.strip() if isinstance(raw_code, str) else ""
    db_session = get_session()
    async with write_transaction(db_session):
        customer = await current_customer()
        user_id = customer.id if customer else None
        cart = await current_cart(db_session)
        totals = await price_cart(db_session, cart, user_id)
        check = await evaluate_coupon(
            db_session, normalise_code(raw_code), totals.subtotal_minor, user_id, utcnow()
        )
        if check.valid and cart is not None:
            await set_cart_coupon(db_session, cart, check.code)
            totals = await price_cart(db_session, cart, user_id)
    return check, totals, typed[:60]


@blueprint.post("/api/validate-coupon")
@rate_limit(limits=per_minute(30))
async def validate_coupon() -> AnyResponse:
    """Check a coupon code against the current cart and apply it when valid (JSON or fragment)."""
    check, totals, typed = await _apply_coupon()
    status = 200 if check.valid else 422
    if is_htmx():
        return await _fragments(
            status,
            (
                "cart/_summary.html",
                {
                    "totals": totals,
                    "coupon_feedback": check.message,
                    "coupon_feedback_class": "ok" if check.valid else "error",
                    "coupon_input": "" if check.valid else typed,
                },
            ),
        )
    discount_minor = totals.discount_minor if check.valid else 0
    total_minor = totals.subtotal_minor - discount_minor
    response = await make_response(
        {
            "valid": check.valid,
            "code": check.code,
            "message": check.message,
            "subtotal_minor": totals.subtotal_minor,
            "discount_minor": discount_minor,
            "total_minor": total_minor,
            "subtotal": format_minor(totals.subtotal_minor),
            "discount": format_minor(discount_minor),
            "total": format_minor(total_minor),
        },
        status,
    )
    response.headers["Vary"] = "HX-Request"
    return response


@blueprint.post("/cart/coupon")
@rate_limit(limits=per_minute(30))
async def apply_coupon_form() -> AnyResponse:
    """The coupon form without JavaScript: apply, then back to the cart with a message."""
    check, _totals, _typed = await _apply_coupon()
    return await _back("/cart", check.message, "ok" if check.valid else "error")


@blueprint.post("/cart/coupon/remove")
async def remove_coupon() -> AnyResponse:
    """Take the coupon off the cart."""
    db_session = get_session()
    async with write_transaction(db_session):
        customer = await current_customer()
        cart = await current_cart(db_session)
        if cart is not None and cart.coupon_code:
            await set_cart_coupon(db_session, cart, None)
        totals = await price_cart(db_session, cart, customer.id if customer else None)
    message = "Coupon removed."
    if not is_htmx():
        return await _back("/cart", message, "ok")
    context = {"totals": totals, "coupon_feedback": message, "coupon_feedback_class": "ok"}
    return await _fragments(200, ("cart/_summary.html", context))
