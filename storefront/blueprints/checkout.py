"""Checkout page and paying for the cart from the store wallet."""

from typing import Any

from quart import Blueprint, Response, flash, request
from quart_rate_limiter import rate_limit
from sqlalchemy.ext.asyncio import AsyncSession
from werkzeug.datastructures import MultiDict

from storefront.db.engine import get_session
from storefront.db.transactions import ShopBusy, run_write_with_retries
from storefront.models import Order, User, utcnow
from storefront.models.order import DeliveryMethod, OrderStatus, PaymentMethod
from storefront.services.cart import CartTotals, cart_turn, price_cart, select_cart_for_user
from storefront.services.checkout.delivery import validate_delivery
from storefront.services.checkout.placement import place_wallet_order, select_order_that_took_cart
from storefront.services.checkout.refusals import (
    CheckoutError,
    EmptyCart,
    InsufficientFunds,
    InvalidDelivery,
)
from storefront.services.orders import ORDER_STATUS_LABELS
from storefront.services.wallet import select_wallet
from storefront.web.auth import current_customer, login_required
from storefront.web.cart_badge import show_badge_count
from storefront.web.htmx import navigate, render_page_or_block
from storefront.web.public_url import public_base_url
from storefront.web.security import per_minute
from storefront.web.settings import settings

blueprint = Blueprint("checkout", __name__)

MAX_SHOWN_TOTAL_DIGITS = 15
PAYSTACK_HIDDEN_REASON = (
    "Card and mobile money payment (Paystack) is not available: "
    "the shop has not set up its Paystack keys yet."
)


def _form_values(customer: User, form: MultiDict[str, str] | None) -> dict[str, str]:
    if form is None:
        return {"delivery": DeliveryMethod.ADDRESS, "phone": customer.phone, "address": ""}
    return {
        "delivery": form.get("delivery", DeliveryMethod.ADDRESS),
        "phone": form.get("phone", ""),
        "address": form.get("address", ""),
    }


async def render_checkout(
    customer: User,
    *,
    form: MultiDict[str, str] | None = None,
    error: str | None = None,
    field_errors: dict[str, str] | None = None,
    shortfall_minor: int | None = None,
    status: int = 200,
    totals: CartTotals | None = None,
    taken_by: Order | None = None,
) -> Response:
    """The checkout page (or its #checkout section for htmx) with current prices and errors."""
    db_session = get_session()
    if totals is None:
        cart = await select_cart_for_user(db_session, customer.id)
        totals = await price_cart(db_session, cart, customer.id, utcnow())
    wallet = await select_wallet(db_session, customer.id)
    balance_minor = wallet.balance_minor if wallet else 0
    context: dict[str, Any] = {
        "totals": totals,
        "balance_minor": balance_minor,
        "wallet_shortfall_minor": max(totals.total_minor - balance_minor, 0),
        "paystack_enabled": settings().paystack_enabled,
        "paystack_hidden_reason": PAYSTACK_HIDDEN_REASON,
        "form": _form_values(customer, form),
        "error": error,
        "field_errors": field_errors or {},
        "shortfall_minor": shortfall_minor,
        "taken_by": taken_by,
    }
    return await render_page_or_block("checkout/page.html", "checkout", status=status, **context)


async def render_cart_taken(customer: User, form: MultiDict[str, str]) -> Response:
    """A submit that found the cart empty: say which order took it (409), else that it is empty."""
    order = await select_order_that_took_cart(get_session(), customer.id)
    if order is None:
        return await render_checkout(customer, form=form, error=str(EmptyCart()), status=422)
    if order.status == OrderStatus.PENDING_PAYMENT:
        message = f"Your order {order.number} is waiting for payment: open it to pay for it."
    else:
        status_label = ORDER_STATUS_LABELS.get(order.status, order.status).lower()
        message = f"Your order {order.number} already took the items in your cart ({status_label})."
    return await render_checkout(customer, form=form, error=message, taken_by=order, status=409)


def parse_shown_total(raw: str | None) -> int | None:
    """The total the shopper's page showed (hidden field), or None when the form had none."""
    if raw is None or raw.strip() == "":
        return None
    text = raw.strip()
    if not text.isascii() or not text.isdigit() or len(text) > MAX_SHOWN_TOTAL_DIGITS:
        raise ValueError(text)
    return int(text)


@blueprint.get("/checkout")
@login_required
async def checkout_page() -> Response:
    """Lines, coupon, totals, wallet balance, delivery details and the payment choice."""
    customer = await current_customer()
    assert customer is not None
    db_session = get_session()
    cart = await select_cart_for_user(db_session, customer.id)
    totals = await price_cart(db_session, cart, customer.id, utcnow())
    if not totals.lines:
        await flash("Your cart is empty: add something before checking out.", "error")
        return await navigate("/cart")
    return await render_checkout(customer, totals=totals)


@blueprint.post("/pay/wallet")
@rate_limit(limits=per_minute(10))
@login_required
async def pay_with_wallet() -> Response:
    """Pay for the whole cart from the wallet in one transaction, or say in place why not."""
    customer = await current_customer()
    assert customer is not None
    form = await request.form
    if form.get("payment_method", PaymentMethod.WALLET) != PaymentMethod.WALLET:
        return await render_checkout(
            customer,
            form=form,
            error="This button pays from your wallet; use the Paystack button to pay by card.",
            status=422,
        )
    try:
        shown_total_minor = parse_shown_total(form.get("total_minor"))
    except ValueError:
        return await render_checkout(
            customer,
            form=form,
            error="The checkout form was damaged; review your order below and pay again.",
            status=422,
        )
    try:
        validate_delivery(form.get("delivery", ""), form.get("phone", ""), form.get("address", ""))
    except InvalidDelivery as invalid:
        return await render_checkout(
            customer, form=form, error=str(invalid), field_errors=invalid.field_errors, status=422
        )

    db_session = get_session()

    async def place(write_session: AsyncSession) -> Order:
        return await place_wallet_order(
            write_session,
            customer,
            None,  # the customer's own cart, found and locked in the transaction
            form.get("delivery", ""),
            form.get("phone", ""),
            form.get("address", ""),
            utcnow(),
            expected_total_minor=shown_total_minor,
            admin_email=settings().admin_email,
            base_url=public_base_url(),
        )

    try:
        # Submits of one cart take turns with its adds in this worker (no connection held).
        order = await run_write_with_retries(db_session, place, turn=cart_turn(customer.id, None))
    except EmptyCart:
        return await render_cart_taken(customer, form)
    except InsufficientFunds as refused:
        return await render_checkout(
            customer,
            form=form,
            error=str(refused),
            shortfall_minor=refused.shortfall_minor,
            status=422,
        )
    except ShopBusy as busy:
        response = await render_checkout(customer, form=form, error=str(busy), status=503)
        response.headers["Retry-After"] = "5"
        return response
    except CheckoutError as refused:
        return await render_checkout(customer, form=form, error=str(refused), status=422)
    show_badge_count(0)
    await flash(f"Thank you! Order {order.number} is paid from your wallet.", "ok")
    return await navigate(f"/orders/{order.number}")
