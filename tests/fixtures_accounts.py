"""Fixtures for the accounts tests: form helpers that drive the real pages, a client with no
pre-seeded CSRF token, reset-link parsing, and a live hypercorn server with Chromium for the
browser journey."""

import asyncio
import os
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from quart import Quart
from quart.testing import QuartClient
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from storefront.models import OutboxEmail
from tests.conftest import CSRF_TOKEN

NEW_PASSWORD = "a-brand-new-passphrase"


async def post_form(client: QuartClient, path: str, form: dict[str, str], **headers: str) -> Any:
    """POST a form with the client's seeded CSRF token."""
    return await client.post(path, form={"csrf_token": CSRF_TOKEN, **form}, headers=headers)


async def register(
    client: QuartClient,
    email: str,
    password: str = "correct horse battery",
    name: str = "Ama Mensah",
    **extra: str,
) -> Any:
    return await post_form(
        client,
        "/register",
        {"name": name, "email": email, "password": password, "password_confirm": password, **extra},
    )


async def login(client: QuartClient, email: str, password: str, **extra: str) -> Any:
    return await post_form(client, "/login", {"email": email, "password": password, **extra})


async def logout(client: QuartClient) -> Any:
    return await post_form(client, "/logout", {})


async def background_work_done(app: Quart) -> None:
    """Wait for the app's background tasks (the reset email is queued after the answer)."""
    while app.background_tasks:
        await asyncio.gather(*app.background_tasks)


async def reseed_csrf(client: QuartClient) -> None:
    """Put the known token back after login/logout rotated it."""
    async with client.session_transaction() as session:
        session["csrf_token"] = CSRF_TOKEN


async def session_csrf_token(client: QuartClient) -> str | None:
    async with client.session_transaction() as session:
        return session.get("csrf_token")


async def queued_emails(session: AsyncSession, to_address: str) -> list[OutboxEmail]:
    rows = await session.scalars(
        select(OutboxEmail).where(OutboxEmail.to_address == to_address).order_by(OutboxEmail.id)
    )
    emails = list(rows)
    await session.commit()
    return emails


RESET_PATH = re.compile(r"https?://[^/\s\"<]+(/password/reset/[A-Za-z0-9_.\-]+)")


def reset_path_in(text: str) -> str:
    """The /password/reset/<token> path of the (first) absolute reset URL in an email body."""
    found = RESET_PATH.search(text)
    assert found, f"no reset link in: {text!r}"
    return found.group(1)


@pytest.fixture(name="bare_client")
def _bare_client(app: Quart) -> QuartClient:
    """A client whose session holds no CSRF token (as a forged cross-site post would)."""
    return app.test_client()


CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_INSTALLED = CHROMIUM.exists()
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@dataclass
class LiveServer:
    app: Quart
    base_url: str


@pytest.fixture(name="accounts_live_server")
async def _accounts_live_server(
    database_url: str, app_overrides: dict[str, Any]
) -> AsyncIterator[LiveServer]:
    """The app served by hypercorn on a free 127.0.0.1 port, in this test's event loop."""
    from storefront import create_app
    from tests.live import app_test_config, create_tables, served_over_http

    await create_tables(database_url)
    app = create_app(
        app_test_config(
            database_url,
            SECRET_KEY="browser-test-secret-key-0123456789-abcdefghij",
            TESTING=False,
            ADMIN_EMAIL="",
            **app_overrides,
        )
    )
    async with served_over_http(app) as base_url:
        yield LiveServer(app, base_url)


@pytest.fixture(name="chromium_browser")
async def _chromium_browser() -> AsyncIterator[Any]:
    """Debian's Chromium through Playwright's async API (never a downloaded browser)."""
    if not CHROMIUM_INSTALLED:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{CHROMIUM} is missing and CI=true: browser tests must run")
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium to run browser tests")
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            await browser.close()
