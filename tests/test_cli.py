"""The `storefront` command, run as operators run it: a separate process with DATABASE_URL."""

import asyncio
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.pool import NullPool

from storefront.cli import UsageError, build_parser, run_command
from storefront.db.engine import make_engine
from storefront.demo import DEMO_COUPONS, DEMO_PRODUCTS, DEMO_SLIDERS
from storefront.models import (
    AuditEntry,
    CatalogVersion,
    Category,
    Coupon,
    Product,
    Slider,
    User,
    Wallet,
    WalletEntry,
)
from storefront.services.users import password_matches, password_problem

REPO_ROOT = Path(__file__).resolve().parent.parent
STATIC = REPO_ROOT / "static"
# Settings a developer's shell may hold that would change what the command does.
SCRUBBED_ENV = {"DATABASE_URL", "SECRET_KEY", "FLASK_SECRET_KEY", "STOREFRONT_ENV", "FLASK_ENV"}


@dataclass
class CliRun:
    returncode: int
    stdout: str
    stderr: str


async def run_cli(database_url: str, *args: str, stdin: str = "") -> CliRun:
    env = {name: value for name, value in os.environ.items() if name not in SCRUBBED_ENV}
    env["DATABASE_URL"] = database_url
    env["PYTHONPATH"] = str(REPO_ROOT)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "storefront.cli",
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        cwd=REPO_ROOT,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(stdin.encode()), timeout=120)
    assert process.returncode is not None
    return CliRun(process.returncode, stdout.decode(), stderr.decode())


async def ok(database_url: str, *args: str, stdin: str = "") -> str:
    result = await run_cli(database_url, *args, stdin=stdin)
    assert result.returncode == 0, result.stderr
    return result.stdout


async def count_rows(database_url: str) -> dict[str, int]:
    engine = make_engine(database_url, poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            return {
                model.__tablename__: await connection.scalar(
                    select(func.count()).select_from(model)
                )
                for model in (Category, Product, Slider, Coupon)
            }
    finally:
        await engine.dispose()


@pytest.mark.both_databases
async def test_upgrade_then_seed_twice_makes_no_duplicates(database_url):
    not_migrated = await run_cli(database_url, "seed-demo")
    assert not_migrated.returncode == 1
    assert "storefront db upgrade" in not_migrated.stderr
    assert len(not_migrated.stderr.strip().splitlines()) == 1

    assert "(head)" in await ok(database_url, "db", "upgrade")
    assert "24 products" in await ok(database_url, "seed-demo")
    first = await count_rows(database_url)
    assert first == {"categories": 5, "products": 24, "sliders": 3, "coupons": 2}

    assert "added 0 categories, 0 products" in await ok(database_url, "seed-demo")
    assert "already has products" in await ok(database_url, "seed-demo", "--if-empty")
    assert await count_rows(database_url) == first

    engine = make_engine(database_url, poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            coupons = {coupon.code: coupon for coupon in (await connection.execute(select(Coupon)))}
            products = list(await connection.execute(select(Product)))
            catalog_version = await connection.scalar(select(CatalogVersion.version))
    finally:
        await engine.dispose()
    assert (coupons["WELCOME10"].kind, coupons["WELCOME10"].value) == ("percent", 1000)
    assert coupons["SAVE20"].kind == "fixed"
    assert coupons["SAVE20"].value == 2000
    assert coupons["SAVE20"].min_subtotal_minor == 15000
    assert all(product.is_active and product.price_minor > 0 for product in products)
    assert all((STATIC / product.image).is_file() for product in products)
    # The page caches rebuild when the seed changed the catalogue.
    assert catalog_version is not None and catalog_version >= 1


def test_demo_pictures_are_committed_small_webp_files():
    images = [product.image for product in DEMO_PRODUCTS] + [s.image for s in DEMO_SLIDERS]
    assert len(DEMO_PRODUCTS) >= 24
    assert len({product.category_slug for product in DEMO_PRODUCTS}) >= 4
    assert len(DEMO_SLIDERS) == 3
    assert {coupon.code for coupon in DEMO_COUPONS} == {"WELCOME10", "SAVE20"}
    for image in images:
        path = STATIC / image
        header = path.read_bytes()[:12]
        assert header[:4] == b"RIFF" and header[8:12] == b"WEBP", image
        assert path.stat().st_size <= 8 * 1024, image
    assert len({product.slug for product in DEMO_PRODUCTS}) == len(DEMO_PRODUCTS)


@pytest.mark.both_databases
async def test_create_admin_and_wallet_credit(database_url):
    await ok(database_url, "db", "upgrade")
    assert "created owner boss@shop.test" in await ok(
        database_url, "create-admin", "Boss@Shop.test", "--password", "kente-and-shito"
    )
    credited = await ok(
        database_url, "wallet-credit", "boss@shop.test", "50.00", "--note", "opening float"
    )
    assert "balance now GH₵ 50.00" in credited
    await ok(database_url, "wallet-credit", "boss@shop.test", "GH₵ 1,234.50", "--note", "bonus")

    engine = make_engine(database_url, poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            user = (await connection.execute(select(User))).one()
            balance_minor = await connection.scalar(select(Wallet.balance_minor))
            entries = list(await connection.execute(select(WalletEntry).order_by(WalletEntry.id)))
    finally:
        await engine.dispose()
    assert (user.email, user.role) == ("boss@shop.test", "owner")
    assert password_matches(user.password_hash, "kente-and-shito")
    assert balance_minor == 5000 + 123450
    assert [entry.amount_minor for entry in entries] == [5000, 123450]
    assert [entry.balance_after_minor for entry in entries] == [5000, 128450]
    assert {entry.kind for entry in entries} == {"adjustment"}
    assert {entry.actor for entry in entries} == {"cli"}
    assert [entry.note for entry in entries] == ["opening float", "bonus"]
    assert len({entry.source_reference for entry in entries}) == 2


async def test_create_admin_promotes_and_prompts(database_url):
    await ok(database_url, "db", "upgrade")
    # No --password: asked twice (getpass reads stdin when there is no terminal).
    await ok(database_url, "create-admin", "shopper@shop.test", stdin="first-pass\nfirst-pass\n")
    mismatch = await run_cli(
        database_url, "create-admin", "other@shop.test", stdin="one-password\nanother-one\n"
    )
    assert mismatch.returncode == 2
    assert "passwords differ" in mismatch.stderr

    engine = make_engine(database_url, poolclass=NullPool)
    try:
        async with engine.begin() as connection:
            await connection.execute(User.__table__.update().values(role="customer"))
        promoted = await ok(database_url, "create-admin", "shopper@shop.test")
        assert "is now an owner" in promoted
        again = await ok(database_url, "create-admin", "shopper@shop.test")
        assert "is already an owner" in again
        async with engine.connect() as connection:
            users = list(await connection.execute(select(User)))
            audit = list(await connection.execute(select(AuditEntry).order_by(AuditEntry.id)))
    finally:
        await engine.dispose()
    assert [(user.email, user.role) for user in users] == [("shopper@shop.test", "owner")]
    assert password_matches(users[0].password_hash, "first-pass")
    # The command is the actor (NULL); the role set by hand in SQL above is not its change.
    user_id = users[0].id
    assert [
        (entry.actor_id, entry.action, entry.record_id, entry.before, entry.after)
        for entry in audit
    ] == [
        (None, "user.create", str(user_id), None, {"email": "shopper@shop.test", "role": "owner"}),
        (None, "user.role", str(user_id), {"role": "customer"}, {"role": "owner"}),
    ]


PARSER_MISTAKES = [
    ["wallet-credit", "boss@shop.test", "10"],
    ["wallet-credit", "boss@shop.test"],
    ["frobnicate"],
    [],
    ["db"],
    ["db", "sideways"],
    ["seed-demo", "--everything"],
    ["create-admin"],
]
VALUE_MISTAKES = [
    (["wallet-credit", "nobody@shop.test", "10", "--note", "x"], "no user"),
    (["wallet-credit", "boss@shop.test", "12.345", "--note", "x"], "2 decimal"),
    (["wallet-credit", "boss@shop.test", "-5", "--note", "x"], "negative"),
    (["wallet-credit", "boss@shop.test", "ten cedis", "--note", "x"], "invalid amount"),
    (["wallet-credit", "boss@shop.test", "NaN", "--note", "x"], "invalid amount"),
    (["wallet-credit", "boss@shop.test", "0", "--note", "x"], "more than zero"),
    (["wallet-credit", "boss@shop.test", "10", "--note", "   "], "--note"),
    (["create-admin", "not-an-email", "--password", "long-enough-1"], "not a valid email"),
    (["create-admin", "new@shop.test", "--password", "short"], "at least 10"),
]


@pytest.mark.parametrize("args", PARSER_MISTAKES, ids=" ".join)
def test_parser_mistakes_print_one_line_and_exit_2(args, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(args)
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert len(captured.err.strip().splitlines()) == 1
    assert "error" in captured.err


async def test_bad_values_are_refused_and_change_nothing(database_url, monkeypatch):
    await ok(database_url, "db", "upgrade")
    await ok(database_url, "create-admin", "boss@shop.test", "--password", "kente-and-shito")
    monkeypatch.setenv("DATABASE_URL", database_url)
    for args, reason in VALUE_MISTAKES:
        with pytest.raises(UsageError, match=reason) as refusal:
            await run_command(build_parser().parse_args(args))
        assert "\n" not in str(refusal.value)

    # End to end, such a refusal is one line on stderr and exit status 2.
    unknown, bad_amount = await asyncio.gather(
        run_cli(database_url, *VALUE_MISTAKES[0][0]), run_cli(database_url, *VALUE_MISTAKES[1][0])
    )
    for result in (unknown, bad_amount):
        assert result.returncode == 2
        assert result.stdout == ""
        assert len(result.stderr.strip().splitlines()) == 1
    assert "no user with email 'nobody@shop.test'" in unknown.stderr
    assert "invalid amount '12.345'" in bad_amount.stderr

    engine = make_engine(database_url, poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            assert await connection.scalar(select(func.count()).select_from(User)) == 1
            assert await connection.scalar(select(func.count()).select_from(WalletEntry)) == 0
            assert await connection.scalar(select(Wallet.balance_minor)) == 0
    finally:
        await engine.dispose()


async def test_unreachable_database_fails_with_one_line(tmp_path):
    result = await run_cli(f"sqlite:///{tmp_path}/missing-dir/shop.db", "db", "upgrade")
    assert result.returncode == 1
    assert "unable to open database file" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


async def test_create_admin_uses_the_registration_password_rule(database_url, monkeypatch):
    # create-admin refuses what registration refuses, such as passwords under 10 characters.
    await ok(database_url, "db", "upgrade")
    monkeypatch.setenv("DATABASE_URL", database_url)
    for email, password in [
        ("nine@shop.test", "ninechars"),
        ("own.address@shop.test", "Own.Address@shop.test"),
        ("huge@shop.test", "x" * 257),
    ]:
        expected = password_problem(password, email)
        assert expected is not None  # registration refuses it too
        with pytest.raises(UsageError, match=re.escape(expected)):
            await run_command(
                build_parser().parse_args(["create-admin", email, "--password", password])
            )
    await ok(database_url, "create-admin", "ten@shop.test", "--password", "tencharsok")
