"""Coupon rules: check a code against a subtotal, use it on an order, give the use back."""

from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, Table, bindparam, delete, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.util import identity_key

from storefront.lib.money import format_minor, percent_discount_minor
from storefront.models import Coupon, CouponRedemption
from storefront.models.coupon import CouponKind

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
    return _discount(coupon.kind, coupon.value, subtotal_minor)


def _discount(kind: str, value: int, subtotal_minor: int) -> int:
    discount_minor = (
        percent_discount_minor(subtotal_minor, value) if kind == CouponKind.PERCENT else value
    )
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


# Built once. The conditional use carries every rule of _rule_refusal, so using a coupon needs
# no read first; the coupon is read again only to say why a use was refused.
_coupons = cast(Table, Coupon.__table__)
_USE_COUPON = (
    update(_coupons)
    .where(
        _coupons.c.code == bindparam("coupon_code"),
        _coupons.c.is_active.is_(True),
        or_(_coupons.c.starts_at.is_(None), _coupons.c.starts_at <= bindparam("used_at")),
        or_(_coupons.c.ends_at.is_(None), _coupons.c.ends_at > bindparam("used_at")),
        _coupons.c.min_subtotal_minor <= bindparam("subtotal_minor"),
        or_(_coupons.c.max_uses.is_(None), _coupons.c.uses < _coupons.c.max_uses),
    )
    .values(uses=_coupons.c.uses + 1)
    .returning(
        _coupons.c.id,
        _coupons.c.code,
        _coupons.c.kind,
        _coupons.c.value,
        _coupons.c.uses,
        _coupons.c.max_uses_per_customer,
    )
)
_GIVE_USE_BACK = (
    update(_coupons)
    .where(_coupons.c.id == bindparam("coupon_id"))
    .values(uses=_coupons.c.uses - 1)
    .returning(_coupons.c.uses)
)
_INSERT_REDEMPTION = insert(cast(Table, CouponRedemption.__table__))


async def use_coupon(
    session: AsyncSession,
    code: str,
    user_id: int,
    order_id: int,
    subtotal_minor: int,
    now: datetime,
) -> int:
    """Count one use of the coupon for this order and customer; return its discount_minor.

    A refusal (CouponError) leaves the coupon as it was and the caller's transaction usable.
    """
    normalised = normalise_code(code)
    await session.flush()  # as the ORM would before an UPDATE: pending changes go first
    connection = await session.connection()
    used = None
    if normalised and subtotal_minor > 0:
        used = (
            await connection.execute(
                _USE_COUPON,
                {"coupon_code": normalised, "used_at": now, "subtotal_minor": subtotal_minor},
            )
        ).one_or_none()
    if used is None:
        raise CouponError(await _use_refusal(session, normalised, subtotal_minor, now))
    uses = used.uses
    # The conditional update came first: on PostgreSQL it locks the coupon row, so the
    # per-customer count below cannot race another order of the same customer.
    if used.max_uses_per_customer is not None:
        count = await count_customer_redemptions(session, used.id, user_id)
        if count >= used.max_uses_per_customer:
            uses = (await connection.execute(_GIVE_USE_BACK, {"coupon_id": used.id})).scalar_one()
            _show_uses(session, used.id, uses)
            raise CouponError(_customer_limit_message(used.code))
    await connection.execute(
        _INSERT_REDEMPTION,
        {"coupon_id": used.id, "order_id": order_id, "user_id": user_id, "created_at": now},
    )
    _show_uses(session, used.id, uses)
    return _discount(used.kind, used.value, subtotal_minor)


async def _use_refusal(
    session: AsyncSession, normalised: str, subtotal_minor: int, now: datetime
) -> str:
    """Why the conditional use matched no coupon, from the coupon as it is now."""
    coupon = None
    if normalised and len(normalised) <= MAX_CODE_LENGTH:
        coupon = await select_coupon_by_code(session, normalised)
    if coupon is None:
        return _unknown_message(normalised)
    return (
        _rule_refusal(coupon, subtotal_minor, now) or f"The code {coupon.code} has been fully used."
    )


def _show_uses(session: AsyncSession, coupon_id: int, uses: int) -> None:
    """A Coupon loaded in this session shows the new count without another query."""
    coupon = session.sync_session.identity_map.get(identity_key(Coupon, coupon_id))
    if coupon is not None:
        set_committed_value(coupon, "uses", uses)


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
