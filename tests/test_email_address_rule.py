"""One address rule for registration and for every queued email: the shop takes only addresses
it can deliver to. An internationalised domain always (it travels as punycode); a non-ASCII part
before the @ only when MAIL_SMTPUTF8 says the mail server offers SMTPUTF8."""

import pytest
from sqlalchemy import func, select

from storefront import create_app
from storefront.db.engine import sessionmaker_for
from storefront.db.transactions import write_transaction
from storefront.models import Order, OutboxEmail, User
from storefront.services import users as users_service
from storefront.services.outbox.composing import InvalidEmailAddress, compose_email
from storefront.services.outbox.queueing import queue_email
from tests.conftest import CSRF_TOKEN
from tests.fixtures_accounts import post_form, register
from tests.fixtures_checkout import checkout_form
from tests.fixtures_mail import smtp_config, wait_until
from tests.live import app_test_config, create_tables

HTMX = {"HX-Request": "true"}


async def count_users(app, email: str) -> int:
    async with sessionmaker_for(app)() as session:
        return await session.scalar(select(func.count(User.id)).where(User.email == email))


@pytest.mark.both_databases
async def test_registration_refuses_an_address_the_mail_server_cannot_deliver_to(app, client):
    response = await register(client, "Rénée@example.com")
    assert response.status_code == 422
    page = await response.get_data(as_text=True)
    assert "We cannot send email to an address with é before the @ sign" in page
    assert await count_users(app, "rénée@example.com") == 0

    form = {"name": "Renee", "email": "Rénée@example.com", "password": "correct horse battery"}
    response = await post_form(client, "/register", form, **HTMX)
    assert response.status_code == 422
    assert "before the @ sign" in await response.get_data(as_text=True)


async def test_registration_accepts_an_internationalised_domain(app, client):
    response = await register(client, "Ama@Exämple.com")
    assert response.status_code == 303
    assert await count_users(app, "ama@exämple.com") == 1


def test_the_rule_is_one_function_for_registration_and_queued_email():
    _, error = users_service.check_email_address("rénée@example.com")
    assert error is not None and "before the @ sign" in error
    with pytest.raises(InvalidEmailAddress) as refused:
        compose_email("rénée@example.com", "test_email", {"sent_by": "x"}, "key")
    assert "MAIL_SMTPUTF8" in str(refused.value)
    assert refused.value.reason == error
    assert users_service.check_email_address("ama@exämple.com") == ("ama@exämple.com", None)
    _, error = users_service.check_email_address("not-an-email")
    assert error is not None and error.startswith("Enter a valid email address")


@pytest.mark.both_databases
async def test_with_mail_smtputf8_the_address_registers_and_its_email_arrives(
    database_url, smtp_server
):
    await create_tables(database_url)
    app = create_app(
        app_test_config(
            database_url,
            **smtp_config(smtp_server, MAIL_SMTPUTF8=True, OUTBOX_SENDER_ENABLED=True),
        )
    )
    async with app.test_app():
        client = app.test_client()
        async with client.session_transaction() as quart_session:
            quart_session["csrf_token"] = CSRF_TOKEN
        response = await register(client, "rénée@exämple.com")
        assert response.status_code == 303
        assert await count_users(app, "rénée@exämple.com") == 1

        async with sessionmaker_for(app)() as session, write_transaction(session):
            await queue_email(
                session, "rénée@exämple.com", "test_email", {"sent_by": "tests"}, "utf8"
            )
        [received] = await smtp_server.wait_for(1)
        assert received.rcpt_tos == ["rénée@exämple.com"]
        assert received.message["To"] == "rénée@exämple.com"

        async def sent() -> bool:
            async with sessionmaker_for(app)() as session:
                status = await session.scalar(select(OutboxEmail.status))
            return status == "sent"

        await wait_until(sent, within_seconds=5)
    # The setting lives while its app serves; the default (off) is back afterwards.
    with pytest.raises(InvalidEmailAddress):
        compose_email("rénée@example.com", "test_email", {"sent_by": "x"}, "key")


@pytest.mark.both_databases
async def test_an_older_account_the_rule_now_refuses_still_pays_and_the_admin_hears_of_it(
    app, make_user, make_product, fill_cart, shopper_client
):
    # Registered before the rule: checkout must not fail on the address, only skip its email.
    user = await make_user(email="rénée@example.com", balance_minor=100_000)
    product = await make_product(price_minor=10_000)
    await fill_cart(user, [(product, 1)])
    client = await shopper_client(user)

    response = await client.post("/pay/wallet", form=checkout_form())

    assert response.status_code == 303
    async with sessionmaker_for(app)() as session:
        order = await session.scalar(select(Order).where(Order.user_id == user.id))
        keys = list(await session.scalars(select(OutboxEmail.dedupe_key)))
    assert order is not None and order.status == "paid"
    assert keys == [f"admin_new_order:{order.number}"]
