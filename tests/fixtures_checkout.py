"""Fixtures for the checkout and orders tests: products, coupons, filled carts, snapshots."""

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from quart import Quart
from quart.testing import QuartClient
from sqlalchemy import delete, select

from storefront.db.engine import sessionmaker_for
from storefront.db.transactions import write_transaction
from storefront.models import (
    Cart,
    CartItem,
    Coupon,
    CouponRedemption,
    Order,
    OrderLine,
    OutboxEmail,
    Product,
    User,
    Wallet,
    WalletEntry,
)
from storefront.services.stock import receive_stock
from tests.fixtures_shop import TEST_STOCK_REASON

CHECKOUT_PHONE = "024 123 4567"
CHECKOUT_ADDRESS = "12 Oxford Street, Osu, Accra"


def checkout_form(total_minor: int | None = None, **fields: str) -> dict[str, str]:
    """The fields the checkout page posts to /pay/wallet (with the test CSRF token)."""
    from tests.conftest import CSRF_TOKEN

    form = {
        "csrf_token": CSRF_TOKEN,
        "delivery": "address",
        "phone": CHECKOUT_PHONE,
        "address": CHECKOUT_ADDRESS,
        "payment_method": "wallet",
    }
    if total_minor is not None:
        form["total_minor"] = str(total_minor)
    form.update(fields)
    return form


@pytest.fixture(name="make_product")
def _make_product(app: Quart) -> Callable[..., Awaitable[Product]]:
    """Insert a product, committed, its stock received as a restock movement."""

    async def make(
        name: str | None = None,
        price_minor: int = 10_000,
        stock: int = 10,
        is_active: bool = True,
    ) -> Product:
        slug = f"product-{uuid.uuid4().hex[:10]}"
        async with sessionmaker_for(app)() as db_session, write_transaction(db_session):
            product = Product(
                slug=slug,
                name=name or slug.replace("-", " ").title(),
                description="",
                price_minor=price_minor,
                image="",
                is_active=is_active,
            )
            db_session.add(product)
            await db_session.flush()
            await receive_stock(db_session, {product.id: stock}, TEST_STOCK_REASON)
        return product

    return make


@pytest.fixture(name="make_coupon")
def _make_coupon(
    add_coupon: Callable[..., Awaitable[Coupon]],
) -> Callable[..., Awaitable[Coupon]]:
    """Insert a coupon, committed, under a fresh code unless one is given (see add_coupon)."""

    async def make(code: str | None = None, **fields: Any) -> Coupon:
        return await add_coupon(code or f"SAVE{uuid.uuid4().hex[:6]}", **fields)

    return make


@pytest.fixture(name="fill_cart")
def _fill_cart(app: Quart) -> Callable[..., Awaitable[Cart]]:
    """Give a user a cart holding exactly these (product, quantity) lines and coupon."""

    async def fill(
        user: User, items: list[tuple[Product, int]], coupon_code: str | None = None
    ) -> Cart:
        async with sessionmaker_for(app)() as db_session, write_transaction(db_session):
            cart = await db_session.scalar(select(Cart).where(Cart.user_id == user.id))
            if cart is None:
                cart = Cart(token=uuid.uuid4().hex, user_id=user.id)
                db_session.add(cart)
                await db_session.flush()
            await db_session.execute(delete(CartItem).where(CartItem.cart_id == cart.id))
            cart.coupon_code = coupon_code
            for product, quantity in items:
                db_session.add(CartItem(cart_id=cart.id, product_id=product.id, quantity=quantity))
        return cart

    return fill


@pytest.fixture(name="snapshot")
def _snapshot(app: Quart) -> Callable[[], Awaitable[dict[str, list[tuple[Any, ...]]]]]:
    """Every row checkout can touch, read fresh: equal snapshots mean nothing changed."""

    columns = {
        "wallets": (Wallet.id, Wallet.balance_minor),
        "wallet_entries": (
            WalletEntry.id,
            WalletEntry.wallet_id,
            WalletEntry.amount_minor,
            WalletEntry.kind,
            WalletEntry.source_reference,
        ),
        "products": (Product.id, Product.stock, Product.price_minor),
        "coupons": (Coupon.id, Coupon.uses),
        "coupon_redemptions": (CouponRedemption.id, CouponRedemption.order_id),
        "orders": (Order.id, Order.number, Order.status),
        "order_lines": (OrderLine.id, OrderLine.order_id),
        "outbox_emails": (OutboxEmail.id, OutboxEmail.dedupe_key),
        "carts": (Cart.id, Cart.coupon_code),
        "cart_items": (CartItem.cart_id, CartItem.product_id, CartItem.quantity),
    }

    async def take() -> dict[str, list[tuple[Any, ...]]]:
        taken: dict[str, list[tuple[Any, ...]]] = {}
        async with sessionmaker_for(app)() as db_session:
            for table, selected in columns.items():
                rows = await db_session.execute(select(*selected).order_by(*selected))
                taken[table] = [tuple(row) for row in rows]
        return taken

    return take


@pytest.fixture(name="shopper_client")
def _shopper_client(app: Quart) -> Callable[[User], Awaitable[QuartClient]]:
    """A fresh test client signed in as the user, its session holding the test CSRF token."""
    from tests.conftest import CSRF_TOKEN, sign_in

    async def make(user: User) -> QuartClient:
        client = app.test_client()
        async with client.session_transaction() as client_session:
            client_session["csrf_token"] = CSRF_TOKEN
        sign_in(client, user)
        return client

    return make


async def stock_of(session: Any, product: Product) -> int:
    """The product's stock as the database holds it now (not the session's copy)."""
    return await session.scalar(
        select(Product.stock)
        .where(Product.id == product.id)
        .execution_options(populate_existing=True)
    )
