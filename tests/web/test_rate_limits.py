"""Rate limits hold for the whole server: across hypercorn workers (Redis, or a file on this
machine without it), under concurrent requests, and while Redis is down."""

import asyncio
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis

from storefront.web.rate_limits import database_namespace
from tests.conftest import CSRF_TOKEN
from tests.live import create_tables, free_port

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/11")
# Nothing listens on port 1: connections are refused at once, as with a stopped Redis.
DOWN_REDIS_URL = "redis://127.0.0.1:1/0"
LOGIN_LIMIT = 10  # per minute, @rate_limit on storefront.blueprints.account.login
REGISTER_LIMIT = 5
CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]+)">')
# Settings a developer's shell may hold that would change what the served app does.
SCRUBBED_ENV = {"DATABASE_URL", "REDIS_URL", "RATELIMIT_STORE_PATH", "TRUSTED_PROXY_HOPS"}


async def redis_or_skip() -> Redis:
    redis = Redis.from_url(TEST_REDIS_URL, socket_connect_timeout=2)
    try:
        await redis.ping()
    except OSError as error:
        await redis.aclose()
        if os.environ.get("REQUIRE_PG") == "1":  # CI and the full run have every service up
            pytest.fail(f"Redis not reachable at {TEST_REDIS_URL}: {error}")
        pytest.skip(f"Redis not reachable at {TEST_REDIS_URL}: {error}")
    return redis


@asynccontextmanager
async def two_workers(tmp_path: Path, **settings: str) -> AsyncIterator[str]:
    """`hypercorn --workers 2 --worker-class uvloop run:app` on a fresh SQLite shop."""
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'shop.db'}"
    await create_tables(database_url)
    port = free_port()
    env = {name: value for name, value in os.environ.items() if name not in SCRUBBED_ENV}
    env.update(
        DATABASE_URL=database_url,
        SECRET_KEY="test-secret-key-that-is-long-enough-0123456789",
        STOREFRONT_ENV="development",
        QUART_AUTH_COOKIE_SECURE="False",
        OUTBOX_SENDER_ENABLED="false",
        RECONCILER_ENABLED="false",
        PAYSTACK_PUBLIC_KEY="",
        PAYSTACK_SECRET_KEY="",
        MAIL_SERVER="",
        **settings,
    )
    log_path = tmp_path / "hypercorn.log"
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "hypercorn",
            "--workers",
            "2",
            "--worker-class",
            "uvloop",
            "--bind",
            f"127.0.0.1:{port}",
            "run:app",
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    try:
        base_url = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=base_url, timeout=5) as probe:
            for _ in range(300):
                try:
                    if (await probe.get("/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert process.returncode is None, log_path.read_text()
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("hypercorn did not answer: " + log_path.read_text())
        yield base_url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), 15)
        except TimeoutError:
            os.killpg(process.pid, signal.SIGKILL)
            await process.wait()


async def failed_logins(base_url: str, attempts: int) -> list[int]:
    """Wrong-password POSTs to /login from one address, each on a new connection, so the
    workers share them out between themselves."""
    no_keep_alive = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=base_url, timeout=30, limits=no_keep_alive) as http:
        page = await http.get("/login")
        found = CSRF_META.search(page.text)
        assert found, page.text
        form = {"csrf_token": found.group(1), "email": "nobody@example.com", "password": "x" * 12}
        return [(await http.post("/login", data=form)).status_code for _ in range(attempts)]


async def test_rate_limits_hold_across_two_workers_without_redis(tmp_path):
    async with two_workers(tmp_path) as base_url:
        statuses = await failed_logins(base_url, 2 * LOGIN_LIMIT)
    assert statuses == [422] * LOGIN_LIMIT + [429] * LOGIN_LIMIT
    assert (tmp_path / "shop.db-ratelimits").exists()  # counted beside the database


async def test_rate_limits_hold_across_two_workers_with_redis(tmp_path):
    redis = await redis_or_skip()
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'shop.db'}"
    namespace = f"storefront:{database_namespace(database_url)}:"
    try:
        async with two_workers(tmp_path, REDIS_URL=TEST_REDIS_URL) as base_url:
            statuses = await failed_logins(base_url, 2 * LOGIN_LIMIT)
        assert statuses == [422] * LOGIN_LIMIT + [429] * LOGIN_LIMIT
        assert await redis.keys(namespace + "*")  # counted in Redis, not on this machine
        assert not (tmp_path / "shop.db-ratelimits").exists()
    finally:
        for key in await redis.keys(namespace + "*"):
            await redis.delete(key)
        await redis.aclose()


async def concurrent_registrations(app, attempts: int) -> list[int]:
    async def attempt() -> int:
        client = app.test_client()
        async with client.session_transaction() as session:
            session["csrf_token"] = CSRF_TOKEN
        response = await client.post(
            "/register", form={"csrf_token": CSRF_TOKEN, "email": "not-an-address"}
        )
        return response.status_code

    return await asyncio.gather(*(attempt() for _ in range(attempts)))


class TestWithRedis:
    @pytest.fixture(name="app_overrides")
    async def _app_overrides(self, tmp_path):
        redis = await redis_or_skip()
        await redis.aclose()
        return {"REDIS_URL": TEST_REDIS_URL}

    async def test_concurrent_requests_cannot_share_the_last_slot(self, app, tmp_path):
        statuses = await concurrent_registrations(app, 4 * REGISTER_LIMIT)
        assert sorted(statuses) == [422] * REGISTER_LIMIT + [429] * 3 * REGISTER_LIMIT
        assert not (tmp_path / "ratelimits.sqlite3").exists()


async def test_concurrent_requests_cannot_share_the_last_slot_without_redis(app, tmp_path):
    statuses = await concurrent_registrations(app, 4 * REGISTER_LIMIT)
    assert sorted(statuses) == [422] * REGISTER_LIMIT + [429] * 3 * REGISTER_LIMIT
    assert (tmp_path / "ratelimits.sqlite3").exists()


class TestRedisDown:
    @pytest.fixture(name="app_overrides")
    def _app_overrides(self):
        return {"REDIS_URL": DOWN_REDIS_URL}

    async def test_a_limited_route_with_redis_down_counts_on_this_machine(self, client):
        statuses = []
        for _ in range(LOGIN_LIMIT + 1):
            response = await client.post(
                "/login",
                form={"csrf_token": CSRF_TOKEN, "email": "nobody@example.com", "password": "x"},
            )
            statuses.append(response.status_code)
        assert statuses == [422] * LOGIN_LIMIT + [429]
        assert int(response.headers["Retry-After"]) >= 1
        assert (await client.get("/login")).status_code == 200
