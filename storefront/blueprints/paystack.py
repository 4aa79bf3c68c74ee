"""Paying through Paystack: start an order payment or a top-up, and the shopper's return."""

import re
from datetime import timedelta

from quart import Blueprint, Response, abort, current_app, flash, redirect, request
from quart_rate_limiter import RateLimit, rate_limit
from sqlalchemy.ext.asyncio import AsyncSession

from storefront.background.paystack_serving import paystack_client_for
from storefront.blueprints.checkout import (
    PAYSTACK_HIDDEN_REASON,
    parse_shown_total,
    render_cart_taken,
    render_checkout,
)
from storefront.db.engine import get_session, sessionmaker_for
from storefront.db.transactions import ShopBusy, run_write_with_retries
from storefront.lib.money import InvalidAmount, format_minor, parse_amount
from storefront.lib.paystack import REFERENCE_PATTERN
from storefront.models import Payment, utcnow
from storefront.models.order import OrderStatus, PaymentMethod
from storefront.models.payment import PaymentLookup, PaymentPurpose, PaymentStatus
from storefront.services.cart import cart_turn, select_cart_for_user
from storefront.services.checkout.delivery import validate_delivery
from storefront.services.checkout.refusals import CheckoutError, EmptyCart, InvalidDelivery
from storefront.services.orders import (
    ORDER_NUMBER_PREFIX,
    OrderStatusChanged,
    select_order_by_number,
    select_order_lines,
)
from storefront.services.payments.attempts import (
    HoldExpired,
    initialize_payment,
    insert_order_payment,
    insert_topup_payment,
    reserve_order_payment,
)
from storefront.services.payments.settings import PaymentSettings, hold_ends_at, payment_settings
from storefront.services.payments.settling import finalize_payment
from storefront.services.payments.state import PaymentState
from storefront.web.auth import current_customer, login_required
from storefront.web.cart_badge import show_badge_count
from storefront.web.htmx import navigate, render_page_or_block
from storefront.web.public_url import public_base_url
from storefront.web.security import client_address_key, per_minute
from storefront.web.settings import settings

blueprint = Blueprint("paystack", __name__)

MIN_TOPUP_MINOR = 100
TOPUP_UNAVAILABLE = "Online top-ups are not available: the shop has not set up Paystack yet."
ORDER_NUMBER = re.compile(re.escape(ORDER_NUMBER_PREFIX) + r"[0-9]{6,12}")
BUSY_RETRY_AFTER_SECONDS = "5"
# Each callback asks Paystack to verify: GETs count too. A limited shopper loses nothing, as
# the webhook and the reconciler settle the payment anyway.
CALLBACK_LIMITS = [RateLimit(20, timedelta(minutes=1), key_function=client_address_key)]


def request_payment_settings() -> PaymentSettings:
    """Payment settings, with this request's host as the base URL when none is configured."""
    return payment_settings(settings(), public_base_url())


def _callback_url() -> str:
    # Paystack appends ?trxref=…&reference=… itself; a query of ours would be mangled.
    return public_base_url() + "/paystack/callback"


def _enabled() -> bool:
    return settings().paystack_enabled


@blueprint.post("/paystack/init")
@rate_limit(limits=per_minute(10))
@login_required
async def init_payment() -> Response:
    """Reserve the cart as an order awaiting payment and send the shopper to Paystack."""
    customer = await current_customer()
    assert customer is not None
    form = await request.form
    if not _enabled():
        return await render_checkout(customer, form=form, error=PAYSTACK_HIDDEN_REASON, status=409)
    if form.get("payment_method", PaymentMethod.PAYSTACK) != PaymentMethod.PAYSTACK:
        return await render_checkout(
            customer, form=form, error="This button pays with Paystack.", status=422
        )
    try:
        shown_total_minor = parse_shown_total(form.get("total_minor"))
        validate_delivery(form.get("delivery", ""), form.get("phone", ""), form.get("address", ""))
    except ValueError:
        return await render_checkout(
            customer, form=form, error="The checkout form was damaged; try again.", status=422
        )
    except InvalidDelivery as invalid:
        return await render_checkout(
            customer, form=form, error=str(invalid), field_errors=invalid.field_errors, status=422
        )
    db_session = get_session()
    settings = request_payment_settings()

    async def reserve(write_session: AsyncSession) -> Payment:
        cart = await select_cart_for_user(write_session, customer.id)
        if cart is None:
            raise EmptyCart()
        return await reserve_order_payment(
            write_session,
            customer,
            cart,
            form.get("delivery", ""),
            form.get("phone", ""),
            form.get("address", ""),
            utcnow(),
            settings,
            expected_total_minor=shown_total_minor,
        )

    try:
        payment = await run_write_with_retries(
            db_session, reserve, turn=cart_turn(customer.id, None)
        )
    except EmptyCart:
        return await render_cart_taken(customer, form)
    except ShopBusy as busy:
        response = await render_checkout(customer, form=form, error=str(busy), status=503)
        response.headers["Retry-After"] = BUSY_RETRY_AFTER_SECONDS
        return response
    except CheckoutError as refused:
        return await render_checkout(customer, form=form, error=str(refused), status=422)
    outcome = await initialize_payment(
        db_session,
        paystack_client_for(current_app),
        payment,
        customer.email,
        _callback_url(),
        settings,
    )
    if outcome.refused:  # the order's lines are back in the cart
        return await render_checkout(customer, form=form, error=outcome.message, status=409)
    show_badge_count(0)  # the order holds the items now
    if outcome.authorization_url:
        return await navigate(outcome.authorization_url)
    await flash(outcome.message, "error")
    return await navigate(f"/paystack/callback?reference={payment.reference}")


@blueprint.post("/paystack/orders/<number>/pay")
@rate_limit(limits=per_minute(10))
@login_required
async def pay_order_again(number: str) -> Response:
    """A new Paystack attempt (new reference) for the shopper's order still awaiting payment."""
    customer = await current_customer()
    assert customer is not None
    db_session = get_session()
    order = (
        await select_order_by_number(db_session, number) if ORDER_NUMBER.fullmatch(number) else None
    )
    if order is None or order.user_id != customer.id:
        abort(404)
    if not _enabled():
        return await _problem(PAYSTACK_HIDDEN_REASON, 409)
    if (
        order.status != OrderStatus.PENDING_PAYMENT
        or order.payment_method != PaymentMethod.PAYSTACK
    ):
        return await _problem(f"Order {order.number} is not awaiting a Paystack payment.", 409)
    settings = request_payment_settings()

    async def attempt(write_session: AsyncSession) -> Payment:
        return await insert_order_payment(
            write_session, order, utcnow(), hold=settings.abandon_after
        )

    try:
        payment = await run_write_with_retries(db_session, attempt)
    except ShopBusy as busy:
        response = await _problem(str(busy), 503)
        response.headers["Retry-After"] = BUSY_RETRY_AFTER_SECONDS
        return response
    except HoldExpired as expired:
        return await _problem(str(expired), 409)
    except OrderStatusChanged:
        return await _problem(f"Order {order.number} is not awaiting a Paystack payment.", 409)
    outcome = await initialize_payment(
        db_session,
        paystack_client_for(current_app),
        payment,
        customer.email,
        _callback_url(),
        settings,
    )
    if outcome.authorization_url:
        return await navigate(outcome.authorization_url)
    if outcome.refused:
        return await _problem(outcome.message, 409)
    await flash(outcome.message, "error")
    return await navigate(f"/paystack/callback?reference={payment.reference}")


async def _problem(message: str, status: int) -> Response:
    return await render_page_or_block(
        "paystack/result.html", "payment", status=status, state=None, message=message
    )


@blueprint.get("/paystack/callback")
@rate_limit(limits=CALLBACK_LIMITS)
async def callback() -> Response:
    """The shopper is back from Paystack: settle the payment (once) and show where it stands.

    Only the payment's owner sees its amount, status and order; anyone else holding the
    reference (a shared link, a logged-out browser) gets the neutral "we are checking" page.
    """
    reference = request.args.get("reference") or request.args.get("trxref") or ""
    if not REFERENCE_PATTERN.fullmatch(reference) or not _enabled():
        abort(404)
    settings = request_payment_settings()
    state = await finalize_payment(
        sessionmaker_for(current_app), paystack_client_for(current_app), reference, settings
    )
    if state.status == PaymentLookup.UNKNOWN:
        abort(404)
    customer = await current_customer()
    if customer is None or customer.id != state.user_id:
        return await render_page_or_block(
            "paystack/result.html", "payment", state=None, message=None, neutral=True
        )
    if state.purpose == PaymentPurpose.WALLET_TOPUP and state.status != PaymentStatus.PENDING:
        await flash(*_topup_flash(state))
        return redirect("/account/wallet", 303)  # type: ignore[return-value]
    db_session = get_session()
    order = lines = None
    hold_ends = None
    if state.order_number:
        order = await select_order_by_number(db_session, state.order_number)
        lines = await select_order_lines(db_session, order.id) if order else None
        hold_ends = hold_ends_at(order, settings) if order else None
    return await render_page_or_block(
        "paystack/result.html",
        "payment",
        state=state,
        order=order,
        lines=lines,
        is_owner=True,
        can_pay_again=hold_ends is not None and utcnow() < hold_ends,
        hold_ends=hold_ends,
        message=None,
    )


def _topup_flash(state: PaymentState) -> tuple[str, str]:
    amount = format_minor(state.amount_minor, state.currency)
    if state.status == PaymentStatus.SUCCESS:
        return f"Your wallet was topped up with {amount}.", "ok"
    return f"Your top-up of {amount} did not go through: {state.failure_reason}", "error"


@blueprint.get("/account/wallet/topup")
@login_required
async def wallet_topup_form() -> Response:
    """The top-up form on its own page (the wallet page includes the same form)."""
    return await _topup_form(None, "", 200)


@blueprint.post("/account/wallet/topup")
@rate_limit(limits=per_minute(10))
@login_required
async def wallet_topup() -> Response:
    """Top up the wallet through Paystack: amount in cedis as typed, within the shop's limits."""
    customer = await current_customer()
    assert customer is not None
    raw_amount = (await request.form).get("amount", "")
    if not _enabled():
        return await _topup_form(TOPUP_UNAVAILABLE, raw_amount, 409)
    maximum_minor = settings().wallet_topup_max_minor
    try:
        amount_minor = parse_amount(raw_amount)
    except InvalidAmount as invalid:
        return await _topup_form(str(invalid), raw_amount, 422)
    if amount_minor < MIN_TOPUP_MINOR:
        return await _topup_form(
            f"The smallest top-up is {format_minor(MIN_TOPUP_MINOR)}.", raw_amount, 422
        )
    if amount_minor > maximum_minor:
        return await _topup_form(
            f"The largest top-up is {format_minor(maximum_minor)}.", raw_amount, 422
        )
    db_session = get_session()
    payments = request_payment_settings()

    async def attempt(write_session: AsyncSession) -> Payment:
        return await insert_topup_payment(
            write_session, customer.id, amount_minor, utcnow(), payments
        )

    try:
        payment = await run_write_with_retries(db_session, attempt)
    except ShopBusy as busy:
        response = await _topup_form(str(busy), raw_amount, 503)
        response.headers["Retry-After"] = BUSY_RETRY_AFTER_SECONDS
        return response
    outcome = await initialize_payment(
        db_session,
        paystack_client_for(current_app),
        payment,
        customer.email,
        _callback_url(),
        payments,
    )
    if outcome.authorization_url:
        return await navigate(outcome.authorization_url)
    return await _topup_form(outcome.message, raw_amount, 409)


async def _topup_form(error: str | None, amount: str, status: int) -> Response:
    return await render_page_or_block(
        "paystack/topup.html",
        "topup_form",
        status=status,
        topup_error=error,
        amount=amount,
        topup_max_minor=settings().wallet_topup_max_minor,
    )
