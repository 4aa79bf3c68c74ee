"""Serving under load: no request holds a pooled connection while it waits for the SQLite writer
gate or for its own body; a database that is busy, unreachable or drops connections answers 503
with Retry-After (never a 500) and the shop recovers by itself; a malformed signed webhook body
is a 400 and stored nowhere."""

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest
from quart import Quart
from sqlalchemy import event, func, select, text

from storefront.db.engine import sessionmaker_for
from storefront.db.sqlite_batches import sqlite_batch_writer
from storefront.db.sqlite_writer import sqlite_writer_gate
from storefront.db.transactions import take_turn, waiting_for_turn
from storefront.models import CartItem, WebhookEvent
from storefront.services.cart import cart_turn
from tests.conftest import CSRF_TOKEN, TEST_PASSWORD, reconfigure
from tests.fake_paystack import FakePaystack
from tests.fixtures_accounts import LiveServer
from tests.fixtures_paystack import paystack_overrides

HTMX = {"HX-Request": "true"}
BUSY = "The shop is very busy right now"


@pytest.fixture(name="app_overrides")
def _app_overrides(request: pytest.FixtureRequest) -> dict[str, Any]:
    overrides: dict[str, Any] = {"RATELIMIT_ENABLED": False, "DATABASE_TIMEOUT_SECONDS": 2}
    if "forwarder" in request.fixturenames:  # the app reaches PostgreSQL through the forwarder
        overrides["DATABASE_URL"] = request.getfixturevalue("forwarder").database_url
    return overrides


async def post_add(client: Any, product_id: int, quantity: str = "1") -> Any:
    form = {"csrf_token": CSRF_TOKEN, "product_id": str(product_id), "quantity": quantity}
    return await client.post("/cart/items", form=form, headers=HTMX)


async def wait_until(condition: Any, what: str, seconds: float = 20) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, what
        await asyncio.sleep(0.01)


# Writer gate vs pool deadlock ---------------------------------------------------------------


async def test_writer_gate_vs_pool_deadlock_queued_adds_hold_no_connection(
    app: Quart, client: Any, make_user: Any, sign_in: Any, add_product: Any
) -> None:
    """20 signed-in adds queue for the gate while a writer holds it: the writer still gets a
    pooled connection at once (before: the first 15 adds held the whole pool, a stall)."""
    shopper = await make_user()
    sign_in(client, shopper)
    product = await add_product(stock=1_000)
    assert (await post_add(client, product.id)).status_code == 200  # the cart exists now
    engine = app.extensions["db_engine"]
    writer = sqlite_batch_writer(engine)
    gate = sqlite_writer_gate(engine)
    assert writer is not None and gate is not None
    async with gate.hold():
        adds = [asyncio.create_task(post_add(client, product.id)) for _ in range(20)]
        await wait_until(
            lambda: writer.waiting == 20,
            "the adds did not all reach the batch writer's queue: some wait for a connection",
        )
        assert engine.pool.checkedout() == 0
        async with asyncio.timeout(5), engine.connect() as connection:
            assert (await connection.execute(text("SELECT 1"))).scalar_one() == 1
    responses = await asyncio.gather(*adds)
    assert [response.status_code for response in responses] == [200] * 20
    async with sessionmaker_for(app)() as db_session:
        assert await db_session.scalar(select(func.sum(CartItem.quantity))) == 21


async def test_writer_gate_vs_pool_deadlock_60_adds_and_quantity_changes_all_answer(
    app: Quart, client: Any, make_user: Any, sign_in: Any, add_product: Any
) -> None:
    """One account's 60 parallel adds racing quantity changes (write_transaction takes the gate,
    then asks the pool), with an innocent guest reading the cart: nobody gets a 5xx."""
    shopper = await make_user()
    sign_in(client, shopper)
    product, other = await add_product(stock=1_000), await add_product(stock=1_000)
    assert (await post_add(client, product.id)).status_code == 200
    assert (await post_add(client, other.id)).status_code == 200
    guest = app.test_client()

    async def set_quantity(quantity: int) -> Any:
        form = {"csrf_token": CSRF_TOKEN, "quantity": str(quantity)}
        return await client.post(f"/cart/items/{other.id}", form=form, headers=HTMX)

    async with asyncio.timeout(60):
        responses = await asyncio.gather(
            *(post_add(client, product.id) for _ in range(60)),
            *(set_quantity(quantity) for quantity in range(1, 11)),
            *(guest.get("/cart") for _ in range(10)),
        )
    assert [r.status_code for r in responses if r.status_code >= 500] == []
    assert all(response.status_code == 200 for response in responses)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_one_accounts_parallel_adds_on_postgresql_wait_for_their_turn_without_a_connection(
    app: Quart, client: Any, make_user: Any, sign_in: Any, add_product: Any
) -> None:
    """PostgreSQL has no writer gate: 30 parallel adds to one cart each held a pooled
    connection while waiting for the cart's row lock, so one account took the whole pool."""
    shopper = await make_user()
    sign_in(client, shopper)
    product = await add_product(stock=1_000)
    assert (await post_add(client, product.id)).status_code == 200
    engine = app.extensions["db_engine"]
    turn = cart_turn(shopper.id, None)
    async with take_turn(turn):
        adds = [asyncio.create_task(post_add(client, product.id)) for _ in range(30)]
        await wait_until(lambda: waiting_for_turn(turn) == 31, "the adds did not queue")
        await wait_until(lambda: engine.pool.checkedout() == 0, "queued adds hold connections")
    responses = await asyncio.gather(*adds)
    assert [response.status_code for response in responses] == [200] * 30
    async with sessionmaker_for(app)() as db_session:
        assert await db_session.scalar(select(func.sum(CartItem.quantity))) == 31


# Slow bodies ---------------------------------------------------------------------------------


async def live_shopper(server: LiveServer) -> tuple[dict[str, str], str]:
    """Register and log in over HTTP: (cookies, CSRF token)."""
    async with httpx.AsyncClient(base_url=server.base_url) as browser:
        page = await browser.get("/register")
        token = re.search(r'name="csrf-token" content="([^"]+)"', page.text)
        assert token is not None
        form = {
            "csrf_token": token[1],
            "name": "Slow Sam",
            "email": "slow@example.com",
            "password": TEST_PASSWORD,
            "password_confirm": TEST_PASSWORD,
        }
        registered = await browser.post("/register", data=form)
        assert registered.status_code in (302, 303), registered.text
        account = await browser.get("/account")
        assert account.status_code == 200
        token = re.search(r'name="csrf-token" content="([^"]+)"', account.text)
        assert token is not None
        return dict(browser.cookies), token[1]


async def trickle(base_url: str, path: str, cookies: dict[str, str], csrf: str) -> bytes:
    """Send a POST's headers and part of its body, then nothing: the server's whole answer."""
    address = urlsplit(base_url)
    reader, writer = await asyncio.open_connection(address.hostname, address.port)
    cookie = "; ".join(f"{name}={value}" for name, value in cookies.items())
    writer.write(
        (
            f"POST {path} HTTP/1.1\r\nHost: {address.netloc}\r\nCookie: {cookie}\r\n"
            f"X-CSRF-Token: {csrf}\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            "Content-Length: 100\r\nConnection: close\r\n\r\namount=5"
        ).encode()
    )
    await writer.drain()
    try:
        return await reader.read()
    finally:
        writer.close()


@pytest.mark.parametrize(
    "app_overrides",
    [{"RATELIMIT_ENABLED": False, "FORM_BODY_TIMEOUT_SECONDS": 2, "DATABASE_TIMEOUT_SECONDS": 5}],
)
async def test_slow_bodies_hold_no_connection_and_get_408(
    accounts_live_server: LiveServer, database_url: str
) -> None:
    """20 signed-in clients trickle a login_required form's body (more than the pool's 15
    connections): an innocent shopper's add still answers at once, and the slow ones get 408."""
    server = accounts_live_server
    cookies, csrf = await live_shopper(server)
    slow = [
        asyncio.create_task(trickle(server.base_url, "/account/wallet/topup", cookies, csrf))
        for _ in range(20)
    ]
    await asyncio.sleep(0.5)  # let them all in (the innocent add must pass whenever it comes)
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as innocent:
        page = await innocent.get("/cart")
        token = re.search(r'name="csrf-token" content="([^"]+)"', page.text)
        assert token is not None
        started = asyncio.get_running_loop().time()
        added = await innocent.post(
            "/cart/items/1", data={"csrf_token": token[1], "quantity": "0"}, headers=HTMX
        )
        waited = asyncio.get_running_loop().time() - started
    assert added.status_code == 422, added.text  # "not in your cart": it reached the database
    assert waited < 5, f"the innocent shopper waited {waited:.1f} s for a connection"
    answers = await asyncio.gather(*slow)
    assert all(answer.startswith(b"HTTP/1.1 408") for answer in answers), answers[0][:200]


async def test_a_pool_timeout_is_a_503_with_retry_after(
    app: Quart, client: Any, make_user: Any, sign_in: Any
) -> None:
    shopper = await make_user()
    sign_in(client, shopper)
    engine = app.extensions["db_engine"]
    pool = engine.pool
    async with contextlib.AsyncExitStack() as held:
        for _ in range(pool.size() + pool._max_overflow):
            connection = await held.enter_async_context(engine.connect())
            await connection.execute(text("SELECT 1"))
        for headers in ({}, HTMX):
            response = await client.get("/account", headers=headers)
            assert response.status_code == 503
            assert response.headers["Retry-After"] == "5"
            assert BUSY in await response.get_data(as_text=True)
    assert (await client.get("/account")).status_code == 200


# PostgreSQL dropping connections or unreachable --------------------------------------------


def admin_dsn(database_url: str) -> str:
    return database_url.replace("postgresql+asyncpg://", "postgresql://")


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_postgresql_dropping_connections_mid_request_answers_503_then_recovers(
    app: Quart, client: Any, database_url: str, make_user: Any, sign_in: Any
) -> None:
    shopper = await make_user()
    sign_in(client, shopper)
    assert (await client.get("/account")).status_code == 200
    database = database_url.rsplit("/", 1)[1]
    locker, admin = [await asyncpg.connect(admin_dsn(database_url)) for _ in range(2)]
    waiting = "SELECT 1 FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'"
    try:
        # Hold the shopper's lookup at a lock, so the request is mid-way when its backend dies.
        lock = locker.transaction()
        await lock.start()
        await locker.execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
        for headers in ({}, HTMX):
            request = asyncio.create_task(client.get("/account", headers=headers))
            deadline = asyncio.get_running_loop().time() + 20
            while not await admin.fetch(waiting, database):
                assert asyncio.get_running_loop().time() < deadline, "the request never waited"
                await asyncio.sleep(0.02)
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = $1 AND pid NOT IN (pg_backend_pid(), $2)",
                database,
                locker.get_server_pid(),
            )
            response = await request
            assert response.status_code == 503
            assert response.headers["Retry-After"] == "5"
            assert BUSY in await response.get_data(as_text=True)
        await lock.rollback()
    finally:
        await locker.close()
        await admin.close()
    # The pool replaces the dead connections: the next request just works.
    assert (await client.get("/account")).status_code == 200


class TcpForwarder:
    """A port that forwards to PostgreSQL, which a test can close (unreachable) and reopen."""

    def __init__(self, target_url: str) -> None:
        self.target_url = target_url
        self.target_port = urlsplit(target_url).port or 5432
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def open(self) -> None:
        self._server = await asyncio.start_server(self._forward, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    @property
    def database_url(self) -> str:
        location = urlsplit(self.target_url)
        return self.target_url.replace(
            location.netloc, f"{location.username}@127.0.0.1:{self.port}", 1
        )

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        await self._server.wait_closed()

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        target_reader, target_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers |= {writer, target_writer}

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.transport.abort()

        await asyncio.gather(pipe(reader, target_writer), pipe(target_reader, writer))
        self._writers -= {writer, target_writer}


@pytest.fixture(name="forwarder")
async def _forwarder(database_url: str) -> AsyncIterator[TcpForwarder]:
    forwarder = TcpForwarder(database_url)
    await forwarder.open()
    yield forwarder
    await forwarder.close()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_postgresql_unreachable_answers_503_then_recovers(
    forwarder: TcpForwarder, app: Quart, client: Any, make_user: Any, sign_in: Any
) -> None:
    shopper = await make_user()
    sign_in(client, shopper)
    assert (await client.get("/account")).status_code == 200
    await forwarder.close()  # a closed port, and every open connection cut
    for headers in ({}, HTMX):
        response = await client.get("/account", headers=headers)
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "5"
        assert BUSY in await response.get_data(as_text=True)
    await forwarder.open()  # the database is back on the same port
    assert (await client.get("/account")).status_code == 200


# Malformed signed webhook bodies -------------------------------------------------------------

DEEP = 10_000
MALFORMED_WEBHOOK_BODIES = {
    "10,000 nested brackets": "[" * DEEP + "]" * DEEP,
    "10,000 nested objects": '{"a":' * DEEP + "1" + "}" * DEEP,
    "deep inside data": json.dumps({"event": "charge.success", "data": {"reference": "R1"}})[:-2]
    + ', "x": '
    + "[" * 200
    + "]" * 200
    + "}}",
    "NaN": '{"event": "charge.success", "data": {"reference": "R2", "amount": NaN}}',
    "a NUL in a string": '{"event": "charge.\\u0000", "data": {"reference": "R3"}}',
    "a lone surrogate": '{"event": "charge.success", "data": {"reference": "R4\\ud800"}}',
    "not UTF-8": b'{"event": "charge.success", "data": {"reference": "\xff"}}',
    "a 5,000-digit number": '{"event": "charge.success", "data": {"amount": ' + "9" * 5000 + "}}",
}


@pytest.mark.both_databases
@pytest.mark.parametrize("app_overrides", [{"RATELIMIT_ENABLED": False}])
async def test_deep_json_webhook_and_any_malformed_signed_body_is_400_recorded_nowhere(
    app: Quart, fake_paystack: FakePaystack
) -> None:
    reconfigure(app, paystack_overrides(fake_paystack))
    client = app.test_client()
    for name, body in MALFORMED_WEBHOOK_BODIES.items():
        raw = body if isinstance(body, bytes) else body.encode()
        response = await client.post(
            "/paystack/webhook",
            data=raw,
            headers={
                "Content-Type": "application/json",
                "x-paystack-signature": fake_paystack.sign(raw),
            },
        )
        assert response.status_code == 400, name
        assert (await response.get_json())["status"] == "error"
    async with sessionmaker_for(app)() as db_session:
        assert await db_session.scalar(select(func.count()).select_from(WebhookEvent)) == 0


@pytest.mark.parametrize(
    "app_overrides", [{"RATELIMIT_ENABLED": False, "DATABASE_TIMEOUT_SECONDS": 1}]
)
async def test_a_busy_webhook_is_a_503_with_retry_after(
    app: Quart, fake_paystack: FakePaystack
) -> None:
    reconfigure(app, paystack_overrides(fake_paystack))
    raw = json.dumps({"event": "charge.success", "data": {"reference": "busy-1"}}).encode()
    headers = {"Content-Type": "application/json", "x-paystack-signature": fake_paystack.sign(raw)}
    engine = app.extensions["db_engine"]
    async with contextlib.AsyncExitStack() as held:
        for _ in range(engine.pool.size() + engine.pool._max_overflow):
            connection = await held.enter_async_context(engine.connect())
            await connection.execute(text("SELECT 1"))
        response = await app.test_client().post("/paystack/webhook", data=raw, headers=headers)
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    # Paystack sends it again; now it is stored.
    response = await app.test_client().post("/paystack/webhook", data=raw, headers=headers)
    assert response.status_code == 200


@pytest.mark.parametrize("htmx", [True, False], ids=["htmx", "no-js"])
async def test_slow_bodies_oversized_forms_are_refused_with_413_before_any_database_work(
    app: Quart, client: Any, htmx: bool
) -> None:
    engine = app.extensions["db_engine"]
    statements: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    headers = {"X-CSRF-Token": CSRF_TOKEN, **(HTMX if htmx else {})}
    event.listen(engine.sync_engine, "before_cursor_execute", count)
    try:
        too_big_form = {"quantity": "1", "note": "x" * 600_000}  # over MAX_FORM_MEMORY_SIZE
        response = await client.post("/cart/items/1", form=too_big_form, headers=headers)
        assert response.status_code == 413
        assert "more than a form of this shop can hold" in await response.get_data(as_text=True)
        too_big_body = b"{" + b" " * (9 * 1024 * 1024) + b"}"  # over MAX_CONTENT_LENGTH
        response = await client.post(
            "/api/validate-coupon",
            data=too_big_body,
            headers={**headers, "Content-Type": "application/json"},
        )
        assert response.status_code == 413
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", count)
    assert statements == []
