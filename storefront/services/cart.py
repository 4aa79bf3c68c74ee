"""Carts in the database: finding the shopper's cart, its lines and totals with the cart's
coupon, and what every cart change returns or refuses with.

Changing a cart: services/cart_add.py (add_to_cart) and services/cart_changes.py (quantities,
coupon, emptying after an order, merging at login).
"""

import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import cast

from sqlalchemy import Table, bindparam, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from storefront.models import Cart, CartItem, Product, utcnow
from storefront.services.coupons import evaluate_coupon

MAX_QUANTITY_DIGITS = 6

# Core tables for the hot paths: no ORM compile or identity-map work per statement.
carts = cast(Table, Cart.__table__)
cart_items = cast(Table, CartItem.__table__)
products = cast(Table, Product.__table__)


@dataclass(frozen=True)
class CartProduct:
    """What the add form and messages show of the product a change touched."""

    id: int
    name: str
    stock: int


class CartError(Exception):
    """A cart change was refused; the message is fit for the shopper and nothing changed.
    `product` is the product to show the add form for again (None: it is not sold)."""

    def __init__(self, message: str, product: CartProduct | None = None) -> None:
        super().__init__(message)
        self.product = product


@dataclass(frozen=True)
class CartChange:
    """What a change left behind: the cart, the product and its quantity now, how many items
    the change added (negative: took away), the badge count."""

    cart_id: int
    cart_token: str | None  # None when a customer's cart was found by user id
    product: CartProduct
    quantity: int
    added: int
    item_count: int


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


def cart_turn(user_id: int | None, cart_token: str | None) -> tuple[str, object] | None:
    """The key a cart's writes take turns on (take_turn): one shopper's parallel changes queue
    in the worker instead of each holding a pooled connection at the cart's row lock."""
    if user_id is not None:
        return ("cart-of-user", user_id)
    return ("cart", cart_token) if cart_token else None


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


async def select_quantity_in_cart(session: AsyncSession, cart_id: int, product_id: int) -> int:
    """How many of the product the cart holds (0 when none)."""
    quantity = await session.scalar(
        select(CartItem.quantity).where(
            CartItem.cart_id == cart_id, CartItem.product_id == product_id
        )
    )
    return int(quantity or 0)
