"""Refund to wallet: paid → refunded, restock, one credit even when called twice at once."""

import asyncio

import pytest
from sqlalchemy import func, select

from storefront.db.engine import sessionmaker_for
from storefront.db.transactions import write_transaction
from storefront.models import Order, WalletEntry, utcnow
from storefront.services.cart import select_cart_for_user
from storefront.services.checkout.placement import create_order_from_cart, place_wallet_order
from storefront.services.orders import OrderStatusChanged, refund_order_to_wallet
from storefront.services.wallet import select_ledger_mismatches
from tests.conftest import wallet_of
from tests.fixtures_checkout import stock_of


async def _paid_order(app, user) -> Order:
    async with sessionmaker_for(app)() as db_session, write_transaction(db_session):
        cart = await select_cart_for_user(db_session, user.id)
        return await place_wallet_order(
            db_session, user, cart, "pickup", "0241234567", "", utcnow()
        )


@pytest.mark.both_databases
async def test_refund_restocks_and_credits_the_wallet(
    app, session, make_user, make_product, fill_cart
):
    user = await make_user(balance_minor=50_000)
    product = await make_product(price_minor=15_000, stock=4)
    await fill_cart(user, [(product, 2)])
    order = await _paid_order(app, user)
    assert (await wallet_of(session, user)).balance_minor == 20_000
    assert await stock_of(session, product) == 2
    await session.rollback()

    async with sessionmaker_for(app)() as db_session, write_transaction(db_session):
        result = await refund_order_to_wallet(db_session, order.id, actor="admin@example.com")
    await session.rollback()  # end the test session's snapshot: read what was committed

    assert (result.order_number, result.amount_minor, result.balance_after_minor) == (
        order.number,
        30_000,
        50_000,
    )
    assert (await session.get(Order, order.id)).status == "refunded"
    assert await stock_of(session, product) == 4
    assert (await wallet_of(session, user)).balance_minor == 50_000
    refund = await session.scalar(select(WalletEntry).where(WalletEntry.kind == "refund"))
    assert (refund.amount_minor, refund.source_reference, refund.actor) == (
        30_000,
        order.number,
        "admin@example.com",
    )
    assert await select_ledger_mismatches(session) == []


@pytest.mark.both_databases
async def test_refund_called_twice_at_once_credits_once(
    app, session, make_user, make_product, fill_cart
):
    user = await make_user(balance_minor=50_000)
    product = await make_product(price_minor=10_000, stock=5)
    await fill_cart(user, [(product, 3)])
    order = await _paid_order(app, user)

    async def refund() -> bool:
        try:
            async with sessionmaker_for(app)() as db_session, write_transaction(db_session):
                await refund_order_to_wallet(db_session, order.id, actor="admin@example.com")
        except OrderStatusChanged:
            return False
        return True

    results = await asyncio.gather(refund(), refund(), refund(), refund())
    await session.rollback()

    assert sum(results) == 1
    assert (await wallet_of(session, user)).balance_minor == 50_000
    refunds = await session.scalar(
        select(func.count()).select_from(WalletEntry).where(WalletEntry.kind == "refund")
    )
    assert refunds == 1
    assert await stock_of(session, product) == 5  # restocked once, not four times
    assert await select_ledger_mismatches(session) == []


@pytest.mark.both_databases
@pytest.mark.parametrize("status", ["pending_payment", "cancelled", "refunded", "fulfilled"])
async def test_only_paid_orders_are_refunded(
    app, session, make_user, make_product, fill_cart, status
):
    user = await make_user(balance_minor=50_000)
    product = await make_product(price_minor=10_000, stock=5)
    cart = await fill_cart(user, [(product, 1)])
    async with sessionmaker_for(app)() as db_session, write_transaction(db_session):
        order = await create_order_from_cart(
            db_session, user, cart, "paystack", "pickup", "0241234567", "", utcnow()
        )
        await db_session.execute(
            Order.__table__.update().where(Order.id == order.id).values(status=status)
        )
    stock_before = await stock_of(session, product)
    await session.rollback()

    with pytest.raises(OrderStatusChanged):
        async with sessionmaker_for(app)() as db_session, write_transaction(db_session):
            await refund_order_to_wallet(db_session, order.id, actor="admin@example.com")

    await session.rollback()
    assert await stock_of(session, product) == stock_before
    assert (await wallet_of(session, user)).balance_minor == 50_000
    assert (await session.get(Order, order.id)).status == status
