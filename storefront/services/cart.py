"""Carts in the database: lines, quantities within stock, totals with the cart's coupon."""

import secrets
import sqlite3
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any, Literal, cast

from sqlalchemy import (
    ColumnElement,
    DateTime,
    Integer,
    String,
    Table,
    and_,
    bindparam,
    delete,
    func,
    select,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import dialect as sqlite_dialect
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.util import identity_key
from sqlalchemy.sql.dml import ReturningInsert, ReturningUpdate
from sqlalchemy.sql.elements import ClauseElement

from storefront.db.engine import dialect_name
from storefront.models import Cart, CartItem, Product, utcnow
from storefront.services.coupons import evaluate_coupon, normalise_code

MAX_QUANTITY_DIGITS = 6

# Core tables for the add's hot path: no ORM compile or identity-map work per statement.
carts = cast(Table, Cart.__table__)
cart_items = cast(Table, CartItem.__table__)
products = cast(Table, Product.__table__)


class CartError(Exception):
    """A cart change was refused; the message is fit for the shopper and nothing changed."""


@dataclass(frozen=True)
class CartLine:
    product_id: int
    slug: str
    name: str
    image: str
    unit_price_minor: int
    quantity: int
    stock: int
    is_active: bool
    line_total_minor: int

    @property
    def problem(self) -> str | None:
        """Why this line cannot be bought as it stands, or None."""
        if not self.is_active:
            return "This product is no longer sold; remove it to check out."
        if self.stock <= 0:
            return "Out of stock; remove it to check out."
        if self.quantity > self.stock:
            return f"Only {self.stock} left; lower the quantity to check out."
        return None


@dataclass(frozen=True)
class CartTotals:
    """Inactive products count for nothing; lines with a problem block checkout."""

    subtotal_minor: int
    discount_minor: int
    total_minor: int
    coupon_code: str | None
    coupon_message: str | None
    lines: list[CartLine]

    @property
    def item_count(self) -> int:
        return sum(line.quantity for line in self.lines)

    @property
    def coupon_applied(self) -> bool:
        return self.coupon_code is not None and self.coupon_message is None

    @property
    def problems(self) -> list[str]:
        return [f"{line.name}: {line.problem}" for line in self.lines if line.problem]

    @property
    def can_check_out(self) -> bool:
        return bool(self.lines) and not self.problems


EMPTY_TOTALS = CartTotals(0, 0, 0, None, None, [])


def parse_quantity(raw: object, *, allow_zero: bool) -> int:
    """A whole number of items typed in a form; CartError says what is wrong with it."""
    if isinstance(raw, bool):
        raise CartError("Enter the quantity as a whole number, like 1 or 2.")
    if isinstance(raw, int):
        text = str(raw)
    elif isinstance(raw, str):
        text = raw.strip()
    else:
        raise CartError("Enter the quantity as a whole number, like 1 or 2.")
    if not text:
        raise CartError("Enter a quantity.")
    if text.startswith("-") and text[1:].isdigit():
        raise CartError("The quantity cannot be negative.")
    if not text.isascii() or not text.isdigit():
        raise CartError("Enter the quantity as a whole number, like 1 or 2.")
    if len(text.lstrip("0")) > MAX_QUANTITY_DIGITS:
        raise CartError("That quantity is far more than we have.")
    quantity = int(text)
    if quantity == 0 and not allow_zero:
        raise CartError("Choose at least 1.")
    return quantity


def parse_product_id(raw: object) -> int:
    """A product id from a form or URL; CartError when it cannot be one."""
    text = raw.strip() if isinstance(raw, str) else str(raw) if isinstance(raw, int) else ""
    if not text.isascii() or not text.isdigit() or len(text) > 18 or int(text) <= 0:
        raise CartError("That product does not exist.")
    return int(text)


def new_cart_token() -> str:
    return secrets.token_urlsafe(24)


async def select_cart_by_token(session: AsyncSession, cart_token: str | None) -> Cart | None:
    """The cart whose token the browser holds."""
    if not cart_token or not isinstance(cart_token, str) or len(cart_token) > 64:
        return None
    return await session.scalar(
        select(Cart).where(Cart.token == cart_token).execution_options(populate_existing=True)
    )


async def select_cart_for_user(session: AsyncSession, user_id: int) -> Cart | None:
    """The signed-in customer's cart."""
    return await session.scalar(
        select(Cart).where(Cart.user_id == user_id).execution_options(populate_existing=True)
    )


async def select_current_cart(
    session: AsyncSession, user_id: int | None, cart_token: str | None
) -> Cart | None:
    """A customer's own cart when signed in, else the guest cart of the session's token."""
    if user_id is not None:
        return await select_cart_for_user(session, user_id)
    cart = await select_cart_by_token(session, cart_token)
    # A token never opens a customer's cart: after logout the browser is a guest again.
    if cart is None or cart.user_id is not None:
        return None
    return cart


async def insert_cart(session: AsyncSession, user_id: int | None = None) -> Cart:
    """A new empty cart for a guest (user_id None), or the customer's cart, made if missing."""
    cart = Cart(token=new_cart_token(), user_id=user_id)
    try:
        async with session.begin_nested():
            session.add(cart)
            await session.flush()
    except IntegrityError:
        # Two first adds of one customer at once: the other request made the cart.
        existing = await select_cart_for_user(session, user_id) if user_id is not None else None
        if existing is None:
            raise
        return existing
    return cart


# Built once: the cart page, the checkout page and checkout itself read the lines.
_CART_LINES = (
    select(
        products.c.id,
        products.c.slug,
        products.c.name,
        products.c.image,
        products.c.price_minor,
        cart_items.c.quantity,
        products.c.stock,
        products.c.is_active,
    )
    .join(products, products.c.id == cart_items.c.product_id)
    .where(cart_items.c.cart_id == bindparam("lines_cart_id"))
    .order_by(cart_items.c.id)
)


async def select_cart_lines(session: AsyncSession, cart_id: int) -> list[CartLine]:
    """The cart's lines with current product prices and stock, in the order they were added."""
    rows = await session.execute(_CART_LINES, {"lines_cart_id": cart_id})
    return [
        CartLine(
            product_id=row.id,
            slug=row.slug,
            name=row.name,
            image=row.image,
            unit_price_minor=row.price_minor,
            quantity=row.quantity,
            stock=row.stock,
            is_active=row.is_active,
            line_total_minor=row.price_minor * row.quantity,
        )
        for row in rows
    ]


async def count_cart_items(session: AsyncSession, cart_id: int) -> int:
    """How many items (sum of quantities) the cart holds: the header badge's number."""
    total = await session.scalar(
        select(func.coalesce(func.sum(CartItem.quantity), 0)).where(CartItem.cart_id == cart_id)
    )
    return int(total or 0)


async def price_cart(
    session: AsyncSession, cart: Cart | None, user_id: int | None, now: datetime | None = None
) -> CartTotals:
    """Lines, subtotal, the coupon's discount (or why it no longer applies) and the total."""
    if cart is None:
        return EMPTY_TOTALS
    lines = await select_cart_lines(session, cart.id)
    subtotal_minor = sum(line.line_total_minor for line in lines if line.is_active)
    discount_minor = 0
    coupon_message = None
    if cart.coupon_code:
        check = await evaluate_coupon(
            session, cart.coupon_code, subtotal_minor, user_id, now or utcnow()
        )
        if check.valid:
            discount_minor = check.discount_minor
        else:
            coupon_message = check.message
    return CartTotals(
        subtotal_minor=subtotal_minor,
        discount_minor=discount_minor,
        total_minor=subtotal_minor - discount_minor,
        coupon_code=cart.coupon_code,
        coupon_message=coupon_message,
        lines=lines,
    )


async def _lock_cart(session: AsyncSession, cart_id: int) -> None:
    # PostgreSQL: one change to a cart at a time (two tabs adding at once). SQLite's
    # BEGIN IMMEDIATE already serialises writers, and it ignores FOR UPDATE.
    if dialect_name(session) == "postgresql":
        await session.execute(select(Cart.id).where(Cart.id == cart_id).with_for_update())


async def _quantity_in_cart(session: AsyncSession, cart_id: int, product_id: int) -> int:
    quantity = await session.scalar(
        select(CartItem.quantity).where(
            CartItem.cart_id == cart_id, CartItem.product_id == product_id
        )
    )
    return int(quantity or 0)


@dataclass(frozen=True)
class CartProduct:
    """What the add form and messages show of the product a change touched."""

    id: int
    name: str
    stock: int


@dataclass(frozen=True)
class CartChange:
    """What a change left behind: the cart, the product and its quantity now, the badge count."""

    cart_id: int
    cart_token: str | None  # None when a customer's cart was found by user id
    product: CartProduct
    quantity: int
    item_count: int


CartKey = Literal["id", "user", "token"]


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


async def _refusal(
    session: AsyncSession, cart_id: int | None, product_id: int, quantity: int
) -> CartError:
    """Why an add changed nothing, asked only after the one-statement add refused."""
    product = (
        await session.execute(
            select(Product.name, Product.stock, Product.is_active).where(Product.id == product_id)
        )
    ).first()
    if product is None or not product.is_active:
        return CartError("That product does not exist or is no longer sold.")
    if product.stock <= 0:
        return CartError(f"{product.name} is out of stock.")
    in_cart = await _quantity_in_cart(session, cart_id, product_id) if cart_id else 0
    if in_cart + quantity > product.stock:
        already = f"; you already have {in_cart} in your cart" if in_cart else ""
        return CartError(f"Only {product.stock} of {product.name} in stock{already}.")
    return CartError("That product could not be added just now; please try again.")


_ITEM_COUNT = (
    select(func.coalesce(func.sum(cart_items.c.quantity), 0))
    .where(cart_items.c.cart_id == bindparam("cart_id", type_=Integer))
    .scalar_subquery()
)
_PRODUCT_AND_ITEM_COUNT = select(products.c.name, products.c.stock, _ITEM_COUNT).where(
    products.c.id == bindparam("product_id", type_=Integer)
)


def _change(
    added: tuple[int, int], details: Any, cart_token: str | None, product_id: int
) -> CartChange:
    cart_id, quantity = added
    name, stock, item_count = details
    product = CartProduct(id=product_id, name=name, stock=stock)
    return CartChange(cart_id, cart_token, product, quantity, int(item_count))


async def _added(
    session: AsyncSession, added: tuple[int, int], cart_token: str | None, product_id: int
) -> CartChange:
    details = (
        await session.execute(
            _PRODUCT_AND_ITEM_COUNT, {"cart_id": added[0], "product_id": product_id}
        )
    ).one()
    return _change(added, details, cart_token, product_id)


def _existing_cart(user_id: int | None, cart_token: str | None) -> tuple[CartKey, int | str] | None:
    """How to find the shopper's cart without a query: their user id, else a plausible token."""
    if user_id is not None:
        return "user", user_id
    if isinstance(cart_token, str) and cart_token and len(cart_token) <= 64:
        return "token", cart_token
    return None


def add_to_existing_cart_now(
    connection: Connection,
    user_id: int | None,
    cart_token: str | None,
    product_id: int,
    quantity: int,
) -> CartChange | None:
    """The common add — the cart exists and the new quantity fits in stock — on a synchronous
    SQLite connection (the batch writer's): the same upsert and read as add_to_current_cart.
    None when it changed nothing; add_to_current_cart then makes the cart or says why."""
    existing = _existing_cart(user_id, cart_token)
    if existing is None or quantity < 1:
        return None
    key, cart_key = existing
    driver = cast(sqlite3.Connection, connection.connection.driver_connection)
    upsert, upsert_defaults = _sqlite_sql(_upsert_item_statement("sqlite", key))
    parameters = {"cart_key": cart_key, "product_id": product_id, "quantity": quantity}
    added = driver.execute(upsert, {**upsert_defaults, **parameters}).fetchone()
    if added is None:
        return None
    read, read_defaults = _sqlite_sql(_PRODUCT_AND_ITEM_COUNT)
    details = driver.execute(
        read, {**read_defaults, "cart_id": added[0], "product_id": product_id}
    ).fetchone()
    return _change(
        (added[0], added[1]), details, cart_token if user_id is None else None, product_id
    )


@cache
def _sqlite_sql(statement: ClauseElement) -> tuple[str, dict[str, Any]]:
    """A statement as SQLite text with named parameters, and the values of its literals, for
    the batch writer's driver connection: SQLAlchemy's execute cost more than SQLite's work."""
    compiled = statement.compile(dialect=sqlite_dialect(paramstyle="named"))
    return str(compiled), dict(compiled.params)


async def add_to_current_cart(
    session: AsyncSession,
    user_id: int | None,
    cart_token: str | None,
    product_id: int,
    quantity: int,
) -> CartChange:
    """Add to the customer's cart, else the guest cart of the token, creating it if needed.

    The common case (the cart exists, the add fits in stock) is one upsert and one read.
    """
    if quantity < 1:
        raise CartError("Choose at least 1.")
    existing = _existing_cart(user_id, cart_token)
    if existing is not None:
        added = await _upsert_item(session, *existing, product_id, quantity)
        if added is not None:
            return await _added(session, added, cart_token if user_id is None else None, product_id)
    cart = await select_current_cart(session, user_id, cart_token)
    return await add_to_cart(session, cart, product_id, quantity, user_id)


async def add_to_cart(
    session: AsyncSession,
    cart: Cart | None,
    product_id: int,
    quantity: int,
    user_id: int | None = None,
) -> CartChange:
    """Add `quantity` of a product, creating the cart if needed; within stock or CartError."""
    if quantity < 1:
        raise CartError("Choose at least 1.")
    if cart is None:
        # A refusal rolls the caller's transaction back, this new cart included.
        cart = await insert_cart(session, user_id)
    added = await _upsert_item(session, "id", cart.id, product_id, quantity)
    if added is None:
        raise await _refusal(session, cart.id, product_id, quantity)
    return await _added(session, added, cart.token, product_id)


async def set_cart_quantity(
    session: AsyncSession, cart: Cart | None, product_id: int, quantity: int
) -> CartChange:
    """Set a line's quantity (0 removes it); within stock or CartError."""
    if quantity < 0:
        raise CartError("The quantity cannot be negative.")
    if cart is None:
        raise CartError("That product is not in your cart.")
    await _lock_cart(session, cart.id)
    in_cart = await _quantity_in_cart(session, cart.id, product_id)
    if not in_cart:
        raise CartError("That product is not in your cart.")
    product = await session.get(Product, product_id, populate_existing=True)
    assert product is not None  # cart_items.product_id cascades on delete
    if quantity == 0:
        await session.execute(
            delete(CartItem)
            .where(CartItem.cart_id == cart.id, CartItem.product_id == product_id)
            .execution_options(synchronize_session=False)
        )
    else:
        if not product.is_active:
            raise CartError(f"{product.name} is no longer sold; remove it from your cart.")
        if quantity > product.stock:
            raise CartError(f"Only {product.stock} of {product.name} in stock.")
        await session.execute(
            update(CartItem)
            .where(CartItem.cart_id == cart.id, CartItem.product_id == product_id)
            .values(quantity=quantity)
            .execution_options(synchronize_session=False)
        )
    await _touch(session, cart.id)
    summary = CartProduct(id=product.id, name=product.name, stock=product.stock)
    return CartChange(
        cart.id, cart.token, summary, quantity, await count_cart_items(session, cart.id)
    )


async def _touch(session: AsyncSession, cart_id: int) -> None:
    await session.execute(
        update(Cart)
        .where(Cart.id == cart_id)
        .values(updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )


async def set_cart_coupon(session: AsyncSession, cart: Cart, coupon_code: str | None) -> None:
    """Store (or with None, remove) the coupon code on the cart."""
    code = normalise_code(coupon_code) or None
    await session.execute(
        update(Cart)
        .where(Cart.id == cart.id)
        .values(coupon_code=code, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    cart.coupon_code = code


# Built once: every checkout empties a cart.
_EMPTY_CART_ITEMS = delete(cart_items).where(cart_items.c.cart_id == bindparam("emptied_cart_id"))
_DROP_CART_COUPON = (
    update(carts)
    .where(carts.c.id == bindparam("emptied_cart_id"))
    .values(coupon_code=None, updated_at=bindparam("emptied_at"))
)


async def clear_cart(session: AsyncSession, cart_id: int, now: datetime | None = None) -> None:
    """Empty the cart and drop its coupon (after an order took its lines).

    Checkout passes the order's created_at as `now`: a cart still stamped with it is one that
    order emptied (and nothing changed since), so a later submit can be told about the order.
    """
    emptied = {"emptied_cart_id": cart_id, "emptied_at": now or utcnow()}
    await session.execute(_EMPTY_CART_ITEMS, emptied)
    await session.execute(_DROP_CART_COUPON, emptied)
    # A Cart already loaded in this session shows the change without being marked dirty
    # (which would send the same UPDATE again at flush) and without a SELECT when absent.
    cart = session.identity_map.get(identity_key(Cart, cart_id))
    if cart is not None:
        set_committed_value(cart, "coupon_code", None)


async def merge_guest_cart(
    session: AsyncSession, guest_cart_token: str | None, user_id: int
) -> Cart | None:
    """At login: move the guest cart's lines into the customer's cart (quantities summed, capped
    at stock), keep the guest coupon if the customer's cart has none, delete the guest cart."""
    user_cart = await select_cart_for_user(session, user_id)
    guest_cart = await select_current_cart(session, None, guest_cart_token)
    if guest_cart is None:
        return user_cart
    if user_cart is None:
        # Nothing to merge into: the guest cart becomes the customer's, under a fresh token.
        await session.execute(
            update(Cart)
            .where(Cart.id == guest_cart.id, Cart.user_id.is_(None))
            .values(user_id=user_id, token=new_cart_token(), updated_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        await session.refresh(guest_cart)
        return guest_cart
    await _lock_cart(session, user_cart.id)
    guest_rows = (
        await session.execute(
            select(CartItem.product_id, CartItem.quantity, Product.stock, Product.is_active)
            .join(Product, Product.id == CartItem.product_id)
            .where(CartItem.cart_id == guest_cart.id)
            .order_by(CartItem.product_id)
        )
    ).all()
    user_rows = await session.execute(
        select(CartItem.product_id, CartItem.quantity).where(CartItem.cart_id == user_cart.id)
    )
    existing = {product_id: quantity for product_id, quantity in user_rows}
    for row in guest_rows:
        have = existing.get(row.product_id, 0)
        merged = min(have + row.quantity, row.stock) if row.is_active else have
        if merged <= have:
            continue
        if have:
            await session.execute(
                update(CartItem)
                .where(CartItem.cart_id == user_cart.id, CartItem.product_id == row.product_id)
                .values(quantity=merged)
                .execution_options(synchronize_session=False)
            )
        else:
            session.add(CartItem(cart_id=user_cart.id, product_id=row.product_id, quantity=merged))
    if not user_cart.coupon_code and guest_cart.coupon_code:
        await set_cart_coupon(session, user_cart, guest_cart.coupon_code)
    await session.flush()
    await session.execute(
        delete(CartItem)
        .where(CartItem.cart_id == guest_cart.id)
        .execution_options(synchronize_session=False)
    )
    await session.execute(
        delete(Cart).where(Cart.id == guest_cart.id).execution_options(synchronize_session=False)
    )
    await _touch(session, user_cart.id)
    return user_cart
