"""The Alembic migrations build exactly the models' schema, and take it down again."""

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import CheckConstraint, inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.pool import NullPool

from storefront.cli import alembic_config, migrate_database
from storefront.db.engine import make_engine
from storefront.models import Base

pytestmark = pytest.mark.both_databases


def _schema_differences(connection: Connection) -> list[object]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, Base.metadata))


def _check_constraints(connection: Connection) -> dict[str, set[str]]:
    inspector = inspect(connection)
    return {
        table: {check["name"] for check in inspector.get_check_constraints(table)}
        for table in inspector.get_table_names()
        if table != "alembic_version"
    }


def _table_names(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names())


async def test_upgrade_head_matches_the_models(database_url):
    reached = await migrate_database(database_url)

    assert reached == ScriptDirectory.from_config(alembic_config()).get_current_head()
    engine = make_engine(database_url, poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            assert await connection.run_sync(_table_names) == set(Base.metadata.tables) | {
                "alembic_version"
            }
            assert await connection.run_sync(_schema_differences) == []
            # Autogenerate does not compare CHECK constraints; the invariants depend on them.
            expected_checks = {
                table.name: {
                    str(constraint.name)
                    for constraint in table.constraints
                    if isinstance(constraint, CheckConstraint)
                }
                for table in Base.metadata.sorted_tables
            }
            assert await connection.run_sync(_check_constraints) == expected_checks
    finally:
        await engine.dispose()


async def test_downgrade_base_removes_everything_and_upgrade_again_works(database_url):
    await migrate_database(database_url)
    assert await migrate_database(database_url, "downgrade", "base") == "base"

    engine = make_engine(database_url, poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            assert await connection.run_sync(_table_names) == {"alembic_version"}
        await migrate_database(database_url)
        async with engine.connect() as connection:
            assert await connection.run_sync(_schema_differences) == []
    finally:
        await engine.dispose()


async def test_upgrade_twice_is_a_no_op(database_url):
    first = await migrate_database(database_url)
    assert await migrate_database(database_url) == first


async def test_0002_rebuilding_users_on_sqlite_keeps_their_wallets(database_url):
    """SQLite rebuilds `users` to drop a column: with foreign keys on, dropping the old table
    would delete every wallet (ON DELETE CASCADE). The migration runs with them off."""
    await migrate_database(database_url, "upgrade", "0001")
    engine = make_engine(database_url, poolclass=NullPool)
    try:
        async with engine.begin() as connection:
            await connection.execute(
                text(
                    "INSERT INTO users (id, email, password_hash, name, phone, role, is_active,"
                    " created_at, auth_token) VALUES (1, 'ama@shop.test', 'x', 'Ama', '',"
                    " 'customer', true, '2026-01-01 00:00:00', 'old-token')"
                )
            )
            await connection.execute(
                text(
                    "INSERT INTO wallets (id, user_id, balance_minor, currency, updated_at)"
                    " VALUES (1, 1, 1200, 'GHS', '2026-01-01 00:00:00')"
                )
            )
        assert await migrate_database(database_url, "upgrade", "0002") == "0002"
        async with engine.connect() as connection:
            wallets = list(
                await connection.execute(text("SELECT user_id, balance_minor FROM wallets"))
            )
        assert [tuple(row) for row in wallets] == [(1, 1200)]
    finally:
        await engine.dispose()
