"""Settling a payment once: `finalize_payment` verifies it with Paystack and gives value only
when Paystack agrees on status, reference, amount and currency, and only for the caller whose
conditional `pending → success` update wins; callback, webhook and reconciler all come here."""

import logging
from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from storefront.db.transactions import ShopBusy, run_write_with_retries
from storefront.lib.money import format_minor
from storefront.lib.paystack import (
    PaystackClient,
    PaystackError,
    PaystackRefused,
    VerifiedTransaction,
)
from storefront.models import Order, Payment, User, utcnow
from storefront.models.order import OrderStatus
from storefront.models.payment import GatewayStatus, PaymentLookup, PaymentPurpose, PaymentStatus
from storefront.models.user import WalletEntryKind
from storefront.services.checkout.order_emails import queue_order_emails
from storefront.services.orders import OrderStatusChanged, select_order_lines, transition_order
from storefront.services.outbox.composing import InvalidEmailAddress
from storefront.services.outbox.queueing import queue_email
from storefront.services.payments.closing import close_payment, queue_payment_problem
from storefront.services.payments.settings import PaymentSettings
from storefront.services.payments.state import (
    MAX_REASON_LENGTH,
    PaymentState,
    SessionFactory,
    rowcount,
    select_payment_by_reference,
    select_payment_state,
)
from storefront.services.wallet import DuplicateLedgerEntry, credit_wallet

log = logging.getLogger(__name__)

FAILED_STATUSES = (GatewayStatus.FAILED, GatewayStatus.REVERSED)


@dataclass(frozen=True)
class _Decision:
    status: str  # success | failed | abandoned | pending
    reason: str = ""
    notify_admin: bool = False


def _decide(
    payment: Payment,
    verified: VerifiedTransaction,
    now: datetime,
    settings: PaymentSettings,
    hold_ends: datetime,
) -> _Decision:
    if verified.status == GatewayStatus.SUCCESS:
        problems = []
        if verified.reference != payment.reference:
            problems.append(
                f"Paystack verified reference {verified.reference!r}, not {payment.reference!r}."
            )
        if verified.currency != payment.currency:
            problems.append(
                f"Paystack charged in {verified.currency or 'no currency'} "
                f"but the payment is in {payment.currency}."
            )
        if verified.amount_minor != payment.amount_minor:
            problems.append(
                f"Paystack charged {verified.amount_minor} minor units "
                f"({format_minor(verified.amount_minor, verified.currency or payment.currency)}) "
                f"but the payment is for {format_minor(payment.amount_minor, payment.currency)}."
            )
        if problems:
            return _Decision(PaymentStatus.FAILED, " ".join(problems), notify_admin=True)
        return _Decision(PaymentStatus.SUCCESS)
    if verified.status in FAILED_STATUSES:
        return _Decision(
            PaymentStatus.FAILED,
            f"Paystack says the payment {verified.status}: {verified.gateway_response}",
        )
    if verified.status == GatewayStatus.ABANDONED and now >= hold_ends:
        minutes = int(settings.abandon_after.total_seconds() // 60)
        return _Decision(
            PaymentStatus.ABANDONED, f"Not completed on Paystack within {minutes} minutes."
        )
    # Fresh transactions say "abandoned" too; ongoing/pending/processing/queued are not final.
    return _Decision(PaymentStatus.PENDING)


async def finalize_payment(
    sessionmaker: SessionFactory,
    client: PaystackClient,
    reference: str,
    settings: PaymentSettings,
    now: datetime | None = None,
) -> PaymentState:
    """Verify with Paystack and settle the payment once: value, release, or leave it pending."""
    now = now or utcnow()
    async with sessionmaker() as session:
        payment = await select_payment_by_reference(session, reference)
        if payment is None:
            return PaymentState(reference=reference, status=PaymentLookup.UNKNOWN)
        if payment.status != PaymentStatus.PENDING:
            return await select_payment_state(session, reference)
        # An order's attempts all end with the order's hold, however late "Pay again" began.
        order_created_at = await session.scalar(
            select(Order.created_at).where(Order.id == payment.order_id)
        )
    hold_ends = (order_created_at or payment.created_at) + settings.abandon_after
    # No session (nor pooled connection) is held while Paystack answers.
    verified: VerifiedTransaction | None = None
    problem: PaystackError | None = None
    try:
        verified = await client.verify(reference)
    except PaystackRefused as error:
        problem = error
        if error.status_code in (400, 404) and now >= hold_ends:
            decision = _Decision(
                PaymentStatus.ABANDONED,
                f"Paystack has no record of this payment ({error.message}).",
            )
        else:
            decision = _Decision(PaymentStatus.PENDING)
    except PaystackError as error:
        problem = error
        decision = _Decision(PaymentStatus.PENDING)
    else:
        decision = _decide(payment, verified, now, settings, hold_ends)

    async def settle(write_session: AsyncSession) -> bool:
        if decision.status == PaymentStatus.SUCCESS and verified is not None:
            return await _give_value(write_session, payment.id, verified, now, settings)
        won = await close_payment(
            write_session,
            payment.id,
            decision.status,
            decision.reason,
            now,
            verified.raw if verified is not None else None,
        )
        if won and decision.notify_admin:
            await queue_payment_problem(write_session, payment.id, decision.reason, settings)
        return won

    async with sessionmaker() as session:
        if decision.status == PaymentStatus.PENDING:
            state = await select_payment_state(session, reference)
            return _pending(state, problem) if problem else state
        try:
            won = await run_write_with_retries(session, settle)
        except ShopBusy:
            return _pending(await select_payment_state(session, reference), None)
        state = await select_payment_state(session, reference)
        return replace(state, gave_value=won and state.status == PaymentStatus.SUCCESS)


def _pending(state: PaymentState, error: PaystackError | None) -> PaymentState:
    note = "We could not confirm this payment with Paystack yet."
    if error is not None:
        note += f" ({error.message})"
    return replace(state, note=note)


async def _give_value(
    session: AsyncSession,
    payment_id: int,
    verified: VerifiedTransaction,
    now: datetime,
    settings: PaymentSettings,
) -> bool:
    """The one place value is given: only the winner of pending → success goes on."""
    flipped = await session.execute(
        update(Payment)
        .where(Payment.id == payment_id, Payment.status == PaymentStatus.PENDING)
        .values(
            status=PaymentStatus.SUCCESS,
            verified_at=now,
            updated_at=now,
            gateway_response=verified.gateway_response[:MAX_REASON_LENGTH],
            verified_payload=verified.raw,
        )
        .execution_options(synchronize_session=False)
    )
    if rowcount(flipped) != 1:
        return False
    payment = await session.get(Payment, payment_id, populate_existing=True)
    assert payment is not None
    if payment.purpose == PaymentPurpose.WALLET_TOPUP:
        await _credit_topup(session, payment)
        return True
    assert payment.order_id is not None
    try:
        await transition_order(
            session, payment.order_id, OrderStatus.PENDING_PAYMENT, OrderStatus.PAID, now
        )
    except OrderStatusChanged:
        # The money is in but the order was closed meanwhile (an admin cancelled it).
        await queue_payment_problem(
            session,
            payment_id,
            "Paystack confirmed this payment, but its order was no longer awaiting payment. "
            "Refund the shopper or fulfil the order by hand.",
            settings,
        )
        return True
    order = await session.scalar(
        select(Order).where(Order.id == payment.order_id).execution_options(populate_existing=True)
    )
    assert order is not None
    lines = await select_order_lines(session, order.id)
    await queue_order_emails(session, order, lines, settings.admin_email, settings.base_url)
    return True


async def _credit_topup(session: AsyncSession, payment: Payment) -> None:
    try:
        ledger = await credit_wallet(
            session,
            payment.user_id,
            payment.amount_minor,
            kind=WalletEntryKind.TOPUP,
            source_reference=payment.reference,
            note="Wallet top-up via Paystack",
            actor="paystack",
        )
    except DuplicateLedgerEntry:
        log.warning("top-up %s was already in the ledger; not credited again", payment.reference)
        return
    user = await session.get(User, payment.user_id)
    assert user is not None
    try:
        await queue_email(
            session,
            user.email,
            "wallet_topup_receipt",
            {
                "user": user,
                "amount_minor": payment.amount_minor,
                "balance_after_minor": ledger.balance_after_minor,
                "reference": payment.reference,
            },
            f"wallet_topup_receipt:{payment.reference}",
        )
    except InvalidEmailAddress as error:
        log.warning("top-up %s: receipt not queued: %s", payment.reference, error)
