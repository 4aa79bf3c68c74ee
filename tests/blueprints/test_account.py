"""Sign-up, login, logout, guest-cart merge at login and the account page."""

import asyncio

import pytest
from sqlalchemy import func, select

from storefront.blueprints.account import EMAIL_TAKEN, LOGIN_FAILED
from storefront.db.engine import sessionmaker_for
from storefront.db.transactions import write_transaction
from storefront.models import Cart, CartItem, Login, User, Wallet
from storefront.services import users as users_service
from storefront.services.cart import insert_cart
from storefront.web.htmx import safe_next_path
from tests.conftest import CSRF_TOKEN, TEST_PASSWORD
from tests.fixtures_accounts import (
    login,
    logout,
    post_form,
    register,
    reseed_csrf,
    session_csrf_token,
)
from tests.fixtures_shop import badge_cookie, set_badge_cookie

HTMX = {"HX-Request": "true"}


async def count_users(session, email: str | None = None) -> int:
    query = select(func.count(User.id))
    if email is not None:
        query = query.where(User.email == email)
    total = await session.scalar(query)
    await session.commit()
    return total


@pytest.mark.both_databases
async def test_register_logout_login_reaches_account_page(client, session):
    response = await register(client, "Ama.Mensah@Example.COM", name="Ama Mensah")
    assert response.status_code == 303
    assert response.headers["Location"] == "/account"
    page = await (await client.get("/account")).get_data(as_text=True)
    assert "Your account" in page and "ama.mensah@example.com" in page
    assert "Welcome, Ama Mensah." in page

    user = await session.scalar(select(User).where(User.email == "ama.mensah@example.com"))
    wallet = await session.scalar(select(Wallet).where(Wallet.user_id == user.id))
    assert wallet is not None and wallet.balance_minor == 0
    assert user.password_hash.startswith("scrypt:")
    await session.commit()

    await reseed_csrf(client)
    response = await logout(client)
    assert response.status_code == 303 and response.headers["Location"] == "/"
    response = await client.get("/account")
    assert response.status_code == 303
    assert response.headers["Location"] == "/login?next=/account"

    await reseed_csrf(client)
    response = await login(client, "ama.mensah@example.com", "not the right password")
    assert response.status_code == 422
    response = await login(client, " AMA.mensah@example.com ", "correct horse battery")
    assert response.status_code == 303 and response.headers["Location"] == "/account"
    response = await client.get("/account")
    assert response.status_code == 200
    page = await response.get_data(as_text=True)
    assert "ama.mensah@example.com" in page and "GH₵ 0.00" in page
    assert 'href="/account/orders"' in page and 'href="/account/wallet"' in page


async def test_register_rejects_bad_input_in_place_and_keeps_typed_values(client, session):
    cases = [
        ({"email": "not-an-email"}, "Enter a valid email address"),
        ({"password": "short", "password_confirm": "short"}, "at least 10 characters"),
        (
            {"email": "kofi@example.com", "password": "KOFI@example.com"},
            "cannot be your email address",
        ),
        ({"password_confirm": "something-else-entirely"}, "do not match"),
        ({"name": "   "}, "Enter your name."),
    ]
    for changes, message in cases:
        form = {
            "name": "Kofi <b>Boateng</b>",
            "email": "kofi@example.com",
            "password": "long enough password",
            "password_confirm": "long enough password",
        }
        form.update(changes)
        if "password" in changes and "password_confirm" not in changes:
            form["password_confirm"] = changes["password"]
        response = await post_form(client, "/register", form)
        assert response.status_code == 422, changes
        page = await response.get_data(as_text=True)
        assert message in page, changes
        assert "<html" in page
        # Typed values come back (escaped); passwords never do.
        assert f'value="{form["email"]}"' in page
        assert "Kofi &lt;b&gt;Boateng&lt;/b&gt;" in page or changes.get("name") == "   "
        assert form["password"] not in page
    assert await count_users(session) == 0


async def test_register_with_htmx_gets_the_form_fragment_or_a_redirect(client):
    response = await post_form(
        client,
        "/register",
        {"name": "Esi", "email": "esi@example.com", "password": "x", "password_confirm": "x"},
        **HTMX,
    )
    assert response.status_code == 422
    fragment = await response.get_data(as_text=True)
    assert "<html" not in fragment and fragment.lstrip().startswith("<form")
    assert "at least 10 characters" in fragment
    assert response.headers["Vary"] == "HX-Request"

    response = await register(client, "esi@example.com", **{})
    assert response.status_code == 303
    await reseed_csrf(client)
    await logout(client)
    await reseed_csrf(client)
    response = await post_form(
        client,
        "/register",
        {
            "name": "Esi Two",
            "email": "esi2@example.com",
            "password": "long enough password",
            "password_confirm": "long enough password",
        },
        **HTMX,
    )
    assert response.status_code == 204
    assert response.headers["HX-Redirect"] == "/account"


async def test_taken_email_gets_a_message_that_reveals_little(client, session, make_user):
    await make_user(email="taken@example.com")
    response = await register(client, "Taken@Example.com")
    assert response.status_code == 422
    page = await response.get_data(as_text=True)
    assert EMAIL_TAKEN.split(".")[0] in page
    assert await count_users(session, "taken@example.com") == 1


async def test_wrong_password_and_unknown_email_get_the_same_answer(client, make_user, monkeypatch):
    await make_user(email="known@example.com")
    compared: list[str] = []
    real_check = users_service.check_password_hash

    def counting_check(password_hash: str, password: str) -> bool:
        compared.append(password_hash)
        return real_check(password_hash, password)

    monkeypatch.setattr(users_service, "check_password_hash", counting_check)

    wrong = await login(client, "known@example.com", "not the password")
    unknown = await login(client, "nobody@example.com", "not the password")
    assert wrong.status_code == unknown.status_code == 422
    wrong_page = await wrong.get_data(as_text=True)
    unknown_page = await unknown.get_data(as_text=True)
    assert LOGIN_FAILED in wrong_page and LOGIN_FAILED in unknown_page
    assert wrong_page.replace("known@", "X@") == unknown_page.replace("nobody@", "X@")
    # Both paths run one scrypt compare; the unknown email's is against the dummy hash.
    assert len(compared) == 2
    assert compared[1] == users_service.DUMMY_PASSWORD_HASH
    assert compared[0] != users_service.DUMMY_PASSWORD_HASH


async def test_inactive_account_cannot_log_in(client, session, make_user):
    user = await make_user(email="gone@example.com")
    async with write_transaction(session):
        (await session.get(User, user.id)).is_active = False
    response = await login(client, "gone@example.com", TEST_PASSWORD)
    assert response.status_code == 422
    assert LOGIN_FAILED in await response.get_data(as_text=True)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("/checkout", "/checkout"),
        ("/orders/CW-000001?x=1", "/orders/CW-000001?x=1"),
        ("//evil.example", None),
        ("http://evil.example/", None),
        ("https:/evil.example", None),
        ("/\\evil.example", None),
        ("\\\\evil.example", None),
        ("/ok\r\nSet-Cookie: x=1", None),
        ("/\t/evil.example", None),
        ("javascript:alert(1)", None),
        ("evil.example", None),
        ("", None),
        (None, None),
    ],
)
def test_next_is_only_a_local_path(raw, expected):
    assert safe_next_path(raw) == expected


async def test_login_follows_local_next_and_ignores_foreign_next(client, make_user):
    await make_user(email="next@example.com")
    page = await (await client.get("/login?next=/checkout")).get_data(as_text=True)
    assert 'name="next" value="/checkout"' in page
    response = await login(client, "next@example.com", TEST_PASSWORD, next="/checkout")
    assert response.headers["Location"] == "/checkout"
    for foreign in ("//evil.example/x", "https://evil.example/", "/\\evil.example"):
        await reseed_csrf(client)
        await logout(client)
        await reseed_csrf(client)
        response = await login(client, "next@example.com", TEST_PASSWORD, next=foreign)
        assert response.status_code == 303
        assert response.headers["Location"] == "/account", foreign


async def test_login_with_htmx_redirects_with_hx_redirect(client, make_user):
    await make_user(email="hx@example.com")
    response = await login(client, "hx@example.com", "wrong password!", **{})
    assert response.status_code == 422
    response = await client.post(
        "/login",
        form={"csrf_token": CSRF_TOKEN, "email": "hx@example.com", "password": "wrong password!"},
        headers=HTMX,
    )
    fragment = await response.get_data(as_text=True)
    assert response.status_code == 422 and "<html" not in fragment
    assert LOGIN_FAILED in fragment and 'value="hx@example.com"' in fragment
    response = await client.post(
        "/login",
        form={"csrf_token": CSRF_TOKEN, "email": "hx@example.com", "password": TEST_PASSWORD},
        headers=HTMX,
    )
    assert response.status_code == 204 and response.headers["HX-Redirect"] == "/account"


async def test_login_and_logout_rotate_the_csrf_token(client, make_user):
    await make_user(email="rotate@example.com")
    assert await session_csrf_token(client) == CSRF_TOKEN
    await login(client, "rotate@example.com", TEST_PASSWORD)
    after_login = await session_csrf_token(client)
    assert after_login and after_login != CSRF_TOKEN
    # The old token no longer works for the signed-in session.
    response = await post_form(client, "/logout", {})
    assert response.status_code == 403
    assert (await client.get("/account")).status_code == 200
    response = await client.post("/logout", form={"csrf_token": after_login})
    assert response.status_code == 303
    after_logout = await session_csrf_token(client)
    assert after_logout and after_logout != after_login
    assert (await client.get("/account")).status_code == 303


async def test_logout_ends_the_auth_cookie_and_drops_the_cart(client, make_user, app):
    user = await make_user(email="bye@example.com")
    await login(client, "bye@example.com", TEST_PASSWORD)
    async with client.session_transaction() as session:
        session["cart_token"] = "some-cart"
        token = session["csrf_token"]
    set_badge_cookie(client, 3)
    response = await client.post("/logout", form={"csrf_token": token})
    assert response.status_code == 303
    cookie_name = app.config["QUART_AUTH_COOKIE_NAME"]
    set_cookies = response.headers.get_all("Set-Cookie")
    assert any(c.startswith(f"{cookie_name}=;") and "Max-Age=0" in c for c in set_cookies)
    async with client.session_transaction() as session:
        assert "cart_token" not in session
    assert badge_cookie(client) == 0
    assert user.login_token  # make_user's own login (another device) is not this one


async def test_login_merges_the_guest_cart(client, app, make_user, make_product, session):
    user = await make_user(email="cart@example.com")
    kettle = await make_product(name="Kettle", stock=5)
    radio = await make_product(name="Radio", stock=5)
    async with sessionmaker_for(app)() as own, write_transaction(own):
        saved = await insert_cart(own, user_id=user.id)
        own.add(CartItem(cart_id=saved.id, product_id=radio.id, quantity=1))
        guest = await insert_cart(own)
        own.add(CartItem(cart_id=guest.id, product_id=kettle.id, quantity=2))
        own.add(CartItem(cart_id=guest.id, product_id=radio.id, quantity=1))
    async with client.session_transaction() as quart_session:
        quart_session["cart_token"] = guest.token
    set_badge_cookie(client, 3)

    response = await login(client, "cart@example.com", TEST_PASSWORD)
    assert response.status_code == 303
    async with client.session_transaction() as quart_session:
        assert quart_session["cart_token"] == saved.token
    assert badge_cookie(client) == 4
    rows = await session.execute(
        select(CartItem.product_id, CartItem.quantity).where(CartItem.cart_id == saved.id)
    )
    quantities = {product_id: quantity for product_id, quantity in rows}
    assert quantities == {kettle.id: 2, radio.id: 2}
    assert await session.get(Cart, guest.id) is None


async def test_register_adopts_the_guest_cart(client, app, make_product, session):
    lamp = await make_product(name="Lamp", stock=3)
    async with sessionmaker_for(app)() as own, write_transaction(own):
        guest = await insert_cart(own)
        own.add(CartItem(cart_id=guest.id, product_id=lamp.id, quantity=2))
    async with client.session_transaction() as quart_session:
        quart_session["cart_token"] = guest.token
    await register(client, "newcart@example.com")
    user = await session.scalar(select(User).where(User.email == "newcart@example.com"))
    cart = await session.scalar(select(Cart).where(Cart.user_id == user.id))
    assert cart is not None and cart.id == guest.id
    async with client.session_transaction() as quart_session:
        assert quart_session["cart_token"] == cart.token != guest.token
    assert badge_cookie(client) == 2


async def test_account_page_needs_login_and_shows_the_balance(client, make_user, sign_in):
    response = await client.get("/account", headers=HTMX)
    assert response.status_code == 204
    assert response.headers["HX-Redirect"] == "/login?next=/account"
    user = await make_user(email="rich@example.com", name="Yaw Rich", balance_minor=1_234_550)
    sign_in(client, user)
    page = await (await client.get("/account")).get_data(as_text=True)
    assert "Yaw Rich" in page and "rich@example.com" in page
    assert "GH₵ 12,345.50" in page


async def test_stored_xss_in_a_name_renders_as_text(client, session):
    script = "<script>alert(1)</script>"
    response = await register(client, "xss@example.com", name=script)
    assert response.status_code == 303
    page = await (await client.get("/account")).get_data(as_text=True)
    assert script not in page
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt;"
    # Header link, account details and the welcome flash all show it as text.
    assert page.count(escaped) >= 3
    header = page.split("</header>")[0]
    assert escaped in header
    stored = await session.scalar(select(User.name).where(User.email == "xss@example.com"))
    assert stored == script


async def test_signed_in_visitor_skips_the_login_and_register_forms(client, make_user, sign_in):
    user = await make_user()
    sign_in(client, user)
    for path in ("/login?next=/checkout", "/register"):
        response = await client.get(path)
        assert response.status_code == 303
    assert (await client.get("/login?next=/checkout")).headers["Location"] == "/checkout"


async def test_password_check_rules():
    _, email, errors = users_service.check_registration(
        "Ama", "Ama@Example.com", "ama@example.com", None
    )
    assert email == "ama@example.com"
    assert "email address" in errors.messages["password"]
    _, _, errors = users_service.check_registration("Ama", "ama@example.com", "x" * 10, None)
    assert not errors


@pytest.mark.both_databases
async def test_racing_registrations_for_one_email_make_one_account(app, session):
    async def attempt(number: int) -> int:
        racer = app.test_client()
        async with racer.session_transaction() as quart_session:
            quart_session["csrf_token"] = CSRF_TOKEN
        response = await register(racer, "race@example.com", name=f"Racer {number}")
        return response.status_code

    statuses = await asyncio.gather(*(attempt(number) for number in range(5)))
    assert sorted(statuses) == [303] + [422] * 4
    assert await count_users(session, "race@example.com") == 1
    wallets = await session.scalar(
        select(func.count(Wallet.id)).join(User, User.id == Wallet.user_id)
    )
    await session.commit()
    assert wallets == 1


def copy_login_cookie(app, source, target) -> str:
    """Give `target` the login cookie `source` holds, as a thief with a copy of it would."""
    cookie_name = app.config["QUART_AUTH_COOKIE_NAME"]
    value = next(c.value for c in source.cookie_jar if c.name == cookie_name and c.value)
    target.set_cookie("localhost", cookie_name, value, path="/", domain="localhost")
    return value


async def logins_of(session, user_id: int) -> int:
    total = await session.scalar(select(func.count(Login.id)).where(Login.user_id == user_id))
    await session.commit()
    return total


@pytest.mark.both_databases
async def test_logout_ends_the_login_everywhere_it_was_copied(
    app, client, session, make_user, sign_in
):
    user = await make_user(email="victim@example.com")
    other_device = app.test_client()
    sign_in(other_device, user)
    assert (await login(client, "victim@example.com", TEST_PASSWORD)).status_code == 303
    thief = app.test_client()
    copy_login_cookie(app, client, thief)
    assert (await thief.get("/account")).status_code == 200
    assert await logins_of(session, user.id) == 2

    await reseed_csrf(client)
    assert (await logout(client)).status_code == 303

    response = await thief.get("/account")
    assert response.status_code == 303
    assert response.headers["Location"].startswith("/login")
    assert (await other_device.get("/account")).status_code == 200  # only that login ended
    assert await logins_of(session, user.id) == 1


@pytest.mark.both_databases
async def test_log_out_everywhere_ends_every_login_of_the_account(
    app, client, session, make_user, sign_in
):
    user = await make_user(email="everywhere@example.com")
    bystander = await make_user(email="bystander@example.com")
    phone, laptop, bystander_client = app.test_client(), app.test_client(), app.test_client()
    sign_in(phone, user)
    sign_in(bystander_client, bystander)
    assert (await login(client, "everywhere@example.com", TEST_PASSWORD)).status_code == 303
    copy_login_cookie(app, client, laptop)
    page = await client.get("/account")
    assert 'action="/account/logout-everywhere"' in await page.get_data(as_text=True)
    await reseed_csrf(client)

    assert (await client.post("/account/logout-everywhere", form={})).status_code == 403
    response = await post_form(client, "/account/logout-everywhere", {}, **HTMX)
    assert response.status_code == 204
    assert response.headers["HX-Redirect"] == "/login"

    for device in (client, phone, laptop):
        assert (await device.get("/account")).status_code == 303
    assert (await bystander_client.get("/account")).status_code == 200
    assert await logins_of(session, user.id) == 0
    assert await logins_of(session, bystander.id) == 1


async def test_login_cookies_from_before_logins_stop_working(app, client, make_user):
    # The cookie once carried the account's auth token; a token with no login row is nobody.
    await make_user(email="old.cookie@example.com")
    from quart_auth import generate_auth_token

    client.set_cookie(
        "localhost",
        app.config["QUART_AUTH_COOKIE_NAME"],
        generate_auth_token(client, "an-old-auth-token-with-no-login-row"),
        path="/",
        domain="localhost",
    )
    assert (await client.get("/account")).status_code == 303
