"""Coupons in the back office: the list with uses and redemptions (active search by code), a
new coupon (the owner's: it sets money values), and each coupon's page to edit or end it.

Owner or staff, per field: staff open the pages, change a coupon's window, limits and active
flag, and end it; kind, value and minimum subtotal (and so a new coupon) are the owner's."""

from quart import Blueprint, Response, abort, request
from werkzeug.datastructures import MultiDict

from storefront.blueprints.admin_coupon_form import (
    FORM_FIELDS,
    CouponForm,
    InvalidField,
    blank_typed,
    parse_code,
    parse_coupon_form,
    parse_value,
    typed_from_coupon,
)
from storefront.db.engine import get_session
from storefront.models import User
from storefront.models.coupon import CouponKind
from storefront.services.audit import audited_write
from storefront.services.coupon_editing import (
    MONEY_FIELDS,
    BrokenCouponRule,
    CouponRefused,
    OwnerOnlyField,
    UnknownCoupon,
    code_taken,
    create_coupon,
    describe_value,
    end_coupon,
    select_coupon_row,
    select_coupon_rows,
    select_redemptions,
    update_coupon,
)
from storefront.web.auth import current_customer, owner_required, staff_required
from storefront.web.back_office import answer_change, render_back_office
from storefront.web.htmx import render_fragment

blueprint = Blueprint("admin_coupons", __name__)

LIST_URL = "/admin/coupons"
LIST_PAGE = "admin/coupons/list.html"
EDIT_PAGE = "admin/coupons/edit.html"
FIELD_ERROR = "admin/coupons/_field_error.html"
MAX_SEARCH_LENGTH = 40
MAX_ID = 2**31 - 1
# Form fields by the coupon value they set, to name a service's refusal by its field.
FIELD_OF = {target: name for name, target in FORM_FIELDS.items()}


async def _actor() -> User:
    actor = await current_customer()
    assert actor is not None  # staff_required
    return actor


def _search(raw: str | None) -> str:
    search = (raw or "").strip()
    if len(search) > MAX_SEARCH_LENGTH:
        abort(400, f"Search for at most {MAX_SEARCH_LENGTH} characters.")
    return search


async def _render_list(
    block: str = "coupon_list",
    status: int = 200,
    notice: str = "",
    error: str = "",
    search: str = "",
    new_coupon: CouponForm | None = None,
) -> Response:
    actor = await _actor()
    return await render_back_office(
        LIST_PAGE,
        block,
        status,
        notice=notice,
        error=error,
        rows=await select_coupon_rows(get_session(), search),
        q=search,
        is_owner=actor.is_owner,
        typed=new_coupon.typed if new_coupon else blank_typed(),
        field_errors=new_coupon.errors if new_coupon else {},
        describe_value=describe_value,
        kinds=tuple(CouponKind),
    )


async def _render_editor(
    coupon_id: int,
    status: int = 200,
    notice: str = "",
    error: str = "",
    typed: dict[str, str] | None = None,
    field_errors: dict[str, str] | None = None,
) -> Response:
    session = get_session()
    row = await select_coupon_row(session, coupon_id)
    if row is None:
        abort(404, "There is no such coupon.")
    actor = await _actor()
    used = row.coupon.uses > 0 or row.redemptions > 0
    editable = set(FORM_FIELDS) - ({"code", "kind", "value"} if used else set())
    if not actor.is_owner:
        editable -= {FIELD_OF[name] for name in MONEY_FIELDS}
    return await render_back_office(
        EDIT_PAGE,
        "coupon_editor",
        status,
        notice=notice,
        error=error,
        row=row,
        used=used,
        editable=editable,
        typed={**typed_from_coupon(row.coupon), **(typed or {})},
        field_errors=field_errors or {},
        redemptions=await select_redemptions(session, coupon_id),
        describe_value=describe_value,
        kinds=tuple(CouponKind),
        is_owner=actor.is_owner,
    )


@blueprint.get("/admin/coupons")
@staff_required
async def coupons() -> Response:
    """Every coupon with its uses and redemptions; the owner adds new ones here."""
    search = _search(request.args.get("q"))
    block = "coupon_table" if request.headers.get("HX-Target") == "coupon-table" else "coupon_list"
    return await _render_list(block, search=search)


@blueprint.get("/admin/coupons/check/<field>")
@staff_required
async def check_field(field: str) -> Response:
    """Inline validation (on blur) of a coupon form's `code` or `value` (read by `kind`)."""
    prefix = "coupon-new" if request.args.get("form") != "edit" else "coupon-edit"
    coupon_id = request.args.get("id") or ""
    message = ""
    try:
        if field == "code":
            code = parse_code(request.args.get("code") or "")
            except_id = int(coupon_id) if coupon_id.isascii() and coupon_id.isdigit() else None
            if except_id is not None and except_id > MAX_ID:
                except_id = None
            if await code_taken(get_session(), code, except_id):
                message = f"There is already a coupon with the code {code}."
        elif field == "value":
            kind = request.args.get("kind") or CouponKind.PERCENT
            known = kind if kind in tuple(CouponKind) else None
            parse_value(request.args.get("value") or "", known)
        else:
            abort(404, "Only a coupon's code and value are checked here.")
    except InvalidField as invalid:
        message = str(invalid)
    return Response(
        await render_fragment(FIELD_ERROR, error_id=f"{prefix}-{field}-error", message=message)
    )


@blueprint.post("/admin/coupons")
@owner_required
async def create() -> Response:
    """Add a coupon: code, percent or fixed value, minimum subtotal, window, limits."""
    form: MultiDict[str, str] = await request.form
    parsed = parse_coupon_form(form, require_all=True)
    if parsed.errors:
        return await _render_list(status=422, error=_summary(parsed), new_coupon=parsed)
    session = get_session()
    try:
        async with audited_write(session):
            coupon = await create_coupon(session, await _actor(), parsed.values)
    except CouponRefused as refusal:
        parsed.errors.update(_field_errors(refusal))
        return await _render_list(status=_status(refusal), error=str(refusal), new_coupon=parsed)
    notice = f"Coupon {coupon.code} added: {describe_value(coupon.kind, coupon.value)} off."
    return await answer_change(notice, LIST_URL, lambda: _render_list(notice=notice))


@blueprint.get("/admin/coupons/<int:coupon_id>")
@staff_required
async def coupon_page(coupon_id: int) -> Response:
    """One coupon: edit it, end it, and see which orders used it."""
    return await _render_editor(coupon_id)


@blueprint.post("/admin/coupons/<int:coupon_id>")
@staff_required
async def update(coupon_id: int) -> Response:
    """Change a coupon; staff may not change money values, nobody a used coupon's kind or value."""
    form: MultiDict[str, str] = await request.form
    session = get_session()
    row = await select_coupon_row(session, coupon_id)
    if row is None:
        abort(404, "There is no such coupon.")
    parsed = parse_coupon_form(form, current_kind=row.coupon.kind)
    typed = {name: parsed.typed[name] for name in FORM_FIELDS if name in form}
    typed["is_active"] = "1" if parsed.values["is_active"] else ""
    if parsed.errors:
        return await _render_editor(
            coupon_id, 422, error=_summary(parsed), typed=typed, field_errors=parsed.errors
        )
    try:
        async with audited_write(session):
            coupon = await update_coupon(session, await _actor(), coupon_id, parsed.values)
    except UnknownCoupon:
        abort(404, "There is no such coupon.")
    except OwnerOnlyField as refusal:
        return await _render_editor(coupon_id, 403, error=str(refusal), typed=typed)
    except CouponRefused as refusal:
        return await _render_editor(
            coupon_id,
            _status(refusal),
            error=str(refusal),
            typed=typed,
            field_errors=_field_errors(refusal),
        )
    notice = f"Coupon {coupon.code} saved."
    return await answer_change(
        notice, f"{LIST_URL}/{coupon_id}", lambda: _render_editor(coupon_id, notice=notice)
    )


@blueprint.post("/admin/coupons/<int:coupon_id>/end")
@staff_required
async def end(coupon_id: int) -> Response:
    """End a coupon now: no order can use it from this moment."""
    session = get_session()
    try:
        async with audited_write(session):
            coupon, running = await end_coupon(session, await _actor(), coupon_id)
    except UnknownCoupon:
        abort(404, "There is no such coupon.")
    notice = f"Coupon {coupon.code} ended." if running else f"{coupon.code} had already ended."
    return await answer_change(
        notice, f"{LIST_URL}/{coupon_id}", lambda: _render_editor(coupon_id, notice=notice)
    )


def _summary(parsed: CouponForm) -> str:
    count = len(parsed.errors)
    return "Check the field marked below." if count == 1 else f"Check the {count} fields below."


def _status(refusal: CouponRefused) -> int:
    """422 for values that break a rule, 409 for a conflict with the coupon as it is."""
    return 422 if isinstance(refusal, BrokenCouponRule) else 409


def _field_errors(refusal: CouponRefused) -> dict[str, str]:
    field = FIELD_OF.get(refusal.field, "")
    return {field: str(refusal)} if field else {}
