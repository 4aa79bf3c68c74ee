"""Categories in the back office: the list in the shop's order, create, click-to-edit rows
(rename, show or hide in the shop), move up and down, delete an empty one."""

from typing import Any

from quart import Blueprint, Response, abort, request
from sqlalchemy.ext.asyncio import AsyncSession

from storefront.db.engine import get_session
from storefront.services.audit import audited_write
from storefront.services.categories import (
    CategoryRefused,
    UnknownCategory,
    clean_name,
    create_category,
    delete_category,
    move_category,
    name_taken,
    select_category_rows,
    update_category,
)
from storefront.web.auth import current_customer, staff_required
from storefront.web.back_office import answer_change, render_back_office
from storefront.web.htmx import is_htmx, navigate, render_fragment

blueprint = Blueprint("admin_categories", __name__)

LIST_URL = "/admin/categories"
PAGE = "admin/categories/list.html"
ROW = "admin/categories/row.html"
NAME_ERROR = "admin/categories/_name_error.html"
MAX_ID = 2**31 - 1


def _edit_id(raw: str | None) -> int | None:
    text = (raw or "").strip()
    if text.isascii() and text.isdigit() and 1 <= int(text) <= MAX_ID:
        return int(text)
    return None


async def _list_context(session: AsyncSession) -> dict[str, Any]:
    return {
        "rows": await select_category_rows(session),
        "editing_id": None,
        "focus_id": None,
        "name": "",
        "create_error": "",
        "edit_error": "",
        "edit_name": None,
    }


async def _render_list(
    status: int = 200, notice: str = "", error: str = "", **context: Any
) -> Response:
    listed = await _list_context(get_session())
    listed.update(context)
    return await render_back_office(
        PAGE, "category_list", status, notice=notice, error=error, **listed
    )


@blueprint.get("/admin/categories")
@staff_required
async def categories() -> Response:
    """Create, rename, reorder and hide the shop's categories."""
    return await _render_list(editing_id=_edit_id(request.args.get("edit")))


@blueprint.get("/admin/categories/check/<field>")
@staff_required
async def check_field(field: str) -> Response:
    """Inline validation of a category's `name` (on blur): the message, or nothing."""
    if field != "name":
        abort(404, "Only a category's name is checked here.")
    message = ""
    try:
        name = clean_name(request.args.get("name"))
    except CategoryRefused as refusal:
        message = str(refusal)
    else:
        if await name_taken(get_session(), name, except_id=_edit_id(request.args.get("id"))):
            message = f"There is already a category called {name}."
    target = "category-name-error"
    category_id = _edit_id(request.args.get("id"))
    if category_id is not None:
        target = f"category-{category_id}-name-error"
    return Response(await render_fragment(NAME_ERROR, message=message, error_id=target))


@blueprint.get("/admin/categories/<int:category_id>")
@staff_required
async def category_row(category_id: int) -> Response:
    """One row, to edit (`edit=1`) or as it shows (htmx's click-to-edit and its cancel)."""
    editing = request.args.get("edit") == "1"
    if not is_htmx():
        return await navigate(f"{LIST_URL}?edit={category_id}" if editing else LIST_URL)
    rows = await select_category_rows(get_session())
    for index, row in enumerate(rows):
        if row.category.id == category_id:
            return await render_back_office(
                ROW,
                "category_row",
                row=row,
                first=index == 0,
                last=index == len(rows) - 1,
                editing_id=category_id if editing else None,
                focus_id=category_id,
                edit_error="",
                edit_name=None,
            )
    abort(404, "There is no such category.")


@blueprint.post("/admin/categories")
@staff_required
async def create() -> Response:
    """Add a category (its link is derived from the name) at the end of the list."""
    form = await request.form
    typed = (form.get("name") or "")[:200]
    actor = await current_customer()
    assert actor is not None  # staff_required
    session = get_session()
    try:
        async with audited_write(session):
            category = await create_category(session, actor, form.get("name"))
    except CategoryRefused as refusal:
        return await _render_list(422, error=str(refusal), name=typed, create_error=str(refusal))
    notice = f"Category {category.name} added."
    return await answer_change(
        notice, LIST_URL, lambda: _render_list(notice=notice, focus_id=category.id)
    )


@blueprint.post("/admin/categories/<int:category_id>")
@staff_required
async def update(category_id: int) -> Response:
    """Rename a category, and show it in the shop (`is_active` "1") or hide it."""
    form = await request.form
    typed = (form.get("name") or "")[:200]
    is_active = form.get("is_active") == "1"
    actor = await current_customer()
    assert actor is not None  # staff_required
    session = get_session()
    try:
        async with audited_write(session):
            category = await update_category(session, actor, category_id, typed, is_active)
    except UnknownCategory:
        abort(404, "There is no such category.")
    except CategoryRefused as refusal:
        return await _render_list(
            422,
            error=str(refusal),
            editing_id=category_id,
            edit_name=typed,
            edit_error=str(refusal),
        )
    shown = "shown in the shop" if category.is_active else "hidden from the shop"
    notice = f"Category {category.name} saved ({shown})."
    return await answer_change(
        notice, LIST_URL, lambda: _render_list(notice=notice, focus_id=category.id)
    )


@blueprint.post("/admin/categories/<int:category_id>/move")
@staff_required
async def move(category_id: int) -> Response:
    """Move a category one place `up` or `down` in the shop's order."""
    form = await request.form
    direction = form.get("direction") or ""
    actor = await current_customer()
    assert actor is not None  # staff_required
    session = get_session()
    try:
        async with audited_write(session):
            category, moved = await move_category(session, actor, category_id, direction)
    except UnknownCategory:
        abort(404, "There is no such category.")
    except CategoryRefused as refusal:
        return await _render_list(422, error=str(refusal))
    notice = f"Category {category.name} is now number {category.position + 1}."
    if not moved:
        notice = f"Category {category.name} is already {'first' if direction == 'up' else 'last'}."
    return await answer_change(notice, LIST_URL, lambda: _render_list(notice=notice))


@blueprint.post("/admin/categories/<int:category_id>/delete")
@staff_required
async def delete(category_id: int) -> Response:
    """Delete a category that holds no products."""
    actor = await current_customer()
    assert actor is not None  # staff_required
    session = get_session()
    try:
        async with audited_write(session):
            category = await delete_category(session, actor, category_id)
    except UnknownCategory:
        abort(404, "There is no such category.")
    except CategoryRefused as refusal:
        return await _render_list(409, error=str(refusal))
    notice = f"Category {category.name} deleted."
    return await answer_change(notice, LIST_URL, lambda: _render_list(notice=notice))
