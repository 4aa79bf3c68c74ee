"""The one way to add to a cart: add_to_cart.

The common add (the cart exists, the new quantity fits in stock) is one upsert and one read.
While a SQLite file is served, it goes to the worker's batch writer (db/sqlite_batches.py),
which applies the adds queued meanwhile in one transaction; docs/PERFORMANCE.md says what that
buys. Everything else (a first add, which makes the cart; an add that changed nothing, which
must say why; PostgreSQL) runs in a write transaction of the caller's session, one at a time
per cart in the worker (cart_turn).
"""

import sqlite3
from functools import cache, partial
from typing import Any, Literal, cast

from sqlalchemy import (
    ColumnElement,
    DateTime,
    Integer,
    String,
    and_,
    bindparam,
    func,
    select,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import dialect as sqlite_dialect
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.dml import ReturningInsert, ReturningUpdate
from sqlalchemy.sql.elements import ClauseElement

from storefront.db.engine import dialect_name
from storefront.db.sqlite_batches import sqlite_batch_writer
from storefront.db.transactions import write_transaction
from storefront.models import utcnow
from storefront.services.cart import (
    CartChange,
    CartError,
    CartProduct,
    cart_items,
    cart_turn,
    carts,
    insert_cart,
    parse_quantity,
    products,
    select_current_cart,
    select_quantity_in_cart,
)

# How the add finds the cart: by its id, by its customer, or by a guest's token.
CartKey = Literal["id", "user", "token"]


async def add_to_cart(
    session: AsyncSession,
    user_id: int | None,
    cart_token: str | None,
    product_id: int,
    quantity: int | str,
) -> CartChange:
    """Add `quantity` (a number, or as typed in the form) of a product to the customer's cart,
    else to the guest cart of the token, making the cart on a first add; within stock, else
    CartError with the message and the product to show the add form for again."""
    try:
        count = parse_quantity(quantity, allow_zero=False)
    except CartError as error:
        raise CartError(str(error), await _select_sold_product(session, product_id)) from None
    existing = _existing_cart(user_id, cart_token)
    batch_writer = sqlite_batch_writer(session.bind)
    if batch_writer is not None and existing is not None:
        guest_token = cart_token if user_id is None else None
        add_now = partial(_add_to_existing_cart_now, *existing, guest_token, product_id, count)
        change = await batch_writer.run(add_now, session)
        if change is not None:
            return change
    async with write_transaction(session, cart_turn(user_id, cart_token)):
        return await _add(session, user_id, cart_token, product_id, count)


async def _add(
    session: AsyncSession, user_id: int | None, cart_token: str | None, product_id: int, count: int
) -> CartChange:
    existing = _existing_cart(user_id, cart_token)
    if existing is not None:
        line = await _upsert_item(session, *existing, product_id, count)
        if line is not None:
            guest_token = cart_token if user_id is None else None
            return await _added(session, line, guest_token, product_id, count)
    cart = await select_current_cart(session, user_id, cart_token)
    if cart is None:
        # A refusal rolls the transaction back, this new cart included.
        cart = await insert_cart(session, user_id)
    line = await _upsert_item(session, "id", cart.id, product_id, count)
    if line is None:
        raise await _refusal(session, cart.id, product_id, count)
    return await _added(session, line, cart.token if user_id is None else None, product_id, count)


def _add_to_existing_cart_now(
    key: CartKey,
    cart_key: int | str,
    guest_token: str | None,
    product_id: int,
    count: int,
    connection: Connection,
) -> CartChange | None:
    """The common add on the batch writer's synchronous SQLite connection: the same upsert and
    read as in a write transaction. None when it changed nothing (no such cart, or a refusal):
    the write transaction then makes the cart or says why."""
    driver = cast(sqlite3.Connection, connection.connection.driver_connection)
    upsert, upsert_defaults = _sqlite_sql(_upsert_item_statement("sqlite", key))
    parameters = {"cart_key": cart_key, "product_id": product_id, "quantity": count}
    line = driver.execute(upsert, {**upsert_defaults, **parameters}).fetchone()
    if line is None:
        return None
    read, read_defaults = _sqlite_sql(_PRODUCT_AND_ITEM_COUNT)
    details = driver.execute(
        read, {**read_defaults, "cart_id": line[0], "product_id": product_id}
    ).fetchone()
    return _change((line[0], line[1]), details, guest_token, product_id, count)


@cache
def _sqlite_sql(statement: ClauseElement) -> tuple[str, dict[str, Any]]:
    """A statement as SQLite text with named parameters, and the values of its literals, for
    the batch writer's driver connection: SQLAlchemy's execute cost more than SQLite's work."""
    compiled = statement.compile(dialect=sqlite_dialect(paramstyle="named"))
    return str(compiled), dict(compiled.params)


def _cart_filter(key: CartKey) -> ColumnElement[bool]:
    """Which cart, by the bound parameter `cart_key`: its id, its customer, or a guest token."""
    if key == "id":
        return carts.c.id == bindparam("cart_key", type_=Integer)
    if key == "user":
        return carts.c.user_id == bindparam("cart_key", type_=Integer)
    # A token never opens a customer's cart: after logout the browser is a guest again.
    return and_(carts.c.token == bindparam("cart_key", type_=String), carts.c.user_id.is_(None))


@cache
def _lock_and_touch_cart(key: CartKey) -> ReturningUpdate[Any]:
    return (
        update(carts)
        .where(_cart_filter(key))
        .values(updated_at=bindparam("now", type_=DateTime))
        .returning(carts.c.id)
    )


@cache
def _upsert_item_statement(dialect: str, key: CartKey) -> ReturningInsert[Any]:
    """Built once per dialect and cart key: building an upsert costs more than running it."""
    insert_for_dialect = postgresql_insert if dialect == "postgresql" else sqlite_insert
    product_id = bindparam("product_id", type_=Integer)
    quantity = bindparam("quantity", type_=Integer)
    upsert = insert_for_dialect(cart_items).from_select(
        ["cart_id", "product_id", "quantity"],
        # Each side is one row at most: the cart and the product, joined on nothing.
        select(carts.c.id, products.c.id, quantity)
        .join_from(carts, products, true())
        .where(
            _cart_filter(key),
            products.c.id == product_id,
            products.c.is_active.is_(True),
            products.c.stock >= quantity,
        ),
    )
    stock_now = select(products.c.stock).where(products.c.id == product_id).scalar_subquery()
    return upsert.on_conflict_do_update(
        index_elements=[cart_items.c.cart_id, cart_items.c.product_id],
        set_={"quantity": cart_items.c.quantity + upsert.excluded.quantity},
        where=cart_items.c.quantity + upsert.excluded.quantity <= stock_now,
    ).returning(cart_items.c.cart_id, cart_items.c.quantity)


async def _upsert_item(
    session: AsyncSession, key: CartKey, cart_key: int | str, product_id: int, quantity: int
) -> tuple[int, int] | None:
    """One statement: add to the line (made if missing) when the product is sold and the new
    quantity is within stock; (cart_id, quantity now) or None when nothing changed."""
    dialect = dialect_name(session)
    if dialect == "postgresql":
        # The row lock serialises one cart's changes, so the badge count that follows sees
        # every add that went before; it doubles as the "cart changed" timestamp.
        locked = await session.scalar(
            _lock_and_touch_cart(key), {"cart_key": cart_key, "now": utcnow()}
        )
        if locked is None:
            return None
        key, cart_key = "id", locked
    row = (
        await session.execute(
            _upsert_item_statement(dialect, key),
            {"cart_key": cart_key, "product_id": product_id, "quantity": quantity},
        )
    ).first()
    return None if row is None else (row[0], row[1])


async def _select_sold_product(session: AsyncSession, product_id: int) -> CartProduct | None:
    """The product as the add form shows it, or None when it does not exist or is not sold."""
    product = (
        await session.execute(
            select(products.c.name, products.c.stock, products.c.is_active).where(
                products.c.id == product_id
            )
        )
    ).first()
    if product is None or not product.is_active:
        return None
    return CartProduct(id=product_id, name=product.name, stock=product.stock)


async def _refusal(session: AsyncSession, cart_id: int, product_id: int, count: int) -> CartError:
    """Why an add changed nothing, asked only after the one-statement add refused."""
    product = await _select_sold_product(session, product_id)
    if product is None:
        return CartError("That product does not exist or is no longer sold.")
    if product.stock <= 0:
        return CartError(f"{product.name} is out of stock.", product)
    in_cart = await select_quantity_in_cart(session, cart_id, product_id)
    if in_cart + count > product.stock:
        already = f"; you already have {in_cart} in your cart" if in_cart else ""
        return CartError(f"Only {product.stock} of {product.name} in stock{already}.", product)
    return CartError("That product could not be added just now; please try again.", product)


_ITEM_COUNT = (
    select(func.coalesce(func.sum(cart_items.c.quantity), 0))
    .where(cart_items.c.cart_id == bindparam("cart_id", type_=Integer))
    .scalar_subquery()
)
_PRODUCT_AND_ITEM_COUNT = select(products.c.name, products.c.stock, _ITEM_COUNT).where(
    products.c.id == bindparam("product_id", type_=Integer)
)


def _change(
    line: tuple[int, int], details: Any, guest_token: str | None, product_id: int, count: int
) -> CartChange:
    cart_id, quantity = line
    name, stock, item_count = details
    product = CartProduct(id=product_id, name=name, stock=stock)
    return CartChange(cart_id, guest_token, product, quantity, count, int(item_count))


async def _added(
    session: AsyncSession,
    line: tuple[int, int],
    guest_token: str | None,
    product_id: int,
    count: int,
) -> CartChange:
    details = (
        await session.execute(
            _PRODUCT_AND_ITEM_COUNT, {"cart_id": line[0], "product_id": product_id}
        )
    ).one()
    return _change(line, details, guest_token, product_id, count)


def _existing_cart(user_id: int | None, cart_token: str | None) -> tuple[CartKey, int | str] | None:
    """How to find the shopper's cart without a query: their user id, else a plausible token."""
    if user_id is not None:
        return "user", user_id
    if isinstance(cart_token, str) and cart_token and len(cart_token) <= 64:
        return "token", cart_token
    return None
