"""Products in the back office: the list with active search, the new-product and edit pages
(details checked field by field on blur, and again in full on save), and click-to-edit rows."""

from typing import Any, cast
from urllib.parse import urlencode

from quart import Blueprint, Response, abort, make_response, request, url_for

from storefront.blueprints.admin_stock import stock_panel_context
from storefront.db.engine import get_session
from storefront.lib.images import size_text
from storefront.lib.money import format_minor
from storefront.models import Product, User
from storefront.services.audit import audited_write
from storefront.services.product_admin import (
    InvalidProductFilter,
    ProductFilters,
    ProductListPage,
    ProductListStatus,
    ProductRefused,
    UnknownProduct,
    create_product,
    details_of,
    parse_product_filters,
    select_category_choices,
    select_product,
    select_product_list,
    select_product_row,
    slug_for,
    update_product_details,
)
from storefront.services.product_form import (
    FIELD_CHECKS,
    FORM_FIELDS,
    NEW_PRODUCT,
    FieldProblem,
    form_values,
    is_ticked,
    parse_product_form,
)
from storefront.services.product_photos import MAX_PHOTOS_PER_PRODUCT, PhotoDirection, select_photos
from storefront.web.auth import current_customer, staff_required
from storefront.web.back_office import answer_change, render_back_office
from storefront.web.htmx import is_htmx, navigate, render_fragment
from storefront.web.settings import settings

blueprint = Blueprint("admin_products", __name__)

STATUS_LABELS = {
    ProductListStatus.ACTIVE: "Active",
    ProductListStatus.INACTIVE: "Inactive",
    ProductListStatus.LOW_STOCK: "Running low (active)",
}
# The fields checked on blur (the category is a list; the description has its maxlength).
CHECKED_FIELDS = frozenset({"name", "slug", "price", "low_stock_threshold"})
FIELDS_WRONG = "Check the fields marked below: nothing was saved."


def edit_url(product_id: int) -> str:
    return url_for("admin_products.edit_product", product_id=product_id)


async def _actor() -> User:
    actor = await current_customer()
    assert actor is not None  # staff_required
    return actor


async def render_product_page(
    product: Product | None,
    block: str = "product_form",
    status: int = 200,
    notice: str = "",
    error: str = "",
    values: dict[str, str] | None = None,
    problems: dict[str, str] | None = None,
    **context: Any,
) -> Response:
    """The new-product page (`product` None) or a product's edit page, or for htmx its
    `block`: product_form, photos or stock. `values` are the form's fields as typed."""
    session = get_session()
    if values is None:
        values = form_values(NEW_PRODUCT if product is None else details_of(product))
    context.setdefault("focus", "")
    context.setdefault("photo_problem", "")
    if product is not None:
        for name, value in (await stock_panel_context(session, product)).items():
            if name != "product":
                context.setdefault(name, value)
    return await render_back_office(
        "admin/products/edit.html",
        block,
        status,
        notice=notice,
        error=error,
        product=product,
        values=values,
        problems=problems or {},
        categories=await select_category_choices(session),
        photos=await select_photos(session, product.id) if product is not None else [],
        max_photos=MAX_PHOTOS_PER_PRODUCT,
        upload_limit=size_text(settings().upload_max_bytes),
        PhotoDirection=PhotoDirection,
        **context,
    )


async def _render_list(
    filters: ProductFilters,
    listing: ProductListPage,
    status: int = 200,
    error: str = "",
) -> Response:
    args = request.args
    return await render_back_office(
        "admin/products/list.html",
        "products",
        status,
        error=error,
        listing=listing,
        filters=filters,
        q=(args.get("q") or "").strip(),
        category=(args.get("category") or "").strip(),
        status_filter=(args.get("status") or "").strip(),
        statuses=list(STATUS_LABELS.items()),
        categories=await select_category_choices(get_session()),
    )


@blueprint.get("/admin/products")
@staff_required
async def products() -> Response:
    """The products: search by name or slug, filter by category and status, a page at a time."""
    try:
        filters = parse_product_filters(request.args.to_dict())
    except InvalidProductFilter as problem:
        empty = ProductListPage(rows=[], page=1, has_next=False)
        return await _render_list(ProductFilters(), empty, 400, error=str(problem))
    response = await _render_list(filters, await select_product_list(get_session(), filters))
    if is_htmx():
        # The address bar shows the filters in use, without the form's empty fields.
        query = urlencode(filters.query_args())
        response.headers["HX-Push-Url"] = url_for("admin_products.products") + (
            "?" + query if query else ""
        )
    return response


@blueprint.get("/admin/products/new")
@staff_required
async def new_product() -> Response:
    """A form for a new product."""
    return await render_product_page(None)


def _typed_values(form: Any, current: dict[str, str]) -> dict[str, str]:
    """The form's fields as typed, and the current value of any it left out."""
    values = {field: form.get(field, current[field]) for field in FORM_FIELDS}
    values["is_active"] = "1" if is_ticked(form.get("is_active")) else ""
    return values


@blueprint.post("/admin/products")
@staff_required
async def add_product() -> Response:
    """Create a product from the form; its page comes next, for photos and stock."""
    form = (await request.form).to_dict()
    # A new product has no current name or price to keep: leaving them out is leaving them empty.
    details, problems = parse_product_form({"name": "", "price": "", **form})
    values = _typed_values(form, form_values(NEW_PRODUCT))
    if problems:
        return await render_product_page(
            None, status=422, error=FIELDS_WRONG, values=values, problems=problems
        )
    session = get_session()
    try:
        async with audited_write(session):
            product = await create_product(session, await _actor(), details)
    except ProductRefused as refusal:
        return await render_product_page(
            None,
            status=422,
            error=FIELDS_WRONG,
            values=values,
            problems={refusal.field: str(refusal)},
        )
    return await answer_change(
        f"Created “{product.name}”. Add its photos and stock below.", edit_url(product.id)
    )


@blueprint.get("/admin/products/<int:product_id>")
@staff_required
async def edit_product(product_id: int) -> Response:
    """A product's details, photos and stock."""
    product = await select_product(get_session(), product_id)
    if product is None:
        abort(404, f"There is no product #{product_id}.")
    return await render_product_page(product)


async def _render_row(
    product_id: int, editing: bool, status: int = 200, **context: Any
) -> Response:
    row = await select_product_row(get_session(), product_id)
    if row is None:
        abort(404, f"There is no product #{product_id}.")
    template = "admin/products/_row_edit.html" if editing else "admin/products/_row.html"
    context.setdefault("values", form_values(details_of(row.product)))
    context.setdefault("problems", {})
    return await render_back_office(template, "row", status, row=row, **context)


@blueprint.get("/admin/products/<int:product_id>/row")
@staff_required
async def product_row(product_id: int) -> Response:
    """For htmx, the product's row in the list (`edit=1`: as a form); otherwise its page."""
    if not is_htmx():
        return await navigate(edit_url(product_id))
    return await _render_row(product_id, editing=request.args.get("edit") == "1")


@blueprint.post("/admin/products/<int:product_id>")
@staff_required
async def update_product(product_id: int) -> Response:
    """Save the product's details; fields left out of the form keep their values."""
    session = get_session()
    product = await select_product(session, product_id)
    if product is None:
        abort(404, f"There is no product #{product_id}.")
    # A row of the list posts with its own id as the target: it gets the row back.
    from_row = is_htmx() and request.headers.get("HX-Target") == f"product-{product_id}"
    form = await request.form
    current = details_of(product)
    details, problems = parse_product_form(form, current)
    values = _typed_values(form, form_values(current))
    if not problems:
        try:
            async with audited_write(session):
                product, changed = await update_product_details(
                    session, await _actor(), product_id, details
                )
        except UnknownProduct as gone:
            abort(404, str(gone))
        except ProductRefused as refusal:
            problems = {refusal.field: str(refusal)}
    if problems:
        if from_row:
            return await _render_row(
                product_id, True, 422, error=FIELDS_WRONG, values=values, problems=problems
            )
        return await render_product_page(
            product, status=422, error=FIELDS_WRONG, values=values, problems=problems
        )
    notice = (
        f"Saved “{product.name}”."
        if changed
        else f"Nothing to save: “{product.name}” is as it was."
    )
    if from_row:
        return await _render_row(product_id, False, notice=notice, focus=True)
    return await answer_change(
        notice, edit_url(product_id), lambda: render_product_page(product, notice=notice)
    )


@blueprint.get("/admin/products/check/<field>")
@staff_required
async def check_field(field: str) -> Response:
    """The message for one field of the product form as typed so far (checked on blur)."""
    if field not in CHECKED_FIELDS:
        abort(404, "That field is not checked here.")
    message = hint = ""
    try:
        value = FIELD_CHECKS[field](request.args.get(field, ""))
    except FieldProblem as problem:
        message = str(problem)
    else:
        if field == "price":
            hint = format_minor(value)
        elif field == "slug":
            message, hint = await _check_slug(value)
    body = await render_fragment(
        "admin/products/_field_message.html", field=field, message=message, hint=hint
    )
    return cast(Response, await make_response(body))


async def _check_slug(typed_slug: str) -> tuple[str, str]:
    """(problem, hint) for the slug as typed, with the name typed beside it."""
    raw_id = request.args.get("product_id", "")
    other_than = int(raw_id) if raw_id.isdigit() and len(raw_id) < 10 else None
    name = " ".join(request.args.get("name", "").split())
    if not typed_slug and not name:
        return "", "Made from the name when you save."
    try:
        slug = await slug_for(get_session(), name, typed_slug, other_than)
    except ProductRefused as refusal:
        return str(refusal), ""
    return "", f"Its page: {url_for('shop.product_page', slug=slug)}"
