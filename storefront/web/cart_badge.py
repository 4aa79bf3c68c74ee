"""The cart badge's count, kept in a plain cookie of its own rather than in the signed session.

The count is only what the header shows; the cart itself is in the database, and the cart and
checkout pages always count it afresh. Out of the session, an add that only changes the count
does not re-sign the session cookie (a seventh of the add's cost), and the session cookie stays
the same from add to add, so the signature each worker checked once stays checked. A forged
count changes nothing but the forger's own badge; it is read back as a whole number only.
"""

from quart import Response, after_this_request, current_app, g, request
from werkzeug.wrappers import Response as WerkzeugResponse

AnyResponse = Response | WerkzeugResponse

BADGE_COOKIE = "storefront_cart_count"
MAX_DIGITS = 6


def badge_count() -> int:
    """The count to show: the one set during this request, else the browser's cookie."""
    if "badge_count" in g:
        return int(g.badge_count)
    raw = request.cookies.get(BADGE_COOKIE, "")
    if raw.isascii() and raw.isdigit() and len(raw) <= MAX_DIGITS:
        return int(raw)
    return 0


def show_badge_count(count: int) -> None:
    """Send `count` to the browser with this request's response, when it changed."""
    if count == badge_count():
        return
    if "badge_count" not in g:
        after_this_request(_send_badge_cookie)
    g.badge_count = count


async def _send_badge_cookie(response: AnyResponse) -> AnyResponse:
    config = current_app.config
    attributes = {
        "path": "/",
        "httponly": True,
        "samesite": config["SESSION_COOKIE_SAMESITE"],
        "secure": config["SESSION_COOKIE_SECURE"],
    }
    if g.badge_count > 0:
        response.set_cookie(BADGE_COOKIE, str(g.badge_count), **attributes)
    else:
        response.delete_cookie(BADGE_COOKIE, **attributes)
    return response
