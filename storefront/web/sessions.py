"""Quart's signed-cookie session without the repeated work: a returning shopper sends the same
cookie on every page, so each distinct cookie's signature is checked once per worker.

Opening the session (building the serializer, deriving the key, checking the HMAC) was about a
fifth of a cached page's cost. A cookie already verified is decoded from its verified payload;
its age is still checked against the session lifetime on every request, and a cookie that was
never verified goes through Quart's full check.
"""

import time
from collections import OrderedDict
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer
from quart import Quart
from quart.sessions import SecureCookieSession, SecureCookieSessionInterface
from quart.wrappers import BaseRequestWebsocket

DEFAULT_MAX_REMEMBERED = 10_000


class RememberingSessionInterface(SecureCookieSessionInterface):
    """Signed cookies as Quart makes them, verified once per distinct cookie (LRU-bounded)."""

    def __init__(self, max_remembered: int = DEFAULT_MAX_REMEMBERED) -> None:
        self.max_remembered = max_remembered
        self._serializer: URLSafeTimedSerializer | None = None
        self._serializer_keys: tuple[Any, ...] | None = None
        # cookie → (its verified payload re-encoded, when it was signed in epoch seconds)
        self._verified: OrderedDict[str, tuple[str, int]] = OrderedDict()

    def get_signing_serializer(self, app: Quart) -> URLSafeTimedSerializer | None:
        keys = (app.secret_key, tuple(app.config.get("SECRET_KEY_FALLBACKS") or ()))
        if keys != self._serializer_keys:
            self._serializer = super().get_signing_serializer(app)
            self._serializer_keys = keys
            self._verified.clear()
        return self._serializer

    async def open_session(
        self, app: Quart, request: BaseRequestWebsocket
    ) -> SecureCookieSession | None:
        signer = self.get_signing_serializer(app)
        if signer is None:
            return None
        cookie = request.cookies.get(self.get_cookie_name(app))
        if cookie is None:
            return self.session_class()
        max_age = int(app.permanent_session_lifetime.total_seconds())
        remembered = self._verified.get(cookie)
        if remembered is not None:
            payload, signed_at = remembered
            age = int(time.time()) - signed_at
            if 0 <= age <= max_age:
                self._verified.move_to_end(cookie)
                # A fresh decode per request: handlers mutate nested values (flash lists).
                return self.session_class(self.serializer.loads(payload))
            del self._verified[cookie]
            return self.session_class()
        try:
            data, signed = signer.loads(cookie, max_age=max_age, return_timestamp=True)
        except BadSignature:
            return self.session_class()
        self._verified[cookie] = (self.serializer.dumps(data), int(signed.timestamp()))
        if len(self._verified) > self.max_remembered:
            self._verified.popitem(last=False)
        return self.session_class(data)


def init_sessions(app: Quart) -> None:
    """Use the remembering session interface for this app (one per app: its own memory)."""
    app.session_interface = RememberingSessionInterface()
