"""The app starts, serves health checks and keeps the wallet ledger consistent on both databases."""

import asyncio
import inspect

import pytest
from sqlalchemy import func, select

from storefront.db.engine import sessionmaker_for
from storefront.db.transactions import write_transaction
from storefront.models import WalletEntry
from storefront.services import wallet as wallet_service
from tests.conftest import wallet_of


async def test_healthz(client):
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert (await response.get_json())["status"] == "ok"


async def test_readyz_ok(client):
    response = await client.get("/readyz")
    assert response.status_code == 200


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


async def test_template_context_processors_run_in_the_event_loop(app, client, make_user, sign_in):
    # Quart runs a synchronous context processor in a thread, a hop per processor per render.
    processors = [p for group in app.template_context_processors.values() for p in group]
    assert processors and all(inspect.iscoroutinefunction(p) for p in processors)
    # Templates get the signed-in customer from our processor.
    user = await make_user(name="Ama Mensah")
    sign_in(client, user)
    page = await client.get("/account")
    assert "Ama Mensah" in await page.get_data(as_text=True)
