"""Write transactions: which database errors are transient, retries on lock conflicts, ShopBusy
(moved here from tests/services/test_checkout.py with run_write_with_retries)."""

import sqlite3

import pytest
from sqlalchemy.exc import IntegrityError, OperationalError

from storefront.db.errors import is_transient_database_error
from storefront.db.transactions import WRITE_ATTEMPTS, ShopBusy, run_write_with_retries


class _FakeOriginal(Exception):
    def __init__(self, message: str, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


@pytest.mark.parametrize(
    ("message", "sqlstate", "transient"),
    [
        ("database is locked", None, True),
        ("deadlock detected", "40P01", True),
        ("could not serialize access due to concurrent update", "40001", True),
        ("lock not available", "55P03", True),
        ("no such table: orders", None, False),
    ],
)
def test_transient_errors_are_recognised(message, sqlstate, transient):
    error = OperationalError("SELECT 1", {}, _FakeOriginal(message, sqlstate))
    assert is_transient_database_error(error) is transient
    # sqlite3's own error, as the batch writer's driver calls raise it, unwrapped.
    if sqlstate is None:
        assert is_transient_database_error(sqlite3.OperationalError(message)) is transient


async def test_lock_conflicts_are_retried_until_they_pass(app, session):
    calls = 0

    async def work(_session) -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise OperationalError("UPDATE", {}, _FakeOriginal("database is locked"))
        return "placed"

    assert await run_write_with_retries(session, work) == "placed"
    assert calls == 3


async def test_persistent_lock_conflicts_become_shop_busy(app, session):
    calls = 0

    async def work(_session) -> None:
        nonlocal calls
        calls += 1
        raise OperationalError("UPDATE", {}, _FakeOriginal("deadlock detected", "40P01"))

    with pytest.raises(ShopBusy):
        await run_write_with_retries(session, work)
    assert calls == WRITE_ATTEMPTS


async def test_other_database_errors_are_not_retried(app, session):
    calls = 0

    async def work(_session) -> None:
        nonlocal calls
        calls += 1
        raise IntegrityError("INSERT", {}, _FakeOriginal("UNIQUE constraint failed"))

    with pytest.raises(IntegrityError):
        await run_write_with_retries(session, work)
    assert calls == 1
