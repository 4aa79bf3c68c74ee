"""Changing a cart other than adding to it: a line's quantity, the coupon, emptying it after an
order, merging a guest cart into the customer's at login. The caller holds the write transaction.
"""

from datetime import datetime

from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.util import identity_key

from storefront.db.engine import dialect_name
from storefront.models import Cart, CartItem, Product, utcnow
from storefront.services.cart import (
    CartChange,
    CartError,
    CartProduct,
    cart_items,
    carts,
    count_cart_items,
    new_cart_token,
    select_cart_for_user,
    select_current_cart,
    select_quantity_in_cart,
)
from storefront.services.coupons import normalise_code


async def _lock_cart(session: AsyncSession, cart_id: int) -> None:
    # PostgreSQL: one change to a cart at a time (two tabs adding at once). SQLite's
    # BEGIN IMMEDIATE already serialises writers, and it ignores FOR UPDATE.
    if dialect_name(session) == "postgresql":
        await session.execute(select(Cart.id).where(Cart.id == cart_id).with_for_update())


async def set_cart_quantity(
    session: AsyncSession, cart: Cart | None, product_id: int, quantity: int
) -> CartChange:
    """Set a line's quantity (0 removes it); within stock or CartError."""
    if quantity < 0:
        raise CartError("The quantity cannot be negative.")
    if cart is None:
        raise CartError("That product is not in your cart.")
    await _lock_cart(session, cart.id)
    in_cart = await select_quantity_in_cart(session, cart.id, product_id)
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
    item_count = await count_cart_items(session, cart.id)
    return CartChange(cart.id, cart.token, summary, quantity, quantity - in_cart, item_count)


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
