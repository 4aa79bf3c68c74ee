"""Gateway payments and the webhook events Paystack sent about them."""

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from storefront.models.base import Base, one_of, utcnow


class PaymentPurpose(StrEnum):
    ORDER = "order"
    WALLET_TOPUP = "wallet_topup"


class PaymentStatus(StrEnum):
    PENDING = "pending"
    SUCCESS = "success"
    FAILED = "failed"
    ABANDONED = "abandoned"


class GatewayStatus(StrEnum):
    """The final statuses Paystack reports for a transaction (not stored in a column of ours);
    ongoing, pending, processing and queued are not final and need no name."""

    SUCCESS = "success"
    FAILED = "failed"
    REVERSED = "reversed"
    ABANDONED = "abandoned"


class PaymentLookup(StrEnum):
    """What a payment's state says when no payment of ours carries the reference (never stored:
    the callback answers 404 for it)."""

    UNKNOWN = "unknown"


class Payment(Base):
    __tablename__ = "payments"
    __table_args__ = (
        CheckConstraint(one_of("purpose", PaymentPurpose), name="purpose"),
        CheckConstraint(one_of("status", PaymentStatus), name="status"),
        CheckConstraint("amount_minor > 0", name="amount_positive"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    reference: Mapped[str] = mapped_column(String(100), unique=True)
    purpose: Mapped[str] = mapped_column(String(16))
    order_id: Mapped[int | None] = mapped_column(ForeignKey("orders.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3), default="GHS")
    status: Mapped[str] = mapped_column(String(16), default=PaymentStatus.PENDING, index=True)
    gateway_response: Mapped[str] = mapped_column(Text, default="")
    failure_reason: Mapped[str] = mapped_column(Text, default="")
    authorization_url: Mapped[str] = mapped_column(String(500), default="")
    verified_payload: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    verified_at: Mapped[datetime | None] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)


class WebhookEvent(Base):
    __tablename__ = "webhook_events"
    __table_args__ = (UniqueConstraint("event", "reference"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    event: Mapped[str] = mapped_column(String(64))
    reference: Mapped[str] = mapped_column(String(100))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    received_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    processed_at: Mapped[datetime | None] = mapped_column(DateTime)
