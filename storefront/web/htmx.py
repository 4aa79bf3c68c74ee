"""One place that decides fragment or page, and how to send a shopper elsewhere."""

from typing import Any, cast
from urllib.parse import urlsplit

from jinja2_fragments.quart import render_block
from quart import Response, current_app, make_response, redirect, render_template, request

NEXT_MAX_LENGTH = 512


def safe_next_path(raw: object) -> str | None:
    """`raw` when it is a path on this site, else None (no //host, scheme, backslash, controls)."""
    if not isinstance(raw, str) or not raw or len(raw) > NEXT_MAX_LENGTH:
        return None
    if not raw.startswith("/") or raw.startswith("//"):
        return None
    if "\\" in raw or any(ord(character) < 33 or ord(character) == 127 for character in raw):
        return None
    parts = urlsplit(raw)
    if parts.scheme or parts.netloc:
        return None
    return raw


def is_htmx() -> bool:
    """An htmx request that wants a fragment (not a boosted navigation or a history restore)."""
    return (
        request.headers.get("HX-Request") == "true"
        and request.headers.get("HX-Boosted") != "true"
        and request.headers.get("HX-History-Restore-Request") != "true"
    )


FRAGMENT_ENV_KEY = "fragment_jinja_env"


async def render_fragment(template: str, **context: Any) -> str:
    """A small fragment rendered from its own context and Jinja's globals (csrf_token, request,
    config) only: a page's context processors (customer, badge count) cost as much as the
    fragment itself. Pass the fragment everything it shows.

    Fragments render synchronously, through an overlay of the app's Jinja environment (same
    loader, filters and globals) without async mode, whose generator machinery was a third of
    a fragment's cost; a fragment therefore must not call anything async.
    """
    app = current_app
    environment = app.extensions.get(FRAGMENT_ENV_KEY)
    if environment is None:
        environment = app.extensions[FRAGMENT_ENV_KEY] = app.jinja_env.overlay(enable_async=False)
    return cast(str, environment.get_template(template).render(context))


async def render_page_or_block(
    template: str, block: str, status: int = 200, **context: Any
) -> Response:
    """The whole page, or only `block` of it for htmx; both vary on HX-Request."""
    if is_htmx():
        body = await render_block(template, block, **context)
    else:
        body = await render_template(template, **context)
    response = cast(Response, await make_response(body, status))
    response.headers["Vary"] = "HX-Request"
    return response


async def navigate(url: str) -> Response:
    """Full navigation: 204 + HX-Redirect for htmx (it ignores 3xx headers), else 303."""
    if request.headers.get("HX-Request") == "true":
        response = cast(Response, await make_response("", 204))
        response.headers["HX-Redirect"] = url
        return response
    # Quart's redirect builds the app's response class; werkzeug's annotation says otherwise.
    return cast(Response, redirect(url, 303))
