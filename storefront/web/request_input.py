"""What every request's input must be before a view sees it: a whole body that arrived in time
and fits, JSON a parser can finish, and text without NUL characters (PostgreSQL refuses them in a
text value, so they would reach the database as an error instead of a message)."""

import asyncio
from typing import Any

from quart import Quart, Request, current_app, request
from werkzeug.exceptions import BadRequest, RequestEntityTooLarge, RequestTimeout

from storefront.web.settings import settings

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
TOO_LARGE = "That is more than a form of this shop can hold. Please shorten it and send it again."
FORM_MIMETYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})
NUL = "\x00"


class ShopRequest(Request):
    """Quart's request, with JSON too deeply nested for the parser treated as malformed JSON."""

    async def get_json(self, force: bool = False, silent: bool = False, cache: bool = True) -> Any:
        try:
            return await super().get_json(force, silent, cache)
        except RecursionError:
            if silent:
                return None
            raise BadRequest("The request's JSON is nested too deeply.") from None


async def read_body_first() -> None:
    """An unsafe request's whole body arrives before any database work, within a short time for
    forms and JSON (uploads keep BODY_TIMEOUT): a client trickling its body holds a coroutine,
    never a pooled connection, and gets 408. Sizes: MAX_CONTENT_LENGTH for uploads, Quart's
    MAX_FORM_MEMORY_SIZE (500 KB) for any other body (413)."""
    if request.method not in UNSAFE_METHODS:
        return
    timeout, limit = request.body_timeout, None
    if request.mimetype != "multipart/form-data":
        timeout = settings().form_body_timeout_seconds
        limit = current_app.config["MAX_FORM_MEMORY_SIZE"]
        if (request.content_length or 0) > limit:
            raise RequestEntityTooLarge(TOO_LARGE)
    try:
        async with asyncio.timeout(timeout):
            body = await request.body
    except TimeoutError:
        raise RequestTimeout("The form took too long to arrive. Please send it again.") from None
    if limit is not None and len(body) > limit:
        raise RequestEntityTooLarge(TOO_LARGE)


def _has_nul(pairs: Any) -> bool:
    return any(NUL in key or NUL in value for key, value in pairs)


async def refuse_nul_characters() -> None:
    """A query string or form holding a NUL character is refused with a 400 before any view."""
    if _has_nul(request.args.items(multi=True)):
        raise BadRequest("The address contains a character the shop cannot accept.")
    if request.method in UNSAFE_METHODS and request.mimetype in FORM_MIMETYPES:
        form = await request.form
        if _has_nul(form.items(multi=True)):
            raise BadRequest("The form contains a character the shop cannot accept.")


def init_request_input(app: Quart) -> None:
    """Register before any other before-request hook: no database work before the body is in."""
    app.request_class = ShopRequest
    app.before_request(read_body_first)
    app.before_request(refuse_nul_characters)
