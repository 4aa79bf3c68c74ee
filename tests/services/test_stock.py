"""The stock ledger: services/stock.py is the only writer of products.stock, and stock = the sum
of a product's movements after sales (wallet and Paystack), releases, cancellations and
adjustments racing each other, on SQLite and PostgreSQL."""

import ast
import asyncio
import random
import re
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import func, select

from storefront.db.engine import sessionmaker_for
from storefront.db.transactions import write_transaction
from storefront.demo import seed_demo
from storefront.models import AuditEntry, Order, Product, StockMovement, User, utcnow
from storefront.models.stock import StockMovementKind
from storefront.services.audit import audited_write
from storefront.services.cart import select_cart_for_user
from storefront.services.checkout.placement import create_order_from_cart, place_wallet_order
from storefront.services.checkout.refusals import CheckoutError
from storefront.services.checkout.release import release_order_reservation
from storefront.services.orders import refund_order_to_wallet
from storefront.services.stock import (
    MAX_STOCK,
    NotEnoughStock,
    StockRefused,
    TooMuchStock,
    UnknownProduct,
    adjust_stock,
    move_stock,
    select_stock_mismatches,
    select_stock_movements,
)
from storefront.services.wallet import select_ledger_mismatches

PACKAGE = Path(__file__).resolve().parents[2] / "storefront"
THE_WRITER = PACKAGE / "services" / "stock.py"
STATEMENT_METHODS = {"values", "execute", "update", "insert", "ordered_values"}


def _name_of(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return ""


def stock_writes(source: str) -> list[int]:
    """Line numbers where the code writes products.stock: Product(stock=...), .stock = ...,
    stock=/"stock": in a statement's values, set_committed_value(..., "stock", ...), or SQL
    text that sets stock."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            name = _name_of(node.func)
            keywords = {keyword.arg for keyword in node.keywords}
            if "stock" in keywords and (name == "Product" or name in STATEMENT_METHODS):
                found.append(node.lineno)
            if name in STATEMENT_METHODS:
                for argument in ast.walk(node):
                    if isinstance(argument, ast.Dict) and any(
                        isinstance(key, ast.Constant) and key.value == "stock"
                        for key in argument.keys
                    ):
                        found.append(node.lineno)
            if name in {"set_committed_value", "setattr"} and any(
                isinstance(argument, ast.Constant) and argument.value == "stock"
                for argument in node.args
            ):
                found.append(node.lineno)
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AugAssign | ast.AnnAssign):
            targets = [node.target]
        if any(isinstance(target, ast.Attribute) and target.attr == "stock" for target in targets):
            found.append(node.lineno)
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and re.search(r"(?is)\bSET\b.*\bstock\s*=", node.value)
        ):
            found.append(node.lineno)
    return sorted(set(found))


def test_the_stock_writes_finder_finds_each_kind_of_write():
    offenders = """
Product(slug="x", stock=3)
product.stock = 4
product.stock -= 1
update(Product).values(stock=Product.stock - 1)
session.execute(update(products), {"stock": 2})
set_committed_value(product, "stock", 9)
text("UPDATE products SET stock = stock + 1")
"""
    assert stock_writes(offenders) == [2, 3, 4, 5, 6, 7, 8]
    harmless = """
CatalogProduct(stock=product.stock)
{"stock": product.stock}
select(Product.stock).where(Product.stock >= 1)
"""
    assert stock_writes(harmless) == []


def test_nothing_but_services_stock_writes_products_stock():
    writers = {
        path.relative_to(PACKAGE.parent).as_posix(): lines
        for path in sorted(PACKAGE.rglob("*.py"))
        if path != THE_WRITER and (lines := stock_writes(path.read_text()))
    }
    assert writers == {}, f"change stock only through storefront/services/stock.py: {writers}"
    assert stock_writes(THE_WRITER.read_text()), "the finder no longer sees the one writer"


@pytest.mark.both_databases
async def test_a_move_records_its_movement_and_a_refusal_changes_nothing(
    app, session, make_product, make_user
):
    product = await make_product(stock=3)
    staff = await make_user(role="staff")
    async with sessionmaker_for(app)() as own, write_transaction(own):
        loaded = await own.get(Product, product.id)
        stock = await move_stock(
            own, product.id, -2, StockMovementKind.ADJUSTMENT, reason="Broken", actor=staff
        )
        assert stock == loaded.stock == 1  # the loaded row shows it without a query
    for change, refusal in ((-2, NotEnoughStock), (MAX_STOCK, TooMuchStock)):
        with pytest.raises(refusal) as refused:
            async with sessionmaker_for(app)() as own, write_transaction(own):
                await move_stock(own, product.id, change, StockMovementKind.ADJUSTMENT)
        assert "Nothing changed" in str(refused.value)
    assert "has 1 in stock: a change of -2 would leave -1" in str(
        NotEnoughStock(product.name, 1, -2)
    )
    with pytest.raises(UnknownProduct):
        async with sessionmaker_for(app)() as own, write_transaction(own):
            await move_stock(own, product.id + 1000, 1, StockMovementKind.RESTOCK)
    for bad_change in (0, True, 2.0, MAX_STOCK + 1):
        with pytest.raises(ValueError):
            async with sessionmaker_for(app)() as own, write_transaction(own):
                await move_stock(own, product.id, bad_change, StockMovementKind.RESTOCK)
    rows = await select_stock_movements(session, product.id)
    assert [(row.movement.change, row.movement.kind, row.actor_email) for row in rows] == [
        (-2, "adjustment", staff.email),
        (3, "restock", None),
    ]
    assert await select_stock_mismatches(session) == []


@pytest.mark.both_databases
async def test_negative_adjustments_racing_never_take_stock_below_zero(
    app, session, make_product, make_user
):
    product = await make_product(stock=5)
    staff = await make_user(role="staff")

    async def take_one(number: int) -> bool:
        async with sessionmaker_for(app)() as own:
            try:
                async with audited_write(own):
                    await adjust_stock(own, staff, product.id, -1, f"Count {number}")
            except NotEnoughStock:
                return False
        return True

    results = await asyncio.gather(*(take_one(number) for number in range(12)))
    assert sum(results) == 5
    assert await session.scalar(select(Product.stock).where(Product.id == product.id)) == 0
    kinds = Counter(
        await session.scalars(
            select(StockMovement.kind).where(StockMovement.product_id == product.id)
        )
    )
    assert kinds == {"restock": 1, "adjustment": 5}
    audited = await session.scalar(
        select(func.count()).select_from(AuditEntry).where(AuditEntry.action == "product.stock")
    )
    assert audited == 5  # one audit row per adjustment made, none for the refused
    assert await select_stock_mismatches(session) == []


async def _wallet_sale(app, user: User) -> Order | None:
    async with sessionmaker_for(app)() as own:
        try:
            async with write_transaction(own):
                cart = await select_cart_for_user(own, user.id)
                return await place_wallet_order(
                    own, user, cart, "pickup", "0241234567", "", utcnow()
                )
        except CheckoutError:
            return None


async def _reservation(app, user: User) -> Order | None:
    async with sessionmaker_for(app)() as own:
        try:
            async with write_transaction(own):
                cart = await select_cart_for_user(own, user.id)
                return await create_order_from_cart(
                    own, user, cart, "paystack", "pickup", "0241234567", "", utcnow()
                )
        except CheckoutError:
            return None


async def _release(app, order: Order) -> None:
    async with sessionmaker_for(app)() as own, write_transaction(own):
        await release_order_reservation(own, order.id)


async def _refund(app, order: Order) -> None:
    async with sessionmaker_for(app)() as own, write_transaction(own):
        await refund_order_to_wallet(own, order.id, actor="owner@shop.test")


async def _adjust(app, actor: User, product: Product, change: int) -> bool:
    async with sessionmaker_for(app)() as own:
        try:
            async with audited_write(own):
                await adjust_stock(own, actor, product.id, change, "Shelf count")
        except StockRefused:  # not enough, or (rarely) the stock kept changing under it
            return False
    return True


@pytest.mark.both_databases
async def test_stock_equals_its_movements_after_sales_releases_refunds_and_adjustments_racing(
    app, session, make_product, make_user, fill_cart
):
    chance = random.Random(13)
    products = [
        await make_product(name=name, price_minor=1_000, stock=stock)
        for name, stock in (("Radio", 20), ("Kettle", 6), ("Torch", 30))
    ]
    radio, kettle, torch = products
    staff = await make_user(role="staff")
    shoppers = [await make_user(balance_minor=100_000) for _ in range(16)]
    wallet_buyers, card_buyers = shoppers[:10], shoppers[10:]
    for shopper in shoppers:
        # The kettles run out (some carts are refused); card buyers skip them, so some reserve.
        picked = chance.sample(products, 2) if shopper in wallet_buyers else [radio, torch]
        await fill_cart(shopper, [(product, chance.randint(1, 2)) for product in picked])

    sales = [_wallet_sale(app, shopper) for shopper in wallet_buyers]
    reservations = [_reservation(app, shopper) for shopper in card_buyers]
    takes = [_adjust(app, staff, kettle, -1) for _ in range(4)]
    first = await asyncio.gather(*sales, *reservations, *takes)
    paid = [order for order in first[: len(sales)] if order is not None]
    reserved = [order for order in first[len(sales) : len(shoppers)] if order is not None]
    assert paid and reserved, "the race sold nothing: make the stock larger"
    # More kettles were wanted than there were: some carts or counts were refused, whatever
    # the order the race ran in.
    assert first.count(None) + first.count(False) > 0

    for shopper in wallet_buyers:  # a second round of carts for the second race
        await fill_cart(shopper, [(chance.choice(products), 1)])
    second = await asyncio.gather(
        *(_release(app, order) for order in reserved),
        *(_refund(app, order) for order in paid[::2]),
        *(_wallet_sale(app, shopper) for shopper in wallet_buyers),
        *(_adjust(app, staff, product, chance.choice((-2, 3))) for product in products * 3),
    )
    assert any(second[-len(products) * 3 :]), "no adjustment went through"

    stocks = await session.scalars(
        select(Product.stock).where(Product.id.in_([p.id for p in products]))
    )
    assert all(stock >= 0 for stock in stocks)
    assert await select_stock_mismatches(session) == []
    kinds = set(await session.scalars(select(StockMovement.kind).distinct()))
    assert kinds == set(StockMovementKind)
    # Each sale, release and refund names its order.
    unnamed = await session.scalar(
        select(func.count())
        .select_from(StockMovement)
        .where(
            StockMovement.kind.in_(("sale", "release", "cancel")),
            StockMovement.order_id.is_(None),
        )
    )
    assert unnamed == 0
    assert await select_ledger_mismatches(session) == []


@pytest.mark.both_databases
async def test_the_demo_shop_starts_with_its_stock_as_restock_movements(app, session):
    async with sessionmaker_for(app)() as own, write_transaction(own):
        report = await seed_demo(own)
    assert report.products > 0
    assert await select_stock_mismatches(session) == []
    kinds = set(await session.scalars(select(StockMovement.kind)))
    assert kinds == {"restock"}
    async with sessionmaker_for(app)() as own, write_transaction(own):
        again = await seed_demo(own)  # nothing added twice, no movement either
    assert again.products == 0
    assert await select_stock_mismatches(session) == []
