"""Paystack payments: attempts, the one exactly-once finalize, releases and reconciliation.

A payment row is written (and committed) before Paystack hears of it, one row and one fresh
reference per attempt. Value is given only by `finalize_payment`, after Paystack's verify agrees
on status, reference, amount and currency, and only by the caller whose conditional
`pending → success` update wins; callback, webhook and reconciler all come through here.
"""

import logging
import secrets
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, TypeVar, cast

from sqlalchemy import CursorResult, Result, and_, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from storefront.config import Settings
from storefront.db.engine import dialect_name
from storefront.db.transactions import ShopBusy, end_read, run_write_with_retries
from storefront.lib.money import format_minor, is_minor_units
from storefront.lib.paystack import (
    PaystackClient,
    PaystackError,
    PaystackRefused,
    VerifiedTransaction,
)
from storefront.models import Cart, Order, Payment, User, WebhookEvent, utcnow
from storefront.models.order import OrderStatus, PaymentMethod
from storefront.models.payment import GatewayStatus, PaymentPurpose, PaymentStatus
from storefront.models.user import WalletEntryKind
from storefront.services.checkout import (
    CheckoutError,
    EmptyCart,
    create_order_from_cart,
    lock_cart,
    queue_order_emails,
    release_order_reservation,
    return_order_lines_to_cart,
)
from storefront.services.orders import OrderStatusChanged, select_order_lines, transition_order
from storefront.services.outbox import InvalidEmailAddress, queue_email
from storefront.services.wallet import DuplicateLedgerEntry, WalletError, credit_wallet

log = logging.getLogger(__name__)

T = TypeVar("T")
SessionFactory = async_sessionmaker[AsyncSession]

FAILED_STATUSES = (GatewayStatus.FAILED, GatewayStatus.REVERSED)
MAX_REASON_LENGTH = 1000


class HoldExpired(OrderStatusChanged):
    """The order's hold on its items is over: no new attempt may start."""


class NothingToPay(CheckoutError):
    def __init__(self) -> None:
        super().__init__(
            "This order costs nothing after your coupon, so there is nothing to pay by card: "
            "use the wallet button instead."
        )


@dataclass(frozen=True)
class PaymentSettings:
    """What payments need from the app's configuration (services never read Quart's config)."""

    currency: str = "GHS"
    admin_email: str = ""
    base_url: str = ""
    abandon_after: timedelta = timedelta(minutes=30)  # an order's hold, from its creation
    reconcile_after: timedelta = timedelta(minutes=3)
    max_units_per_product: int = 10  # units of one product one pending order may hold


def payment_settings(settings: Settings, base_url: str | None = None) -> PaymentSettings:
    """From the shop's settings; `base_url` (the request's) when PUBLIC_BASE_URL is unset."""
    return PaymentSettings(
        currency=settings.paystack_currency,
        admin_email=settings.admin_email,
        base_url=(settings.public_base_url or base_url or "").rstrip("/"),
        abandon_after=timedelta(minutes=settings.paystack_abandon_after_minutes),
        reconcile_after=timedelta(minutes=settings.paystack_reconcile_after_minutes),
        max_units_per_product=settings.paystack_max_units_per_product,
    )


def hold_ends_at(order: Order, settings: PaymentSettings) -> datetime:
    """When a Paystack order's hold on its items ends, however many attempts it had."""
    return order.created_at + settings.abandon_after


@dataclass(frozen=True)
class PaymentState:
    """A payment as the shopper's pages show it, after whatever this call did."""

    reference: str
    status: str  # pending | success | failed | abandoned | unknown (no such reference)
    purpose: str = ""
    user_id: int | None = None
    amount_minor: int = 0
    currency: str = "GHS"
    failure_reason: str = ""
    authorization_url: str = ""
    order_number: str | None = None
    order_status: str | None = None
    gave_value: bool = False
    note: str = ""


@dataclass
class InitializeOutcome:
    """How handing a payment to Paystack went: go to `authorization_url`, or show `message`."""

    authorization_url: str | None = None
    refused: bool = False
    message: str = ""


@dataclass
class ReconcileReport:
    checked: int = 0
    skipped: int = 0
    statuses: dict[str, int] = field(default_factory=dict)


def _rowcount(result: Result[Any]) -> int:
    return cast(CursorResult[Any], result).rowcount


def new_reference(prefix: str) -> str:
    """A fresh reference of Paystack's allowed characters: `<prefix>.<random hex>`."""
    return f"{prefix}.{secrets.token_hex(8)}"


async def select_payment_by_reference(session: AsyncSession, reference: str) -> Payment | None:
    return await session.scalar(
        select(Payment)
        .where(Payment.reference == reference)
        .execution_options(populate_existing=True)
    )


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
            await _close_payment(session, payment_id, PaymentStatus.ABANDONED, reason, now)
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
    await end_read(session)  # no connection held across the network call
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
                await _lock_cart_first(write_session, payment.user_id)
            return await _close_payment(
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
        return _rowcount(stored) == 1

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


async def _lock_cart_first(session: AsyncSession, user_id: int) -> None:
    """Lock the customer's cart before a release that may refill it: cart first, as checkout
    takes its locks, so the two never wait on each other in opposite orders."""
    with suppress(EmptyCart):  # no cart row: nothing will be returned to it
        await lock_cart(session, user_id)


async def select_payment_state(session: AsyncSession, reference: str) -> PaymentState:
    """The payment and its order's status as they are now."""
    payment = await select_payment_by_reference(session, reference)
    if payment is None:
        return PaymentState(reference=reference, status="unknown")
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
            return PaymentState(reference=reference, status="unknown")
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
        won = await _close_payment(
            write_session,
            payment.id,
            decision.status,
            decision.reason,
            now,
            verified.raw if verified is not None else None,
        )
        if won and decision.notify_admin:
            await _queue_payment_problem(write_session, payment.id, decision.reason, settings)
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
    if _rowcount(flipped) != 1:
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
        await _queue_payment_problem(
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


async def _close_payment(
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


async def _queue_payment_problem(
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
    await _queue_payment_problem(session, payment.id, f"{closed} {action}", settings, kind)


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


async def record_webhook_event(
    session: AsyncSession, event: str, reference: str, payload: dict[str, Any], now: datetime
) -> bool:
    """Store a webhook once per (event, reference); False when it was already stored."""
    connection = await session.connection()
    insert = postgresql_insert if dialect_name(connection) == "postgresql" else sqlite_insert
    stored = await session.execute(
        insert(WebhookEvent)
        .values(event=event[:64], reference=reference[:100], payload=payload, received_at=now)
        .on_conflict_do_nothing(index_elements=["event", "reference"])
    )
    return _rowcount(stored) == 1


async def mark_webhook_processed(
    session: AsyncSession, event: str, reference: str, now: datetime
) -> None:
    await session.execute(
        update(WebhookEvent)
        .where(
            WebhookEvent.event == event[:64],
            WebhookEvent.reference == reference[:100],
            WebhookEvent.processed_at.is_(None),
        )
        .values(processed_at=now)
        .execution_options(synchronize_session=False)
    )


async def _claim_for_check(
    sessionmaker: SessionFactory, payment_id: int, seen_updated_at: datetime, now: datetime
) -> bool:
    """Take a stale pending payment for one check; another worker that saw it too loses."""
    async with sessionmaker() as session:

        async def claim(write_session: AsyncSession) -> bool:
            claimed = await write_session.execute(
                update(Payment)
                .where(
                    Payment.id == payment_id,
                    Payment.status == PaymentStatus.PENDING,
                    Payment.updated_at == seen_updated_at,
                )
                .values(updated_at=now)
                .execution_options(synchronize_session=False)
            )
            return _rowcount(claimed) == 1

        return await run_write_with_retries(session, claim)


async def reconcile_once(
    sessionmaker: SessionFactory,
    client: PaystackClient,
    settings: PaymentSettings,
    now: datetime | None = None,
    batch_size: int = 50,
) -> ReconcileReport:
    """Re-verify pending payments left alone for `reconcile_after`, and every attempt of an
    order whose hold just ended; finalize settles each once.

    A claim moves `updated_at` to now, so each worker checks a payment at most once per
    `reconcile_after` and several workers never check the same one at the same moment.
    """
    now = now or utcnow()
    stale_before = now - settings.reconcile_after
    hold_over = Order.created_at <= now - settings.abandon_after
    async with sessionmaker() as session:
        rows = (
            await session.execute(
                select(Payment.id, Payment.reference, Payment.updated_at, Order.created_at)
                .outerjoin(Order, Order.id == Payment.order_id)
                .where(
                    Payment.status == PaymentStatus.PENDING,
                    or_(
                        and_(
                            Payment.created_at <= stale_before, Payment.updated_at <= stale_before
                        ),
                        hold_over,
                    ),
                )
                .order_by(Payment.id)
                .limit(batch_size)
            )
        ).all()
    # An order's attempts are checked as soon as its hold ends (then every reconcile_after).
    candidates = [
        (payment_id, reference, seen_updated_at)
        for payment_id, reference, seen_updated_at, order_created_at in rows
        if seen_updated_at <= stale_before
        or (
            order_created_at is not None
            and seen_updated_at <= order_created_at + settings.abandon_after
        )
    ]
    report = ReconcileReport()
    for payment_id, reference, seen_updated_at in candidates:
        if not await _claim_for_check(sessionmaker, payment_id, seen_updated_at, now):
            report.skipped += 1
            continue
        state = await finalize_payment(sessionmaker, client, reference, settings, now)
        report.checked += 1
        report.statuses[state.status] = report.statuses.get(state.status, 0) + 1
    return report


async def run_in_new_session(
    sessionmaker: SessionFactory, work: Callable[[AsyncSession], Awaitable[T]]
) -> T:
    """One write transaction in a session of its own (background tasks)."""
    async with sessionmaker() as session:
        return await run_write_with_retries(session, work)
