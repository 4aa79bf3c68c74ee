"""Checkout: turn a cart into an order in one transaction, paid from the wallet or reserved."""

import logging
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar, cast

from sqlalchemy import Table, bindparam, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import make_transient_to_detached

from storefront.lib.money import format_minor
from storefront.models import Cart, CartItem, Order, OrderLine, Product, User
from storefront.models.order import DeliveryMethod, OrderStatus, PaymentMethod
from storefront.models.user import WalletEntryKind
from storefront.services.cart import CartLine, select_cart_lines
from storefront.services.cart_changes import clear_cart
from storefront.services.coupons import (
    CouponError,
    evaluate_coupon,
    release_coupon_use,
    use_coupon,
)
from storefront.services.orders import (
    next_order_number,
    provisional_order_number,
    restock_order_lines,
    transition_order,
)
from storefront.services.outbox import InvalidEmailAddress, compose_email, queue_emails
from storefront.services.wallet import InsufficientBalance, WalletError, debit_wallet

log = logging.getLogger(__name__)

T = TypeVar("T")

DELIVERY_CHOICES = tuple(DeliveryMethod)
PHONE_PATTERN = re.compile(r"\+?[0-9][0-9 ()-]{6,24}")
MIN_PHONE_DIGITS = 9
MAX_ADDRESS_LENGTH = 500


# Built once: checkout runs them for every order (TAKE_STOCK for every line), and building a
# statement costs as much as sending it.
_products = cast(Table, Product.__table__).c
TAKE_STOCK = (
    update(cast(Table, Product.__table__))
    .where(
        _products.id == bindparam("product_id"),
        _products.stock >= bindparam("quantity"),
        _products.is_active.is_(True),
        _products.price_minor == bindparam("unit_price_minor"),
    )
    .values(stock=_products.stock - bindparam("quantity"))
)

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


class CheckoutError(Exception):
    """Checkout was refused and nothing changed; the message is fit for the shopper."""


class EmptyCart(CheckoutError):
    def __init__(self) -> None:
        super().__init__("Your cart is empty, so there is nothing to pay for.")


class InvalidDelivery(CheckoutError):
    def __init__(self, field_errors: dict[str, str]) -> None:
        self.field_errors = field_errors
        super().__init__("Check the delivery details below.")


class OutOfStock(CheckoutError):
    def __init__(self, product_id: int, name: str, wanted: int, available: int) -> None:
        self.product_id = product_id
        self.name = name
        self.wanted = wanted
        self.available = available
        if available <= 0:
            message = f"{name} is out of stock; remove it from your cart to check out."
        else:
            message = (
                f"Only {available} of {name} left (your cart has {wanted}); "
                "lower the quantity to check out."
            )
        super().__init__(message)


class TooManyUnits(CheckoutError):
    def __init__(self, name: str, cap: int, wanted: int) -> None:
        self.name = name
        self.cap = cap
        super().__init__(
            f"A card payment holds its items until Paystack confirms it, so one order may hold "
            f"at most {cap} of {name} (your cart has {wanted}). Lower the quantity, or pay "
            "from your wallet."
        )


class ProductUnavailable(CheckoutError):
    def __init__(self, product_id: int, name: str) -> None:
        self.product_id = product_id
        self.name = name
        super().__init__(f"{name} is no longer sold; remove it from your cart to check out.")


class CouponNoLongerValid(CheckoutError):
    def __init__(self, reason: str) -> None:
        super().__init__(f"Your coupon can no longer be used: {reason} Remove it or try again.")


class PriceChanged(CheckoutError):
    def __init__(self, message: str) -> None:
        super().__init__(f"{message} Nothing was charged; review the new total and pay again.")

    @classmethod
    def total(cls, shown_minor: int, total_minor: int) -> "PriceChanged":
        return cls(
            f"Prices changed while you were checking out: the total is now "
            f"{format_minor(total_minor)} (you saw {format_minor(shown_minor)})."
        )


class InsufficientFunds(CheckoutError):
    def __init__(self, balance_minor: int, total_minor: int) -> None:
        self.balance_minor = balance_minor
        self.total_minor = total_minor
        self.shortfall_minor = total_minor - balance_minor
        super().__init__(
            f"Your wallet holds {format_minor(balance_minor)} but this order costs "
            f"{format_minor(total_minor)}: top up at least {format_minor(self.shortfall_minor)}."
        )


@dataclass(frozen=True)
class Delivery:
    method: str
    phone: str
    address: str


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


def validate_delivery(delivery: str, phone: str, address: str) -> Delivery:
    """Clean the delivery choice and contact; InvalidDelivery names each bad field."""
    method = (delivery or "").strip()
    phone = (phone or "").strip()
    address = (address or "").strip()
    field_errors: dict[str, str] = {}
    if method not in DELIVERY_CHOICES:
        field_errors["delivery"] = "Choose delivery to an address or pickup at the shop."
    digits = sum(character.isdigit() for character in phone)
    if not phone:
        field_errors["phone"] = "Enter a phone number so we can reach you about this order."
    elif not PHONE_PATTERN.fullmatch(phone) or digits < MIN_PHONE_DIGITS:
        field_errors["phone"] = "Enter a phone number like 024 123 4567 or +233 24 123 4567."
    if method == DeliveryMethod.ADDRESS and not address:
        field_errors["address"] = "Enter the delivery address (or choose pickup)."
    elif len(address) > MAX_ADDRESS_LENGTH:
        field_errors["address"] = f"Keep the address under {MAX_ADDRESS_LENGTH} characters."
    if field_errors:
        raise InvalidDelivery(field_errors)
    return Delivery(method, phone, address if method == DeliveryMethod.ADDRESS else "")


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

    Stock goes down line by line in product-id order, only while there is enough, the product
    is on sale and its price is still the one charged; then the coupon's use is counted.
    """
    connection = await session.connection()
    for line in sorted(plan.lines, key=lambda line: line.product_id):
        result = await connection.execute(
            TAKE_STOCK,
            {
                "product_id": line.product_id,
                "quantity": line.quantity,
                "unit_price_minor": line.unit_price_minor,
            },
        )
        if result.rowcount != 1:
            raise await _line_refusal(session, line)
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


def order_url(base_url: str, order: Order) -> str:
    return f"{base_url.rstrip('/')}/orders/{order.number}"


async def queue_order_emails(
    session: AsyncSession,
    order: Order,
    lines: list[OrderLine],
    admin_email: str,
    base_url: str,
) -> None:
    """Queue the customer's confirmation and the admin's notice in the caller's transaction."""
    context = {"order": order, "lines": lines, "order_url": order_url(base_url, order)}
    recipients = [(order.email, "order_confirmation")]
    if admin_email:
        recipients.append((admin_email, "admin_new_order"))
    emails = []
    for to, template in recipients:
        try:
            emails.append(compose_email(to, template, context, f"{template}:{order.number}"))
        except InvalidEmailAddress as error:
            # A bad address must not cost the shopper the order; operators see it in the log.
            log.warning("order %s: %s not queued: %s", order.number, template, error)
    await queue_emails(session, emails)


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
