"""Extensions, made per app: a module-level QuartAuth keeps the first app's cookie settings
(Secure, SameSite) for every later app, and a shared rate limiter would carry counts between apps
(the limiter is made in storefront.web.security.init_security)."""

from quart import Quart
from quart_auth import QuartAuth


def init_auth(app: Quart) -> QuartAuth:
    """quart-auth for this app, reading its QUART_AUTH_* settings."""
    auth = QuartAuth(app)
    # How long a login cookie is accepted (quart-auth's default unless set): logins older than
    # this are dropped when their user next logs in.
    app.config["QUART_AUTH_DURATION"] = auth.duration
    return auth
