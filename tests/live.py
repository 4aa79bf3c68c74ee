"""What tests share to run the app: its test configuration, its tables, a free port, and the
app (or a fake) served over real HTTP by hypercorn in the test's event loop."""

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from hypercorn.asyncio import serve
from hypercorn.config import Config

from storefront.db.engine import make_engine
from storefront.models import Base


def app_test_config(database_url: str, **overrides: Any) -> dict[str, Any]:
    """A development app on `database_url` with every background task and gateway off."""
    return {
        "DATABASE_URL": database_url,
        "SECRET_KEY": "test-secret-key-that-is-long-enough-0123456789",
        "STOREFRONT_ENV": "development",
        "TESTING": True,
        "QUART_AUTH_COOKIE_SECURE": False,
        "SESSION_COOKIE_SECURE": False,
        "OUTBOX_SENDER_ENABLED": False,
        "RECONCILER_ENABLED": False,
        "MAIL_SERVER": "",
        "SENDGRID_API_KEY": "",
        "PAYSTACK_PUBLIC_KEY": "",
        "PAYSTACK_SECRET_KEY": "",
        "ADMIN_EMAIL": "admin@shop.test",
        **overrides,
    }


async def create_tables(database_url: str) -> None:
    engine = make_engine(database_url)
    async with engine.begin() as connection:
        await connection.run_sync(Base.metadata.create_all)
    await engine.dispose()


def free_port() -> int:
    """A port nobody listens on now (aiosmtpd's Controller(port=0) cannot report its port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@asynccontextmanager
async def served_over_http(asgi_app: Any, graceful_timeout: float = 5) -> AsyncIterator[str]:
    """Serve an ASGI app on a free 127.0.0.1 port until the block ends; yields its base URL."""
    port = free_port()
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    config.errorlog = None
    config.graceful_timeout = graceful_timeout
    stop = asyncio.Event()
    server = asyncio.create_task(serve(asgi_app, config, shutdown_trigger=stop.wait))
    deadline = asyncio.get_running_loop().time() + 15
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if server.done():
                server.result()  # raises the reason the server stopped
            if asyncio.get_running_loop().time() > deadline:
                raise RuntimeError(f"nothing answered on port {port} within 15 s") from None
            await asyncio.sleep(0.02)
            continue
        writer.close()
        await writer.wait_closed()
        break
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop.set()
        try:
            await asyncio.wait_for(server, graceful_timeout + 10)
        except TimeoutError:
            server.cancel()
