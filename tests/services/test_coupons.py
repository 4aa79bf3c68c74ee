"""Coupon rules: discounts, every refusal, use within limits (also racing), giving uses back."""

import asyncio
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from storefront.db.engine import sessionmaker_for
from storefront.db.transactions import write_transaction
from storefront.models import Coupon, CouponRedemption, Order, utcnow
from storefront.services.coupons import (
    CouponError,
    evaluate_coupon,
    release_coupon_use,
    use_coupon,
)


async def insert_orders(app, user, count: int) -> list[int]:
    """Bare pending orders for redemptions to point at."""
    order_ids = []
    async with sessionmaker_for(app)() as db_session, write_transaction(db_session):
        for _ in range(count):
            order = Order(
                number=f"T-{uuid.uuid4().hex[:12]}",
                user_id=user.id,
                email=user.email,
                payment_method="wallet",
                subtotal_minor=20_000,
                discount_minor=0,
                total_minor=20_000,
            )
            db_session.add(order)
            await db_session.flush()
            order_ids.append(order.id)
    return order_ids


async def coupon_state(app, code: str) -> tuple[int, int]:
    """(uses, redemption rows) read fresh from the database."""
    async with sessionmaker_for(app)() as db_session:
        coupon = await db_session.scalar(select(Coupon).where(Coupon.code == code))
        redemptions = await db_session.scalar(
            select(func.count())
            .select_from(CouponRedemption)
            .where(CouponRedemption.coupon_id == coupon.id)
        )
        return coupon.uses, redemptions


async def test_ten_percent_of_200_cedis_is_20_cedis(session, add_coupon):
    await add_coupon("WELCOME10", "percent", 1000)
    check = await evaluate_coupon(session, "WELCOME10", 20_000, None, utcnow())
    assert check.valid
    assert check.discount_minor == 2_000
    assert check.code == "WELCOME10"


async def test_percent_rounds_half_up(session, add_coupon):
    await add_coupon("TEN", "percent", 1000)
    # 10 % of 123.45 is 12.345: half up gives 12.35; of 123.44 it is 12.344 → 12.34.
    assert (await evaluate_coupon(session, "TEN", 12_345, None, utcnow())).discount_minor == 1_235
    assert (await evaluate_coupon(session, "TEN", 12_344, None, utcnow())).discount_minor == 1_234


async def test_fixed_discount_is_capped_at_the_subtotal(session, add_coupon):
    await add_coupon("FIFTY", "fixed", 5_000)
    assert (await evaluate_coupon(session, "FIFTY", 3_000, None, utcnow())).discount_minor == 3_000
    assert (await evaluate_coupon(session, "FIFTY", 8_000, None, utcnow())).discount_minor == 5_000


async def test_full_percent_never_goes_below_zero(session, add_coupon):
    await add_coupon("FREE", "percent", 10_000)
    check = await evaluate_coupon(session, "FREE", 999, None, utcnow())
    assert check.discount_minor == 999


async def test_code_is_trimmed_and_case_insensitive(session, add_coupon):
    await add_coupon("WELCOME10")
    check = await evaluate_coupon(session, "  welcome10 \t", 20_000, None, utcnow())
    assert check.valid and check.code == "WELCOME10"


async def test_time_window_edges(session, add_coupon):
    now = utcnow()
    await add_coupon("WINDOW", starts_at=now, ends_at=now + timedelta(hours=1))
    assert (await evaluate_coupon(session, "WINDOW", 10_000, None, now)).valid
    before = await evaluate_coupon(session, "WINDOW", 10_000, None, now - timedelta(seconds=1))
    assert not before.valid and "starts on" in before.message
    at_end = await evaluate_coupon(session, "WINDOW", 10_000, None, now + timedelta(hours=1))
    assert not at_end.valid and "expired" in at_end.message


@pytest.mark.parametrize(
    ("coupon_kwargs", "code", "subtotal_minor", "expected"),
    [
        ({}, "", 20_000, "Enter a coupon code."),
        ({}, "   ", 20_000, "Enter a coupon code."),
        ({}, "NOPE", 20_000, "We don't know the code NOPE"),
        ({}, "X" * 80, 20_000, "too long"),
        ({"is_active": False}, "WELCOME10", 20_000, "no longer active"),
        ({"ends_at": "past"}, "WELCOME10", 20_000, "expired on"),
        ({"starts_at": "future"}, "WELCOME10", 20_000, "starts on"),
        ({"min_subtotal_minor": 15_000}, "WELCOME10", 14_999, "add GH₵ 0.01 more"),
        ({"max_uses": 5, "uses": 5}, "WELCOME10", 20_000, "fully used"),
        ({}, "WELCOME10", 0, "Add something to your cart"),
    ],
)
async def test_refusals_say_why(session, add_coupon, coupon_kwargs, code, subtotal_minor, expected):
    now = utcnow()
    if coupon_kwargs.get("ends_at") == "past":
        coupon_kwargs["ends_at"] = now - timedelta(days=1)
    if coupon_kwargs.get("starts_at") == "future":
        coupon_kwargs["starts_at"] = now + timedelta(days=1)
    await add_coupon("WELCOME10", **coupon_kwargs)
    check = await evaluate_coupon(session, code, subtotal_minor, None, now)
    assert not check.valid
    assert check.discount_minor == 0
    assert expected in check.message


async def test_min_subtotal_met_exactly_applies(session, add_coupon):
    await add_coupon("BIG", min_subtotal_minor=15_000)
    assert (await evaluate_coupon(session, "BIG", 15_000, None, utcnow())).valid


async def test_per_customer_limit_counts_redemptions(app, session, add_coupon, make_user):
    user = await make_user()
    other = await make_user()
    await add_coupon("ONCE", max_uses_per_customer=1)
    [order_id] = await insert_orders(app, user, 1)
    async with write_transaction(session):
        await use_coupon(session, "ONCE", user.id, order_id, 20_000, utcnow())
    check = await evaluate_coupon(session, "ONCE", 20_000, user.id, utcnow())
    assert not check.valid and "already used" in check.message
    assert (await evaluate_coupon(session, "ONCE", 20_000, other.id, utcnow())).valid
    # A guest is not counted until checkout, where the customer is known.
    assert (await evaluate_coupon(session, "once", 20_000, None, utcnow())).valid


async def test_use_coupon_counts_the_use_and_records_the_redemption(
    app, session, add_coupon, make_user
):
    user = await make_user()
    await add_coupon("WELCOME10", max_uses=10)
    [order_id] = await insert_orders(app, user, 1)
    async with write_transaction(session):
        discount_minor = await use_coupon(
            session, " welcome10", user.id, order_id, 20_000, utcnow()
        )
    assert discount_minor == 2_000
    assert await coupon_state(app, "WELCOME10") == (1, 1)


async def test_use_coupon_refuses_when_exhausted_and_changes_nothing(
    app, session, add_coupon, make_user
):
    user = await make_user()
    await add_coupon("GONE", max_uses=2, uses=2)
    [order_id] = await insert_orders(app, user, 1)
    with pytest.raises(CouponError, match="fully used"):
        async with write_transaction(session):
            await use_coupon(session, "GONE", user.id, order_id, 20_000, utcnow())
    assert await coupon_state(app, "GONE") == (2, 0)


@pytest.mark.both_databases
async def test_use_coupon_per_customer_refusal_undoes_the_use_even_if_caught(
    app, session, add_coupon, make_user
):
    user = await make_user()
    await add_coupon("ONCE", max_uses=10, max_uses_per_customer=1)
    first, second, third = await insert_orders(app, user, 3)
    async with write_transaction(session):
        await use_coupon(session, "ONCE", user.id, first, 20_000, utcnow())
    async with write_transaction(session):
        with pytest.raises(CouponError, match="already used"):
            await use_coupon(session, "ONCE", user.id, second, 20_000, utcnow())
        # The caller caught the error and goes on: the use was already given back, and the
        # transaction still takes statements and commits.
        await release_coupon_use(session, "ONCE", third)
    assert await coupon_state(app, "ONCE") == (1, 1)


# (coupon fields, subtotal_minor, None when it applies or what the refusal says); times are
# relative to the `now` both functions are given.
RULE_BOUNDARIES = [
    ({}, 20_000, None),
    ({"starts_at": timedelta(0)}, 20_000, None),
    ({"starts_at": timedelta(seconds=1)}, 20_000, "starts on"),
    ({"ends_at": timedelta(seconds=1)}, 20_000, None),
    ({"ends_at": timedelta(0)}, 20_000, "expired"),
    ({"min_subtotal_minor": 20_000}, 20_000, None),
    ({"min_subtotal_minor": 20_001}, 20_000, "needs a subtotal"),
    ({"max_uses": 3, "uses": 2}, 20_000, None),
    ({"max_uses": 3, "uses": 3}, 20_000, "fully used"),
    ({"is_active": False}, 20_000, "no longer active"),
    ({}, 0, "Add something"),
]


@pytest.mark.both_databases
@pytest.mark.parametrize(("fields", "subtotal_minor", "refusal"), RULE_BOUNDARIES)
async def test_use_coupon_draws_the_lines_where_evaluate_coupon_does(
    app, session, add_coupon, make_user, fields, subtotal_minor, refusal
):
    now = utcnow().replace(microsecond=0)
    fields = {
        name: now + value if isinstance(value, timedelta) else value
        for name, value in fields.items()
    }
    coupon = await add_coupon("EDGE", **fields)
    user = await make_user()
    [order_id] = await insert_orders(app, user, 1)
    check = await evaluate_coupon(session, "EDGE", subtotal_minor, user.id, now)
    assert check.valid is (refusal is None)
    if refusal is None:
        async with write_transaction(session):
            discount_minor = await use_coupon(
                session, "edge", user.id, order_id, subtotal_minor, now
            )
        assert discount_minor == check.discount_minor
        assert await coupon_state(app, "EDGE") == (coupon.uses + 1, 1)
    else:
        assert refusal in check.message
        with pytest.raises(CouponError) as refused:
            async with write_transaction(session):
                await use_coupon(session, "edge", user.id, order_id, subtotal_minor, now)
        assert str(refused.value) == check.message
        assert await coupon_state(app, "EDGE") == (coupon.uses, 0)


@pytest.mark.parametrize(
    ("coupon_kwargs", "subtotal_minor", "expected"),
    [
        ({"is_active": False}, 20_000, "no longer active"),
        ({"min_subtotal_minor": 50_000}, 20_000, "needs a subtotal"),
        ({"ends_at": "past"}, 20_000, "expired"),
    ],
)
async def test_use_coupon_checks_the_rules_again(
    app, session, add_coupon, make_user, coupon_kwargs, subtotal_minor, expected
):
    user = await make_user()
    if coupon_kwargs.get("ends_at") == "past":
        coupon_kwargs["ends_at"] = utcnow() - timedelta(minutes=1)
    await add_coupon("RULES", **coupon_kwargs)
    [order_id] = await insert_orders(app, user, 1)
    with pytest.raises(CouponError, match=expected):
        async with write_transaction(session):
            await use_coupon(session, "RULES", user.id, order_id, subtotal_minor, utcnow())
    assert await coupon_state(app, "RULES") == (0, 0)


async def test_unknown_code_raises(app, session, make_user):
    user = await make_user()
    [order_id] = await insert_orders(app, user, 1)
    with pytest.raises(CouponError, match="don't know"):
        async with write_transaction(session):
            await use_coupon(session, "MISSING", user.id, order_id, 20_000, utcnow())


async def test_release_gives_the_use_back_once(app, session, add_coupon, make_user):
    user = await make_user()
    coupon = await add_coupon("BACK", max_uses=1, max_uses_per_customer=1)
    [order_id] = await insert_orders(app, user, 1)
    async with write_transaction(session):
        await use_coupon(session, "BACK", user.id, order_id, 20_000, utcnow())
    assert await coupon_state(app, "BACK") == (1, 1)
    async with write_transaction(session):
        assert await release_coupon_use(session, "back", order_id) is True
    assert await coupon_state(app, "BACK") == (0, 0)
    async with write_transaction(session):
        assert await release_coupon_use(session, coupon.id, order_id) is False
    assert await coupon_state(app, "BACK") == (0, 0)
    # The use is available again, to the same customer too.
    assert (await evaluate_coupon(session, "BACK", 20_000, user.id, utcnow())).valid


@pytest.mark.both_databases
async def test_concurrent_uses_never_exceed_the_global_limit(app, add_coupon, make_user):
    user = await make_user()
    await add_coupon("RACE", max_uses=5, uses=2)
    order_ids = await insert_orders(app, user, 20)

    async def attempt(order_id: int) -> bool:
        async with sessionmaker_for(app)() as own:
            try:
                async with write_transaction(own):
                    await use_coupon(own, "RACE", user.id, order_id, 20_000, utcnow())
            except CouponError:
                return False
        return True

    results = await asyncio.gather(*(attempt(order_id) for order_id in order_ids))
    assert sum(results) == 3
    assert await coupon_state(app, "RACE") == (5, 3)


@pytest.mark.both_databases
async def test_concurrent_uses_never_exceed_the_per_customer_limit(app, add_coupon, make_user):
    user = await make_user()
    await add_coupon("ONCEONLY", max_uses_per_customer=2)
    order_ids = await insert_orders(app, user, 12)

    async def attempt(order_id: int) -> bool:
        async with sessionmaker_for(app)() as own:
            try:
                async with write_transaction(own):
                    await use_coupon(own, "ONCEONLY", user.id, order_id, 20_000, utcnow())
            except CouponError:
                return False
        return True

    results = await asyncio.gather(*(attempt(order_id) for order_id in order_ids))
    assert sum(results) == 2
    assert await coupon_state(app, "ONCEONLY") == (2, 2)
