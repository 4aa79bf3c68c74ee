"""Coupon rules: check a code against a subtotal, use it on an order, give the use back."""

from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from storefront.lib.money import format_minor, percent_discount_minor
from storefront.models import Coupon, CouponRedemption

MAX_CODE_LENGTH = 40


class CouponError(Exception):
    """A coupon cannot be used; the message is fit for the shopper."""


@dataclass(frozen=True)
class CouponCheck:
    valid: bool
    code: str
    message: str
    discount_minor: int = 0
    coupon_id: int | None = None


def normalise_code(code: object) -> str:
    """Codes are case-insensitive and trimmed: " welcome10 " is WELCOME10."""
    return code.strip().upper() if isinstance(code, str) else ""


def discount_for(coupon: Coupon, subtotal_minor: int) -> int:
    """The coupon's discount on this subtotal, never more than the subtotal."""
    if coupon.kind == "percent":
        discount_minor = percent_discount_minor(subtotal_minor, coupon.value)
    else:
        discount_minor = coupon.value
    return max(0, min(discount_minor, subtotal_minor))


async def select_coupon_by_code(session: AsyncSession, code: str) -> Coupon | None:
    """The coupon with this code (any case, surrounding spaces ignored)."""
    normalised = normalise_code(code)
    if not normalised:
        return None
    return await session.scalar(
        select(Coupon)
        .where(Coupon.code == normalised)
        .execution_options(populate_existing=True)  # limits and uses as they are now
    )


async def count_customer_redemptions(session: AsyncSession, coupon_id: int, user_id: int) -> int:
    """How many orders of this customer used this coupon."""
    count = await session.scalar(
        select(func.count())
        .select_from(CouponRedemption)
        .where(CouponRedemption.coupon_id == coupon_id, CouponRedemption.user_id == user_id)
    )
    return int(count or 0)


def _date(moment: datetime) -> str:
    return f"{moment:%d %b %Y, %H:%M} UTC"


def _rule_refusal(coupon: Coupon, subtotal_minor: int, now: datetime) -> str | None:
    """Why the coupon does not apply (apart from per-customer uses), or None when it does."""
    code = coupon.code
    if not coupon.is_active:
        return f"The code {code} is no longer active."
    if coupon.starts_at is not None and now < coupon.starts_at:
        return f"The code {code} starts on {_date(coupon.starts_at)}."
    if coupon.ends_at is not None and now >= coupon.ends_at:
        return f"The code {code} expired on {_date(coupon.ends_at)}."
    if subtotal_minor <= 0:
        return "Add something to your cart before applying a coupon."
    if subtotal_minor < coupon.min_subtotal_minor:
        missing_minor = coupon.min_subtotal_minor - subtotal_minor
        return (
            f"The code {code} needs a subtotal of at least "
            f"{format_minor(coupon.min_subtotal_minor)}; add {format_minor(missing_minor)} more."
        )
    if coupon.max_uses is not None and coupon.uses >= coupon.max_uses:
        return f"The code {code} has been fully used."
    return None


def _customer_limit_message(code: str) -> str:
    return f"You have already used the code {code} as many times as it allows."


def _unknown_message(code: str) -> str:
    if not code:
        return "Enter a coupon code."
    if len(code) > MAX_CODE_LENGTH:
        return "That coupon code is too long."
    return f"We don't know the code {code}. Check the spelling."


async def evaluate_coupon(
    session: AsyncSession,
    code: str,
    subtotal_minor: int,
    user_id: int | None,
    now: datetime,
) -> CouponCheck:
    """Whether the code applies to this subtotal now (and for this customer), and its discount."""
    normalised = normalise_code(code)
    coupon = None
    if normalised and len(normalised) <= MAX_CODE_LENGTH:
        coupon = await select_coupon_by_code(session, normalised)
    if coupon is None:
        return CouponCheck(False, normalised, _unknown_message(normalised))
    refusal = _rule_refusal(coupon, subtotal_minor, now)
    if refusal is not None:
        return CouponCheck(False, coupon.code, refusal, coupon_id=coupon.id)
    if user_id is not None and coupon.max_uses_per_customer is not None:
        used = await count_customer_redemptions(session, coupon.id, user_id)
        if used >= coupon.max_uses_per_customer:
            return CouponCheck(
                False, coupon.code, _customer_limit_message(coupon.code), coupon_id=coupon.id
            )
    discount_minor = discount_for(coupon, subtotal_minor)
    return CouponCheck(
        True,
        coupon.code,
        f"{coupon.code} applied: {format_minor(discount_minor)} off.",
        discount_minor,
        coupon.id,
    )


async def use_coupon(
    session: AsyncSession,
    code: str,
    user_id: int,
    order_id: int,
    subtotal_minor: int,
    now: datetime,
) -> int:
    """Count one use of the coupon for this order and customer; return its discount_minor."""
    coupon = await select_coupon_by_code(session, code)
    if coupon is None:
        raise CouponError(_unknown_message(normalise_code(code)))
    refusal = _rule_refusal(coupon, subtotal_minor, now)
    if refusal is not None:
        raise CouponError(refusal)
    # A savepoint, so a refusal undoes the use even when the caller catches CouponError.
    async with session.begin_nested():
        # The conditional update comes first: on PostgreSQL it locks the coupon row, so the
        # per-customer count below cannot race another order of the same customer.
        result = cast(
            CursorResult[Any],
            await session.execute(
                update(Coupon)
                .where(
                    Coupon.id == coupon.id,
                    Coupon.is_active.is_(True),
                    (Coupon.max_uses.is_(None)) | (Coupon.uses < Coupon.max_uses),
                )
                .values(uses=Coupon.uses + 1)
            ),
        )
        if result.rowcount != 1:
            raise CouponError(f"The code {coupon.code} has been fully used.")
        if coupon.max_uses_per_customer is not None:
            used = await count_customer_redemptions(session, coupon.id, user_id)
            if used >= coupon.max_uses_per_customer:
                raise CouponError(_customer_limit_message(coupon.code))
        session.add(CouponRedemption(coupon_id=coupon.id, order_id=order_id, user_id=user_id))
        await session.flush()
    return discount_for(coupon, subtotal_minor)


async def release_coupon_use(
    session: AsyncSession, coupon_id_or_code: int | str, order_id: int
) -> bool:
    """Give back the use an order made (cancelled payment); False when it held none."""
    if isinstance(coupon_id_or_code, str):
        coupon = await select_coupon_by_code(session, coupon_id_or_code)
        if coupon is None:
            return False
        coupon_id = coupon.id
    else:
        coupon_id = coupon_id_or_code
    removed = cast(
        CursorResult[Any],
        await session.execute(
            delete(CouponRedemption)
            .where(CouponRedemption.coupon_id == coupon_id, CouponRedemption.order_id == order_id)
            .execution_options(synchronize_session=False)
        ),
    )
    if removed.rowcount != 1:
        return False
    await session.execute(
        update(Coupon).where(Coupon.id == coupon_id, Coupon.uses > 0).values(uses=Coupon.uses - 1)
    )
    return True
