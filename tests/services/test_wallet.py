"""Wallet movements: racing debits and credits, and what a refusal leaves behind inside a caller's
larger transaction."""

import asyncio

import pytest
from sqlalchemy import func, select

from storefront.db.engine import sessionmaker_for
from storefront.db.transactions import write_transaction
from storefront.models import StockMovementKind, WalletEntry
from storefront.services import wallet as wallet_service
from storefront.services.stock import move_stock
from storefront.services.wallet import (
    DuplicateLedgerEntry,
    InsufficientBalance,
    WalletError,
    credit_wallet,
    debit_wallet,
    select_ledger_mismatches,
)
from tests.conftest import wallet_of
from tests.fixtures_checkout import stock_of


async def _payments(session, user) -> list[tuple[int, str, int]]:
    wallet = await wallet_of(session, user)
    rows = await session.execute(
        select(
            WalletEntry.amount_minor, WalletEntry.source_reference, WalletEntry.balance_after_minor
        )
        .where(WalletEntry.wallet_id == wallet.id, WalletEntry.kind == "payment")
        .order_by(WalletEntry.id)
    )
    return [tuple(row) for row in rows]


@pytest.mark.both_databases
async def test_a_refused_debit_leaves_the_larger_transaction_usable(
    app, make_user, make_product, session
):
    user = await make_user(balance_minor=1_000)
    product = await make_product(stock=5)
    async with sessionmaker_for(app)() as own, write_transaction(own):
        await move_stock(own, product.id, -1, StockMovementKind.ADJUSTMENT, reason="count")
        with pytest.raises(InsufficientBalance) as refused:
            await debit_wallet(own, user.id, 1_001, kind="payment", source_reference="CW-900001")
        assert (refused.value.balance_minor, refused.value.shortfall_minor) == (1_000, 1)
        # The caller goes on in the same transaction and commits.
        ledger = await debit_wallet(own, user.id, 400, kind="payment", source_reference="CW-900002")
        assert ledger.balance_after_minor == 600
    assert (await wallet_of(session, user)).balance_minor == 600
    assert await _payments(session, user) == [(-400, "CW-900002", 600)]
    assert await stock_of(session, product) == 4
    assert await select_ledger_mismatches(session) == []


@pytest.mark.both_databases
async def test_a_refused_debit_then_rollback_changes_nothing(app, make_user, make_product, session):
    user = await make_user(balance_minor=1_000)
    product = await make_product(stock=5)
    with pytest.raises(InsufficientBalance):
        async with sessionmaker_for(app)() as own, write_transaction(own):
            await move_stock(own, product.id, -1, StockMovementKind.ADJUSTMENT, reason="count")
            await debit_wallet(own, user.id, 300, kind="payment", source_reference="CW-900003")
            await debit_wallet(own, user.id, 800, kind="payment", source_reference="CW-900004")
    assert (await wallet_of(session, user)).balance_minor == 1_000
    assert await _payments(session, user) == []
    assert await stock_of(session, product) == 5


@pytest.mark.both_databases
async def test_a_repeated_debit_source_never_commits_money_without_its_entry(
    app, database_url, make_user, session
):
    user = await make_user(balance_minor=1_000)
    async with sessionmaker_for(app)() as own, write_transaction(own):
        await debit_wallet(own, user.id, 300, kind="payment", source_reference="CW-900005")
        with pytest.raises(DuplicateLedgerEntry):
            await debit_wallet(own, user.id, 200, kind="payment", source_reference="CW-900005")
        # A careless caller commits anyway (the contract says: roll back).
    balance_minor = (await wallet_of(session, user)).balance_minor
    if database_url.startswith("sqlite"):
        # SQLite failed only the INSERT; the debit put its money back.
        assert balance_minor == 700
        assert await _payments(session, user) == [(-300, "CW-900005", 700)]
    else:
        # PostgreSQL failed the whole transaction: its COMMIT rolls everything back.
        assert balance_minor == 1_000
        assert await _payments(session, user) == []
    assert await select_ledger_mismatches(session) == []


@pytest.mark.both_databases
async def test_a_repeated_credit_source_leaves_the_transaction_usable(app, make_user, session):
    user = await make_user(balance_minor=1_000)
    async with sessionmaker_for(app)() as own, write_transaction(own):
        await credit_wallet(own, user.id, 500, kind="refund", source_reference="CW-900006")
        with pytest.raises(DuplicateLedgerEntry):
            await credit_wallet(own, user.id, 500, kind="refund", source_reference="CW-900006")
        # Payments log a replayed top-up and go on: the transaction must still commit.
        await debit_wallet(own, user.id, 100, kind="payment", source_reference="CW-900007")
    assert (await wallet_of(session, user)).balance_minor == 1_400
    assert await select_ledger_mismatches(session) == []


async def test_a_debit_updates_the_wallet_already_in_the_session(app, make_user):
    user = await make_user(balance_minor=1_000)
    async with sessionmaker_for(app)() as own, write_transaction(own):
        wallet = await wallet_of(own, user)
        await debit_wallet(own, user.id, 250, kind="payment", source_reference="CW-900008")
        assert wallet.balance_minor == 750
        assert (await wallet_of(own, user)).balance_minor == 750


@pytest.mark.parametrize("amount_minor", [0, -5, 1.5, True])
async def test_debits_and_credits_take_only_positive_whole_pesewas(
    app, make_user, session, amount_minor
):
    user = await make_user(balance_minor=1_000)
    async with sessionmaker_for(app)() as own, write_transaction(own):
        with pytest.raises(WalletError):
            await debit_wallet(own, user.id, amount_minor, kind="payment", source_reference="x")
        with pytest.raises(WalletError):
            await credit_wallet(own, user.id, amount_minor, kind="refund", source_reference="x")
    assert (await wallet_of(session, user)).balance_minor == 1_000


async def test_a_user_without_a_wallet_is_refused(app, make_user, session):
    user = await make_user()
    async with sessionmaker_for(app)() as own, write_transaction(own):
        wallet = await wallet_of(own, user)
        await own.delete(wallet)
    async with sessionmaker_for(app)() as own, write_transaction(own):
        with pytest.raises(WalletError, match="no wallet"):
            await debit_wallet(own, user.id, 1, kind="payment", source_reference="CW-900009")
        with pytest.raises(WalletError, match="no wallet"):
            await credit_wallet(own, user.id, 1, kind="refund", source_reference="CW-900009")


@pytest.mark.both_databases
async def test_wallet_debit_race_never_overdraws(app, make_user, session):
    user = await make_user(balance_minor=1000)

    async def debit(attempt: int) -> bool:
        async with sessionmaker_for(app)() as own, write_transaction(own):
            try:
                await wallet_service.debit_wallet(
                    own, user.id, 300, kind="payment", source_reference=f"race-{attempt}"
                )
            except wallet_service.InsufficientBalance:
                return False
        return True

    results = await asyncio.gather(*(debit(n) for n in range(10)))
    assert sum(results) == 3
    wallet = await wallet_of(session, user)
    assert wallet.balance_minor == 100
    entries_sum = await session.scalar(
        select(func.sum(WalletEntry.amount_minor)).where(WalletEntry.wallet_id == wallet.id)
    )
    assert entries_sum == 100
    assert await wallet_service.select_ledger_mismatches(session) == []


@pytest.mark.both_databases
async def test_same_source_credits_once(app, make_user, session):
    user = await make_user()

    async def credit() -> bool:
        async with sessionmaker_for(app)() as own, write_transaction(own):
            try:
                await wallet_service.credit_wallet(
                    own, user.id, 500, kind="refund", source_reference="CW-000001"
                )
            except wallet_service.DuplicateLedgerEntry:
                return False
        return True

    results = await asyncio.gather(*(credit() for _ in range(8)))
    assert sum(results) == 1
    assert (await wallet_of(session, user)).balance_minor == 500
