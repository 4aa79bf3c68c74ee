"""The only code that changes a wallet balance: every change writes its ledger entry."""

from dataclasses import dataclass

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from storefront.models import Wallet, WalletEntry


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


async def _move(
    session: AsyncSession,
    user_id: int,
    amount_minor: int,
    kind: str,
    source_reference: str,
    note: str,
    actor: str,
) -> LedgerResult:
    """Change the balance and write its entry in one savepoint: both happen or neither does."""
    if not isinstance(amount_minor, int) or isinstance(amount_minor, bool) or amount_minor == 0:
        raise WalletError("An amount must be a non-zero whole number of pesewas.")
    condition = [Wallet.user_id == user_id]
    if amount_minor < 0:
        condition.append(Wallet.balance_minor >= -amount_minor)
    try:
        async with session.begin_nested():
            row = (
                await session.execute(
                    update(Wallet)
                    .where(*condition)
                    .values(balance_minor=Wallet.balance_minor + amount_minor)
                    .returning(Wallet.id, Wallet.balance_minor)
                )
            ).one_or_none()
            if row is None:
                return await _refusal(session, user_id, -amount_minor)
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


async def _refusal(session: AsyncSession, user_id: int, needed_minor: int) -> LedgerResult:
    balance_minor = await session.scalar(
        select(Wallet.balance_minor).where(Wallet.user_id == user_id)
    )
    if balance_minor is None:
        raise WalletError("This account has no wallet.")
    raise InsufficientBalance(balance_minor, needed_minor)


async def ledger_entry_exists(session: AsyncSession, kind: str, source_reference: str) -> bool:
    found = await session.scalar(
        select(WalletEntry.id).where(
            WalletEntry.kind == kind, WalletEntry.source_reference == source_reference
        )
    )
    return found is not None


async def credit_wallet(
    session: AsyncSession,
    user_id: int,
    amount_minor: int,
    kind: str,
    source_reference: str,
    note: str = "",
    actor: str = "",
) -> LedgerResult:
    """Add money (top-up, refund, adjustment) once per (kind, source), in the caller's txn."""
    if amount_minor <= 0:
        raise WalletError("A credit must be a positive amount.")
    return await _move(session, user_id, amount_minor, kind, source_reference, note, actor)


async def debit_wallet(
    session: AsyncSession,
    user_id: int,
    amount_minor: int,
    kind: str,
    source_reference: str,
    note: str = "",
    actor: str = "",
) -> LedgerResult:
    """Take money only if the balance covers it (conditional update), with its ledger entry."""
    if amount_minor <= 0:
        raise WalletError("A debit must be a positive amount.")
    return await _move(session, user_id, -amount_minor, kind, source_reference, note, actor)


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
