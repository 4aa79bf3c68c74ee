"""What every back-office page shares: the nav, and the answers to a change (htmx: the
fragment plus the status line out of band; without JS: flash and 303, or the page with 4xx)."""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

from jinja2_fragments.quart import render_block
from quart import Quart, Response, current_app, flash, make_response, render_template, request

from storefront.models import User
from storefront.models.user import UserRole
from storefront.web.htmx import is_htmx, navigate

STATUS_TEMPLATE = "admin/_status.html"


@dataclass(frozen=True)
class NavLink:
    endpoint: str
    title: str


# The back office's menu, in order. A new area adds its list page here; the link shows only
# to roles its view admits (its `requires`).
BACK_OFFICE_NAV = (
    NavLink("admin.index", "Dashboard"),
    NavLink("admin_products.products", "Products"),
    NavLink("admin_categories.categories", "Categories"),
    NavLink("admin_coupons.coupons", "Coupons"),
    NavLink("admin_audit.audit_log", "Audit"),
    NavLink("admin_emails.emails", "Emails"),
    NavLink("admin_roles.staff", "Staff"),
)


@dataclass(frozen=True)
class ShownLink:
    url: str
    title: str
    current: bool


def back_office_nav(customer: User | None) -> list[ShownLink]:
    """The nav links that exist in this app and that the customer's role may open."""
    if customer is None:
        return []
    links = []
    for link in BACK_OFFICE_NAV:
        view = current_app.view_functions.get(link.endpoint)
        if view is None:
            continue
        if getattr(view, "requires", None) == UserRole.OWNER and not customer.is_owner:
            continue
        rule = next(current_app.url_map.iter_rules(link.endpoint))
        url = rule.rule
        current = request.path == url or (url != "/admin" and request.path.startswith(url + "/"))
        links.append(ShownLink(url=url, title=link.title, current=current))
    return links


async def render_back_office(
    template: str,
    block: str,
    status: int = 200,
    notice: str = "",
    error: str = "",
    **context: Any,
) -> Response:
    """The whole page, with `notice` or `error` in its status line; for htmx, only `block` and
    the status line swapped out of band. Both vary on HX-Request."""
    if is_htmx():
        body = await render_block(template, block, **context)
        body += await render_template(STATUS_TEMPLATE, oob=True, notice=notice, error=error)
    else:
        body = await render_template(template, notice=notice, error=error, **context)
    response = cast(Response, await make_response(body, status))
    response.headers["Vary"] = "HX-Request"
    return response


async def answer_change(
    notice: str, redirect_to: str, render: Callable[[], Awaitable[Response]] | None = None
) -> Response:
    """After a change: for htmx, what `render` answers (a render_back_office with the notice)
    or, without `render`, a full navigation; without JS, the notice flashed and a 303 to
    `redirect_to`, which shows it in the status line."""
    if is_htmx() and render is not None:
        return await render()
    await flash(notice, "ok")
    return await navigate(redirect_to)


def init_back_office(app: Quart) -> None:
    app.jinja_env.globals["back_office_nav"] = back_office_nav
