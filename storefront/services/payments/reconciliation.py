"""The reconciler's pass: re-verify payments left pending too long, each by one worker."""

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from storefront.db.transactions import run_write_with_retries
from storefront.lib.paystack import PaystackClient
from storefront.models import Order, Payment, utcnow
from storefront.models.payment import PaymentStatus
from storefront.services.payments.settings import PaymentSettings
from storefront.services.payments.settling import finalize_payment
from storefront.services.payments.state import SessionFactory, rowcount


@dataclass
class ReconcileReport:
    checked: int = 0
    skipped: int = 0
    statuses: dict[str, int] = field(default_factory=dict)


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
            return rowcount(claimed) == 1

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
