"""The security baseline, asked directly: headers, cookie flags (development and production),
rate limits with readable 429s, and CSRF refusals that change nothing."""

from http.cookies import SimpleCookie

import pytest
from sqlalchemy import func, select

from storefront import create_app
from storefront.db.engine import make_engine, sessionmaker_for
from storefront.db.transactions import write_transaction
from storefront.models import Base, CartItem, User
from storefront.services.users import insert_user
from storefront.web.security import CONTENT_SECURITY_POLICY
from tests import conftest
from tests.conftest import CSRF_TOKEN, TEST_PASSWORD
from tests.fixtures_accounts import login, post_form
from tests.live import app_test_config, create_tables

EXPECTED_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "strict-origin-when-cross-origin",
    "X-Frame-Options": "DENY",
}
PRODUCTION_SECRET = "production-secret-key-0123456789-abcdefghijklmnop"


def cookie_attributes(set_cookie_headers: list[str], name: str) -> dict[str, str]:
    for header in set_cookie_headers:
        if header.startswith(f"{name}="):
            parsed = SimpleCookie()
            parsed.load(header)
            morsel = parsed[name]
            flags = {key.lower(): str(value) for key, value in morsel.items() if value}
            lowered = header.lower()
            flags["httponly"] = "httponly" in lowered and "true" or ""
            flags["secure"] = "; secure" in lowered and "true" or ""
            return flags
    raise AssertionError(f"no Set-Cookie for {name} in {set_cookie_headers}")


async def test_security_headers_on_pages_errors_static_and_json(client):
    for path in ("/", "/login", "/healthz", "/no-such-page", "/static/css/site.css"):
        response = await client.get(path)
        for name, value in EXPECTED_HEADERS.items():
            assert response.headers.get(name) == value, (path, name)
        assert "Strict-Transport-Security" not in response.headers, path
    response = await client.post("/login", form={"email": "x"})  # refused by CSRF
    assert response.status_code == 403
    assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY


async def test_templates_carry_no_inline_script_or_style(client):
    page = await (await client.get("/login")).get_data(as_text=True)
    assert "<script>" not in page and "<script " in page  # only the external htmx file
    for tag in page.split("<script")[1:]:
        assert 'src="/static/' in tag.split(">")[0]
    assert "<style" not in page and " style=" not in page and " on" + "click=" not in page


async def test_development_cookies_are_httponly_and_lax(client, make_user):
    await make_user(email="cookies@example.com")
    response = await login(client, "cookies@example.com", TEST_PASSWORD)
    cookies = response.headers.get_all("Set-Cookie")
    for name in ("storefront_session", "storefront_auth"):
        flags = cookie_attributes(cookies, name)
        assert flags["httponly"], name
        assert flags["samesite"].lower() == "lax", name
        assert not flags["secure"], name  # the test config serves plain http


@pytest.fixture(name="production_app")
async def _production_app(database_url, monkeypatch):
    # The environment an operator sets: the cookie flags derive from it, not from overrides.
    for name in ("QUART_AUTH_COOKIE_SECURE", "FLASK_ENV", "PAYSTACK_ENABLED"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("STOREFRONT_ENV", "production")
    engine = make_engine(database_url)
    async with engine.begin() as connection:
        await connection.run_sync(Base.metadata.create_all)
    await engine.dispose()
    app = create_app(
        {
            "DATABASE_URL": database_url,
            "SECRET_KEY": PRODUCTION_SECRET,
            "PUBLIC_BASE_URL": "https://shop.example.com",
            "OUTBOX_SENDER_ENABLED": False,
            "RECONCILER_ENABLED": False,
            "PAYSTACK_PUBLIC_KEY": "",
            "PAYSTACK_SECRET_KEY": "",
            "MAIL_SERVER": "",
            "SENDGRID_API_KEY": "",
        }
    )
    async with app.test_app():
        yield app


async def test_production_sends_hsts_and_secure_cookies(production_app):
    async with sessionmaker_for(production_app)() as db, write_transaction(db):
        await insert_user(db, "prod@example.com", conftest.test_password_hash(), name="Prod")
    client = production_app.test_client()
    async with client.session_transaction() as session:
        session["csrf_token"] = CSRF_TOKEN
    response = await client.get("/login", scheme="https")
    assert response.headers["Strict-Transport-Security"].startswith("max-age=")
    for name, value in EXPECTED_HEADERS.items():
        assert response.headers[name] == value
    response = await client.post(
        "/login",
        form={"csrf_token": CSRF_TOKEN, "email": "prod@example.com", "password": TEST_PASSWORD},
        scheme="https",
    )
    assert response.status_code == 303
    cookies = response.headers.get_all("Set-Cookie")
    for name in ("storefront_session", "storefront_auth"):
        flags = cookie_attributes(cookies, name)
        assert flags["secure"] and flags["httponly"], name
        assert flags["samesite"].lower() == "lax", name


async def test_the_eleventh_rapid_login_is_429_with_a_readable_page(client, make_user):
    await make_user(email="target@example.com")
    statuses = []
    for attempt in range(11):
        response = await login(client, "target@example.com", f"guess number {attempt}")
        statuses.append(response.status_code)
    assert statuses == [422] * 10 + [429]
    assert int(response.headers["Retry-After"]) > 0
    page = await response.get_data(as_text=True)
    assert "Too many attempts" in page and "<html" in page
    # Even the right password is refused while limited: guessing cannot continue.
    response = await login(client, "target@example.com", TEST_PASSWORD)
    assert response.status_code == 429
    # htmx gets the message as a fragment it swaps in.
    response = await post_form(
        client,
        "/login",
        {"email": "target@example.com", "password": "x"},
        **{"HX-Request": "true"},
    )
    fragment = await response.get_data(as_text=True)
    assert response.status_code == 429 and "<html" not in fragment and "Too many" in fragment
    # Showing the form is not limited, and another client is not affected.
    for _ in range(12):
        assert (await client.get("/login")).status_code == 200
    response = await client.post(
        "/login",
        form={"csrf_token": CSRF_TOKEN, "email": "target@example.com", "password": TEST_PASSWORD},
        scope_base={"client": ("10.9.8.7", 40000)},
    )
    assert response.status_code == 303


async def test_forged_forwarded_for_does_not_dodge_the_limit(client):
    statuses = []
    for attempt in range(11):
        response = await post_form(
            client,
            "/login",
            {"email": "a@example.com", "password": "x"},
            **{"X-Forwarded-For": f"203.0.113.{attempt}", "Remote-Addr": f"198.51.100.{attempt}"},
        )
        statuses.append(response.status_code)
    assert statuses[-1] == 429


async def test_behind_a_trusted_proxy_each_shopper_has_their_own_limit(database_url):
    await create_tables(database_url)
    app = create_app(app_test_config(database_url, TRUSTED_PROXY_HOPS=1))
    async with app.test_app():
        client = app.test_client()
        async with client.session_transaction() as session:
            session["csrf_token"] = CSRF_TOKEN

        async def attempt(forwarded_for: str) -> int:
            # Every request reaches the app from the proxy's socket; the proxy appended the
            # address it saw to whatever X-Forwarded-For the client sent.
            response = await post_form(
                client,
                "/login",
                {"email": "a@example.com", "password": "x"},
                **{"X-Forwarded-For": forwarded_for},
            )
            return response.status_code

        assert [await attempt("198.51.100.7") for _ in range(11)] == [422] * 10 + [429]
        # The limited shopper cannot dodge by forging an earlier hop...
        assert await attempt("203.0.113.5, 198.51.100.7") == 429
        # ...and the shopper next to them, behind the same proxy, is not limited.
        assert await attempt("198.51.100.8") == 422


async def test_register_and_forgot_are_limited_too(client):
    statuses = []
    for attempt in range(6):
        response = await post_form(client, "/register", {"email": f"bad-{attempt}"})
        statuses.append(response.status_code)
    assert statuses == [422] * 5 + [429]
    statuses = []
    for _ in range(6):
        response = await post_form(client, "/password/forgot", {"email": "nobody@example.com"})
        statuses.append(response.status_code)
    assert statuses == [200] * 5 + [429]


async def test_api_429_is_json(client):
    answers = []
    for _ in range(31):
        answers.append(await post_form(client, "/api/validate-coupon", {"code": "NOPE"}))
    last = answers[-1]
    assert last.status_code == 429
    assert "Too many attempts" in (await last.get_json())["error"]
    assert all(answer.status_code != 429 for answer in answers[:-1])


class TestRateLimitsOff:
    @pytest.fixture(name="app_overrides")
    def _app_overrides(self):
        return {"RATELIMIT_ENABLED": False}

    async def test_config_switch_disables_limits(self, client):
        for _ in range(12):
            response = await login(client, "a@example.com", "wrong password")
            assert response.status_code == 422


async def count_users(session) -> int:
    total = await session.scalar(select(func.count(User.id)))
    await session.commit()
    return total


@pytest.mark.parametrize("token", [None, "wrong-token", "ünïcödé-token", ""])
async def test_login_register_logout_without_the_token_are_refused(
    client, session, make_user, sign_in, token
):
    user = await make_user(email="csrf@example.com")
    form = {"email": "csrf@example.com", "password": TEST_PASSWORD}
    if token is not None:
        form["csrf_token"] = token
    response = await client.post("/login", form=form)
    assert response.status_code == 403
    assert "did not come from this shop" in await response.get_data(as_text=True)
    assert not any(c.startswith("storefront_auth=") for c in response.headers.get_all("Set-Cookie"))

    before = await count_users(session)
    register_form = {
        "name": "Forged",
        "email": "forged@example.com",
        "password": "long enough password",
        "password_confirm": "long enough password",
    }
    if token is not None:
        register_form["csrf_token"] = token
    assert (await client.post("/register", form=register_form)).status_code == 403
    assert await count_users(session) == before

    sign_in(client, user)
    logout_form = {} if token is None else {"csrf_token": token}
    assert (await client.post("/logout", form=logout_form)).status_code == 403
    assert (await client.get("/account")).status_code == 200  # still signed in

    headers = {"X-CSRF-Token": token} if token else {}
    response = await client.post("/logout", headers=headers)
    assert response.status_code == 403


async def test_cart_post_without_token_changes_nothing(client, session, make_product):
    product = await make_product(stock=5)
    response = await client.post(
        "/cart/items", form={"product_id": str(product.id), "quantity": "1"}
    )
    assert response.status_code == 403
    response = await client.post(
        "/cart/items",
        form={"product_id": str(product.id), "quantity": "1", "csrf_token": "wrong"},
        headers={"HX-Request": "true"},
    )
    assert response.status_code == 403
    assert "<html" not in await response.get_data(as_text=True)
    assert await session.scalar(select(func.count(CartItem.id))) == 0
    await session.commit()


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
    ],
)
async def test_cross_site_posts_are_refused_even_with_the_token(client, session, headers):
    response = await client.post(
        "/register",
        form={
            "csrf_token": CSRF_TOKEN,
            "name": "Cross",
            "email": "cross@example.com",
            "password": "long enough password",
            "password_confirm": "long enough password",
        },
        headers=headers,
    )
    assert response.status_code == 403
    assert "another site" in await response.get_data(as_text=True)
    assert await count_users(session) == 0


async def test_same_origin_and_header_token_are_accepted(client, make_user):
    await make_user(email="ok@example.com")
    response = await client.post(
        "/login",
        form={"email": "ok@example.com", "password": TEST_PASSWORD},
        headers={"X-CSRF-Token": CSRF_TOKEN, "Origin": "http://localhost"},
    )
    assert response.status_code == 303


async def test_a_script_like_product_name_renders_as_text_everywhere(
    client, make_product, make_user
):
    script = "<script>alert(1)</script>"
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt;"
    product = await make_product(name=script, stock=5)
    response = await client.post(
        "/cart/items",
        form={"csrf_token": CSRF_TOKEN, "product_id": str(product.id), "quantity": "1"},
    )
    assert response.status_code in {200, 303}
    pages = ["/", f"/products/{product.slug}", "/cart", "/?q=script"]
    for path in pages:
        page = await (await client.get(path)).get_data(as_text=True)
        assert script not in page, path
        assert escaped in page, path
    api = await client.get("/api/products")
    assert api.headers["Content-Type"].startswith("application/json")
    await make_user(name=script, email="xss-buyer@example.com")
    # Logging in through the form carries the guest cart over, so checkout shows the line.
    assert (await login(client, "xss-buyer@example.com", TEST_PASSWORD)).status_code == 303
    for path in ("/account", "/cart", "/checkout"):
        page = await (await client.get(path)).get_data(as_text=True)
        assert script not in page, path
        assert escaped in page, path
