"""The only code that changes a product's stock: every change writes its movement in the same
transaction, so a product's stock equals the sum of its movements (as a wallet's balance equals
the sum of its ledger entries). tests/services/test_stock.py greps the package for any other
writer of products.stock."""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import cast as typed

from sqlalchemy import BigInteger, Table, bindparam, cast, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.util import identity_key

from storefront.models import Order, OrderLine, Product, StockMovement, User, utcnow
from storefront.models.stock import StockMovementKind
from storefront.services.audit import RecordRef, record_change
from storefront.services.catalog import bump_catalog_version

MOVE_ATTEMPTS = 3
# products.stock is a 32-bit INTEGER on PostgreSQL: a change past it is refused, not a 500.
MAX_STOCK = 2**31 - 1


class StockRefused(Exception):
    """A stock change was refused; the message is fit for the person who asked."""


class UnknownProduct(StockRefused):
    def __init__(self, product_id: int) -> None:
        self.product_id = product_id
        super().__init__("There is no such product.")


class NotEnoughStock(StockRefused):
    def __init__(self, name: str, stock: int, change: int) -> None:
        self.stock = stock
        super().__init__(
            f"{name} has {stock} in stock: a change of {change:+d} would leave "
            f"{stock + change}. Nothing changed."
        )


class TooMuchStock(StockRefused):
    def __init__(self, name: str, stock: int, change: int) -> None:
        self.stock = stock
        super().__init__(
            f"{name} has {stock} in stock: a change of {change:+d} would pass the most "
            f"a product can hold ({MAX_STOCK:,}). Nothing changed."
        )


class SaleLineRefused(StockRefused):
    """A sale's conditional update matched no row: too little stock, off sale or repriced.
    The caller (checkout) reads the product again to say which."""

    def __init__(self, product_id: int) -> None:
        self.product_id = product_id
        super().__init__("This product can no longer be sold as it is in the cart.")


@dataclass(frozen=True)
class SaleLine:
    product_id: int
    quantity: int
    unit_price_minor: int


@dataclass(frozen=True)
class StockMovementRow:
    """A movement as the back office lists it: who made it, and the order behind it."""

    movement: StockMovement
    actor_email: str | None
    order_number: str | None


_products = typed(Table, Product.__table__)
_movements = typed(Table, StockMovement.__table__)
# Built once: checkout runs _TAKE_FOR_SALE for every line and _INSERT_MOVEMENTS per order. Core
# updates of the table also set products.updated_at, which the shop's page caches watch.
# Compared as BIGINT: near MAX_STOCK an INTEGER sum would overflow before the comparison.
_stock_after = cast(_products.c.stock, BigInteger) + bindparam("change", type_=BigInteger)
_MOVE_STOCK = (
    update(_products)
    .where(
        _products.c.id == bindparam("product_id"),
        _stock_after >= 0,
        _stock_after <= MAX_STOCK,
    )
    .values(stock=_products.c.stock + bindparam("change"))
    .returning(_products.c.stock)
)
_TAKE_FOR_SALE = (
    update(_products)
    .where(
        _products.c.id == bindparam("product_id"),
        _products.c.stock >= bindparam("quantity"),
        _products.c.is_active.is_(True),
        _products.c.price_minor == bindparam("unit_price_minor"),
    )
    .values(stock=_products.c.stock - bindparam("quantity"))
)
_INSERT_MOVEMENTS = _movements.insert()


def _check_change(change: int) -> None:
    if not isinstance(change, int) or isinstance(change, bool) or change == 0:
        raise ValueError(f"a stock change is a whole number other than 0, got {change!r}")
    if abs(change) > MAX_STOCK:
        raise ValueError(f"a stock change is at most {MAX_STOCK:,} either way, got {change}")


def _movement(
    product_id: int,
    change: int,
    kind: StockMovementKind,
    reason: str,
    actor_id: int | None,
    order_id: int | None,
    now: datetime,
) -> dict[str, object]:
    return {
        "product_id": product_id,
        "change": change,
        "kind": kind,
        "reason": reason,
        "actor_id": actor_id,
        "order_id": order_id,
        "created_at": now,
    }


def _show_stock(session: AsyncSession, product_id: int, stock: int) -> None:
    """A Product loaded in this session shows the new stock without another query."""
    product = session.sync_session.identity_map.get(identity_key(Product, product_id))
    if product is not None:
        set_committed_value(product, "stock", stock)


async def move_stock(
    session: AsyncSession,
    product_id: int,
    change: int,
    kind: StockMovementKind,
    *,
    reason: str = "",
    actor: User | None = None,
    order_id: int | None = None,
    now: datetime | None = None,
) -> int:
    """Change a product's stock by `change` and record the movement, in the caller's write
    transaction; the stock after it. Refused (StockRefused, nothing changed) when the product
    is unknown or the stock would go below 0."""
    _check_change(change)
    now = now or utcnow()
    await session.flush()  # as the ORM would before an UPDATE: pending rows (a new product) first
    connection = await session.connection()
    moved = None
    for attempt in range(1, MOVE_ATTEMPTS + 1):
        moved = (
            await connection.execute(_MOVE_STOCK, {"product_id": product_id, "change": change})
        ).one_or_none()
        if moved is not None:
            break
        product = (
            await session.execute(
                select(Product.name, Product.stock).where(Product.id == product_id)
            )
        ).one_or_none()
        if product is None:
            raise UnknownProduct(product_id)
        if product.stock + change < 0:
            raise NotEnoughStock(product.name, product.stock, change)
        if product.stock + change > MAX_STOCK:
            raise TooMuchStock(product.name, product.stock, change)
        # PostgreSQL: a release or refund committed between the update and this read, and the
        # change fits now; try the conditional update again.
        if attempt == MOVE_ATTEMPTS:
            raise StockRefused(f"The stock of {product.name} kept changing; try again.")
    assert moved is not None
    actor_id = actor.id if actor is not None else None
    await connection.execute(
        _INSERT_MOVEMENTS,
        _movement(product_id, change, StockMovementKind(kind), reason, actor_id, order_id, now),
    )
    _show_stock(session, product_id, moved.stock)
    return int(moved.stock)


async def adjust_stock(
    session: AsyncSession, actor: User, product_id: int, change: int, reason: str
) -> int:
    """A count corrected by hand in the back office: the movement, its audit row and a catalog
    bump (the shop shows stock), in the caller's audited write; the stock after it."""
    stock = await move_stock(
        session, product_id, change, StockMovementKind.ADJUSTMENT, reason=reason, actor=actor
    )
    await record_change(
        session,
        actor,
        "product.stock",
        RecordRef("product", product_id),
        {"stock": stock - change},
        {"stock": stock, "change": change, "reason": reason},
    )
    await bump_catalog_version(session)
    return stock


async def receive_stock(
    session: AsyncSession,
    quantities: Mapping[int, int],
    reason: str,
    actor: User | None = None,
    now: datetime | None = None,
) -> None:
    """Restock several products (new ones, the demo shop) by positive quantities; zeros skipped."""
    for product_id in sorted(quantities):
        if quantities[product_id]:
            await move_stock(
                session,
                product_id,
                quantities[product_id],
                StockMovementKind.RESTOCK,
                reason=reason,
                actor=actor,
                now=now,
            )


async def take_stock_for_sale(
    session: AsyncSession,
    order_id: int,
    order_number: str,
    lines: Iterable[SaleLine],
    now: datetime,
) -> None:
    """Take each line's quantity for the order, in product-id order, only while there is enough,
    the product is on sale and its price is still the one charged; then record the sales.
    SaleLineRefused names the first line that could not be taken (the caller rolls back)."""
    connection = await session.connection()
    movements = []
    for line in sorted(lines, key=lambda line: line.product_id):
        result = await connection.execute(
            _TAKE_FOR_SALE,
            {
                "product_id": line.product_id,
                "quantity": line.quantity,
                "unit_price_minor": line.unit_price_minor,
            },
        )
        if result.rowcount != 1:
            raise SaleLineRefused(line.product_id)
        movements.append(
            _movement(
                line.product_id,
                -line.quantity,
                StockMovementKind.SALE,
                f"Order {order_number}",
                None,
                order_id,
                now,
            )
        )
    if movements:
        await connection.execute(_INSERT_MOVEMENTS, movements)


async def return_order_stock(
    session: AsyncSession,
    order_id: int,
    kind: StockMovementKind,
    reason: str,
    actor: User | None = None,
    now: datetime | None = None,
) -> None:
    """Put every line of the order back on its product (a release, cancellation or refund),
    in product-id order, each with its movement."""
    quantities: dict[int, int] = {}
    rows = await session.execute(
        select(OrderLine.product_id, OrderLine.quantity).where(OrderLine.order_id == order_id)
    )
    for product_id, quantity in rows:
        if product_id is not None:
            quantities[product_id] = quantities.get(product_id, 0) + quantity
    for product_id in sorted(quantities):
        await move_stock(
            session,
            product_id,
            quantities[product_id],
            kind,
            reason=reason,
            actor=actor,
            order_id=order_id,
            now=now,
        )


async def select_stock_movements(
    session: AsyncSession, product_id: int, *, before_id: int | None = None, limit: int = 20
) -> list[StockMovementRow]:
    """A product's movements, newest first, older than `before_id` (keyset paging)."""
    query = (
        select(StockMovement, User.email, Order.number)
        .outerjoin(User, User.id == StockMovement.actor_id)
        .outerjoin(Order, Order.id == StockMovement.order_id)
        .where(StockMovement.product_id == product_id)
        .order_by(StockMovement.id.desc())
        .limit(limit)
    )
    if before_id is not None:
        query = query.where(StockMovement.id < before_id)
    return [
        StockMovementRow(movement, email, number)
        for movement, email, number in (await session.execute(query)).all()
    ]


async def select_stock_mismatches(session: AsyncSession) -> list[tuple[int, int, int]]:
    """Products whose stock differs from the sum of their movements: (product_id, stock, sum)."""
    movement_sum = (
        select(func.coalesce(func.sum(StockMovement.change), 0))
        .where(StockMovement.product_id == Product.id)
        .scalar_subquery()
    )
    rows = await session.execute(
        select(Product.id, Product.stock, movement_sum)
        .where(Product.stock != movement_sum)
        .order_by(Product.id)
    )
    return [(row[0], row[1], row[2]) for row in rows]
