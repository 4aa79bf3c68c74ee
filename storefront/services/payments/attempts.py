"""Payment attempts: reserve the order and store the attempt before Paystack hears of it (one
row and one fresh reference per attempt), then hand it to Paystack and record how that went."""

import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from storefront.db.transactions import ShopBusy, end_read, run_write_with_retries
from storefront.lib.money import is_minor_units
from storefront.lib.paystack import PaystackClient, PaystackError, PaystackRefused
from storefront.models import Cart, Order, Payment, User, utcnow
from storefront.models.order import OrderStatus, PaymentMethod
from storefront.models.payment import PaymentPurpose, PaymentStatus
from storefront.services.checkout.placement import create_order_from_cart
from storefront.services.checkout.refusals import CheckoutError
from storefront.services.checkout.release import (
    release_order_reservation,
    return_order_lines_to_cart,
)
from storefront.services.orders import OrderStatusChanged
from storefront.services.payments.closing import close_payment, lock_cart_first
from storefront.services.payments.settings import PaymentSettings
from storefront.services.payments.state import rowcount

log = logging.getLogger(__name__)


class HoldExpired(OrderStatusChanged):
    """The order's hold on its items is over: no new attempt may start."""


class NothingToPay(CheckoutError):
    def __init__(self) -> None:
        super().__init__(
            "This order costs nothing after your coupon, so there is nothing to pay by card: "
            "use the wallet button instead."
        )


@dataclass
class InitializeOutcome:
    """How handing a payment to Paystack went: go to `authorization_url`, or show `message`."""

    authorization_url: str | None = None
    refused: bool = False
    message: str = ""


def new_reference(prefix: str) -> str:
    """A fresh reference of Paystack's allowed characters: `<prefix>.<random hex>`."""
    return f"{prefix}.{secrets.token_hex(8)}"


async def insert_payment(
    session: AsyncSession,
    *,
    purpose: str,
    user_id: int,
    amount_minor: int,
    currency: str,
    reference: str,
    now: datetime,
    order_id: int | None = None,
) -> Payment:
    """One attempt, stored before Paystack hears of it."""
    if not is_minor_units(amount_minor) or amount_minor <= 0:
        raise ValueError("a payment is a positive whole number of pesewas")
    payment = Payment(
        reference=reference,
        purpose=purpose,
        order_id=order_id,
        user_id=user_id,
        amount_minor=amount_minor,
        currency=currency,
        status=PaymentStatus.PENDING,
        created_at=now,
        updated_at=now,
    )
    session.add(payment)
    await session.flush()
    return payment


async def reserve_order_payment(
    session: AsyncSession,
    user: User,
    cart: Cart,
    delivery: str,
    phone: str,
    address: str,
    now: datetime,
    settings: PaymentSettings,
    expected_total_minor: int | None = None,
) -> Payment:
    """In the caller's write transaction: the pending order (stock, coupon held, cart emptied)
    and its attempt; the customer's older pending Paystack order, if any, is replaced."""
    order = await create_order_from_cart(
        session,
        user,
        cart,
        PaymentMethod.PAYSTACK,
        delivery,
        phone,
        address,
        now,
        expected_total_minor=expected_total_minor,
        currency=settings.currency,
        max_units_per_product=settings.max_units_per_product,
    )
    if order.total_minor <= 0:
        raise NothingToPay()
    await _replace_pending_orders(session, user.id, order, now)
    return await insert_order_payment(session, order, now)


async def _replace_pending_orders(
    session: AsyncSession, user_id: int, new_order: Order, now: datetime
) -> None:
    """One pending Paystack order per customer: close the older one's attempts, release its
    hold and put its lines back in the cart. A charge that still lands on a closed attempt is
    credited to the wallet (credit_success_after_close)."""
    older = await session.scalars(
        select(Order.id).where(
            Order.user_id == user_id,
            Order.status == OrderStatus.PENDING_PAYMENT,
            Order.payment_method == PaymentMethod.PAYSTACK,
            Order.id != new_order.id,
        )
    )
    reason = f"Replaced by order {new_order.number}, started later."
    for order_id in sorted(older):
        attempts = await session.scalars(
            select(Payment.id).where(
                Payment.order_id == order_id, Payment.status == PaymentStatus.PENDING
            )
        )
        for payment_id in sorted(attempts):
            await close_payment(session, payment_id, PaymentStatus.ABANDONED, reason, now)
        status = await session.scalar(
            select(Order.status).where(Order.id == order_id).with_for_update()
        )
        if status == OrderStatus.PENDING_PAYMENT:  # it had no attempt left to close
            await release_order_reservation(session, order_id, now)
            status = OrderStatus.CANCELLED
        if status == OrderStatus.CANCELLED:  # not paid by an attempt that won meanwhile
            await return_order_lines_to_cart(session, order_id, user_id)


async def insert_order_payment(
    session: AsyncSession, order: Order, now: datetime, hold: timedelta | None = None
) -> Payment:
    """An attempt with a fresh reference for an order awaiting payment (first or a retry).

    The order's row is locked and its status checked here, in the write transaction: a last
    attempt closing at the same moment cancels the order under the same lock, so a new attempt
    is never sent to Paystack for an order whose items went back on the shelf. With `hold`, no
    attempt starts once the order's hold (from its creation) is over.
    """
    found = (
        await session.execute(
            select(Order.status, Order.created_at).where(Order.id == order.id).with_for_update()
        )
    ).one()
    if found.status != OrderStatus.PENDING_PAYMENT:
        raise OrderStatusChanged(f"Order {order.number} is no longer awaiting payment.")
    if hold is not None and now >= found.created_at + hold:
        minutes = int(hold.total_seconds() // 60)
        raise HoldExpired(
            f"Order {order.number} held its items for {minutes} minutes and the time to pay "
            "for it is up. Its items go back on sale once Paystack confirms nothing was paid; "
            "add them to your cart again to order them."
        )
    return await insert_payment(
        session,
        purpose=PaymentPurpose.ORDER,
        user_id=order.user_id,
        order_id=order.id,
        amount_minor=order.total_minor,
        currency=order.currency,
        reference=new_reference(order.number),
        now=now,
    )


async def insert_topup_payment(
    session: AsyncSession, user_id: int, amount_minor: int, now: datetime, settings: PaymentSettings
) -> Payment:
    return await insert_payment(
        session,
        purpose=PaymentPurpose.WALLET_TOPUP,
        user_id=user_id,
        amount_minor=amount_minor,
        currency=settings.currency,
        reference=new_reference(f"TOPUP-{user_id}"),
        now=now,
    )


async def initialize_payment(
    session: AsyncSession,
    client: PaystackClient,
    payment: Payment,
    email: str,
    callback_url: str,
    settings: PaymentSettings,
    now: datetime | None = None,
) -> InitializeOutcome:
    """Hand a committed attempt to Paystack and record how it went.

    Accepted: store the authorization URL, unless the attempt was closed meanwhile (a newer
    checkout replaced its order): then the shopper is not sent to pay it.
    Refused (4xx): the attempt fails; if it was the order's last, the order's hold is released
    and its lines go back into the shopper's cart.
    No answer, 5xx or an unreadable answer: the outcome is unknown, so the attempt stays
    pending for the reconciler; the order keeps its items and can be paid with a new attempt.
    """
    now = now or utcnow()
    order_number = await session.scalar(select(Order.number).where(Order.id == payment.order_id))
    metadata: dict[str, Any] = {"purpose": payment.purpose}
    if order_number:
        metadata["order_number"] = order_number
    else:
        metadata["user_id"] = payment.user_id
    await end_read(session)  # no read transaction held open across the network call
    try:
        initialized = await client.initialize(
            email=email,
            amount_minor=payment.amount_minor,
            currency=payment.currency,
            reference=payment.reference,
            callback_url=callback_url,
            metadata=metadata,
        )
    except PaystackRefused as error:
        reason = f"Paystack refused to start the payment: {error.message}"

        async def close(write_session: AsyncSession) -> bool:
            if payment.order_id is not None:
                await lock_cart_first(write_session, payment.user_id)
            return await close_payment(
                write_session, payment.id, PaymentStatus.FAILED, reason, now, return_to_cart=True
            )

        try:
            await run_write_with_retries(session, close)
        except ShopBusy:
            # Still pending: Paystack has no such transaction, so the reconciler closes it.
            log.warning("initialize %s refused; too busy to close it now", payment.reference)
            return InitializeOutcome(
                message=f"Paystack could not start this payment: {error.message}. "
                "Nothing was charged; please try again in a moment."
            )
        return InitializeOutcome(
            refused=True,
            message=f"Paystack could not start this payment: {error.message}. Nothing was charged.",
        )
    except PaystackError as error:
        log.warning("initialize %s: outcome unknown: %s", payment.reference, error)
        return InitializeOutcome(
            message=(
                "Paystack did not answer in time, so your payment could not start. "
                "Nothing was charged; please try again."
            ),
        )

    async def accept(write_session: AsyncSession) -> bool:
        stored = await write_session.execute(
            update(Payment)
            .where(Payment.id == payment.id, Payment.status == PaymentStatus.PENDING)
            .values(authorization_url=initialized.authorization_url[:500], updated_at=now)
            .execution_options(synchronize_session=False)
        )
        return rowcount(stored) == 1

    try:
        accepted = await run_write_with_retries(session, accept)
    except ShopBusy:
        # The attempt is pending either way; only its stored URL is missing.
        log.warning("initialize %s: too busy to store the authorization URL", payment.reference)
        accepted = True
    if not accepted:
        return InitializeOutcome(
            message="This payment was closed while Paystack was starting it (a newer checkout "
            "replaced it), so it cannot be paid. Nothing was charged.",
        )
    return InitializeOutcome(authorization_url=initialized.authorization_url)
