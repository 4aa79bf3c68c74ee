"""Staff and roles: the owner sees who works in the back office and gives any account the role
customer, staff or owner."""

from urllib.parse import urlencode

from quart import Blueprint, Response, flash, request

from storefront.db.engine import get_session
from storefront.models.user import UserRole
from storefront.services.audit import audited_write
from storefront.services.roles import (
    RoleChangeRefused,
    UnknownUser,
    change_role,
    search_users_by_email,
    select_back_office_users,
)
from storefront.web.auth import current_customer, owner_required
from storefront.web.back_office import answer_change, render_back_office
from storefront.web.htmx import navigate

blueprint = Blueprint("admin_roles", __name__)

SEARCH_MAX_LENGTH = 254
ROLE_CHOICES = ", ".join(UserRole)


def _staff_url(q: str) -> str:
    return "/admin/staff?" + urlencode({"q": q}) if q else "/admin/staff"


async def _render_staff(
    q: str = "", status: int = 200, notice: str = "", error: str = ""
) -> Response:
    session = get_session()
    return await render_back_office(
        "admin/staff.html",
        "staff_list",
        status,
        notice=notice,
        error=error,
        members=await select_back_office_users(session),
        found=await search_users_by_email(session, q) if q else [],
        q=q,
        roles=tuple(UserRole),
    )


@blueprint.get("/admin/staff")
@owner_required
async def staff() -> Response:
    """Who works in the back office, and the role of any account found by email."""
    q = (request.args.get("q") or "").strip()
    if len(q) > SEARCH_MAX_LENGTH:
        return await _render_staff(status=400, error="Search with at most 254 characters.")
    return await _render_staff(q)


@blueprint.post("/admin/customers/<int:user_id>/role")
@owner_required
async def change_user_role(user_id: int) -> Response:
    """Give an account the role customer, staff or owner."""
    form = await request.form
    q = (form.get("q") or "").strip()[:SEARCH_MAX_LENGTH]
    try:
        role = UserRole(form.get("role") or "")
    except ValueError:
        return await _render_staff(q, 422, error=f"Choose a role: {ROLE_CHOICES}.")
    actor = await current_customer()
    assert actor is not None  # owner_required
    session = get_session()
    try:
        async with audited_write(session):
            user, previous = await change_role(session, actor, user_id, role)
    except UnknownUser as refusal:
        return await _render_staff(q, 404, error=str(refusal))
    except RoleChangeRefused as refusal:
        return await _render_staff(q, 409, error=str(refusal))
    if previous == role:
        notice = f"{user.email} is already {role}: nothing changed."
    else:
        notice = f"{user.email} is now {role} (was {previous})."
    if user.id == actor.id and role != UserRole.OWNER:
        # The owner gave up owning: this page is no longer theirs to see.
        await flash(notice, "ok")
        return await navigate("/admin" if role == UserRole.STAFF else "/account")
    return await answer_change(notice, _staff_url(q), lambda: _render_staff(q, notice=notice))
