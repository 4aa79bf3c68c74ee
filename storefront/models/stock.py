"""The stock ledger: every change of a product's stock is one movement, so that a product's
stock equals the sum of its movements."""

from datetime import datetime
from enum import StrEnum

from sqlalchemy import CheckConstraint, DateTime, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from storefront.models.base import Base, one_of, utcnow


class StockMovementKind(StrEnum):
    SALE = "sale"  # an order took stock (negative)
    CANCEL = "cancel"  # a cancelled order gave it back (positive)
    RELEASE = "release"  # an abandoned or failed payment gave its reservation back (positive)
    ADJUSTMENT = "adjustment"  # a count corrected by hand, with a reason (either sign)
    RESTOCK = "restock"  # goods came in (positive)


class StockMovement(Base):
    __tablename__ = "stock_movements"
    __table_args__ = (
        Index("ix_stock_movements_product_id_id", "product_id", "id"),
        CheckConstraint("change <> 0", name="change_not_zero"),
        CheckConstraint(one_of("kind", StockMovementKind), name="kind"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id", ondelete="CASCADE"))
    change: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text, default="")
    # Who moved it by hand; empty for sales, cancellations and releases the shop made itself.
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    order_id: Mapped[int | None] = mapped_column(
        ForeignKey("orders.id", ondelete="SET NULL"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
