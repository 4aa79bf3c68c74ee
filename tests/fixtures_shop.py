"""Fixtures for the shop tests: catalog rows written the way the back office writes them (each in
its own transaction, bumping the catalog version, stock received as movements), and a counter of
SQL statements."""

import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from quart import Quart
from sqlalchemy import event

from storefront.db.engine import sessionmaker_for
from storefront.db.transactions import write_transaction
from storefront.models import Category, Product, Slider
from storefront.services.catalog import bump_catalog_version
from storefront.services.stock import receive_stock
from storefront.web.cart_badge import BADGE_COOKIE

# Products made by the fixtures get their stock as a restock movement, as the shop would: so
# stock = the sum of movements holds in every test's database.
TEST_STOCK_REASON = "Test stock"


@pytest.fixture(name="add_category")
def _add_category(app: Quart) -> Callable[..., Awaitable[Category]]:
    """Insert a category, committed with a catalog version bump."""

    async def add(name: str = "Phones", slug: str | None = None, position: int = 0) -> Category:
        async with sessionmaker_for(app)() as db_session, write_transaction(db_session):
            category = Category(
                slug=slug or f"{name.lower().replace(' ', '-')}-{uuid.uuid4().hex[:6]}",
                name=name,
                position=position,
            )
            db_session.add(category)
            await bump_catalog_version(db_session)
        return category

    return add


@pytest.fixture(name="add_product")
def _add_product(app: Quart) -> Callable[..., Awaitable[Product]]:
    """Insert a product, committed with a catalog version bump."""

    async def add(
        name: str | None = None,
        price_minor: int = 10_000,
        stock: int = 10,
        is_active: bool = True,
        category: Category | None = None,
        description: str = "",
        image: str = "",
        slug: str | None = None,
    ) -> Product:
        slug = slug or f"item-{uuid.uuid4().hex[:10]}"
        async with sessionmaker_for(app)() as db_session, write_transaction(db_session):
            product = Product(
                slug=slug,
                name=name or slug.replace("-", " ").title(),
                description=description,
                price_minor=price_minor,
                image=image,
                category_id=category.id if category else None,
                is_active=is_active,
            )
            db_session.add(product)
            await db_session.flush()
            await receive_stock(db_session, {product.id: stock}, TEST_STOCK_REASON)
            await bump_catalog_version(db_session)
        return product

    return add


@pytest.fixture(name="add_products")
def _add_products(app: Quart) -> Callable[..., Awaitable[list[Product]]]:
    """Insert `count` active products in one transaction (names "Bulk 001"...)."""

    async def add(count: int, prefix: str = "Bulk", **fields: Any) -> list[Product]:
        async with sessionmaker_for(app)() as db_session, write_transaction(db_session):
            products = [
                Product(
                    slug=f"{prefix.lower()}-{number:03d}-{uuid.uuid4().hex[:6]}",
                    name=f"{prefix} {number:03d}",
                    description=fields.get("description", ""),
                    price_minor=fields.get("price_minor", 1_000 + number),
                    image="",
                    category_id=fields.get("category_id"),
                    is_active=True,
                )
                for number in range(1, count + 1)
            ]
            db_session.add_all(products)
            await db_session.flush()
            stock = fields.get("stock", 10)
            await receive_stock(
                db_session, {product.id: stock for product in products}, TEST_STOCK_REASON
            )
            await bump_catalog_version(db_session)
        return products

    return add


@pytest.fixture(name="add_slider")
def _add_slider(app: Quart) -> Callable[..., Awaitable[Slider]]:
    """Insert a slider, committed with a catalog version bump."""

    async def add(
        title: str, position: int = 0, is_active: bool = True, link_url: str = ""
    ) -> Slider:
        async with sessionmaker_for(app)() as db_session, write_transaction(db_session):
            slider = Slider(
                title=title,
                subtitle=f"{title} subtitle",
                image="",
                link_url=link_url,
                position=position,
                is_active=is_active,
            )
            db_session.add(slider)
            await bump_catalog_version(db_session)
        return slider

    return add


@contextmanager
def counted_statements(app: Quart) -> Iterator[list[str]]:
    """Collect every SQL statement the app's engine runs inside the block."""
    statements: list[str] = []
    engine = app.extensions["db_engine"].sync_engine

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", record)


def set_badge_cookie(client: Any, count: int) -> None:
    """Give the client the cart badge cookie as the shop would have set it (host-only)."""
    client.set_cookie("localhost", BADGE_COOKIE, str(count), path="/")


def badge_cookie(client: Any) -> int:
    """The badge count in the client's cookie jar (0 when the shop deleted the cookie)."""
    for cookie in client.cookie_jar:
        if cookie.name == BADGE_COOKIE and cookie.value:
            return int(cookie.value)
    return 0
