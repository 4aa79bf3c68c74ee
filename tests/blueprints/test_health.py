"""/healthz answers without the database; /readyz says 503 and why when the database is down."""

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from quart import Quart

from storefront import create_app

BASE_CONFIG = {
    "SECRET_KEY": "test-secret-key-that-is-long-enough-0123456789",
    "STOREFRONT_ENV": "development",
    "TESTING": True,
    "QUART_AUTH_COOKIE_SECURE": False,
    "OUTBOX_SENDER_ENABLED": False,
    "RECONCILER_ENABLED": False,
}


async def _served(database_url: str) -> AsyncIterator[Quart]:
    app = create_app({**BASE_CONFIG, "DATABASE_URL": database_url})
    async with app.test_app():
        yield app


@pytest.fixture(name="missing_file_app")
async def _missing_file_app(tmp_path: Path) -> AsyncIterator[Quart]:
    async for app in _served(f"sqlite+aiosqlite:///{tmp_path / 'no-such-dir' / 'shop.db'}"):
        yield app


@pytest.fixture(name="refused_server_app")
async def _refused_server_app() -> AsyncIterator[Quart]:
    async for app in _served("postgresql+asyncpg://postgres@127.0.0.1:1/storefront"):
        yield app


async def test_healthz_answers_without_a_database(missing_file_app):
    response = await missing_file_app.test_client().get("/healthz")
    assert response.status_code == 200
    assert await response.get_json() == {"status": "ok"}


async def test_readyz_503_when_the_sqlite_file_is_unreachable(missing_file_app):
    response = await missing_file_app.test_client().get("/readyz")
    assert response.status_code == 503
    body = await response.get_json()
    assert body["status"] == "unavailable"
    assert "unable to open database file" in body["checks"]["database"]


async def test_readyz_503_when_the_postgresql_server_refuses(refused_server_app):
    client = refused_server_app.test_client()
    assert (await client.get("/healthz")).status_code == 200
    response = await client.get("/readyz")
    assert response.status_code == 503
    reason = (await response.get_json())["checks"]["database"]
    assert reason.startswith("unavailable: ")
    assert "Connect" in reason or "refused" in reason


async def test_readyz_503_in_bounded_time_when_the_server_never_answers():
    """A server that accepts connections and then says nothing (a hung database or a
    black-holed proxy) must not hang the probe."""
    connections: list[asyncio.StreamWriter] = []

    async def accept_and_ignore(
        _reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        connections.append(writer)

    server = await asyncio.start_server(accept_and_ignore, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async for app in _served(f"postgresql+asyncpg://postgres@127.0.0.1:{port}/storefront"):
            started = asyncio.get_running_loop().time()
            response = await app.test_client().get("/readyz")
            elapsed = asyncio.get_running_loop().time() - started
            assert response.status_code == 503
            assert "no answer within" in (await response.get_json())["checks"]["database"]
            assert elapsed < 10
    finally:
        for writer in connections:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_readyz_503_when_the_tables_are_missing(tmp_path):
    async for app in _served(f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"):
        response = await app.test_client().get("/readyz")
        assert response.status_code == 503
        assert "products" in (await response.get_json())["checks"]["database"]


@pytest.mark.both_databases
async def test_readyz_200_when_the_database_answers(client):
    response = await client.get("/readyz")
    assert response.status_code == 200
    assert (await response.get_json())["checks"]["database"] == "ok"


def test_port_one_is_closed():
    """The refusal test relies on nothing listening on 127.0.0.1:1."""
    with socket.socket() as probe:
        probe.settimeout(1)
        assert probe.connect_ex(("127.0.0.1", 1)) != 0


async def test_healthz(client):
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert (await response.get_json())["status"] == "ok"


async def test_readyz_ok(client):
    response = await client.get("/readyz")
    assert response.status_code == 200
