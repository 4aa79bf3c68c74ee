"""The audit log: every back-office change leaves a row (who, what, which record, before and
after), written in the transaction of the change.

A back-office write opens `audited_write(session)` instead of `write_transaction(session)` and
records each change with `record_change` (or the `changing` block, which snapshots the fields
before and after). A block that writes rows but records no change is rolled back with
UnauditedChange, so a forgotten audit row fails loudly instead of silently."""

import re
from collections.abc import AsyncIterator, Hashable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import date, datetime
from enum import Enum
from typing import Any, TypeVar

from sqlalchemy import event, inspect, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from storefront.db.transactions import write_transaction
from storefront.models import AuditEntry, Base, User
from storefront.models.user import BACK_OFFICE_ROLES

JsonValue = None | bool | int | str | list[Any] | dict[str, Any]
Snapshot = dict[str, JsonValue]
R = TypeVar("R", bound=Base)


@dataclass(frozen=True)
class RecordRef:
    """A record that is not one ORM row, e.g. RecordRef("settings", "shop")."""

    record_type: str
    record_id: str | int


class UnauditedChange(RuntimeError):
    """A back-office write changed rows without recording an audit entry (a bug)."""


def json_safe(value: Any) -> JsonValue:
    """A JSON-friendly copy: enums as their value, times as ISO 8601, money stays pesewas."""
    if value is None or isinstance(value, bool | int | str):
        return value.value if isinstance(value, Enum) else value
    if isinstance(value, Enum):
        return json_safe(value.value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [json_safe(item) for item in value]
    return str(value)


def snapshot(record: Base, fields: Iterable[str]) -> Snapshot:
    """The named attributes of a loaded row, JSON-safe."""
    return {name: json_safe(getattr(record, name)) for name in fields}


def changed_fields(
    before: Snapshot | None, after: Snapshot | None
) -> tuple[Snapshot | None, Snapshot | None]:
    """Only the fields whose values differ (a creation or deletion keeps its whole side)."""
    if before is None or after is None:
        return before, after
    names = [name for name in {**before, **after} if before.get(name) != after.get(name)]
    return {name: before.get(name) for name in names}, {name: after.get(name) for name in names}


def record_type_of(model: type[Base]) -> str:
    """`product` for Product, `product_image` for ProductImage."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", model.__name__).lower()


async def _record_key(session: AsyncSession, record: Base | RecordRef) -> tuple[str, str]:
    if isinstance(record, RecordRef):
        return record.record_type, str(record.record_id)
    identity = inspect(record).identity
    if identity is None:
        await session.flush()  # a new row: its id comes from the database
        identity = inspect(record).identity
    assert identity is not None, "an audited record must be a row in the session"
    return record_type_of(type(record)), ":".join(str(part) for part in identity)


async def record_change(
    session: AsyncSession,
    actor: User | None,
    action: str,
    record: Base | RecordRef,
    before: Mapping[str, Any] | None,
    after: Mapping[str, Any] | None,
) -> AuditEntry | None:
    """Add the audit row for a change, in the caller's write transaction; None (and no row)
    when nothing changed. `before` is None for a creation, `after` for a deletion; a None
    actor is the `storefront` command."""
    assert session.in_transaction(), "record the change inside its write transaction"
    old, new = changed_fields(
        None if before is None else snapshot_of(before),
        None if after is None else snapshot_of(after),
    )
    if old == new:
        return None
    record_type, record_id = await _record_key(session, record)
    entry = AuditEntry(
        actor_id=actor.id if actor is not None else None,
        action=action,
        record_type=record_type,
        record_id=record_id,
        before=old,
        after=new,
    )
    session.add(entry)
    await session.flush()
    return entry


def snapshot_of(values: Mapping[str, Any]) -> Snapshot:
    return {str(name): json_safe(value) for name, value in values.items()}


@asynccontextmanager
async def changing(
    session: AsyncSession, actor: User | None, action: str, record: R, fields: Iterable[str]
) -> AsyncIterator[R]:
    """Snapshot `fields` of `record`, let the block change its attributes, then record what
    changed: `async with changing(session, actor, "product.update", product, FIELDS):`."""
    names = list(fields)
    before = snapshot(record, names)
    yield record
    await session.flush()
    await record_change(session, actor, action, record, before, snapshot(record, names))


WRITE_STATEMENT = re.compile(r'\s*(?:INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+"?(\w+)', re.IGNORECASE)


class _WriteCounter:
    """Counts the rows each INSERT, UPDATE or DELETE on the transaction's connection touched."""

    def __init__(self) -> None:
        self.audit_rows = 0
        self.other_rows = 0

    def __call__(self, _connection: Any, cursor: Any, statement: str, *_rest: Any) -> None:
        written = WRITE_STATEMENT.match(statement)
        if written is None:
            return
        rows = cursor.rowcount
        if rows == 0:
            return
        if written.group(1).lower() == AuditEntry.__tablename__:
            self.audit_rows += 1
        else:
            self.other_rows += 1


@asynccontextmanager
async def audited_write(
    session: AsyncSession, turn: Hashable | None = None
) -> AsyncIterator[AsyncSession]:
    """write_transaction for a back-office change: the block must record_change what it
    changed; rows written without an audit row roll the whole write back (UnauditedChange)."""
    async with write_transaction(session, turn):
        connection = (await session.connection()).sync_connection
        counter = _WriteCounter()
        event.listen(connection, "after_cursor_execute", counter)
        try:
            yield session
            await session.flush()
        finally:
            event.remove(connection, "after_cursor_execute", counter)
        if counter.other_rows and not counter.audit_rows:
            raise UnauditedChange(
                "a back-office write changed rows without record_change: nothing was saved"
            )


@dataclass(frozen=True)
class AuditRow:
    entry: AuditEntry
    actor_email: str | None


async def select_audit_rows(
    session: AsyncSession,
    *,
    actor_id: int | None = None,
    record_type: str | None = None,
    record_id: str | None = None,
    before_id: int | None = None,
    limit: int = 50,
) -> list[AuditRow]:
    """Newest first, filtered by actor and record, older than `before_id` (keyset paging)."""
    query = (
        select(AuditEntry, User.email)
        .outerjoin(User, User.id == AuditEntry.actor_id)
        .order_by(AuditEntry.id.desc())
        .limit(limit)
    )
    if actor_id is not None:
        query = query.where(AuditEntry.actor_id == actor_id)
    if record_type is not None:
        query = query.where(AuditEntry.record_type == record_type)
    if record_id is not None:
        query = query.where(AuditEntry.record_id == record_id)
    if before_id is not None:
        query = query.where(AuditEntry.id < before_id)
    return [AuditRow(entry, email) for entry, email in (await session.execute(query)).all()]


async def select_audit_actors(session: AsyncSession) -> list[tuple[int, str]]:
    """(id, email) of everyone who may appear as an actor: staff, owners and past actors."""
    past_actors = select(AuditEntry.actor_id).where(AuditEntry.actor_id.is_not(None)).distinct()
    rows = await session.execute(
        select(User.id, User.email)
        .where(or_(User.role.in_(BACK_OFFICE_ROLES), User.id.in_(past_actors)))
        .order_by(User.email)
    )
    return [(user_id, email) for user_id, email in rows.all()]
