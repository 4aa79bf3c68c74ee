"""Per-session CSRF token on every unsafe request, plus a same-origin check."""

import hmac
import secrets
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

from quart import Quart, current_app, request, session
from werkzeug.exceptions import Forbidden

UNSAFE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
SESSION_KEY = "csrf_token"
FORM_FIELD = "csrf_token"
HEADER = "X-CSRF-Token"

F = TypeVar("F", bound=Callable[..., Any])


class CSRFError(Forbidden):
    description = (
        "This form has expired or did not come from this shop. Reload the page and try again."
    )


def csrf_exempt(view: F) -> F:
    """Mark a view whose request proves itself another way (the Paystack webhook's HMAC)."""
    view.csrf_exempt = True  # type: ignore[attr-defined]
    return view


def csrf_token() -> str:
    """The session's token, made on first use."""
    token = session.get(SESSION_KEY)
    if not token:
        token = secrets.token_urlsafe(32)
        session[SESSION_KEY] = token
    return token


def rotate_csrf_token() -> str:
    """A fresh token at login and logout, so a token known before the change is worthless."""
    token = secrets.token_urlsafe(32)
    session[SESSION_KEY] = token
    return token


def _cross_site() -> bool:
    if request.headers.get("Sec-Fetch-Site") == "cross-site":
        return True
    origin = request.headers.get("Origin")
    if not origin or origin == "null":
        return origin == "null"
    return urlsplit(origin).netloc.lower() != request.host.lower()


async def check_csrf() -> None:
    if request.method not in UNSAFE_METHODS:
        return
    view = current_app.view_functions.get(request.endpoint or "")
    if view is None or getattr(view, "csrf_exempt", False):
        return
    if _cross_site():
        raise CSRFError("This request came from another site and was refused.")
    expected = session.get(SESSION_KEY)
    sent = request.headers.get(HEADER)
    if not sent and request.mimetype in {
        "application/x-www-form-urlencoded",
        "multipart/form-data",
    }:
        sent = (await request.form).get(FORM_FIELD)
    # Bytes: compare_digest raises TypeError on non-ASCII str, and a header can carry any byte.
    if (
        not expected
        or not sent
        or not hmac.compare_digest(str(expected).encode(), str(sent).encode())
    ):
        raise CSRFError()


def init_csrf(app: Quart) -> None:
    app.before_request(check_csrf)
    app.jinja_env.globals["csrf_token"] = csrf_token
