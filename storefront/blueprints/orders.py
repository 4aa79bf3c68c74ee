"""A customer's orders, one order's page, and the wallet with its ledger."""

from datetime import timedelta

from quart import Blueprint, Response, abort, request

from storefront.db.engine import get_session
from storefront.models import utcnow
from storefront.models.order import OrderStatus, PaymentMethod
from storefront.services.orders import (
    ORDER_STATUS_LABELS,
    select_order_by_number,
    select_order_lines,
    select_orders_for_user,
)
from storefront.services.wallet import select_wallet, select_wallet_entries
from storefront.web.auth import current_customer, login_required
from storefront.web.htmx import render_page_or_block
from storefront.web.settings import settings

blueprint = Blueprint("orders", __name__)

ORDERS_PER_PAGE = 20
LEDGER_PER_PAGE = 20
MAX_ORDER_NUMBER_LENGTH = 32


def _page_number() -> int:
    """?page=N, 1 for anything that is not a positive whole number."""
    page = request.args.get("page", 1, type=int) or 1
    return max(page, 1)


def _page_count(total: int, per_page: int) -> int:
    return max((total + per_page - 1) // per_page, 1)


@blueprint.get("/account/orders")
@login_required
async def order_list() -> Response:
    """The signed-in customer's own orders, newest first."""
    customer = await current_customer()
    assert customer is not None
    page = _page_number()
    orders, total = await select_orders_for_user(get_session(), customer.id, page, ORDERS_PER_PAGE)
    return await render_page_or_block(
        "orders/list.html",
        "orders",
        orders=orders,
        total=total,
        page=page,
        page_count=_page_count(total, ORDERS_PER_PAGE),
        status_labels=ORDER_STATUS_LABELS,
    )


@blueprint.get("/orders/<number>")
@login_required
async def order_detail(number: str) -> Response:
    """One order with its lines as sold; only its owner or an admin may see it (else 404)."""
    customer = await current_customer()
    assert customer is not None
    if len(number) > MAX_ORDER_NUMBER_LENGTH:
        abort(404)
    db_session = get_session()
    order = await select_order_by_number(db_session, number)
    # 404, not 403: someone else's order number must not be confirmed to exist.
    if order is None or (order.user_id != customer.id and not customer.can_use_back_office):
        abort(404)
    lines = await select_order_lines(db_session, order.id)
    hold_ends = None
    if (
        order.status == OrderStatus.PENDING_PAYMENT
        and order.payment_method == PaymentMethod.PAYSTACK
    ):
        hold = timedelta(minutes=settings().paystack_abandon_after_minutes)
        hold_ends = order.created_at + hold
    return await render_page_or_block(
        "orders/detail.html",
        "order",
        order=order,
        lines=lines,
        status_label=ORDER_STATUS_LABELS.get(order.status, order.status),
        viewing_as_admin=order.user_id != customer.id,
        hold_ends=hold_ends,
        can_pay_again=(
            hold_ends is not None
            and utcnow() < hold_ends
            and order.user_id == customer.id
            and settings().paystack_enabled
        ),
    )


@blueprint.get("/account/wallet")
@login_required
async def wallet_page() -> Response:
    """Wallet balance and its ledger, newest first, a page at a time."""
    customer = await current_customer()
    assert customer is not None
    db_session = get_session()
    wallet = await select_wallet(db_session, customer.id)
    if wallet is None:
        abort(404)
    page = _page_number()
    entries, total = await select_wallet_entries(db_session, wallet.id, page, LEDGER_PER_PAGE)
    return await render_page_or_block(
        "orders/wallet.html",
        "ledger",
        wallet=wallet,
        entries=entries,
        total=total,
        page=page,
        page_count=_page_count(total, LEDGER_PER_PAGE),
        topup_enabled=settings().paystack_enabled,
        topup_max_minor=settings().wallet_topup_max_minor,
    )
