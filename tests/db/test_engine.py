"""The request's session: made on first use, and nothing of it outlives the request."""

import pytest
from quart import Quart, g

from storefront.db.engine import close_session, get_session
from tests.conftest import CSRF_TOKEN

HTMX = {"HX-Request": "true"}


@pytest.fixture(name="app_overrides")
def _app_overrides():
    return {"RATELIMIT_ENABLED": False}


@pytest.mark.both_databases
async def test_no_request_keeps_a_pooled_connection(app, client, add_product, make_user, sign_in):
    """Reads left open, writes, and adds that the SQLite batch writer applied (whose session
    never began a transaction): each hands its connection back by the end of the request."""
    engine = app.extensions["db_engine"]
    product = await add_product(stock=100)
    form = {"csrf_token": CSRF_TOKEN, "product_id": str(product.id), "quantity": "1"}
    guest = app.test_client()
    async with guest.session_transaction() as browser_session:
        browser_session["csrf_token"] = CSRF_TOKEN
    shopper = app.test_client()
    async with shopper.session_transaction() as browser_session:
        browser_session["csrf_token"] = CSRF_TOKEN
    sign_in(shopper, await make_user())
    for browser in (guest, shopper, guest, shopper):
        response = await browser.post("/cart/items", form=form, headers=HTMX)
        assert response.status_code == 200
        assert engine.pool.checkedout() == 0
        for path in ("/cart", "/account"):
            assert (await browser.get(path)).status_code in (200, 303)  # a guest goes to login
            assert engine.pool.checkedout() == 0


async def test_teardown_closes_a_session_that_holds_something(app: Quart, add_product):
    product = await add_product()
    async with app.app_context():
        idle = get_session()
        await close_session()
        assert "db_session" not in g
        assert not idle.in_transaction()
    async with app.app_context():
        reading = get_session()
        await reading.get(type(product), product.id)
        assert reading.in_transaction()
        await close_session()
        assert not reading.in_transaction() and not reading.identity_map
