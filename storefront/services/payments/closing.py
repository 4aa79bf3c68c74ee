"""Closing a payment that will not be paid (failed, abandoned) and releasing its order's hold;
telling the admins about a payment that needs them; crediting a charge that lands after its
payment was closed."""

import logging
from contextlib import suppress
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from storefront.db.transactions import run_write_with_retries
from storefront.lib.money import format_minor, is_minor_units
from storefront.lib.paystack import PaystackClient, PaystackError, VerifiedTransaction
from storefront.models import Order, Payment
from storefront.models.order import OrderStatus
from storefront.models.payment import GatewayStatus, PaymentPurpose, PaymentStatus
from storefront.models.user import WalletEntryKind
from storefront.services.checkout.placement import lock_cart
from storefront.services.checkout.refusals import EmptyCart
from storefront.services.checkout.release import (
    release_order_reservation,
    return_order_lines_to_cart,
)
from storefront.services.outbox.composing import InvalidEmailAddress
from storefront.services.outbox.queueing import queue_email
from storefront.services.payments.settings import PaymentSettings
from storefront.services.payments.state import (
    MAX_REASON_LENGTH,
    SessionFactory,
    select_payment_by_reference,
)
from storefront.services.wallet import DuplicateLedgerEntry, WalletError, credit_wallet

log = logging.getLogger(__name__)


async def lock_cart_first(session: AsyncSession, user_id: int) -> None:
    """Lock the customer's cart before a release that may refill it: cart first, as checkout
    takes its locks, so the two never wait on each other in opposite orders."""
    with suppress(EmptyCart):  # no cart row: nothing will be returned to it
        await lock_cart(session, user_id)


async def close_payment(
    session: AsyncSession,
    payment_id: int,
    status: str,
    reason: str,
    now: datetime,
    verified_payload: dict[str, Any] | None = None,
    *,
    return_to_cart: bool = False,
) -> bool:
    """pending → failed/abandoned once; release the order's reservation if no attempt is left
    (and with `return_to_cart`, put its lines back in the customer's cart)."""
    values: dict[str, Any] = {
        "status": status,
        "failure_reason": reason[:MAX_REASON_LENGTH],
        "updated_at": now,
    }
    if verified_payload is not None:
        values["verified_payload"] = verified_payload
        values["verified_at"] = now
    closed = (
        await session.execute(
            update(Payment)
            .where(Payment.id == payment_id, Payment.status == PaymentStatus.PENDING)
            .values(**values)
            .returning(Payment.order_id, Payment.user_id)
            .execution_options(synchronize_session=False)
        )
    ).one_or_none()
    if closed is None:
        return False
    order_id = closed.order_id
    if order_id is None:
        return True
    # Lock the order, then look for other attempts: two attempts closing at once on
    # PostgreSQL take turns here, so the second sees the first as closed and releases.
    order_status = await session.scalar(
        select(Order.status).where(Order.id == order_id).with_for_update()
    )
    if order_status != OrderStatus.PENDING_PAYMENT:
        return True
    live_attempts = await session.scalar(
        select(func.count())
        .select_from(Payment)
        .where(
            Payment.order_id == order_id,
            Payment.id != payment_id,
            Payment.status.in_((PaymentStatus.PENDING, PaymentStatus.SUCCESS)),
        )
    )
    if not live_attempts:
        await release_order_reservation(session, order_id, now)
        if return_to_cart:
            await return_order_lines_to_cart(session, order_id, closed.user_id)
    return True


async def queue_payment_problem(
    session: AsyncSession,
    payment_id: int,
    reason: str,
    settings: PaymentSettings,
    kind: str = "payment_problem",
) -> None:
    payment = await session.get(Payment, payment_id, populate_existing=True)
    assert payment is not None
    order = None
    if payment.order_id is not None:
        order = await session.get(Order, payment.order_id, populate_existing=True)
    log.error("payment %s needs attention: %s", payment.reference, reason)
    if not settings.admin_email:
        return
    try:
        await queue_email(
            session,
            settings.admin_email,
            "payment_problem",
            {"payment": payment, "reason": reason, "order": order},
            f"{kind}:{payment.reference}",
        )
    except InvalidEmailAddress as error:
        log.warning("payment %s: problem email not queued: %s", payment.reference, error)


async def report_success_after_close(
    session: AsyncSession,
    reference: str,
    settings: PaymentSettings,
    credited_minor: int | None = None,
) -> None:
    """Paystack reports a charge on a payment the shop had closed: the admins must act (once)."""
    payment = await select_payment_by_reference(session, reference)
    if payment is None or payment.status not in (PaymentStatus.FAILED, PaymentStatus.ABANDONED):
        return
    closed = (
        f"Paystack reports a successful charge for this payment, which the shop had closed as "
        f"{payment.status} ({payment.failure_reason})."
    )
    if credited_minor is None:
        action = "Refund the shopper or fulfil by hand."
    else:
        action = (
            f"The shopper's wallet was credited {format_minor(credited_minor, payment.currency)} "
            f"(a refund entry for {payment.reference}); nothing more is owed to them."
        )
    # Its own key: an earlier notice about this payment must not swallow the news of a credit.
    kind = "payment_problem" if credited_minor is None else "payment_credited"
    await queue_payment_problem(session, payment.id, f"{closed} {action}", settings, kind)


async def credit_success_after_close(
    sessionmaker: SessionFactory,
    client: PaystackClient,
    reference: str,
    settings: PaymentSettings,
) -> bool:
    """A charge landed on a payment the shop had closed (replaced, refused, past its hold):
    once Paystack's verify confirms it, credit what was charged to the shopper's wallet, once
    (ledger kind refund for orders, topup for top-ups; source = the reference), and tell the
    admins. False when nothing was credited by this call."""
    async with sessionmaker() as session:
        payment = await select_payment_by_reference(session, reference)
    if payment is None or payment.status not in (PaymentStatus.FAILED, PaymentStatus.ABANDONED):
        return False
    verified: VerifiedTransaction | None = None
    try:
        verified = await client.verify(reference)
    except PaystackError as error:
        log.warning("closed payment %s: could not verify a reported charge: %s", reference, error)
    confirmed = (
        verified is not None
        and verified.status == GatewayStatus.SUCCESS
        and verified.reference == reference
        and verified.currency == payment.currency
        and is_minor_units(verified.amount_minor)
        and verified.amount_minor > 0
    )

    async def settle(write_session: AsyncSession) -> bool:
        credited_minor = None
        if confirmed and verified is not None:
            try:
                await credit_wallet(
                    write_session,
                    payment.user_id,
                    verified.amount_minor,
                    kind=WalletEntryKind.TOPUP
                    if payment.purpose == PaymentPurpose.WALLET_TOPUP
                    else WalletEntryKind.REFUND,
                    source_reference=reference,
                    note=f"Paystack payment {reference} arrived after it was closed",
                    actor="paystack",
                )
                credited_minor = verified.amount_minor
            except DuplicateLedgerEntry:
                return False  # another webhook or worker credited it first
            except WalletError as error:
                log.error("closed payment %s: wallet not credited: %s", reference, error)
        await report_success_after_close(write_session, reference, settings, credited_minor)
        return credited_minor is not None

    async with sessionmaker() as session:
        return await run_write_with_retries(session, settle)
