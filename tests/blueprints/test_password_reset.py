"""Password reset end to end: the form queues an outbox email, the app's own sender delivers it
to a real SMTP server (aiosmtpd), and the emailed link sets a new password exactly once."""

import time

import pytest
from sqlalchemy import func, select

from storefront.blueprints import account as account_blueprint
from storefront.models import Login, OutboxEmail
from storefront.services.users import (
    RESET_TOKEN_MAX_AGE_SECONDS,
    make_password_reset_token,
    select_user_by_email,
)
from tests.conftest import TEST_PASSWORD, reconfigure
from tests.fixtures_accounts import (
    NEW_PASSWORD,
    background_work_done,
    login,
    post_form,
    reseed_csrf,
    reset_path_in,
)
from tests.fixtures_mail import smtp_config

PUBLIC_BASE_URL = "https://shop.cyberworld.test"
SAME_ANSWER = "If an account uses that email, we have sent it a link"


@pytest.fixture(name="app_overrides")
def _app_overrides(smtp_server):
    return {
        **smtp_config(smtp_server),
        "OUTBOX_SENDER_ENABLED": True,
        "OUTBOX_POLL_SECONDS": 1,
        "PUBLIC_BASE_URL": PUBLIC_BASE_URL,
    }


async def password_hash_of(session, email: str) -> str:
    user = await select_user_by_email(session, email)
    await session.commit()
    return user.password_hash


async def outbox_count(session) -> int:
    total = await session.scalar(select(func.count(OutboxEmail.id)))
    await session.commit()
    return total


async def request_reset(client, email: str):
    response = await post_form(client, "/password/forgot", {"email": email})
    assert response.status_code == 200
    assert SAME_ANSWER in await response.get_data(as_text=True)
    await background_work_done(client.app)
    return response


async def emailed_reset_path(smtp_server, count: int = 1) -> str:
    received = await smtp_server.wait_for(count)
    message = received[count - 1]
    assert message.rcpt_tos == ["reset.me@example.com"]
    assert "Reset your" in str(message.message["Subject"])
    path = reset_path_in(message.text)
    assert f"{PUBLIC_BASE_URL}{path}" in message.text
    assert f"{PUBLIC_BASE_URL}{path}" in message.html
    return path


@pytest.mark.both_databases
async def test_reset_by_email_sets_the_password_once_and_ends_other_sessions(
    app, client, session, make_user, sign_in, smtp_server
):
    user = await make_user(email="reset.me@example.com", name="Reset Me")
    other_device = app.test_client()
    sign_in(other_device, user)
    assert (await other_device.get("/account")).status_code == 200

    await request_reset(client, "Reset.Me@Example.com")
    path = await emailed_reset_path(smtp_server)

    form_page = await client.get(path)
    assert form_page.status_code == 200
    assert 'name="password_confirm"' in await form_page.get_data(as_text=True)
    old_hash = await password_hash_of(session, "reset.me@example.com")

    response = await post_form(
        client, path, {"password": NEW_PASSWORD, "password_confirm": "something else!!"}
    )
    assert response.status_code == 422
    assert "do not match" in await response.get_data(as_text=True)
    assert await password_hash_of(session, "reset.me@example.com") == old_hash

    response = await post_form(
        client, path, {"password": NEW_PASSWORD, "password_confirm": NEW_PASSWORD}
    )
    assert response.status_code == 303 and response.headers["Location"] == "/account"
    page = await (await client.get("/account")).get_data(as_text=True)
    assert "reset.me@example.com" in page and "Your password has been changed" in page

    # Every login from before the reset ended: the device signed in before it is signed out.
    assert (await other_device.get("/account")).status_code == 303
    logins = await session.scalar(select(func.count(Login.id)).where(Login.user_id == user.id))
    await session.commit()
    assert logins == 1  # the one the reset just started
    fresh = app.test_client()
    await reseed_csrf(fresh)
    assert (await login(fresh, "reset.me@example.com", TEST_PASSWORD)).status_code == 422
    assert (await login(fresh, "reset.me@example.com", NEW_PASSWORD)).status_code == 303

    # The same link again: refused, and nothing changes.
    new_hash = await password_hash_of(session, "reset.me@example.com")
    reused = await client.get(path)
    assert reused.status_code == 410
    assert "already been used" in await reused.get_data(as_text=True)
    await reseed_csrf(client)
    reused = await post_form(
        client,
        path,
        {"password": "yet another password", "password_confirm": "yet another password"},
    )
    assert reused.status_code == 410
    assert await password_hash_of(session, "reset.me@example.com") == new_hash


async def test_an_emailed_link_expires_after_an_hour(
    client, session, make_user, smtp_server, monkeypatch
):
    await make_user(email="reset.me@example.com")
    await request_reset(client, "reset.me@example.com")
    path = await emailed_reset_path(smtp_server)
    old_hash = await password_hash_of(session, "reset.me@example.com")

    issued = time.time()

    class LaterClock:
        @staticmethod
        def time() -> float:
            return issued + RESET_TOKEN_MAX_AGE_SECONDS + 5

    monkeypatch.setattr(account_blueprint, "time", LaterClock)
    response = await client.get(path)
    assert response.status_code == 410
    assert "expired" in await response.get_data(as_text=True)
    response = await post_form(
        client, path, {"password": NEW_PASSWORD, "password_confirm": NEW_PASSWORD}
    )
    assert response.status_code == 410
    assert await password_hash_of(session, "reset.me@example.com") == old_hash
    # With htmx the message comes back as a fragment that htmx swaps in (410 is in its list).
    response = await post_form(
        client,
        path,
        {"password": NEW_PASSWORD, "password_confirm": NEW_PASSWORD},
        **{"HX-Request": "true"},
    )
    fragment = await response.get_data(as_text=True)
    assert response.status_code == 410 and "<html" not in fragment and "expired" in fragment


async def test_a_link_just_inside_the_hour_still_works(app, client, session, make_user):
    user = await make_user(email="late@example.com")
    token = make_password_reset_token(
        app.secret_key, user, int(time.time()) - RESET_TOKEN_MAX_AGE_SECONDS + 30
    )
    response = await client.get(f"/password/reset/{token}")
    assert response.status_code == 200


async def test_unknown_email_gets_the_same_answer_and_no_email(client, session, make_user):
    await make_user(email="someone@example.com")
    known = await post_form(client, "/password/forgot", {"email": "someone@example.com"})
    unknown = await post_form(client, "/password/forgot", {"email": "no-one@example.com"})
    await background_work_done(client.app)
    assert known.status_code == unknown.status_code == 200
    known_page = (await known.get_data(as_text=True)).replace("someone@", "X@")
    unknown_page = (await unknown.get_data(as_text=True)).replace("no-one@", "X@")
    assert known_page == unknown_page
    rows = list(await session.scalars(select(OutboxEmail)))
    await session.commit()
    assert [row.to_address for row in rows] == ["someone@example.com"]


async def test_repeated_requests_queue_one_email(client, session, make_user):
    await make_user(email="again@example.com")
    for _ in range(3):
        await request_reset(client, "again@example.com")
    assert await outbox_count(session) == 1


async def test_malformed_email_is_refused_in_place(client, session):
    response = await post_form(client, "/password/forgot", {"email": "not an email"})
    assert response.status_code == 422
    assert "Enter a valid email address" in await response.get_data(as_text=True)
    response = await post_form(client, "/password/forgot", {"email": "x"}, **{"HX-Request": "true"})
    fragment = await response.get_data(as_text=True)
    assert response.status_code == 422 and fragment.lstrip().startswith("<form")
    assert await outbox_count(session) == 0


@pytest.mark.parametrize(
    "token",
    [
        "garbage",
        "eyJhIjoxfQ.Zz9xYw.c2lnbmF0dXJl",
        "W zIsImFiYyJd",
    ],
)
async def test_forged_tokens_are_refused(client, token):
    response = await client.get(f"/password/reset/{token}")
    assert response.status_code == 400
    assert "not valid" in await response.get_data(as_text=True)


async def test_a_token_signed_with_another_key_or_for_another_fingerprint_is_refused(
    app, client, session, make_user
):
    user = await make_user(email="victim@example.com")
    foreign = make_password_reset_token("another-secret-key-" * 3, user, int(time.time()))
    response = await client.get(f"/password/reset/{foreign}")
    assert response.status_code == 400
    old_hash = await password_hash_of(session, "victim@example.com")
    response = await post_form(
        client,
        f"/password/reset/{foreign}",
        {"password": NEW_PASSWORD, "password_confirm": NEW_PASSWORD},
    )
    assert response.status_code == 400
    assert await password_hash_of(session, "victim@example.com") == old_hash
    logins = await session.scalar(select(func.count(Login.id)).where(Login.user_id == user.id))
    await session.commit()
    assert logins == 1  # the login make_user started is still live


async def test_reset_url_falls_back_to_the_request_host(app, client, session, make_user):
    reconfigure(app, {"PUBLIC_BASE_URL": ""})
    await make_user(email="host@example.com")
    await request_reset(client, "host@example.com")
    row = await session.scalar(select(OutboxEmail))
    await session.commit()
    assert "http://localhost/password/reset/" in row.text_body


async def test_new_password_must_follow_the_rules(app, client, session, make_user):
    user = await make_user(email="rules@example.com")
    token = make_password_reset_token(app.secret_key, user, int(time.time()))
    for password, message in (
        ("short", "at least 10 characters"),
        ("rules@example.com", "cannot be your email address"),
    ):
        response = await post_form(
            client,
            f"/password/reset/{token}",
            {"password": password, "password_confirm": password},
        )
        assert response.status_code == 422
        assert message in await response.get_data(as_text=True)
    response = await post_form(client, f"/password/reset/{token}", {"password": NEW_PASSWORD})
    assert response.status_code == 422  # the reset form asks twice
