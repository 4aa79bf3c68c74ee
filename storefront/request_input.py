"""What every request's input must be before a view sees it: JSON a parser can finish, and text
without NUL characters (PostgreSQL refuses them in a text value, so they would reach the
database as an error instead of a message)."""

from typing import Any

from quart import Quart, Request, request
from werkzeug.exceptions import BadRequest

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
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
    app.request_class = ShopRequest
    app.before_request(refuse_nul_characters)
