"""Undoing a reservation whose payment failed, and giving its lines back to the shopper's cart."""

from datetime import datetime

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from storefront.models import Cart, CartItem, Order, OrderLine, Product
from storefront.models.order import OrderStatus
from storefront.services.checkout.placement import lock_cart
from storefront.services.checkout.refusals import EmptyCart
from storefront.services.coupons import release_coupon_use
from storefront.services.orders import restock_order_lines, transition_order


async def release_order_reservation(
    session: AsyncSession, order_id: int, now: datetime | None = None
) -> None:
    """Undo a reservation whose payment failed: restock, give the coupon use back, cancel."""
    await transition_order(
        session, order_id, OrderStatus.PENDING_PAYMENT, OrderStatus.CANCELLED, now
    )
    await restock_order_lines(session, order_id)
    coupon_code = await session.scalar(select(Order.coupon_code).where(Order.id == order_id))
    if coupon_code:
        await release_coupon_use(session, coupon_code, order_id)


async def return_order_lines_to_cart(session: AsyncSession, order_id: int, user_id: int) -> None:
    """Put a released order's lines back in the customer's cart, within stock, and its coupon
    if the cart has none: a refused or replaced card payment loses the shopper nothing."""
    try:
        cart = await lock_cart(session, user_id)
    except EmptyCart:  # no cart row at all: nothing to return the lines to
        return
    coupon_code = await session.scalar(select(Order.coupon_code).where(Order.id == order_id))
    if coupon_code and not cart.coupon_code:
        await session.execute(
            update(Cart)
            .where(Cart.id == cart.id)
            .values(coupon_code=coupon_code)
            .execution_options(synchronize_session=False)
        )
    rows = await session.execute(
        select(OrderLine.product_id, OrderLine.quantity, Product.stock, CartItem.quantity)
        .join(Product, Product.id == OrderLine.product_id)
        .outerjoin(
            CartItem,
            (CartItem.cart_id == cart.id) & (CartItem.product_id == OrderLine.product_id),
        )
        .where(OrderLine.order_id == order_id, Product.is_active.is_(True))
        .order_by(OrderLine.product_id)
    )
    for product_id, ordered, stock, in_cart in rows:
        wanted = min((in_cart or 0) + ordered, stock)
        if wanted <= (in_cart or 0):
            continue
        if in_cart:
            await session.execute(
                update(CartItem)
                .where(CartItem.cart_id == cart.id, CartItem.product_id == product_id)
                .values(quantity=wanted)
                .execution_options(synchronize_session=False)
            )
        else:
            await session.execute(
                insert(CartItem).values(cart_id=cart.id, product_id=product_id, quantity=wanted)
            )
