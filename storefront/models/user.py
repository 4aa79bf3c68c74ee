"""Users and their wallets with the ledger that explains every balance."""

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
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from storefront.models.base import Base, one_of, utcnow


class UserRole(StrEnum):
    """`staff` runs the catalogue, stock and fulfilment; `owner` everything, roles included."""

    CUSTOMER = "customer"
    STAFF = "staff"
    OWNER = "owner"


BACK_OFFICE_ROLES = frozenset({UserRole.STAFF, UserRole.OWNER})


class WalletEntryKind(StrEnum):
    TOPUP = "topup"
    PAYMENT = "payment"
    REFUND = "refund"
    ADJUSTMENT = "adjustment"


class User(Base):
    __tablename__ = "users"
    __table_args__ = (CheckConstraint(one_of("role", UserRole), name="role"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    name: Mapped[str] = mapped_column(String(120), default="")
    phone: Mapped[str] = mapped_column(String(32), default="")
    role: Mapped[str] = mapped_column(String(16), default=UserRole.CUSTOMER)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    @property
    def can_use_back_office(self) -> bool:
        """Staff or owner: may open /admin (each route still checks its own role)."""
        return self.role in BACK_OFFICE_ROLES

    @property
    def is_owner(self) -> bool:
        return self.role == UserRole.OWNER


class Login(Base):
    """One signed-in browser: its login cookie carries a random token, this row its SHA-256.
    Logging out deletes the row, so a copy of the cookie stops working too."""

    __tablename__ = "logins"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Wallet(Base):
    __tablename__ = "wallets"
    __table_args__ = (CheckConstraint("balance_minor >= 0", name="balance_not_negative"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), unique=True)
    balance_minor: Mapped[int] = mapped_column(BigInteger, default=0)
    currency: Mapped[str] = mapped_column(String(3), default="GHS")
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)


class WalletEntry(Base):
    __tablename__ = "wallet_entries"
    __table_args__ = (
        UniqueConstraint("kind", "source_reference"),
        CheckConstraint("amount_minor <> 0", name="amount_not_zero"),
        CheckConstraint("balance_after_minor >= 0", name="balance_after_not_negative"),
        CheckConstraint(one_of("kind", WalletEntryKind), name="kind"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    wallet_id: Mapped[int] = mapped_column(ForeignKey("wallets.id", ondelete="CASCADE"), index=True)
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(16))
    source_reference: Mapped[str] = mapped_column(String(100))
    balance_after_minor: Mapped[int] = mapped_column(BigInteger)
    note: Mapped[str] = mapped_column(Text, default="")
    actor: Mapped[str] = mapped_column(String(254), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
