"""A payment as the shopper's pages show it, read by reference; what every part of payments
shares (the session factory of background work, the reason limit, an update's row count)."""

from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import CursorResult, Result, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from storefront.models import Order, Payment
from storefront.models.payment import PaymentLookup

SessionFactory = async_sessionmaker[AsyncSession]

MAX_REASON_LENGTH = 1000


@dataclass(frozen=True)
class PaymentState:
    """A payment as the shopper's pages show it, after whatever this call did."""

    reference: str
    status: str  # a PaymentStatus, or PaymentLookup.UNKNOWN (no such reference)
    purpose: str = ""
    user_id: int | None = None
    amount_minor: int = 0
    currency: str = ""
    failure_reason: str = ""
    authorization_url: str = ""
    order_number: str | None = None
    order_status: str | None = None
    gave_value: bool = False
    note: str = ""


def rowcount(result: Result[Any]) -> int:
    """How many rows an UPDATE or INSERT matched."""
    return cast(CursorResult[Any], result).rowcount


async def select_payment_by_reference(session: AsyncSession, reference: str) -> Payment | None:
    return await session.scalar(
        select(Payment)
        .where(Payment.reference == reference)
        .execution_options(populate_existing=True)
    )


async def select_payment_state(session: AsyncSession, reference: str) -> PaymentState:
    """The payment and its order's status as they are now."""
    payment = await select_payment_by_reference(session, reference)
    if payment is None:
        return PaymentState(reference=reference, status=PaymentLookup.UNKNOWN)
    order = None
    if payment.order_id is not None:
        order = await session.scalar(
            select(Order)
            .where(Order.id == payment.order_id)
            .execution_options(populate_existing=True)
        )
    return PaymentState(
        reference=payment.reference,
        status=payment.status,
        purpose=payment.purpose,
        user_id=payment.user_id,
        amount_minor=payment.amount_minor,
        currency=payment.currency,
        failure_reason=payment.failure_reason,
        authorization_url=payment.authorization_url,
        order_number=order.number if order else None,
        order_status=order.status if order else None,
    )
