"""Coupons in the back office: create, edit and end them, and list them with their uses.

Two rules beyond validation. Money values (kind, value, minimum subtotal) are the owner's to
set: staff may change a coupon's window, limits and active flag only. And a coupon that has
been used keeps its code, kind and value for good (orders and releases refer to them): it can
only be ended. That second rule holds under a race with a redemption: the change is a
conditional update on "no use yet", so either the redemption waits and prices the order with
the new value, or the change finds the use and is refused."""

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, exists, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from storefront.lib.money import format_minor
from storefront.models import Coupon, CouponRedemption, Order, User, utcnow
from storefront.models.coupon import CouponKind
from storefront.services.audit import changed_fields, record_change, snapshot, snapshot_of

COUPON_FIELDS = (
    "code",
    "kind",
    "value",
    "min_subtotal_minor",
    "starts_at",
    "ends_at",
    "max_uses",
    "max_uses_per_customer",
    "is_active",
)
MONEY_FIELDS = frozenset({"kind", "value", "min_subtotal_minor"})
FIXED_ONCE_USED = frozenset({"code", "kind", "value"})
REDEMPTIONS_SHOWN = 50


class CouponRefused(Exception):
    """A coupon change was refused; the message is fit for the person who asked, `field`
    names the coupon value it is about ("" for none in particular)."""

    def __init__(self, message: str, field: str = "") -> None:
        self.field = field
        super().__init__(message)


class BrokenCouponRule(CouponRefused):
    """The values break a rule between fields (a percent above 100, an end before the start)."""


class UnknownCoupon(CouponRefused):
    def __init__(self) -> None:
        super().__init__("There is no such coupon.")


class OwnerOnlyField(CouponRefused):
    """Staff tried to set a money value: the view answers 403."""


class CouponInUse(CouponRefused):
    def __init__(self, code: str, uses: int) -> None:
        super().__init__(
            f"{code} has been used ({uses} so far): its code, kind and value can no longer "
            "change. End it and make a new coupon instead.",
            "value",
        )


@dataclass(frozen=True)
class CouponRow:
    coupon: Coupon
    redemptions: int

    @property
    def ended(self) -> bool:
        return self.coupon.ends_at is not None and self.coupon.ends_at <= utcnow()


@dataclass(frozen=True)
class RedemptionRow:
    redemption: CouponRedemption
    order_number: str | None
    discount_minor: int | None
    email: str | None


def describe_value(kind: str, value: int) -> str:
    """ "10 %" for 1000 basis points, "GH₵ 20.00" for 2000 pesewas."""
    if kind == CouponKind.PERCENT:
        whole, fraction = divmod(value, 100)
        return f"{whole}.{fraction:02d} %".replace(".00 %", " %")
    return format_minor(value)


def _refuse_owner_only(actor: User, fields: set[str]) -> None:
    money = sorted(fields & MONEY_FIELDS)
    if money and not actor.is_owner:
        shown = ", ".join(name.removesuffix("_minor").replace("_", " ") for name in money)
        raise OwnerOnlyField(f"Only the owner may set a coupon's money values ({shown}).")


PERCENT_MIN_BP = 100  # 1 %
PERCENT_MAX_BP = 10_000  # 100 %


def check_coupon_rules(values: Mapping[str, Any]) -> None:
    """The rules between fields, on a coupon's whole set of values: a percent from 1 to 100,
    a fixed amount above 0, a window that ends after it starts."""
    if values["kind"] == CouponKind.PERCENT:
        if not PERCENT_MIN_BP <= values["value"] <= PERCENT_MAX_BP:
            raise BrokenCouponRule("A percent coupon takes off from 1 to 100 %.", "value")
    elif values["value"] <= 0:
        raise BrokenCouponRule("A fixed coupon takes off more than GH₵ 0.00.", "value")
    starts_at, ends_at = values["starts_at"], values["ends_at"]
    if starts_at is not None and ends_at is not None and ends_at <= starts_at:
        raise BrokenCouponRule("The coupon must end after it starts.", "ends_at")


def _code_taken(code: str) -> CouponRefused:
    return CouponRefused(f"There is already a coupon with the code {code}.", "code")


async def code_taken(session: AsyncSession, code: str, except_id: int | None = None) -> bool:
    """Whether another coupon has this code (codes are stored upper-cased)."""
    query = select(Coupon.id).where(Coupon.code == code.upper())
    if except_id is not None:
        query = query.where(Coupon.id != except_id)
    return await session.scalar(query.limit(1)) is not None


async def create_coupon(session: AsyncSession, actor: User, values: Mapping[str, Any]) -> Coupon:
    """A new coupon from validated values (every field of COUPON_FIELDS); the owner's only,
    since it sets money values."""
    _refuse_owner_only(actor, set(values))
    check_coupon_rules(values)
    if await code_taken(session, values["code"]):
        raise _code_taken(values["code"])
    coupon = Coupon(**{name: values[name] for name in COUPON_FIELDS}, uses=0)
    try:
        async with session.begin_nested():
            session.add(coupon)
            await session.flush()
    except IntegrityError as error:  # PostgreSQL: the same code created at the same moment
        raise _code_taken(coupon.code) from error
    await record_change(
        session, actor, "coupon.create", coupon, None, snapshot(coupon, COUPON_FIELDS)
    )
    return coupon


async def _locked_coupon(session: AsyncSession, coupon_id: int) -> Coupon:
    coupon = await session.scalar(
        select(Coupon)
        .where(Coupon.id == coupon_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if coupon is None:
        raise UnknownCoupon()
    return coupon


async def update_coupon(
    session: AsyncSession, actor: User, coupon_id: int, changes: Mapping[str, Any]
) -> Coupon:
    """Apply validated changes (any fields of COUPON_FIELDS) to a coupon; fields left out keep
    their values. Refused: money values by staff, code, kind or value once used, a limit
    below the uses so far, a code another coupon has."""
    coupon = await _locked_coupon(session, coupon_id)
    before = snapshot(coupon, COUPON_FIELDS)
    wanted = {**before, **snapshot_of(changes)}
    old, new = changed_fields(before, wanted)
    changing = set(new or ())
    if not changing:
        return coupon
    _refuse_owner_only(actor, changing)
    check_coupon_rules({name: changes.get(name, getattr(coupon, name)) for name in COUPON_FIELDS})
    if "code" in changing and await code_taken(session, changes["code"], except_id=coupon_id):
        raise _code_taken(changes["code"])
    conditions = [Coupon.id == coupon_id]
    if changing & FIXED_ONCE_USED:
        conditions += [
            Coupon.uses == 0,
            ~exists().where(CouponRedemption.coupon_id == coupon_id),
        ]
    max_uses = changes.get("max_uses")
    if "max_uses" in changing and max_uses is not None:
        conditions.append(Coupon.uses <= max_uses)
    values = {name: changes[name] for name in changing}
    try:
        async with session.begin_nested():
            result = await session.execute(
                update(Coupon)
                .where(and_(*conditions))
                .values(**values)
                .returning(Coupon.id)
                .execution_options(synchronize_session=False)
            )
            updated = result.scalar_one_or_none()
    except IntegrityError as error:
        raise _code_taken(changes.get("code", coupon.code)) from error
    if updated is None:
        raise await _update_refusal(session, coupon_id, changing, max_uses)
    coupon = await _locked_coupon(session, coupon_id)
    await record_change(session, actor, "coupon.update", coupon, old, new)
    return coupon


async def _update_refusal(
    session: AsyncSession, coupon_id: int, changing: set[str], max_uses: int | None
) -> CouponRefused:
    """Why the conditional update matched no row, from the coupon as it is now."""
    coupon = await session.get(Coupon, coupon_id, populate_existing=True)
    if coupon is None:
        return UnknownCoupon()
    if max_uses is not None and "max_uses" in changing and coupon.uses > max_uses:
        return CouponRefused(
            f"{coupon.code} has been used {coupon.uses} times: its limit cannot go below that.",
            "max_uses",
        )
    return CouponInUse(coupon.code, coupon.uses)


async def end_coupon(
    session: AsyncSession, actor: User, coupon_id: int, now: datetime | None = None
) -> tuple[Coupon, bool]:
    """End a coupon now (its window closes; uses and orders stay as they are). The coupon, and
    whether it was still running."""
    now = now or utcnow()
    coupon = await _locked_coupon(session, coupon_id)
    if coupon.ends_at is not None and coupon.ends_at <= now:
        return coupon, False
    before = snapshot(coupon, ("ends_at",))
    coupon.ends_at = now
    if coupon.starts_at is not None and coupon.starts_at > now:
        coupon.starts_at = now  # a coupon that had not started yet ends before it starts
    await session.flush()
    await record_change(
        session, actor, "coupon.end", coupon, before, snapshot(coupon, ("ends_at",))
    )
    return coupon, True


def _redemption_counts() -> Any:
    return (
        select(CouponRedemption.coupon_id, func.count().label("redemptions"))
        .group_by(CouponRedemption.coupon_id)
        .subquery()
    )


async def select_coupon_rows(session: AsyncSession, search: str = "") -> list[CouponRow]:
    """Every coupon (codes containing `search`), newest first, with its redemption count."""
    counts = _redemption_counts()
    query = (
        select(Coupon, func.coalesce(counts.c.redemptions, 0))
        .outerjoin(counts, counts.c.coupon_id == Coupon.id)
        .order_by(Coupon.id.desc())
    )
    if search:
        escaped = search.upper().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = query.where(Coupon.code.like(f"%{escaped}%", escape="\\"))
    return [CouponRow(coupon, int(count)) for coupon, count in (await session.execute(query))]


async def select_coupon_row(session: AsyncSession, coupon_id: int) -> CouponRow | None:
    coupon = await session.get(Coupon, coupon_id, populate_existing=True)
    if coupon is None:
        return None
    count = await session.scalar(
        select(func.count())
        .select_from(CouponRedemption)
        .where(CouponRedemption.coupon_id == coupon_id)
    )
    return CouponRow(coupon, int(count or 0))


async def select_redemptions(session: AsyncSession, coupon_id: int) -> list[RedemptionRow]:
    """The coupon's latest redemptions: which order, whose, with what discount."""
    rows = await session.execute(
        select(CouponRedemption, Order.number, Order.discount_minor, User.email)
        .outerjoin(Order, Order.id == CouponRedemption.order_id)
        .outerjoin(User, User.id == CouponRedemption.user_id)
        .where(CouponRedemption.coupon_id == coupon_id)
        .order_by(CouponRedemption.id.desc())
        .limit(REDEMPTIONS_SHOWN)
    )
    return [RedemptionRow(*row) for row in rows]
