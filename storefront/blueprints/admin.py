"""The back office's front door: the admin landing page listing the areas that exist."""

from dataclasses import dataclass

from quart import Blueprint, Response, current_app

from storefront.models import User
from storefront.models.user import UserRole
from storefront.web.auth import current_customer, staff_required
from storefront.web.back_office import render_back_office

blueprint = Blueprint("admin", __name__)


@dataclass(frozen=True)
class BackOfficeArea:
    path: str
    title: str
    summary: str


def back_office_areas(customer: User) -> list[BackOfficeArea]:
    """Every argument-free GET page under /admin/ the customer's role may open, titled from its
    path and docstring."""
    areas: dict[str, BackOfficeArea] = {}
    for rule in current_app.url_map.iter_rules():
        path = rule.rule
        if not path.startswith("/admin/") or rule.arguments or "GET" not in (rule.methods or ()):
            continue
        view = current_app.view_functions[rule.endpoint]
        if getattr(view, "requires", None) == UserRole.OWNER and not customer.is_owner:
            continue
        summary = (view.__doc__ or "").strip().splitlines()[0] if view.__doc__ else ""
        title = path.removeprefix("/admin/").replace("-", " ").replace("/", " · ").capitalize()
        areas[path] = BackOfficeArea(path=path, title=title, summary=summary)
    return [areas[path] for path in sorted(areas)]


@blueprint.get("/admin")
@staff_required
async def index() -> Response:
    """The admin landing page: links to each back-office area."""
    customer = await current_customer()
    assert customer is not None  # staff_required
    return await render_back_office(
        "admin/index.html", "admin_content", areas=back_office_areas(customer)
    )
