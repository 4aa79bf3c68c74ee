"""The Alembic migrations build exactly the models' schema, and take it down again."""

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import CheckConstraint, inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
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


SHOP_AT_0002 = [
    "INSERT INTO users (id, email, password_hash, name, phone, role, is_active, created_at) VALUES"
    " (1, 'boss@shop.test', 'x', 'Boss', '', 'admin', true, '2026-01-01 00:00:00'),"
    " (2, 'ama@shop.test', 'x', 'Ama', '', 'customer', true, '2026-01-01 00:00:00')",
    "INSERT INTO wallets (id, user_id, balance_minor, currency, updated_at) VALUES"
    " (1, 1, 500, 'GHS', '2026-01-01 00:00:00'), (2, 2, 1200, 'GHS', '2026-01-01 00:00:00')",
    "INSERT INTO logins (id, user_id, token_hash, created_at) VALUES"
    " (1, 1, 'hash-of-boss', '2026-01-01 00:00:00')",
    "INSERT INTO categories (id, slug, name, position) VALUES (1, 'phones', 'Phones', 0)",
    "INSERT INTO products (id, slug, name, description, price_minor, stock, image, category_id,"
    " is_active, created_at, updated_at) VALUES"
    " (1, 'tecno', 'Tecno', '', 150000, 7, '', 1, true, '2026-01-01', '2026-01-01'),"
    " (2, 'itel', 'Itel', '', 90000, 0, '', 1, true, '2026-01-01', '2026-01-01')",
    "INSERT INTO orders (id, number, user_id, email, status, payment_method, subtotal_minor,"
    " discount_minor, total_minor, currency, phone, delivery, address, created_at, updated_at)"
    " VALUES (1, 'CW-000001', 2, 'ama@shop.test', 'paid', 'wallet', 150000, 0, 150000, 'GHS',"
    " '', 'address', 'Osu', '2026-01-01', '2026-01-01')",
]


async def _rows(engine, query: str) -> list[tuple]:
    async with engine.connect() as connection:
        return [tuple(row) for row in await connection.execute(text(query))]


async def test_0003_makes_admins_owners_keeps_every_row_and_opens_the_stock_ledger(database_url):
    await migrate_database(database_url, "upgrade", "0002")
    engine = make_engine(database_url, poolclass=NullPool)
    try:
        async with engine.begin() as connection:
            for statement in SHOP_AT_0002:
                await connection.execute(text(statement))

        # Rebuilding the users table on SQLite must not cascade to wallets or logins, nor be
        # refused for the orders that refer to users.
        assert await migrate_database(database_url, "upgrade", "0003") == "0003"
        assert await _rows(engine, "SELECT id, role FROM users ORDER BY id") == [
            (1, "owner"),
            (2, "customer"),
        ]
        assert await _rows(engine, "SELECT user_id, balance_minor FROM wallets ORDER BY id") == [
            (1, 500),
            (2, 1200),
        ]
        assert await _rows(engine, "SELECT user_id FROM logins") == [(1,)]
        assert await _rows(engine, "SELECT number FROM orders") == [("CW-000001",)]
        assert await _rows(engine, "SELECT id, low_stock_threshold FROM products ORDER BY id") == [
            (1, 5),
            (2, 5),
        ]
        assert await _rows(engine, "SELECT is_active FROM categories") == [(True,)]
        assert await _rows(
            engine, "SELECT product_id, change, kind, actor_id FROM stock_movements"
        ) == [(1, 7, "restock", None)]

        async with engine.begin() as connection:
            await connection.execute(text("UPDATE users SET role = 'staff' WHERE id = 2"))
            with pytest.raises(IntegrityError):
                async with connection.begin_nested():
                    await connection.execute(text("UPDATE users SET role = 'admin' WHERE id = 2"))

        assert await migrate_database(database_url, "downgrade", "0002") == "0002"
        # Staff had no back office before 0003: they go back to being customers.
        assert await _rows(engine, "SELECT id, role FROM users ORDER BY id") == [
            (1, "admin"),
            (2, "customer"),
        ]
        assert await _rows(engine, "SELECT count(*) FROM wallets") == [(2,)]
        assert await _rows(engine, "SELECT count(*) FROM logins") == [(1,)]
    finally:
        await engine.dispose()
