"""Products in the back office: the list (search, filters, pages that stay quick at ten thousand
products) and creating and editing a product's details, each with its audit row and a catalog
version bump, so every worker's storefront shows the change at once."""

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import and_, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from storefront.models import Category, Product, ProductImage, User
from storefront.services.audit import record_change, snapshot
from storefront.services.catalog import bump_catalog_version
from storefront.services.product_form import (
    MAX_ID,
    PRODUCT_AUDIT_FIELDS,
    ProductDetails,
    slug_from_name,
)

PRODUCTS_PER_PAGE = 50
SEARCH_MAX_LENGTH = 100
MAX_PAGE = 1_000_000
# Creates of one name at once on PostgreSQL: a loser's insert waits for the winner's commit,
# fails on the unique slug, and takes the next free one. Each failure is a different winner,
# so this many attempts see through that many saving one name at the same moment.
SLUG_ATTEMPTS = 10


class ProductListStatus(StrEnum):
    ACTIVE = "active"
    INACTIVE = "inactive"
    LOW_STOCK = "low_stock"  # active, and at or below its low-stock threshold


class InvalidProductFilter(ValueError):
    """A list filter is unusable; the message says which and what is allowed."""


class UnknownProduct(LookupError):
    pass


class ProductRefused(ValueError):
    """The change was not made: `field` (a form field name) holds the value to change."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True, slots=True)
class ProductFilters:
    q: str = ""
    category_id: int | None = None
    status: ProductListStatus | None = None
    page: int = 1

    def query_args(self, page: int | None = None) -> dict[str, str]:
        """The filters as the list's query string holds them (empty ones left out)."""
        args = {
            "q": self.q,
            "category": str(self.category_id) if self.category_id is not None else "",
            "status": self.status or "",
            "page": str(page or self.page) if (page or self.page) > 1 else "",
        }
        return {name: value for name, value in args.items() if value}


@dataclass(frozen=True, slots=True)
class ProductRow:
    product: Product
    category_name: str | None
    thumbnail: str | None  # the first photo's card file

    @property
    def is_low(self) -> bool:
        return self.product.stock <= self.product.low_stock_threshold


@dataclass(frozen=True, slots=True)
class ProductListPage:
    rows: list[ProductRow]
    page: int
    has_next: bool


def _whole_number(raw: str, message: str, high: int) -> int:
    if not raw.isdigit() or not 1 <= int(raw) <= high:
        raise InvalidProductFilter(message)
    return int(raw)


def parse_product_filters(args: Mapping[str, str]) -> ProductFilters:
    """`q` (name or slug), `category` (its id), `status` and `page` from the query string."""
    q = (args.get("q") or "").strip()
    if len(q) > SEARCH_MAX_LENGTH:
        raise InvalidProductFilter(f"Search for at most {SEARCH_MAX_LENGTH} characters.")
    category = (args.get("category") or "").strip()
    status = (args.get("status") or "").strip()
    page = (args.get("page") or "").strip()
    try:
        status_filter = ProductListStatus(status) if status else None
    except ValueError:
        choices = ", ".join(ProductListStatus)
        raise InvalidProductFilter(f"Status must be one of {choices}.") from None
    return ProductFilters(
        q=q,
        category_id=_whole_number(category, "Choose a category from the list.", MAX_ID)
        if category
        else None,
        status=status_filter,
        page=_whole_number(page, f"Page must be a whole number from 1 to {MAX_PAGE:,}.", MAX_PAGE)
        if page
        else 1,
    )


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _filter_conditions(filters: ProductFilters) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if filters.q:
        pattern = f"%{_escape_like(filters.q)}%"
        conditions.append(
            or_(
                Product.name.ilike(pattern, escape="\\"),
                Product.slug.like(pattern.lower(), escape="\\"),
            )
        )
    if filters.category_id is not None:
        conditions.append(Product.category_id == filters.category_id)
    if filters.status == ProductListStatus.ACTIVE:
        conditions.append(Product.is_active.is_(True))
    elif filters.status == ProductListStatus.INACTIVE:
        conditions.append(Product.is_active.is_(False))
    elif filters.status == ProductListStatus.LOW_STOCK:
        conditions.append(
            and_(Product.is_active.is_(True), Product.stock <= Product.low_stock_threshold)
        )
    return conditions


def _rows_query(conditions: list[ColumnElement[bool]]) -> Any:
    thumbnail = (
        select(ProductImage.card_filename)
        .where(ProductImage.product_id == Product.id)
        .order_by(ProductImage.position, ProductImage.id)
        .limit(1)
        .correlate(Product)
        .scalar_subquery()
    )
    return (
        select(Product, Category.name, thumbnail)
        .outerjoin(Category, Category.id == Product.category_id)
        .where(*conditions)
    )


async def select_product_list(
    session: AsyncSession, filters: ProductFilters, per_page: int = PRODUCTS_PER_PAGE
) -> ProductListPage:
    """One page of products, newest first. One query: walked down the primary key and stopped
    one row past the page (that row says whether a next page exists), never a count."""
    rows = (
        await session.execute(
            _rows_query(_filter_conditions(filters))
            .order_by(Product.id.desc())
            .limit(per_page + 1)
            .offset((filters.page - 1) * per_page)
        )
    ).all()
    listed = [ProductRow(product, name, thumbnail) for product, name, thumbnail in rows]
    return ProductListPage(
        rows=listed[:per_page], page=filters.page, has_next=len(listed) > per_page
    )


async def select_product_row(session: AsyncSession, product_id: int) -> ProductRow | None:
    """One product as the list shows it."""
    row = (await session.execute(_rows_query([Product.id == product_id]))).first()
    return ProductRow(row[0], row[1], row[2]) if row is not None else None


async def select_product(session: AsyncSession, product_id: int) -> Product | None:
    return await session.get(Product, product_id)


async def select_category_choices(session: AsyncSession) -> list[tuple[int, str, bool]]:
    """(id, name, is_active) of every category, in the admin's order, for the product form."""
    rows = await session.execute(
        select(Category.id, Category.name, Category.is_active).order_by(
            Category.position, Category.name
        )
    )
    return [(category_id, name, is_active) for category_id, name, is_active in rows.all()]


def details_of(product: Product) -> ProductDetails:
    return ProductDetails(
        name=product.name,
        slug=product.slug,
        description=product.description or "",
        price_minor=product.price_minor,
        category_id=product.category_id,
        is_active=product.is_active,
        low_stock_threshold=product.low_stock_threshold,
    )


async def _slug_holder(
    session: AsyncSession, slug: str, other_than: int | None
) -> tuple[int, str] | None:
    query = select(Product.id, Product.name).where(Product.slug == slug)
    if other_than is not None:
        query = query.where(Product.id != other_than)
    row = (await session.execute(query.limit(1))).first()
    return (row[0], row[1]) if row is not None else None


def _slug_taken(name: str) -> ProductRefused:
    return ProductRefused(
        "slug",
        f"“{name}” has this slug already: choose another, or leave it empty to make one "
        "from the name.",
    )


async def free_slug(session: AsyncSession, name: str, other_than: int | None = None) -> str:
    """The slug made from the name, with "-2", "-3"... when another product has it."""
    base = slug_from_name(name)
    query = select(Product.slug).where(
        or_(Product.slug == base, Product.slug.like(f"{_escape_like(base)}-%", escape="\\"))
    )
    if other_than is not None:
        query = query.where(Product.id != other_than)
    taken = set(await session.scalars(query))
    if base not in taken:
        return base
    number = 2
    while f"{base}-{number}" in taken:
        number += 1
    return f"{base}-{number}"


async def slug_for(
    session: AsyncSession, name: str, typed_slug: str, other_than: int | None = None
) -> str:
    """The slug a product would get: the one typed (ProductRefused when another product has
    it) or, when none is, a free one made from the name."""
    if not typed_slug:
        return await free_slug(session, name, other_than)
    holder = await _slug_holder(session, typed_slug, other_than)
    if holder is not None:
        raise _slug_taken(holder[1])
    return typed_slug


async def _check_category(session: AsyncSession, category_id: int | None) -> None:
    if category_id is None:
        return
    if await session.scalar(select(Category.id).where(Category.id == category_id)) is None:
        raise ProductRefused("category_id", "That category is gone: choose another.")


async def _with_free_slug(
    session: AsyncSession, details: ProductDetails, other_than: int | None, write: Any
) -> str:
    """Run `write(slug)` in a savepoint with the slug the details get; when a concurrent write
    took that slug first, take the next free one (a typed slug is refused instead)."""
    for _ in range(SLUG_ATTEMPTS):
        slug = await slug_for(session, details.name, details.slug, other_than)
        try:
            async with session.begin_nested():
                await write(slug)
            return slug
        except IntegrityError:
            holder = await _slug_holder(session, slug, other_than)
            if holder is None:
                raise
            if details.slug:
                raise _slug_taken(holder[1]) from None
    raise ProductRefused("slug", "Many products were saved with this name at once: try again.")


async def create_product(session: AsyncSession, actor: User, details: ProductDetails) -> Product:
    """A new product (no stock yet) with its audit row; ProductRefused says which field to
    change."""
    await _check_category(session, details.category_id)
    created: list[int] = []

    async def insert_product(slug: str) -> None:
        values = _column_values(details, slug)
        product_id = await session.scalar(
            insert(Product).values(**values, image="").returning(Product.id)
        )
        assert product_id is not None
        created.append(product_id)

    await _with_free_slug(session, details, None, insert_product)
    product = await session.get(Product, created[-1])
    assert product is not None
    await record_change(
        session, actor, "product.create", product, None, snapshot(product, PRODUCT_AUDIT_FIELDS)
    )
    await bump_catalog_version(session)
    return product


async def update_product_details(
    session: AsyncSession, actor: User, product_id: int, details: ProductDetails
) -> tuple[Product, bool]:
    """Change a product's details with an audit row of what changed; the product and whether
    anything did. UnknownProduct, or ProductRefused naming the field to change."""
    product = await session.scalar(
        select(Product)
        .where(Product.id == product_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if product is None:
        raise UnknownProduct(f"There is no product #{product_id}.")
    before = snapshot(product, PRODUCT_AUDIT_FIELDS)
    if details.category_id != product.category_id:
        await _check_category(session, details.category_id)

    async def update_product(slug: str) -> None:
        changes = {
            name: value
            for name, value in _column_values(details, slug).items()
            if value != before[name]
        }
        if changes:
            await session.execute(
                update(Product)
                .where(Product.id == product_id)
                .values(**changes)
                .execution_options(synchronize_session=False)
            )

    await _with_free_slug(session, details, product_id, update_product)
    product = await session.scalar(
        select(Product).where(Product.id == product_id).execution_options(populate_existing=True)
    )
    assert product is not None
    after = snapshot(product, PRODUCT_AUDIT_FIELDS)
    if after == before:
        return product, False
    await record_change(session, actor, "product.update", product, before, after)
    await bump_catalog_version(session)
    return product, True


def _column_values(details: ProductDetails, slug: str) -> dict[str, Any]:
    return {
        "name": details.name,
        "slug": slug,
        "description": details.description,
        "price_minor": details.price_minor,
        "category_id": details.category_id,
        "is_active": details.is_active,
        "low_stock_threshold": details.low_stock_threshold,
    }
