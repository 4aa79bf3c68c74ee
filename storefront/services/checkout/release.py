"""Undoing a reservation whose payment failed, and giving its lines back to the shopper's cart."""

from datetime import datetime

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from storefront.models import Cart, CartItem, Order, OrderLine, Product
from storefront.models.order import OrderStatus
from storefront.models.stock import StockMovementKind
from storefront.services.checkout.placement import lock_cart
from storefront.services.checkout.refusals import EmptyCart
from storefront.services.coupons import release_coupon_use
from storefront.services.orders import transition_order
from storefront.services.stock import return_order_stock


async def release_order_reservation(
    session: AsyncSession, order_id: int, now: datetime | None = None
) -> None:
    """Undo a reservation whose payment failed: cancel, give the stock and the coupon use back."""
    await transition_order(
        session, order_id, OrderStatus.PENDING_PAYMENT, OrderStatus.CANCELLED, now
    )
    number, coupon_code = (
        await session.execute(select(Order.number, Order.coupon_code).where(Order.id == order_id))
    ).one()
    reason = f"Order {number} was not paid: its reservation went back on sale"
    await return_order_stock(session, order_id, StockMovementKind.RELEASE, reason, now=now)
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
