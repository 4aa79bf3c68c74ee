"""Checkout services: reserve for Paystack, release, pay from wallet."""

import asyncio

import pytest
from sqlalchemy import func, select

from storefront.db.engine import sessionmaker_for
from storefront.db.transactions import write_transaction
from storefront.models import (
    CartItem,
    Coupon,
    CouponRedemption,
    Order,
    OrderLine,
    OutboxEmail,
    Product,
    WalletEntry,
    utcnow,
)
from storefront.services.cart import select_cart_for_user
from storefront.services.checkout.delivery import validate_delivery
from storefront.services.checkout.placement import create_order_from_cart, place_wallet_order
from storefront.services.checkout.refusals import InvalidDelivery, OutOfStock
from storefront.services.checkout.release import release_order_reservation
from storefront.services.orders import OrderStatusChanged
from storefront.services.wallet import select_ledger_mismatches
from tests.conftest import wallet_of


async def _count(session, model, *where) -> int:
    return await session.scalar(select(func.count()).select_from(model).where(*where))


async def _reserve(app, user) -> Order:
    async with sessionmaker_for(app)() as db_session, write_transaction(db_session):
        cart = await select_cart_for_user(db_session, user.id)
        return await create_order_from_cart(
            db_session, user, cart, "paystack", "address", "0241234567", "Osu, Accra", utcnow()
        )


def test_validate_delivery_cleans_and_names_bad_fields():
    cleaned = validate_delivery(" pickup ", " +233 24 123 4567 ", "ignored for pickup")
    assert (cleaned.method, cleaned.phone, cleaned.address) == ("pickup", "+233 24 123 4567", "")
    with pytest.raises(InvalidDelivery) as refused:
        validate_delivery("address", "12", "")
    assert set(refused.value.field_errors) == {"phone", "address"}
    with pytest.raises(InvalidDelivery) as refused:
        validate_delivery("address", "0241234567", "x" * 501)
    assert set(refused.value.field_errors) == {"address"}


@pytest.mark.both_databases
async def test_reservation_takes_stock_and_coupon_but_no_money(
    app, session, make_user, make_product, make_coupon, fill_cart
):
    user = await make_user(balance_minor=5_000)
    product = await make_product(name="Router", price_minor=40_000, stock=3)
    coupon = await make_coupon(kind="fixed", value=4_000, max_uses=2)
    cart = await fill_cart(user, [(product, 2)], coupon_code=coupon.code)

    order = await _reserve(app, user)

    assert (order.status, order.payment_method, order.total_minor) == (
        "pending_payment",
        "paystack",
        76_000,
    )
    assert order.number == f"CW-{order.id:06d}"
    assert await session.scalar(select(Product.stock).where(Product.id == product.id)) == 1
    assert await session.scalar(select(Coupon.uses).where(Coupon.id == coupon.id)) == 1
    assert await _count(session, CouponRedemption, CouponRedemption.order_id == order.id) == 1
    assert await _count(session, OrderLine, OrderLine.order_id == order.id) == 1
    # The order took the cart's lines in the same transaction (a second submit finds it
    # empty); no money moved and nothing was mailed.
    assert await _count(session, CartItem, CartItem.cart_id == cart.id) == 0
    assert await _count(session, WalletEntry, WalletEntry.kind == "payment") == 0
    assert (await wallet_of(session, user)).balance_minor == 5_000
    assert await _count(session, OutboxEmail) == 0


@pytest.mark.both_databases
async def test_release_gives_back_stock_and_coupon_use_once(
    app, session, make_user, make_product, make_coupon, fill_cart
):
    user = await make_user()
    product = await make_product(price_minor=10_000, stock=3)
    coupon = await make_coupon(kind="percent", value=500, max_uses=1)
    await fill_cart(user, [(product, 3)], coupon_code=coupon.code)
    order = await _reserve(app, user)

    async with sessionmaker_for(app)() as db_session, write_transaction(db_session):
        await release_order_reservation(db_session, order.id)
    with pytest.raises(OrderStatusChanged):
        async with sessionmaker_for(app)() as db_session, write_transaction(db_session):
            await release_order_reservation(db_session, order.id)

    assert await session.scalar(select(Order.status).where(Order.id == order.id)) == "cancelled"
    assert await session.scalar(select(Product.stock).where(Product.id == product.id)) == 3
    assert await session.scalar(select(Coupon.uses).where(Coupon.id == coupon.id)) == 0
    assert await _count(session, CouponRedemption) == 0


@pytest.mark.both_databases
async def test_release_refuses_a_paid_order(app, session, make_user, make_product, fill_cart):
    user = await make_user(balance_minor=10_000)
    product = await make_product(price_minor=10_000, stock=3)
    cart = await fill_cart(user, [(product, 1)])
    async with sessionmaker_for(app)() as db_session, write_transaction(db_session):
        order = await place_wallet_order(
            db_session, user, cart, "pickup", "0241234567", "", utcnow()
        )
    with pytest.raises(OrderStatusChanged):
        async with sessionmaker_for(app)() as db_session, write_transaction(db_session):
            await release_order_reservation(db_session, order.id)
    assert await session.scalar(select(Order.status).where(Order.id == order.id)) == "paid"
    assert await session.scalar(select(Product.stock).where(Product.id == product.id)) == 2


@pytest.mark.both_databases
async def test_wallet_order_leaves_the_session_current(
    app, session, make_user, make_product, make_coupon, fill_cart
):
    user = await make_user(balance_minor=50_000)
    product = await make_product(name="Router", price_minor=10_000, stock=3)
    coupon = await make_coupon(kind="fixed", value=1_000, max_uses=5)
    cart = await fill_cart(user, [(product, 2)], coupon_code=coupon.code)
    now = utcnow()
    async with sessionmaker_for(app)() as db_session, write_transaction(db_session):
        # Rows the request may already hold show the checkout's changes without a re-read.
        wallet = await wallet_of(db_session, user)
        held_coupon = await db_session.get(Coupon, coupon.id)
        order = await place_wallet_order(
            db_session, user, cart, "address", "0241234567", "Osu, Accra", now
        )
        assert await db_session.get(Order, order.id) is order
        assert (order.status, order.number, order.paid_at) == (
            "paid",
            f"CW-{order.id:06d}",
            now,
        )
        assert (order.total_minor, order.discount_minor, order.coupon_code) == (
            19_000,
            1_000,
            coupon.code,
        )
        assert wallet.balance_minor == 31_000
        assert held_coupon.uses == 1
    stored = await session.get(Order, order.id)
    columns = [column.key for column in Order.__table__.columns]
    assert {key: getattr(stored, key) for key in columns} == {
        key: getattr(order, key) for key in columns
    }


@pytest.mark.both_databases
async def test_free_order_after_full_discount_needs_no_debit(
    app, session, make_user, make_product, make_coupon, fill_cart
):
    user = await make_user(balance_minor=0)
    product = await make_product(price_minor=3_000, stock=3)
    coupon = await make_coupon(kind="percent", value=10_000)
    cart = await fill_cart(user, [(product, 1)], coupon_code=coupon.code)
    async with sessionmaker_for(app)() as db_session, write_transaction(db_session):
        order = await place_wallet_order(
            db_session, user, cart, "pickup", "0241234567", "", utcnow()
        )
    assert (order.status, order.total_minor, order.discount_minor) == ("paid", 0, 3_000)
    assert await _count(session, WalletEntry) == 0
    assert await select_ledger_mismatches(session) == []


@pytest.mark.both_databases
async def test_reservations_race_for_the_last_units(
    app, session, make_user, make_product, fill_cart
):
    # Paystack's init path: 20 shoppers reserve at once, each in its own session.
    product = await make_product(price_minor=10_000, stock=3)
    users = [await make_user() for _ in range(20)]
    for user in users:
        await fill_cart(user, [(product, 1)])

    async def reserve(user) -> bool:
        try:
            await _reserve(app, user)
        except OutOfStock:
            return False
        return True

    results = await asyncio.gather(*(reserve(user) for user in users))
    assert sum(results) == 3
    assert await session.scalar(select(Product.stock).where(Product.id == product.id)) == 0
    assert await _count(session, Order, Order.status == "pending_payment") == 3
