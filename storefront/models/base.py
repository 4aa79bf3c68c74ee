"""Declarative base, naming convention and the clock every table uses (naive UTC)."""

from datetime import UTC, datetime
from enum import StrEnum

from sqlalchemy import MetaData
from sqlalchemy.orm import DeclarativeBase

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def one_of(column: str, values: type[StrEnum]) -> str:
    """CHECK text allowing exactly the enum's values, e.g. `status IN ('pending', 'sent')`."""
    return f"{column} IN ({', '.join(quoted(value) for value in values)})"


def quoted(value: StrEnum) -> str:
    """An enum value as an SQL string literal (the values hold no quotes)."""
    return "'" + value + "'"


def utcnow() -> datetime:
    """Naive UTC: the same on SQLite (no time zones) and PostgreSQL (timestamp without tz)."""
    return datetime.now(UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
