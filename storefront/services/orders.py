"""Orders: numbering, the one transition table, reads for the order pages, refund to wallet."""

import uuid
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import cast

from sqlalchemy import Table, Update, bindparam, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.util import identity_key

from storefront.models import Order, OrderLine, utcnow
from storefront.models.order import OrderStatus
from storefront.models.stock import StockMovementKind
from storefront.models.user import WalletEntryKind
from storefront.services.stock import return_order_stock
from storefront.services.wallet import credit_wallet

# Every legal move; anything not listed here is refused.
ORDER_TRANSITIONS: dict[str, frozenset[str]] = {
    OrderStatus.PENDING_PAYMENT: frozenset({OrderStatus.PAID, OrderStatus.CANCELLED}),
    OrderStatus.PAID: frozenset({OrderStatus.FULFILLED, OrderStatus.REFUNDED}),
    OrderStatus.FULFILLED: frozenset(),
    OrderStatus.CANCELLED: frozenset(),
    OrderStatus.REFUNDED: frozenset(),
}
ORDER_NUMBER_PREFIX = "CW-"
ORDER_STATUS_LABELS: dict[str, str] = {
    OrderStatus.PENDING_PAYMENT: "Awaiting payment",
    OrderStatus.PAID: "Paid",
    OrderStatus.FULFILLED: "Fulfilled",
    OrderStatus.CANCELLED: "Cancelled",
    OrderStatus.REFUNDED: "Refunded",
}


class OrderError(Exception):
    """An order operation was refused; the message is fit for the person who asked."""


class IllegalTransition(OrderError):
    """The transition table has no such move."""


class OrderStatusChanged(OrderError):
    """The order was not in the expected status (another request moved it first)."""


@dataclass(frozen=True)
class RefundResult:
    order_number: str
    amount_minor: int
    balance_after_minor: int | None


def next_order_number(order_id: int) -> str:
    """The public number of an order: derived from its id, so unique on every database."""
    return f"{ORDER_NUMBER_PREFIX}{order_id:06d}"


def provisional_order_number() -> str:
    """A unique placeholder held for the moments between INSERT and knowing the id."""
    return "new-" + uuid.uuid4().hex[:28]


def can_transition(from_status: str, to_status: str) -> bool:
    return to_status in ORDER_TRANSITIONS.get(from_status, frozenset())


@cache
def _transition_statement(columns: tuple[str, ...]) -> Update:
    """The conditional status UPDATE that sets these columns, built once per set."""
    orders = cast(Table, Order.__table__)
    return (
        update(orders)
        .where(orders.c.id == bindparam("order_id"), orders.c.status == bindparam("from_status"))
        .values({name: bindparam(f"new_{name}") for name in columns})
    )


async def transition_order(
    session: AsyncSession,
    order_id: int,
    from_status: str,
    to_status: str,
    now: datetime | None = None,
    *,
    number: str | None = None,
) -> None:
    """Move an order between statuses with a conditional UPDATE; refuse illegal or stale moves.

    `number` also writes the order's public number in the same statement (a new order's first
    move, in the transaction that inserted it).
    """
    if not can_transition(from_status, to_status):
        raise IllegalTransition(f"An order cannot go from {from_status} to {to_status}.")
    now = now or utcnow()
    values: dict[str, object] = {"status": to_status, "updated_at": now}
    if to_status == OrderStatus.PAID:
        values["paid_at"] = now
    if number is not None:
        values["number"] = number
    # A Core UPDATE (half the cost of an ORM one); an Order already in the session is brought
    # up to date below without another query.
    await session.flush()  # as the ORM would before an UPDATE: pending changes go first
    connection = await session.connection()
    result = await connection.execute(
        _transition_statement(tuple(values)),
        {"order_id": order_id, "from_status": from_status}
        | {f"new_{name}": value for name, value in values.items()},
    )
    if result.rowcount != 1:
        raise OrderStatusChanged(f"The order is no longer {from_status.replace('_', ' ')}.")
    order = session.sync_session.identity_map.get(identity_key(Order, order_id))
    if order is not None:
        for name, value in values.items():
            set_committed_value(order, name, value)


async def select_order_by_number(session: AsyncSession, number: str) -> Order | None:
    return await session.scalar(select(Order).where(Order.number == number))


async def select_order_lines(session: AsyncSession, order_id: int) -> list[OrderLine]:
    return list(
        await session.scalars(
            select(OrderLine).where(OrderLine.order_id == order_id).order_by(OrderLine.id)
        )
    )


async def select_orders_for_user(
    session: AsyncSession, user_id: int, page: int = 1, per_page: int = 20
) -> tuple[list[Order], int]:
    """One page of the user's orders, newest first, and how many there are in all."""
    total = await session.scalar(
        select(func.count()).select_from(Order).where(Order.user_id == user_id)
    )
    orders = await session.scalars(
        select(Order)
        .where(Order.user_id == user_id)
        .order_by(Order.created_at.desc(), Order.id.desc())
        .limit(per_page)
        .offset((max(page, 1) - 1) * per_page)
    )
    return list(orders), int(total or 0)


async def refund_order_to_wallet(
    session: AsyncSession, order_id: int, actor: str, now: datetime | None = None
) -> RefundResult:
    """Paid → refunded, restock, and credit the order's total to the buyer's wallet once."""
    # The conditional status change is the lock: a second caller finds the order already refunded.
    await transition_order(session, order_id, OrderStatus.PAID, OrderStatus.REFUNDED, now)
    order = await session.scalar(
        select(Order).where(Order.id == order_id).execution_options(populate_existing=True)
    )
    if order is None:
        raise OrderError("There is no such order.")
    balance_after_minor = None
    # Wallet before products: the order checkout locks them in, so the two never deadlock.
    if order.total_minor > 0:
        ledger = await credit_wallet(
            session,
            order.user_id,
            order.total_minor,
            kind=WalletEntryKind.REFUND,
            source_reference=order.number,
            note=f"Refund of order {order.number}",
            actor=actor,
        )
        balance_after_minor = ledger.balance_after_minor
    await return_order_stock(
        session, order_id, StockMovementKind.CANCEL, f"Order {order.number} refunded", now=now
    )
    return RefundResult(order.number, order.total_minor, balance_after_minor)
