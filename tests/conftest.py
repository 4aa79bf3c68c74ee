"""Fixtures: an app on a fresh SQLite file per test, or on SQLite and PostgreSQL for the tests
marked `both_databases` (each PostgreSQL case creates and drops its own database)."""

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from quart import Quart
from quart.testing import QuartClient
from quart_auth import generate_auth_token
from sqlalchemy.ext.asyncio import AsyncSession

from storefront import create_app
from storefront.config import Settings
from storefront.db.engine import sessionmaker_for
from storefront.db.transactions import write_transaction
from storefront.models import User, Wallet, utcnow
from storefront.services.users import insert_login, insert_user
from tests.live import app_test_config, create_tables


def reconfigure(app: Quart, changes: dict[str, Any]) -> None:
    """Change a made app's settings as create_app would have set them: app.config and Settings."""
    app.config.update(changes)
    app.extensions["settings"] = Settings.from_config(app.config)


pytest_plugins = [
    "tests.fixtures_mail",
    "tests.fixtures_shop",
    "tests.fixtures_accounts",
    "tests.fixtures_checkout",
    "tests.fixtures_paystack",
    "tests.fixtures_browser",
]

TEST_DATABASE_URL = os.environ.get(
    "TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)
REQUIRE_PG = os.environ.get("REQUIRE_PG") == "1"
CSRF_TOKEN = "test-csrf-token"
# One scrypt hash for every test user: hashing per user would make 50-shopper races slow.
TEST_PASSWORD = "correct horse battery"
_TEST_PASSWORD_HASH: str | None = None


def test_password_hash() -> str:
    global _TEST_PASSWORD_HASH
    if _TEST_PASSWORD_HASH is None:
        from storefront.services.users import hash_password

        _TEST_PASSWORD_HASH = hash_password(TEST_PASSWORD)
    return _TEST_PASSWORD_HASH


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "both_databases: run the test on SQLite and on PostgreSQL")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "database_url" in metafunc.fixturenames and metafunc.definition.get_closest_marker(
        "both_databases"
    ):
        metafunc.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)


async def _create_pg_database() -> tuple[str, str]:
    import asyncpg

    admin_dsn = TEST_DATABASE_URL.replace("postgresql+asyncpg://", "postgresql://")
    name = f"storefront_test_{uuid.uuid4().hex[:12]}"
    try:
        connection = await asyncpg.connect(admin_dsn, timeout=5)
    except (OSError, asyncpg.PostgresError) as error:
        message = f"PostgreSQL not reachable at {admin_dsn}: {error}"
        if REQUIRE_PG:
            pytest.fail(message + " (REQUIRE_PG=1)")
        pytest.skip(message)
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    base = TEST_DATABASE_URL.rsplit("/", 1)[0]
    return name, f"{base}/{name}"


async def _drop_pg_database(name: str) -> None:
    import asyncpg

    admin_dsn = TEST_DATABASE_URL.replace("postgresql+asyncpg://", "postgresql://")
    connection = await asyncpg.connect(admin_dsn, timeout=5)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


@pytest.fixture(name="database_url")
async def _database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    backend = getattr(request, "param", "sqlite")
    if backend == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'storefront.db'}"
        return
    name, url = await _create_pg_database()
    try:
        yield url
    finally:
        await _drop_pg_database(name)


@pytest.fixture(name="app_overrides")
def _app_overrides() -> dict[str, Any]:
    """Override in a test module to change the app's configuration."""
    return {}


@pytest.fixture(name="app")
async def _app(
    database_url: str, app_overrides: dict[str, Any], tmp_path: Path
) -> AsyncIterator[Quart]:
    await create_tables(database_url)
    # The rate-limit counts and uploaded photos go with the test's files (on PostgreSQL the
    # rate-limit default is /tmp; the photos' is var/uploads in the working directory).
    overrides = {
        "RATELIMIT_STORE_PATH": str(tmp_path / "ratelimits.sqlite3"),
        "UPLOAD_FOLDER": str(tmp_path / "uploads"),
        **app_overrides,
    }
    app = create_app(app_test_config(database_url, **overrides))
    async with app.test_app():
        yield app


@pytest.fixture(name="client")
async def _client(app: Quart) -> QuartClient:
    """A test client whose session already holds a known CSRF token (send CSRF_TOKEN)."""
    client = app.test_client()
    async with client.session_transaction() as session:
        session["csrf_token"] = CSRF_TOKEN
    return client


@pytest.fixture(name="session")
async def _session(app: Quart) -> AsyncIterator[AsyncSession]:
    async with sessionmaker_for(app)() as db_session:
        yield db_session


@pytest.fixture(name="make_user")
def _make_user(app: Quart) -> Callable[..., Awaitable[User]]:
    """Create a user (and wallet) committed in its own transaction."""

    async def make(
        email: str | None = None,
        role: str = "customer",
        balance_minor: int = 0,
        name: str = "Test Shopper",
    ) -> User:
        from storefront.services import wallet as wallet_service

        async with sessionmaker_for(app)() as db_session, write_transaction(db_session):
            user = await insert_user(
                db_session,
                email or f"shopper-{uuid.uuid4().hex[:10]}@example.com",
                test_password_hash(),
                name=name,
                role=role,
            )
            # The token sign_in puts in the login cookie (the table keeps only its hash).
            user.login_token = await insert_login(db_session, user.id, utcnow())
            if balance_minor:
                await wallet_service.credit_wallet(
                    db_session,
                    user.id,
                    balance_minor,
                    kind="adjustment",
                    source_reference=f"test-{uuid.uuid4().hex}",
                    note="test balance",
                    actor="tests",
                )
        return user

    return make


def sign_in(client: QuartClient, user: User) -> None:
    """Give the client quart-auth's login cookie for the login make_user started."""
    client.set_cookie(
        "localhost",
        client.app.config["QUART_AUTH_COOKIE_NAME"],
        generate_auth_token(client, user.login_token),
        path="/",
        domain="localhost",
    )


@pytest.fixture(name="sign_in")
def _sign_in() -> Callable[[QuartClient, User], None]:
    return sign_in


async def wallet_of(session: AsyncSession, user: User) -> Wallet:
    from sqlalchemy import select

    wallet = await session.scalar(select(Wallet).where(Wallet.user_id == user.id))
    assert wallet is not None
    return wallet
