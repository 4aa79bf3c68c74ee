"""The back office's front door: the admin landing page listing the areas that exist."""

from dataclasses import dataclass

from quart import Blueprint, Response, current_app

from storefront.web.auth import admin_required
from storefront.web.htmx import render_page_or_block

blueprint = Blueprint("admin", __name__)


@dataclass(frozen=True)
class BackOfficeArea:
    path: str
    title: str
    summary: str


def back_office_areas() -> list[BackOfficeArea]:
    """Every argument-free GET page under /admin/, titled from its path and docstring."""
    areas: dict[str, BackOfficeArea] = {}
    for rule in current_app.url_map.iter_rules():
        path = rule.rule
        if not path.startswith("/admin/") or rule.arguments or "GET" not in (rule.methods or ()):
            continue
        view = current_app.view_functions[rule.endpoint]
        summary = (view.__doc__ or "").strip().splitlines()[0] if view.__doc__ else ""
        title = path.removeprefix("/admin/").replace("-", " ").replace("/", " · ").capitalize()
        areas[path] = BackOfficeArea(path=path, title=title, summary=summary)
    return [areas[path] for path in sorted(areas)]


@blueprint.get("/admin")
@admin_required
async def index() -> Response:
    """The admin landing page: links to each back-office area."""
    return await render_page_or_block("admin/index.html", "content", areas=back_office_areas())
