"""The `storefront` command: migrate the database, seed the demo shop, make owners, credit wallets.

Every command reads DATABASE_URL (or .env). Bad arguments print one line and exit 2; a database
that cannot be reached or is not migrated prints one line and exits 1.
"""

import argparse
import asyncio
import getpass
import sys
import threading
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, NoReturn

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from email_validator import EmailNotValidError, validate_email
from sqlalchemy import event, update
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import NullPool

from storefront import PROJECT_ROOT
from storefront.config import database_url_from_env
from storefront.db.engine import WRITE_OPTION, dialect_name, make_engine, make_sessionmaker
from storefront.db.transactions import write_transaction
from storefront.demo import catalog_is_empty, seed_demo
from storefront.lib.money import InvalidAmount, format_minor, parse_amount
from storefront.models import User
from storefront.models.user import UserRole, WalletEntryKind
from storefront.services.audit import record_change
from storefront.services.users import (
    hash_password,
    insert_user,
    password_problem,
    select_user_by_email,
)
from storefront.services.wallet import WalletError, credit_wallet
from storefront.supervisor import DEFAULT_CONFIG_PATH, serve

EXIT_FAILURE = 1
EXIT_USAGE = 2


class UsageError(Exception):
    """A bad argument: the message is printed as one line and the command exits 2."""


class OneLineArgumentParser(argparse.ArgumentParser):
    """argparse, but a mistake prints one line instead of the usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(
        prog="storefront", description="Run and administer the CyberWorld Storefront."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    db_parser = commands.add_parser("db", help="database schema (Alembic migrations)")
    db_commands = db_parser.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    db_commands.add_parser("upgrade", help="migrate the database to the newest schema")

    seed_parser = commands.add_parser(
        "seed-demo", help="add the demo catalogue, sliders and coupons (safe to repeat)"
    )
    seed_parser.add_argument(
        "--if-empty", action="store_true", help="do nothing when the shop already has products"
    )

    admin_parser = commands.add_parser(
        "create-admin", help="create an owner account, or make an existing user an owner"
    )
    admin_parser.add_argument("email")
    admin_parser.add_argument("--password", help="asked for when not given (new accounts only)")
    admin_parser.add_argument("--name", default="", help="display name for a new account")

    credit_parser = commands.add_parser(
        "wallet-credit", help="add money to a customer's wallet, with a ledger entry"
    )
    credit_parser.add_argument("email")
    credit_parser.add_argument("amount", help='in cedis as typed, e.g. "50.00"')
    credit_parser.add_argument("--note", required=True, help="why (kept in the ledger)")

    serve_parser = commands.add_parser(
        "serve", help="serve the shop with hypercorn workers, starting a new one when one dies"
    )
    serve_parser.add_argument(
        "--config", type=Path, default=DEFAULT_CONFIG_PATH, help="hypercorn settings (TOML)"
    )
    return parser


def alembic_config() -> Config:
    """Alembic settings pointing at migrations/; the URL comes from the connection we hand over."""
    config = Config(str(PROJECT_ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(PROJECT_ROOT / "migrations"))
    config.attributes["configure_logger"] = False
    return config


def _run_alembic(connection: Connection, action: str, revision: str) -> str | None:
    config = alembic_config()
    config.attributes["connection"] = connection
    getattr(command, action)(config, revision)
    return MigrationContext.configure(connection).get_current_revision()


async def migrate_database(
    database_url: str, action: Literal["upgrade", "downgrade"] = "upgrade", revision: str = "head"
) -> str:
    """Run Alembic's upgrade (or downgrade) in one transaction; return the revision reached."""
    engine = make_engine(database_url, poolclass=NullPool)
    on_sqlite = dialect_name(database_url) == "sqlite"
    if on_sqlite:
        # SQLite alters a table by copying it, dropping the old one and renaming the copy: with
        # foreign keys on, the drop would delete (ON DELETE CASCADE) every wallet and cart of
        # the users table, or refuse for their orders. SQLite's own recipe for such changes:
        # keys off while migrating (set before the transaction begins), then check them.
        event.listen(engine.sync_engine, "connect", _foreign_keys_off)
    try:
        # A writer from the start (SQLite: BEGIN IMMEDIATE), so a running shop cannot lock it out.
        async with engine.execution_options(**{WRITE_OPTION: True}).begin() as connection:
            reached = await connection.run_sync(_run_alembic, action, revision)
            if on_sqlite:
                await connection.run_sync(_check_foreign_keys)
    finally:
        await engine.dispose()
    return reached or "base"


def _foreign_keys_off(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=OFF")
    cursor.close()


def _check_foreign_keys(connection: Connection) -> None:
    """Refuse (and so roll back) a migration that left a reference to a missing row."""
    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
    if broken:
        raise RuntimeError(f"the migration left rows referring to missing rows: {broken[:5]}")


def _printable_url(database_url: str) -> str:
    return make_url(database_url).render_as_string(hide_password=True)


async def _db_upgrade(database_url: str) -> str:
    reached = await migrate_database(database_url)
    return f"database {_printable_url(database_url)} is at revision {reached} (head)"


async def _seed_demo(engine: AsyncEngine, if_empty: bool) -> str:
    async with make_sessionmaker(engine)() as session, write_transaction(session):
        if if_empty and not await catalog_is_empty(session):
            return "the catalogue already has products; demo data not added"
        report = await seed_demo(session)
    return f"demo data: {report}"


def _checked_email(email: str) -> str:
    try:
        return validate_email(
            email, check_deliverability=False, test_environment=True
        ).normalized.lower()
    except EmailNotValidError as error:
        raise UsageError(f"{email!r} is not a valid email address: {error}") from error


def _ask_password() -> str:
    password = getpass.getpass("Password for the new owner: ")
    if password != getpass.getpass("Same password again: "):
        raise UsageError("the two passwords differ")
    return password


async def _create_admin(engine: AsyncEngine, email: str, password: str | None, name: str) -> str:
    email = _checked_email(email)
    sessionmaker = make_sessionmaker(engine)
    async with sessionmaker() as session:
        exists = await select_user_by_email(session, email) is not None
    if not exists:
        # Asked outside any transaction: on SQLite a writer would lock the shop while we wait.
        if password is None:
            password = _ask_password()
        problem = password_problem(password, email)
        if problem is not None:
            raise UsageError(f"the password is not accepted: {problem}")
    async with sessionmaker() as session, write_transaction(session):
        user = await select_user_by_email(session, email)
        if user is not None:
            kept = " (password unchanged)" if password is not None else ""
            if user.role == UserRole.OWNER:
                return f"{email} is already an owner{kept}"
            await record_change(
                session, None, "user.role", user, {"role": user.role}, {"role": UserRole.OWNER}
            )
            await session.execute(
                update(User).where(User.id == user.id).values(role=UserRole.OWNER)
            )
            return f"{email} is now an owner{kept}"
        assert password is not None
        user = await insert_user(
            session, email, hash_password(password), name=name, role=UserRole.OWNER
        )
        await record_change(
            session, None, "user.create", user, None, {"email": email, "role": UserRole.OWNER}
        )
    return f"created owner {email}"


async def _wallet_credit(engine: AsyncEngine, email: str, amount: str, note: str) -> str:
    try:
        amount_minor = parse_amount(amount)
    except InvalidAmount as error:
        raise UsageError(f"invalid amount {amount!r}: {error}") from error
    if amount_minor == 0:
        raise UsageError("the amount must be more than zero")
    if not note.strip():
        raise UsageError("--note must say why the wallet is credited")
    async with make_sessionmaker(engine)() as session, write_transaction(session):
        user = await select_user_by_email(session, email)
        if user is None:
            raise UsageError(f"no user with email {email!r}")
        result = await credit_wallet(
            session,
            user.id,
            amount_minor,
            kind=WalletEntryKind.ADJUSTMENT,
            source_reference=f"cli-{uuid.uuid4().hex}",
            note=note.strip(),
            actor="cli",
        )
    return (
        f"credited {format_minor(amount_minor)} to {user.email}; "
        f"balance now {format_minor(result.balance_after_minor)}"
    )


async def run_command(args: argparse.Namespace) -> str:
    """Carry out the parsed command and return what to print."""
    database_url = database_url_from_env()
    if args.command == "db":
        return await _db_upgrade(database_url)
    engine = make_engine(database_url, poolclass=NullPool)
    try:
        if args.command == "seed-demo":
            return await _seed_demo(engine, args.if_empty)
        if args.command == "create-admin":
            return await _create_admin(engine, args.email, args.password, args.name)
        return await _wallet_credit(engine, args.email, args.amount, args.note)
    finally:
        await engine.dispose()


async def _run_then_settle(args: argparse.Namespace) -> str:
    try:
        return await run_command(args)
    finally:
        # A failed aiosqlite connect leaves its worker thread posting to the loop; if the loop
        # closes first the thread prints a traceback (omnilib/aiosqlite#241). Let it finish.
        for thread in threading.enumerate():
            if thread.name.endswith("(_connection_worker_thread)"):
                await asyncio.to_thread(thread.join, 2)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `storefront` console script."""
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return serve(args.config)
    try:
        print(asyncio.run(_run_then_settle(args)))
    except UsageError as error:
        print(f"storefront: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except (SQLAlchemyError, OSError, WalletError) as error:
        print(f"storefront: failed: {_one_line(error)}", file=sys.stderr)
        return EXIT_FAILURE
    return 0


def _one_line(error: BaseException) -> str:
    reason = str(getattr(error, "orig", None) or error).splitlines()[0]
    hint = ""
    if "no such table" in reason or ("relation" in reason and "does not exist" in reason):
        hint = " (run `storefront db upgrade` first)"
    return f"{type(error).__name__}: {reason}{hint}"[:500]


if __name__ == "__main__":
    sys.exit(main())
