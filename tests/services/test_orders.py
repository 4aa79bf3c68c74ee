"""Order numbering, the one transition table, and the order queries."""

import asyncio
import re
from datetime import timedelta

import pytest
from sqlalchemy import select

from storefront.db.engine import sessionmaker_for
from storefront.db.transactions import write_transaction
from storefront.models import Order, utcnow
from storefront.services.checkout.placement import create_order_from_cart
from storefront.services.orders import (
    ORDER_TRANSITIONS,
    IllegalTransition,
    OrderStatusChanged,
    next_order_number,
    provisional_order_number,
    select_order_by_number,
    select_orders_for_user,
    transition_order,
)

LEGAL_MOVES = [
    ("pending_payment", "paid"),
    ("pending_payment", "cancelled"),
    ("paid", "fulfilled"),
    ("paid", "refunded"),
]
STATUSES = ["pending_payment", "paid", "fulfilled", "cancelled", "refunded"]
ILLEGAL_MOVES = [
    (from_status, to_status)
    for from_status in STATUSES
    for to_status in STATUSES
    if (from_status, to_status) not in LEGAL_MOVES
]


async def _insert_order(app, user, status: str = "pending_payment", created_at=None) -> Order:
    async with sessionmaker_for(app)() as db_session, write_transaction(db_session):
        order = Order(
            number=provisional_order_number(),
            user_id=user.id,
            email=user.email,
            status=status,
            payment_method="wallet",
            subtotal_minor=1_000,
            discount_minor=0,
            total_minor=1_000,
            created_at=created_at or utcnow(),
        )
        db_session.add(order)
        await db_session.flush()
        order.number = next_order_number(order.id)
    return order


async def _status(app, order_id: int) -> str:
    async with sessionmaker_for(app)() as db_session:
        return await db_session.scalar(select(Order.status).where(Order.id == order_id))


def test_order_numbers_look_like_the_old_shop():
    assert next_order_number(123) == "CW-000123"
    assert next_order_number(1_234_567) == "CW-1234567"


def test_transition_table_is_exactly_the_documented_one():
    moves = {(start, end) for start, ends in ORDER_TRANSITIONS.items() for end in ends}
    assert moves == set(LEGAL_MOVES)


@pytest.mark.both_databases
@pytest.mark.parametrize(("from_status", "to_status"), LEGAL_MOVES)
async def test_legal_moves_happen(app, make_user, from_status, to_status):
    user = await make_user()
    order = await _insert_order(app, user, from_status)
    async with sessionmaker_for(app)() as db_session, write_transaction(db_session):
        await transition_order(db_session, order.id, from_status, to_status)
    assert await _status(app, order.id) == to_status


@pytest.mark.both_databases
async def test_paid_sets_paid_at(app, make_user):
    user = await make_user()
    order = await _insert_order(app, user)
    moment = utcnow() - timedelta(minutes=1)
    async with sessionmaker_for(app)() as db_session, write_transaction(db_session):
        await transition_order(db_session, order.id, "pending_payment", "paid", moment)
    async with sessionmaker_for(app)() as db_session:
        assert (await db_session.get(Order, order.id)).paid_at == moment


@pytest.mark.both_databases
@pytest.mark.parametrize(("from_status", "to_status"), ILLEGAL_MOVES)
async def test_illegal_moves_are_refused(app, make_user, from_status, to_status):
    user = await make_user()
    order = await _insert_order(app, user, from_status)
    with pytest.raises(IllegalTransition):
        async with sessionmaker_for(app)() as db_session, write_transaction(db_session):
            await transition_order(db_session, order.id, from_status, to_status)
    assert await _status(app, order.id) == from_status


@pytest.mark.both_databases
async def test_a_move_from_the_wrong_status_is_refused(app, make_user):
    user = await make_user()
    order = await _insert_order(app, user, "cancelled")
    with pytest.raises(OrderStatusChanged):
        async with sessionmaker_for(app)() as db_session, write_transaction(db_session):
            # Legal in the table, but the order is not pending_payment any more.
            await transition_order(db_session, order.id, "pending_payment", "paid")
    assert await _status(app, order.id) == "cancelled"


@pytest.mark.both_databases
async def test_concurrent_moves_from_one_status_only_one_wins(app, make_user):
    user = await make_user()
    order = await _insert_order(app, user, "pending_payment")

    async def move(to_status: str) -> str | None:
        try:
            async with sessionmaker_for(app)() as db_session, write_transaction(db_session):
                await transition_order(db_session, order.id, "pending_payment", to_status)
        except OrderStatusChanged:
            return None
        return to_status

    results = await asyncio.gather(*(move(("paid", "cancelled")[n % 2]) for n in range(10)))
    winners = [result for result in results if result]
    assert len(winners) == 1
    assert await _status(app, order.id) == winners[0]


@pytest.mark.both_databases
async def test_concurrently_created_orders_get_distinct_numbers(
    app, make_user, make_product, fill_cart
):
    product = await make_product(stock=100)
    users = [await make_user() for _ in range(12)]
    carts = [await fill_cart(user, [(product, 1)]) for user in users]

    async def reserve(user, cart) -> str:
        async with sessionmaker_for(app)() as db_session, write_transaction(db_session):
            order = await create_order_from_cart(
                db_session, user, cart, "paystack", "pickup", "0241234567", "", utcnow()
            )
        return order.number

    numbers = await asyncio.gather(*(reserve(u, c) for u, c in zip(users, carts, strict=True)))
    assert len(set(numbers)) == 12
    assert all(re.fullmatch(r"CW-\d{6}", number) for number in numbers)
    async with sessionmaker_for(app)() as db_session:
        stored = {(order.id, order.number) for order in await db_session.scalars(select(Order))}
    assert all(number == next_order_number(order_id) for order_id, number in stored)


async def test_select_orders_for_user_newest_first_and_only_own(app, session, make_user):
    user = await make_user()
    someone_else = await make_user()
    now = utcnow()
    oldest = await _insert_order(app, user, "paid", now - timedelta(days=2))
    newest = await _insert_order(app, user, "paid", now)
    middle = await _insert_order(app, user, "cancelled", now - timedelta(days=1))
    await _insert_order(app, someone_else, "paid", now)

    orders, total = await select_orders_for_user(session, user.id)
    assert total == 3
    assert [order.id for order in orders] == [newest.id, middle.id, oldest.id]
    second_page, _ = await select_orders_for_user(session, user.id, page=2, per_page=2)
    assert [order.id for order in second_page] == [oldest.id]
    assert (await select_order_by_number(session, newest.number)).id == newest.id
    assert await select_order_by_number(session, "CW-999999") is None
