"""finalize_payment and friends, called directly against the fake Paystack over real HTTP."""

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from storefront.background.paystack_serving import paystack_client_for
from storefront.config import app_settings
from storefront.db.engine import sessionmaker_for
from storefront.db.transactions import write_transaction
from storefront.lib.paystack import REFERENCE_PATTERN
from storefront.models import (
    Order,
    OutboxEmail,
    Payment,
    PaymentPurpose,
    Product,
    WalletEntry,
    utcnow,
)
from storefront.services.orders import OrderStatusChanged
from storefront.services.payments.attempts import (
    initialize_payment,
    insert_order_payment,
    insert_payment,
    insert_topup_payment,
    new_reference,
)
from storefront.services.payments.settings import payment_settings
from storefront.services.payments.settling import finalize_payment
from storefront.services.wallet import select_ledger_mismatches
from tests.conftest import wallet_of
from tests.fake_paystack import FakePaystack
from tests.fixtures_paystack import paystack_overrides

ADMIN_EMAIL = "admin@example.com"


@pytest.fixture(name="app_overrides")
def _app_overrides(fake_paystack: FakePaystack) -> dict[str, object]:
    return paystack_overrides(fake_paystack, ADMIN_EMAIL=ADMIN_EMAIL)


def _finalize(app, reference: str, now=None):
    return finalize_payment(
        sessionmaker_for(app),
        paystack_client_for(app),
        reference,
        payment_settings(app_settings(app)),
        now,
    )


async def _initialized_topup(app, user_id: int, amount_minor: int = 5000) -> Payment:
    async with sessionmaker_for(app)() as db_session:
        async with write_transaction(db_session):
            payment = await insert_topup_payment(
                db_session, user_id, amount_minor, utcnow(), payment_settings(app_settings(app))
            )
        outcome = await initialize_payment(
            db_session,
            paystack_client_for(app),
            payment,
            "ama@example.com",
            "http://shop.test/paystack/callback",
            payment_settings(app_settings(app)),
        )
    assert outcome.authorization_url
    return payment


async def _status(app, reference: str) -> tuple[str, str]:
    async with sessionmaker_for(app)() as db_session:
        row = (
            await db_session.execute(
                select(Payment.status, Payment.failure_reason).where(Payment.reference == reference)
            )
        ).one()
        return row.status, row.failure_reason


def test_references_are_fresh_and_use_only_paystacks_characters():
    references = {new_reference("CW-000123") for _ in range(1000)}
    assert len(references) == 1000
    assert all(REFERENCE_PATTERN.fullmatch(reference) for reference in references)
    assert all(reference.startswith("CW-000123.") for reference in references)


@pytest.mark.parametrize("amount", [50.0, True, 0, -1, "5000"])
async def test_a_payment_amount_is_positive_int_pesewas(app, session, make_user, amount):
    user = await make_user()
    with pytest.raises(ValueError):
        async with write_transaction(session):
            await insert_payment(
                session,
                purpose=PaymentPurpose.WALLET_TOPUP,
                user_id=user.id,
                amount_minor=amount,
                currency="GHS",
                reference=new_reference("T"),
                now=utcnow(),
            )


async def test_unknown_reference_is_not_sent_to_paystack(app, fake_paystack):
    state = await _finalize(app, "CW-000001.ffff")
    assert state.status == "unknown"
    assert fake_paystack.requests == []


@pytest.mark.both_databases
async def test_twenty_racing_finalizers_credit_a_topup_once(app, fake_paystack, make_user, session):
    user = await make_user()
    payment = await _initialized_topup(app, user.id)
    fake_paystack.mark_paid(payment.reference)

    states = await asyncio.gather(*(_finalize(app, payment.reference) for _ in range(20)))

    assert {state.status for state in states} == {"success"}
    assert sum(state.gave_value for state in states) == 1
    entries = (await session.execute(select(WalletEntry.amount_minor))).scalars().all()
    assert entries == [5000]
    assert (await wallet_of(session, user)).balance_minor == 5000
    assert await select_ledger_mismatches(session) == []
    receipts = await session.scalar(
        select(func.count())
        .select_from(OutboxEmail)
        .where(OutboxEmail.dedupe_key == f"wallet_topup_receipt:{payment.reference}")
    )
    assert receipts == 1


@pytest.mark.parametrize(
    ("arrange", "reason_part"),
    [
        (lambda fake, ref: fake.mark_paid(ref, amount_minor=4999), "charged 4999 minor units"),
        (lambda fake, ref: fake.mark_paid(ref, amount_minor=5001), "charged 5001 minor units"),
        (lambda fake, ref: fake.mark_paid(ref, currency="USD"), "charged in USD"),
        (
            lambda fake, ref: setattr(fake.mark_paid(ref), "reported_reference", "someone-else"),
            "verified reference 'someone-else'",
        ),
    ],
)
async def test_a_success_that_does_not_match_gives_nothing_and_tells_the_admin(
    app, fake_paystack, make_user, session, arrange, reason_part
):
    user = await make_user()
    payment = await _initialized_topup(app, user.id)
    arrange(fake_paystack, payment.reference)

    state = await _finalize(app, payment.reference)

    assert state.status == "failed" and not state.gave_value
    status, reason = await _status(app, payment.reference)
    assert status == "failed" and reason_part in reason
    assert (await wallet_of(session, user)).balance_minor == 0
    problems = (await session.execute(select(OutboxEmail.to_address, OutboxEmail.subject))).all()
    assert [(to, subject) for to, subject in problems] == [
        (ADMIN_EMAIL, f"Payment problem: {payment.reference}")
    ]


@pytest.mark.parametrize(
    ("paystack_status", "minutes_old", "expected"),
    [
        ("abandoned", 0, "pending"),  # fresh transactions say abandoned
        ("abandoned", 29, "pending"),
        ("abandoned", 30, "abandoned"),
        ("failed", 0, "failed"),
        ("reversed", 0, "failed"),
        ("ongoing", 120, "pending"),
        ("pending", 120, "pending"),
        ("processing", 120, "pending"),
        ("queued", 120, "pending"),
    ],
)
async def test_what_each_paystack_status_does(
    app, fake_paystack, make_user, paystack_status, minutes_old, expected
):
    user = await make_user()
    payment = await _initialized_topup(app, user.id)
    fake_paystack.mark_status(payment.reference, paystack_status)

    state = await _finalize(app, payment.reference, now=utcnow() + timedelta(minutes=minutes_old))

    assert state.status == expected
    assert (await _status(app, payment.reference))[0] == expected


@pytest.mark.parametrize("failure", ["server_error", "timeout", "malformed", "invalid_key"])
async def test_when_verify_fails_the_payment_stays_pending(app, fake_paystack, make_user, failure):
    user = await make_user()
    payment = await _initialized_topup(app, user.id)
    fake_paystack.mark_paid(payment.reference)
    fake_paystack.fail_next(failure, "/transaction/verify/")

    state = await _finalize(app, payment.reference)

    assert state.status == "pending" and "could not confirm" in state.note
    assert (await _finalize(app, payment.reference)).status == "success"


async def test_a_reference_paystack_never_saw_is_abandoned_only_after_the_grace_period(
    app, fake_paystack, make_user
):
    user = await make_user()
    async with sessionmaker_for(app)() as db_session, write_transaction(db_session):
        payment = await insert_topup_payment(
            db_session, user.id, 5000, utcnow(), payment_settings(app_settings(app))
        )

    assert (await _finalize(app, payment.reference)).status == "pending"
    later = utcnow() + timedelta(minutes=31)
    state = await _finalize(app, payment.reference, now=later)
    assert state.status == "abandoned"
    assert "no record" in (await _status(app, payment.reference))[1]


async def test_settled_payments_are_not_verified_again(app, fake_paystack, make_user):
    user = await make_user()
    payment = await _initialized_topup(app, user.id)
    fake_paystack.mark_paid(payment.reference)
    await _finalize(app, payment.reference)
    verifies = len(fake_paystack.api_requests("/transaction/verify/"))

    state = await _finalize(app, payment.reference)

    assert state.status == "success" and not state.gave_value
    assert len(fake_paystack.api_requests("/transaction/verify/")) == verifies


async def test_paid_after_an_admin_cancelled_the_order_alerts_instead_of_paying(
    app, fake_paystack, start_order_payment, session
):
    started = await start_order_payment()
    async with write_transaction(session):
        await session.execute(
            update(Order).where(Order.number == started.order_number).values(status="cancelled")
        )
    fake_paystack.mark_paid(started.reference)

    state = await _finalize(app, started.reference)

    assert state.status == "success" and state.order_status == "cancelled"
    keys = (await session.execute(select(OutboxEmail.dedupe_key))).scalars().all()
    assert keys == [f"payment_problem:{started.reference}"]


@pytest.mark.both_databases
async def test_no_new_attempt_for_an_order_cancelled_meanwhile(
    app, fake_paystack, start_order_payment, session
):
    started = await start_order_payment()
    order = await session.scalar(select(Order).where(Order.number == started.order_number))
    await session.commit()
    # The only attempt fails and closes: the order is cancelled and its items released. The
    # shopper's "pay again" read the order as awaiting payment just before.
    fake_paystack.mark_status(started.reference, "failed")
    assert (await _finalize(app, started.reference)).order_status == "cancelled"
    payments_before = await session.scalar(select(func.count()).select_from(Payment))
    with pytest.raises(OrderStatusChanged):
        async with write_transaction(session):
            await insert_order_payment(session, order, utcnow())
    assert await session.scalar(select(func.count()).select_from(Payment)) == payments_before


async def test_closing_one_of_two_attempts_keeps_the_reservation(
    app, fake_paystack, start_order_payment, session
):
    started = await start_order_payment()
    order = await session.scalar(select(Order).where(Order.number == started.order_number))
    await session.commit()
    async with write_transaction(session):
        second = await insert_order_payment(session, order, utcnow())
    fake_paystack.mark_status(started.reference, "failed")

    await _finalize(app, started.reference)

    await session.commit()
    assert await session.scalar(select(Order.status).where(Order.id == order.id)) == (
        "pending_payment"
    )
    stock = await session.scalar(select(Product.stock).where(Product.id == started.product.id))
    assert stock == 3
    # The last attempt ending releases the items (Paystack never saw it: abandoned after grace).
    state = await _finalize(app, second.reference, now=utcnow() + timedelta(minutes=31))
    assert state.status == "abandoned" and state.order_status == "cancelled"
    await session.commit()
    stock = await session.scalar(select(Product.stock).where(Product.id == started.product.id))
    assert stock == 5
