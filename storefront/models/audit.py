"""The audit log: who changed what in the back office, before and after, in the same
transaction as the change."""

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from storefront.models.base import Base, utcnow


class AuditEntry(Base):
    """`record_type` and `record_id` name the changed row ("product", "12"); `before` and
    `after` hold the changed fields only (None for a creation's before or a deletion's after),
    money as pesewas. A NULL actor is the `storefront` command."""

    __tablename__ = "audit_log"
    __table_args__ = (
        Index("ix_audit_log_actor_id_id", "actor_id", "id"),
        Index("ix_audit_log_record_type_record_id_id", "record_type", "record_id", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    action: Mapped[str] = mapped_column(String(64))
    record_type: Mapped[str] = mapped_column(String(40))
    record_id: Mapped[str] = mapped_column(String(64))
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
