"""The only code that changes a wallet balance: every change writes its ledger entry."""

from dataclasses import dataclass
from typing import cast

from sqlalchemy import (
    BigInteger,
    DateTime,
    String,
    Table,
    Text,
    bindparam,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.util import identity_key

from storefront.db.engine import dialect_name
from storefront.lib.money import is_minor_units
from storefront.models import Wallet, WalletEntry, utcnow


class WalletError(Exception):
    """A wallet movement was refused; the message is fit for the shopper."""


class InsufficientBalance(WalletError):
    def __init__(self, balance_minor: int, needed_minor: int) -> None:
        self.balance_minor = balance_minor
        self.needed_minor = needed_minor
        self.shortfall_minor = needed_minor - balance_minor
        super().__init__("Your wallet balance is too low for this payment.")


class DuplicateLedgerEntry(WalletError):
    """This source has already moved money (a retry, a race or a replay); nothing changed."""


@dataclass(frozen=True)
class LedgerResult:
    entry_id: int
    balance_after_minor: int


def _check_amount(amount_minor: int) -> None:
    if not is_minor_units(amount_minor):
        raise WalletError("An amount must be a whole number of pesewas.")


async def _refusal(session: AsyncSession, user_id: int, needed_minor: int) -> LedgerResult:
    balance_minor = await session.scalar(
        select(Wallet.balance_minor).where(Wallet.user_id == user_id)
    )
    if balance_minor is None:
        raise WalletError("This account has no wallet.")
    raise InsufficientBalance(balance_minor, needed_minor)


async def credit_wallet(
    session: AsyncSession,
    user_id: int,
    amount_minor: int,
    kind: str,
    source_reference: str,
    note: str = "",
    actor: str = "",
) -> LedgerResult:
    """Add money (top-up, refund, adjustment) once per (kind, source), in the caller's txn.

    The balance and its entry change in one savepoint: after DuplicateLedgerEntry nothing
    changed and the caller's transaction goes on (payments log a replayed top-up and commit).
    """
    _check_amount(amount_minor)
    if amount_minor <= 0:
        raise WalletError("A credit must be a positive amount.")
    try:
        async with session.begin_nested():
            row = (
                await session.execute(
                    update(Wallet)
                    .where(Wallet.user_id == user_id)
                    .values(balance_minor=Wallet.balance_minor + amount_minor)
                    .returning(Wallet.id, Wallet.balance_minor)
                )
            ).one_or_none()
            if row is None:
                raise WalletError("This account has no wallet.")
            entry = WalletEntry(
                wallet_id=row.id,
                amount_minor=amount_minor,
                kind=kind,
                source_reference=source_reference,
                balance_after_minor=row.balance_minor,
                note=note,
                actor=actor,
            )
            session.add(entry)
            await session.flush()
    except IntegrityError as error:
        raise DuplicateLedgerEntry(f"{kind} {source_reference} is already in the ledger") from error
    return LedgerResult(entry.id, row.balance_minor)


# Built once: every wallet checkout runs them.
_wallets = cast(Table, Wallet.__table__)
_entries = cast(Table, WalletEntry.__table__)
_DEBIT_BALANCE = (
    update(_wallets)
    .where(
        _wallets.c.user_id == bindparam("owner_id"),
        _wallets.c.balance_minor >= bindparam("debit_minor"),
    )
    .values(
        balance_minor=_wallets.c.balance_minor - bindparam("debit_minor"),
        updated_at=bindparam("moved_at"),
    )
    .returning(_wallets.c.id, _wallets.c.balance_minor)
)
_ENTRY_VALUES = (
    (-bindparam("debit_minor", type_=BigInteger)).label("amount_minor"),
    bindparam("entry_kind", type_=String).label("kind"),
    bindparam("entry_reference", type_=String).label("source_reference"),
    bindparam("entry_note", type_=Text).label("note"),
    bindparam("entry_actor", type_=String).label("actor"),
    bindparam("moved_at", type_=DateTime).label("created_at"),
)
# PostgreSQL: the debit and its entry in one statement (a data-modifying CTE), which stands or
# falls as a whole. SQLite has no such CTE: _DEBIT_BALANCE, then _INSERT_DEBIT_ENTRY.
_debited = _DEBIT_BALANCE.cte("debited")
_DEBIT_WITH_ENTRY = (
    insert(_entries)
    .from_select(
        ["wallet_id", "balance_after_minor", *(value.name for value in _ENTRY_VALUES)],
        select(_debited.c.id, _debited.c.balance_minor, *_ENTRY_VALUES),
    )
    .returning(_entries.c.id, _entries.c.wallet_id, _entries.c.balance_after_minor)
)
_INSERT_DEBIT_ENTRY = insert(_entries).returning(_entries.c.id)
_CREDIT_BACK = (
    update(_wallets)
    .where(_wallets.c.id == bindparam("wallet_id"))
    .values(balance_minor=_wallets.c.balance_minor + bindparam("debit_minor"))
)


async def debit_wallet(
    session: AsyncSession,
    user_id: int,
    amount_minor: int,
    kind: str,
    source_reference: str,
    note: str = "",
    actor: str = "",
) -> LedgerResult:
    """Take money only if the balance covers it (conditional update), with its ledger entry.

    Without a savepoint: InsufficientBalance changes nothing and leaves the caller's
    transaction usable; after DuplicateLedgerEntry the caller must roll back (PostgreSQL has
    already failed the transaction).
    """
    _check_amount(amount_minor)
    if amount_minor <= 0:
        raise WalletError("A debit must be a positive amount.")
    values = {
        "owner_id": user_id,
        "debit_minor": amount_minor,
        "entry_kind": kind,
        "entry_reference": source_reference,
        "entry_note": note,
        "entry_actor": actor,
        "moved_at": utcnow(),
    }
    await session.flush()  # as the ORM would before an UPDATE: pending changes go first
    connection = await session.connection()
    try:
        if dialect_name(connection) == "postgresql":
            row = (await connection.execute(_DEBIT_WITH_ENTRY, values)).one_or_none()
            if row is None:
                return await _refusal(session, user_id, amount_minor)
            wallet_id, entry_id = row.wallet_id, row.id
            balance_after_minor = row.balance_after_minor
        else:
            debited = (await connection.execute(_DEBIT_BALANCE, values)).one_or_none()
            if debited is None:
                return await _refusal(session, user_id, amount_minor)
            wallet_id, balance_after_minor = debited.id, debited.balance_minor
            entry = {
                "wallet_id": wallet_id,
                "amount_minor": -amount_minor,
                "kind": kind,
                "source_reference": source_reference,
                "balance_after_minor": balance_after_minor,
                "note": note,
                "actor": actor,
                "created_at": values["moved_at"],
            }
            try:
                entry_id = (await connection.execute(_INSERT_DEBIT_ENTRY, entry)).scalar_one()
            except IntegrityError:
                # SQLite undid only the INSERT: give the money back, so that a caller who goes
                # on anyway cannot commit a debit without its entry.
                await connection.execute(
                    _CREDIT_BACK, {"wallet_id": wallet_id, "debit_minor": amount_minor}
                )
                raise
    except IntegrityError as error:
        raise DuplicateLedgerEntry(f"{kind} {source_reference} is already in the ledger") from error
    wallet = session.sync_session.identity_map.get(identity_key(Wallet, wallet_id))
    if wallet is not None:
        set_committed_value(wallet, "balance_minor", balance_after_minor)
    return LedgerResult(entry_id, balance_after_minor)


async def select_wallet(session: AsyncSession, user_id: int) -> Wallet | None:
    return await session.scalar(select(Wallet).where(Wallet.user_id == user_id))


async def select_wallet_entries(
    session: AsyncSession, wallet_id: int, page: int = 1, per_page: int = 20
) -> tuple[list[WalletEntry], int]:
    """One page of the ledger, newest first, and the number of entries in all."""
    total = await session.scalar(
        select(func.count()).select_from(WalletEntry).where(WalletEntry.wallet_id == wallet_id)
    )
    entries = await session.scalars(
        select(WalletEntry)
        .where(WalletEntry.wallet_id == wallet_id)
        .order_by(WalletEntry.id.desc())
        .limit(per_page)
        .offset((page - 1) * per_page)
    )
    return list(entries), int(total or 0)


async def select_ledger_mismatches(session: AsyncSession) -> list[tuple[int, int, int]]:
    """Wallets whose balance differs from the sum of their entries: (wallet_id, balance, sum)."""
    entry_sum = (
        select(func.coalesce(func.sum(WalletEntry.amount_minor), 0))
        .where(WalletEntry.wallet_id == Wallet.id)
        .scalar_subquery()
    )
    rows = await session.execute(
        select(Wallet.id, Wallet.balance_minor, entry_sum).where(Wallet.balance_minor != entry_sum)
    )
    return [(row[0], row[1], row[2]) for row in rows]
