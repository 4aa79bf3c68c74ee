"""Coupons and who used them on which order."""

from datetime import datetime
from enum import StrEnum

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Integer,
    String,
)
from sqlalchemy.orm import Mapped, mapped_column

from storefront.models.base import Base, one_of, quoted, utcnow


class CouponKind(StrEnum):
    PERCENT = "percent"
    FIXED = "fixed"


class Coupon(Base):
    """`code` is stored upper-cased and trimmed, so uniqueness is case-insensitive.

    `value` is basis points for `percent` (1000 = 10 %) and pesewas for `fixed`.
    """

    __tablename__ = "coupons"
    __table_args__ = (
        CheckConstraint(one_of("kind", CouponKind), name="kind"),
        CheckConstraint("value > 0", name="value_positive"),
        CheckConstraint(
            f"kind <> {quoted(CouponKind.PERCENT)} OR value <= 10000", name="percent_at_most_100"
        ),
        CheckConstraint("uses >= 0", name="uses_not_negative"),
        CheckConstraint("max_uses IS NULL OR uses <= max_uses", name="uses_within_max"),
        CheckConstraint("min_subtotal_minor >= 0", name="min_subtotal_not_negative"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(40), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    value: Mapped[int] = mapped_column(BigInteger)
    min_subtotal_minor: Mapped[int] = mapped_column(BigInteger, default=0)
    starts_at: Mapped[datetime | None] = mapped_column(DateTime)
    ends_at: Mapped[datetime | None] = mapped_column(DateTime)
    max_uses: Mapped[int | None] = mapped_column(Integer)
    uses: Mapped[int] = mapped_column(Integer, default=0)
    max_uses_per_customer: Mapped[int | None] = mapped_column(Integer)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class CouponRedemption(Base):
    __tablename__ = "coupon_redemptions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    coupon_id: Mapped[int] = mapped_column(ForeignKey("coupons.id", ondelete="CASCADE"), index=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
