"""The remembering session interface: same sessions as Quart's, signatures checked once per
cookie, tampered or expired cookies refused, and no state shared between requests."""

import time
from datetime import timedelta

from quart import session

from storefront.web.sessions import RememberingSessionInterface


async def session_cookie(app, contents: dict) -> str:
    async with app.test_request_context("/"):
        for key, value in contents.items():
            session[key] = value
        interface = app.session_interface
        return interface.get_signing_serializer(app).dumps(dict(session))


async def opened(app, cookie: str) -> dict:
    headers = {"Cookie": f"{app.config['SESSION_COOKIE_NAME']}={cookie}"}
    async with app.test_request_context("/", headers=headers) as context:
        return dict(await app.session_interface.open_session(app, context.request))


async def test_the_app_uses_it(app):
    assert isinstance(app.session_interface, RememberingSessionInterface)


async def test_a_verified_cookie_is_not_checked_again(app, monkeypatch):
    cookie = await session_cookie(app, {"csrf_token": "t" * 43, "cart_count": 2})
    assert await opened(app, cookie) == {"csrf_token": "t" * 43, "cart_count": 2}
    serializer = app.session_interface.get_signing_serializer(app)

    def refuse(*_args, **_kwargs):
        raise AssertionError("verified again")

    monkeypatch.setattr(serializer, "loads", refuse)
    assert await opened(app, cookie) == {"csrf_token": "t" * 43, "cart_count": 2}


async def test_each_request_gets_its_own_copy(app):
    cookie = await session_cookie(app, {"_flashes": [("ok", "first")]})
    first = await opened(app, cookie)
    first["_flashes"].append(("ok", "leaked"))
    assert await opened(app, cookie) == {"_flashes": [("ok", "first")]}


async def test_tampered_cookies_give_an_empty_session(app):
    cookie = await session_cookie(app, {"csrf_token": "real"})
    payload, signature = cookie.rsplit(".", 1)
    forged = payload + "." + ("A" if signature[0] != "A" else "B") + signature[1:]
    assert await opened(app, forged) == {}
    assert await opened(app, "not-a-cookie") == {}


async def test_expired_cookies_are_refused_even_when_remembered(app, monkeypatch):
    cookie = await session_cookie(app, {"csrf_token": "real"})
    assert await opened(app, cookie) == {"csrf_token": "real"}
    app.permanent_session_lifetime = timedelta(seconds=60)
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() + 120)
    assert await opened(app, cookie) == {}


async def test_memory_is_bounded(app):
    interface = app.session_interface
    interface.max_remembered = 3
    for number in range(5):
        await opened(app, await session_cookie(app, {"n": number}))
    assert len(interface._verified) == 3


async def test_a_new_secret_key_forgets_what_was_verified(app):
    cookie = await session_cookie(app, {"csrf_token": "real"})
    assert await opened(app, cookie) == {"csrf_token": "real"}
    app.secret_key = "another-secret-key-that-is-long-enough-0123456789"
    assert await opened(app, cookie) == {}


async def test_sessions_round_trip_through_the_app(client):
    first = await client.get("/")
    assert first.status_code in (200, 302)
    async with client.session_transaction() as browser_session:
        browser_session["_flashes"] = [("ok", "Kept across requests")]
    body = await (await client.get("/")).get_data(as_text=True)
    assert "Kept across requests" in body
