"""A product's stock in the back office: adjust it with a signed change and a reason, and page
through its movements (the ledger that explains the count)."""

import re
from typing import Any

from quart import Blueprint, Response, abort, request
from sqlalchemy.ext.asyncio import AsyncSession

from storefront.db.engine import get_session
from storefront.models import Product
from storefront.services.audit import audited_write
from storefront.services.stock import StockRefused, UnknownProduct, adjust_stock
from storefront.services.stock import select_stock_movements as select_movements
from storefront.web.auth import current_customer, staff_required
from storefront.web.back_office import answer_change, render_back_office
from storefront.web.htmx import render_fragment

blueprint = Blueprint("admin_stock", __name__)

PAGE_SIZE = 20
MAX_CHANGE = 1_000_000
MAX_REASON_LENGTH = 500
MAX_ID = 2**31 - 1
_SIGNED_WHOLE_NUMBER = re.compile(r"[+-]?[0-9]{1,9}")
STOCK_PAGE = "admin/products/stock.html"
CHANGE_ERROR = "admin/products/_stock_change_error.html"


class InvalidStockChange(ValueError):
    """The form's `change` or `reason` is unusable; `field` names which."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(message)


def parse_change(raw: str | None) -> int:
    """A signed whole number other than 0, like "+12", "12" or "-3"."""
    text = (raw or "").strip().replace("\u2212", "-")  # the minus sign a phone keyboard may type
    if not text:
        raise InvalidStockChange("change", "Enter the change, like 12 or -3.")
    if not _SIGNED_WHOLE_NUMBER.fullmatch(text):
        raise InvalidStockChange("change", "Enter a whole number, like 12 or -3.")
    change = int(text)
    if change == 0:
        raise InvalidStockChange("change", "A change of 0 changes nothing: enter 12 or -3.")
    if abs(change) > MAX_CHANGE:
        raise InvalidStockChange("change", f"Change the stock by at most {MAX_CHANGE:,} at once.")
    return change


def parse_reason(raw: str | None) -> str:
    reason = " ".join((raw or "").split())
    if not reason:
        raise InvalidStockChange("reason", "Say why the stock changes (a count, a delivery...).")
    if len(reason) > MAX_REASON_LENGTH:
        raise InvalidStockChange("reason", f"Keep the reason under {MAX_REASON_LENGTH} characters.")
    return reason


def _before_id(raw: str | None) -> int | None:
    text = (raw or "").strip()
    if not text:
        return None
    if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= MAX_ID:
        abort(400, "The page marker must be a whole number from 1.")
    return int(text)


async def stock_panel_context(
    session: AsyncSession, product: Product, before_id: int | None = None
) -> dict[str, Any]:
    """What templates/admin/products/_stock.html shows: the product, one page of its
    movements (newest first) and the marker of the next older page. The product page includes
    the same panel with this context."""
    rows = await select_movements(session, product.id, before_id=before_id, limit=PAGE_SIZE + 1)
    return {
        "product": product,
        "movements": rows[:PAGE_SIZE],
        "older_than": rows[PAGE_SIZE - 1].movement.id if len(rows) > PAGE_SIZE else None,
        "paged": before_id is not None,
        "change": "",
        "reason": "",
        "field_errors": {},
    }


async def _product_or_404(session: AsyncSession, product_id: int) -> Product:
    product = await session.get(Product, product_id, populate_existing=True)
    if product is None:
        abort(404, "There is no such product.")
    return product


async def _render_stock(
    product_id: int,
    status: int = 200,
    notice: str = "",
    error: str = "",
    before_id: int | None = None,
    **form: Any,
) -> Response:
    session = get_session()
    product = await _product_or_404(session, product_id)
    context = await stock_panel_context(session, product, before_id)
    context.update(form)
    return await render_back_office(
        STOCK_PAGE, "stock_panel", status, notice=notice, error=error, **context
    )


@blueprint.get("/admin/products/<int:product_id>/stock")
@staff_required
async def stock_page(product_id: int) -> Response:
    """A product's stock: the adjustment form and its movements, newest first."""
    return await _render_stock(product_id, before_id=_before_id(request.args.get("before")))


@blueprint.get("/admin/products/<int:product_id>/stock/check")
@staff_required
async def check_change(product_id: int) -> Response:
    """Inline validation of `change` (on blur): the message, or nothing when it is usable."""
    message = ""
    try:
        change = parse_change(request.args.get("change"))
    except InvalidStockChange as invalid:
        message = str(invalid)
    else:
        product = await _product_or_404(get_session(), product_id)
        if product.stock + change < 0:
            message = (
                f"Only {product.stock} in stock: {change:+d} would leave {product.stock + change}."
            )
    return Response(await render_fragment(CHANGE_ERROR, message=message))


@blueprint.post("/admin/products/<int:product_id>/stock")
@staff_required
async def adjust(product_id: int) -> Response:
    """Change a product's stock by a signed whole number, with a reason."""
    form = await request.form
    raw_change = (form.get("change") or "").strip()[:20]
    raw_reason = (form.get("reason") or "").strip()[:MAX_REASON_LENGTH]
    try:
        change = parse_change(raw_change)
        reason = parse_reason(form.get("reason"))
    except InvalidStockChange as invalid:
        return await _render_stock(
            product_id,
            422,
            error=str(invalid),
            field_errors={invalid.field: str(invalid)},
            change=raw_change,
            reason=raw_reason,
        )
    actor = await current_customer()
    assert actor is not None  # staff_required
    session = get_session()
    try:
        async with audited_write(session):
            stock = await adjust_stock(session, actor, product_id, change, reason)
    except UnknownProduct:
        abort(404, "There is no such product.")
    except StockRefused as refusal:
        return await _render_stock(
            product_id,
            409,
            error=str(refusal),
            field_errors={"change": str(refusal)},
            change=raw_change,
            reason=raw_reason,
        )
    notice = f"Stock changed by {change:+d}: {stock} now."
    return await answer_change(
        notice,
        f"/admin/products/{product_id}/stock",
        lambda: _render_stock(product_id, notice=notice),
    )
