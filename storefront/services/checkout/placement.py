"""Placing an order from a locked cart: reserve it (awaiting payment), or pay it from the wallet.

Each step runs in the caller's transaction; the contended writes (stock, coupon) come last.
"""

from dataclasses import dataclass, field
from datetime import datetime
from typing import cast

from sqlalchemy import Table, bindparam, insert, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import make_transient_to_detached

from storefront.lib.money import format_minor
from storefront.models import Cart, Order, OrderLine, Product, User
from storefront.models.order import OrderStatus, PaymentMethod
from storefront.models.user import WalletEntryKind
from storefront.services.cart import CartLine, select_cart_lines
from storefront.services.cart_changes import clear_cart
from storefront.services.checkout.delivery import Delivery, validate_delivery
from storefront.services.checkout.order_emails import queue_order_emails
from storefront.services.checkout.refusals import (
    CheckoutError,
    CouponNoLongerValid,
    EmptyCart,
    InsufficientFunds,
    OutOfStock,
    PriceChanged,
    ProductUnavailable,
    TooManyUnits,
)
from storefront.services.coupons import CouponError, evaluate_coupon, use_coupon
from storefront.services.orders import next_order_number, provisional_order_number, transition_order
from storefront.services.stock import SaleLine, SaleLineRefused, take_stock_for_sale
from storefront.services.wallet import InsufficientBalance, WalletError, debit_wallet

# Built once: checkout runs them for every order, and building a statement costs as much as
# sending it.
_carts = cast(Table, Cart.__table__).c
LOCK_OWN_CART = (
    select(_carts.id, _carts.coupon_code)
    .where(_carts.user_id == bindparam("user_id"))
    .with_for_update()
)
LOCK_CART = LOCK_OWN_CART.where(_carts.id == bindparam("cart_id"))

_orders = cast(Table, Order.__table__)
INSERT_ORDER = insert(_orders).returning(_orders.c.id)
INSERT_ORDER_LINE = insert(cast(Table, OrderLine.__table__))


@dataclass(frozen=True)
class LockedCart:
    id: int
    coupon_code: str | None


@dataclass(frozen=True)
class CheckoutPlan:
    """What the locked cart holds, priced from a plain read; the writes at the end verify it."""

    cart_id: int
    coupon_code: str | None
    lines: list[CartLine]
    subtotal_minor: int
    discount_minor: int
    total_minor: int


@dataclass
class ReservedOrder:
    order: Order
    number: str
    lines: list[OrderLine] = field(default_factory=list)


async def lock_cart(session: AsyncSession, user_id: int, cart_id: int | None = None) -> LockedCart:
    """The customer's cart, locked for this transaction (re-read, so its coupon is current)."""
    # PostgreSQL: a second submit of the same cart waits here, then finds the cart empty.
    # SQLite's BEGIN IMMEDIATE already serialises writers (and it ignores FOR UPDATE).
    if cart_id is None:
        found = await session.execute(LOCK_OWN_CART, {"user_id": user_id})
    else:
        found = await session.execute(LOCK_CART, {"user_id": user_id, "cart_id": cart_id})
    row = found.one_or_none()
    if row is None:
        raise EmptyCart()
    return LockedCart(row.id, row.coupon_code)


async def _plan(
    session: AsyncSession,
    user: User,
    cart: LockedCart,
    now: datetime,
    expected_total_minor: int | None,
) -> CheckoutPlan:
    """Price the locked cart and refuse early what is already known to fail."""
    lines = await select_cart_lines(session, cart.id)
    if not lines:
        raise EmptyCart()
    for line in lines:
        if not line.is_active:
            raise ProductUnavailable(line.product_id, line.name)
        if line.quantity > line.stock:
            raise OutOfStock(line.product_id, line.name, line.quantity, line.stock)
    subtotal_minor = sum(line.line_total_minor for line in lines)
    discount_minor = 0
    if cart.coupon_code:
        check = await evaluate_coupon(session, cart.coupon_code, subtotal_minor, user.id, now)
        if not check.valid:
            raise CouponNoLongerValid(check.message)
        discount_minor = min(check.discount_minor, subtotal_minor)
    total_minor = subtotal_minor - discount_minor
    if expected_total_minor is not None and expected_total_minor != total_minor:
        raise PriceChanged.total(expected_total_minor, total_minor)
    return CheckoutPlan(
        cart.id, cart.coupon_code or None, lines, subtotal_minor, discount_minor, total_minor
    )


async def _insert_order(
    session: AsyncSession,
    user: User,
    plan: CheckoutPlan,
    payment_method: str,
    delivery: Delivery,
    now: datetime,
    currency: str,
) -> ReservedOrder:
    """The order (awaiting payment) and its lines as priced in the plan.

    The order's number comes from its id, so it is known only now; the caller writes it with
    its next statement on the order (one UPDATE fewer on the wallet path).
    """
    values = {
        "number": provisional_order_number(),
        "user_id": user.id,
        "email": user.email,
        "status": OrderStatus.PENDING_PAYMENT,
        "payment_method": payment_method,
        "subtotal_minor": plan.subtotal_minor,
        "discount_minor": plan.discount_minor,
        "total_minor": plan.total_minor,
        "currency": currency,
        "coupon_code": plan.coupon_code,
        "phone": delivery.phone,
        "delivery": delivery.method,
        "address": delivery.address,
        "created_at": now,
        "updated_at": now,
        "paid_at": None,
    }
    connection = await session.connection()
    order_id = (await connection.execute(INSERT_ORDER, values)).scalar_one()
    # A Core INSERT (a fraction of the ORM's flush); the order joins the session as if loaded,
    # so later changes to it and transition_order keep it current.
    order = Order(id=order_id, **values)
    make_transient_to_detached(order)
    session.add(order)
    rows = [
        {
            "order_id": order.id,
            "product_id": line.product_id,
            "name": line.name,
            "unit_price_minor": line.unit_price_minor,
            "quantity": line.quantity,
            "line_total_minor": line.line_total_minor,
        }
        for line in sorted(plan.lines, key=lambda line: line.product_id)
    ]
    # One Core executemany; the emails get the same lines as plain objects that the session
    # does not track.
    await connection.execute(INSERT_ORDER_LINE, rows)
    return ReservedOrder(order, next_order_number(order.id), [OrderLine(**row) for row in rows])


async def _take_stock_and_coupon(
    session: AsyncSession, user: User, plan: CheckoutPlan, order: Order, now: datetime
) -> None:
    """The contended writes, last so their row locks are held only until the commit.

    Stock goes down line by line (take_stock_for_sale: only while there is enough, the product
    is on sale and its price is still the one charged); then the coupon's use is counted.
    """
    sale = [SaleLine(line.product_id, line.quantity, line.unit_price_minor) for line in plan.lines]
    try:
        await take_stock_for_sale(session, order.id, order.number, sale, now)
    except SaleLineRefused as refused:
        line = next(line for line in plan.lines if line.product_id == refused.product_id)
        raise await _line_refusal(session, line) from refused
    if plan.coupon_code:
        try:
            discount_minor = await use_coupon(
                session, plan.coupon_code, user.id, order.id, plan.subtotal_minor, now
            )
        except CouponError as error:
            raise CouponNoLongerValid(str(error)) from error
        if min(discount_minor, plan.subtotal_minor) != plan.discount_minor:
            raise PriceChanged("Your coupon's discount changed while you were paying.")


async def _line_refusal(session: AsyncSession, line: CartLine) -> CheckoutError:
    """Why a line's conditional stock update matched no row."""
    product = (
        await session.execute(
            select(Product.name, Product.stock, Product.is_active, Product.price_minor).where(
                Product.id == line.product_id
            )
        )
    ).one_or_none()
    if product is None or not product.is_active:
        return ProductUnavailable(line.product_id, product.name if product else line.name)
    if product.stock < line.quantity:
        return OutOfStock(line.product_id, product.name, line.quantity, product.stock)
    return PriceChanged(
        f"The price of {product.name} changed to {format_minor(product.price_minor)} "
        "while you were paying."
    )


async def create_order_from_cart(
    session: AsyncSession,
    user: User,
    cart: Cart | None,
    payment_method: str,
    delivery: str,
    phone: str,
    address: str,
    now: datetime,
    *,
    expected_total_minor: int | None = None,
    currency: str = "GHS",
    max_units_per_product: int | None = None,
) -> Order:
    """Reserve: an order awaiting payment with its lines, stock taken, the coupon used and the
    cart emptied, all in the caller's transaction (the cart stays locked until it ends).

    `cart` None means the user's own cart (found and locked here, one query fewer).
    """
    cleaned = validate_delivery(delivery, phone, address)
    locked = await lock_cart(session, user.id, cart.id if cart is not None else None)
    plan = await _plan(session, user, locked, now, expected_total_minor)
    if max_units_per_product is not None:
        for line in plan.lines:
            if line.quantity > max_units_per_product:
                raise TooManyUnits(line.name, max_units_per_product, line.quantity)
    reserved = await _insert_order(session, user, plan, payment_method, cleaned, now, currency)
    reserved.order.number = reserved.number
    await session.flush()
    # The locked cart holds exactly the lines the order took: a second submit of it finds it
    # empty, and an item added in another tab waits for the lock and stays in the cart.
    await clear_cart(session, plan.cart_id, now)
    await _take_stock_and_coupon(session, user, plan, reserved.order, now)
    return reserved.order


async def select_order_that_took_cart(session: AsyncSession, user_id: int) -> Order | None:
    """The order a later submit of an empty cart should be sent to, if any.

    The newest order when the cart still carries its stamp (it emptied the cart and nothing
    changed since), else the customer's order still awaiting payment.
    """
    newest = await session.scalar(
        select(Order).where(Order.user_id == user_id).order_by(Order.id.desc()).limit(1)
    )
    if newest is None:
        return None
    cart_changed_at = await session.scalar(select(Cart.updated_at).where(Cart.user_id == user_id))
    if cart_changed_at == newest.created_at or newest.status == OrderStatus.PENDING_PAYMENT:
        return newest
    return await session.scalar(
        select(Order)
        .where(Order.user_id == user_id, Order.status == OrderStatus.PENDING_PAYMENT)
        .order_by(Order.id.desc())
        .limit(1)
    )


async def place_wallet_order(
    session: AsyncSession,
    user: User,
    cart: Cart | None,
    delivery: str,
    phone: str,
    address: str,
    now: datetime,
    *,
    expected_total_minor: int | None = None,
    currency: str = "GHS",
    admin_email: str = "",
    base_url: str = "",
) -> Order:
    """Pay for the cart from the wallet: order, debit, emails, empty cart, stock and coupon.

    All in the caller's transaction; any refusal (CheckoutError) means the caller rolls it all
    back. `cart` None means the user's own cart.
    """
    cleaned = validate_delivery(delivery, phone, address)
    locked = await lock_cart(session, user.id, cart.id if cart is not None else None)
    plan = await _plan(session, user, locked, now, expected_total_minor)
    reserved = await _insert_order(
        session, user, plan, PaymentMethod.WALLET, cleaned, now, currency
    )
    order = reserved.order
    if order.total_minor > 0:
        try:
            # Lock order cart → wallet → products → coupon: nothing else that locks this
            # wallet (top-up, refund, adjustment) takes products or coupons before it.
            await debit_wallet(
                session,
                user.id,
                order.total_minor,
                kind=WalletEntryKind.PAYMENT,
                source_reference=reserved.number,
                note=f"Order {reserved.number}",
                actor=user.email,
            )
        except InsufficientBalance as error:
            raise InsufficientFunds(error.balance_minor, order.total_minor) from error
        except WalletError as error:
            raise CheckoutError(f"Your wallet cannot pay for this order: {error}") from error
    await transition_order(
        session,
        order.id,
        OrderStatus.PENDING_PAYMENT,
        OrderStatus.PAID,
        now,
        number=reserved.number,
    )
    await queue_order_emails(session, order, reserved.lines, admin_email, base_url)
    await clear_cart(session, plan.cart_id, now)
    await _take_stock_and_coupon(session, user, plan, order, now)
    return order
