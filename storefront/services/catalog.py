"""The catalog as shoppers see it (active products, sliders, categories) and the version that
tells every worker's page cache when any of it changed."""

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, event, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from storefront.db.engine import dialect_name
from storefront.lib.images import CARD_WIDTH, fitted_size
from storefront.models import CatalogVersion, Category, Product, ProductImage, Slider, utcnow

LOW_STOCK_THRESHOLD = 5
MAX_SEARCH_LENGTH = 100
MAX_PER_PAGE = 100
MAX_PAGE_DIGITS = 9
MAX_CATEGORY_SLUG_LENGTH = 80
_DIGITS = re.compile(r"[0-9]+")
CATALOG_VERSION_ROW_ID = 1
# Stock is not among them: it changes only through services/stock.py, with its movement.
EDITABLE_PRODUCT_FIELDS = frozenset(
    {"name", "slug", "description", "price_minor", "image", "category_id", "is_active"}
)

# Commits of catalog changes made by this process; the page cache re-reads the version at once
# when this moves instead of waiting for its next periodic check.
_local_catalog_changes = 0


@dataclass(frozen=True, slots=True)
class CatalogPhoto:
    """An uploaded photo's two files (names under UPLOAD_FOLDER) and their sizes in pixels."""

    card_name: str
    page_name: str
    width: int  # of the page-size file
    height: int

    @property
    def card_size(self) -> tuple[int, int]:
        return fitted_size(self.width, self.height, CARD_WIDTH)

    @classmethod
    def of(cls, image: ProductImage) -> "CatalogPhoto":
        return cls(image.card_filename, image.page_filename, image.width, image.height)


@dataclass(frozen=True, slots=True)
class CatalogProduct:
    """A product as shown to shoppers: plain values, safe to cache and share between requests.
    `photos` in the back office's order; a listing carries the first only."""

    id: int
    slug: str
    name: str
    description: str
    price_minor: int
    stock: int
    image: str
    category_id: int | None
    photos: tuple[CatalogPhoto, ...] = ()

    @property
    def stock_state(self) -> str:
        """`out`, `low` (at most LOW_STOCK_THRESHOLD left) or `in`; also the CSS class."""
        if self.stock <= 0:
            return "out"
        if self.stock <= LOW_STOCK_THRESHOLD:
            return "low"
        return "in"

    @property
    def stock_label(self) -> str:
        if self.stock <= 0:
            return "Out of stock"
        if self.stock <= LOW_STOCK_THRESHOLD:
            return f"Only {self.stock} left"
        return "In stock"


@dataclass(frozen=True, slots=True)
class CatalogSlide:
    id: int
    title: str
    subtitle: str
    image: str
    link_url: str

    @property
    def safe_link(self) -> str:
        """The link if it stays on http(s) or this site; "" for javascript: and the like."""
        link = self.link_url.strip()
        lowered = link.lower()
        if lowered.startswith(("https://", "http://")):
            return link
        if link.startswith("/") and not link.startswith("//") and "\\" not in link:
            return link
        return ""


@dataclass(frozen=True, slots=True)
class CatalogCategory:
    id: int
    slug: str
    name: str


@dataclass(frozen=True, slots=True)
class ProductPage:
    """One page of a product listing; `page` is clamped to the last page when asked past it."""

    items: tuple[CatalogProduct, ...]
    total: int
    page: int
    pages: int
    per_page: int


class InvalidListingQuery(ValueError):
    """A listing parameter is unusable; the message says which and what is allowed."""


@dataclass(frozen=True, slots=True)
class ListingQuery:
    search: str
    category_slug: str
    page: int
    per_page: int


def _whole_number(name: str, raw: str | None, default: int, low: int, high: int) -> int:
    text = (raw or "").strip()
    if not text:
        return default
    if not _DIGITS.fullmatch(text):
        raise InvalidListingQuery(f"{name} must be a whole number from {low} to {high:,}.")
    if len(text.lstrip("0")) > MAX_PAGE_DIGITS or not low <= int(text) <= high:
        raise InvalidListingQuery(f"{name} must be a whole number from {low} to {high:,}.")
    return int(text)


def parse_listing_query(
    args: Mapping[str, str], *, default_per_page: int, per_page_allowed: bool
) -> ListingQuery:
    """`q`, `category`, `page` and (when allowed) `per_page` from a query string."""
    search = (args.get("q") or "").strip()
    if len(search) > MAX_SEARCH_LENGTH:
        raise InvalidListingQuery(f"Search for at most {MAX_SEARCH_LENGTH} characters.")
    category_slug = (args.get("category") or "").strip()
    if len(category_slug) > MAX_CATEGORY_SLUG_LENGTH:
        raise InvalidListingQuery("That category does not exist.")
    page = _whole_number("page", args.get("page"), 1, 1, 10**MAX_PAGE_DIGITS - 1)
    per_page = default_per_page
    if per_page_allowed:
        per_page = _whole_number(
            "per_page", args.get("per_page"), default_per_page, 1, MAX_PER_PAGE
        )
    return ListingQuery(search=search, category_slug=category_slug, page=page, per_page=per_page)


def _catalog_product(product: Product, photos: tuple[CatalogPhoto, ...] = ()) -> CatalogProduct:
    return CatalogProduct(
        id=product.id,
        slug=product.slug,
        name=product.name,
        description=product.description or "",
        price_minor=product.price_minor,
        stock=product.stock,
        image=product.image or "",
        category_id=product.category_id,
        photos=photos,
    )


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _active_products(search: str, category_id: int | None) -> Select[Any]:
    statement = select(Product).where(Product.is_active.is_(True))
    if category_id is not None:
        statement = statement.where(Product.category_id == category_id)
    if search:
        pattern = f"%{_escape_like(search)}%"
        statement = statement.where(
            or_(
                Product.name.ilike(pattern, escape="\\"),
                Product.description.ilike(pattern, escape="\\"),
            )
        )
    return statement


async def select_product_page(
    session: AsyncSession,
    *,
    search: str = "",
    category_id: int | None = None,
    page: int = 1,
    per_page: int = 12,
    clamp: bool = True,
) -> ProductPage:
    """Active products matching the search (name or description, any case) and category.

    Two queries whatever the page size: the count and the page. Past the last page: the last
    page when `clamp`, else no items (and no query for them).
    """
    filtered = _active_products(search, category_id)
    total = await session.scalar(select(func.count()).select_from(filtered.subquery())) or 0
    pages = max(1, -(-total // per_page))
    if page > pages:
        if not clamp:
            return ProductPage(items=(), total=total, page=page, pages=pages, per_page=per_page)
        page = pages
    first_photo_id = (
        select(ProductImage.id)
        .where(ProductImage.product_id == Product.id)
        .order_by(ProductImage.position, ProductImage.id)
        .limit(1)
        .correlate(Product)
        .scalar_subquery()
    )
    rows = await session.execute(
        filtered.add_columns(ProductImage)
        .outerjoin(ProductImage, ProductImage.id == first_photo_id)
        .order_by(Product.created_at.desc(), Product.id.desc())
        .limit(per_page)
        .offset((page - 1) * per_page)
    )
    items = tuple(
        _catalog_product(product, (CatalogPhoto.of(photo),) if photo is not None else ())
        for product, photo in rows
    )
    return ProductPage(items=items, total=total, page=page, pages=pages, per_page=per_page)


async def select_active_product(session: AsyncSession, slug: str) -> CatalogProduct | None:
    """The active product with this slug and all its photos, or None (unknown and inactive look
    the same)."""
    rows = (
        await session.execute(
            select(Product, ProductImage)
            .outerjoin(ProductImage, ProductImage.product_id == Product.id)
            .where(Product.slug == slug, Product.is_active.is_(True))
            .order_by(ProductImage.position, ProductImage.id)
        )
    ).all()
    if not rows:
        return None
    photos = tuple(CatalogPhoto.of(photo) for _, photo in rows if photo is not None)
    return _catalog_product(rows[0][0], photos)


async def select_active_sliders(session: AsyncSession) -> tuple[CatalogSlide, ...]:
    """Active sliders in the order the admin set (position, then id)."""
    rows = await session.scalars(
        select(Slider).where(Slider.is_active.is_(True)).order_by(Slider.position, Slider.id)
    )
    return tuple(
        CatalogSlide(
            id=slide.id,
            title=slide.title,
            subtitle=slide.subtitle or "",
            image=slide.image or "",
            link_url=slide.link_url or "",
        )
        for slide in rows
    )


async def select_categories(session: AsyncSession) -> tuple[CatalogCategory, ...]:
    """Active categories in the admin's order, for the filter links and slug lookups (a
    deactivated category is hidden from the shop; its products stay on sale)."""
    rows = await session.scalars(
        select(Category)
        .where(Category.is_active.is_(True))
        .order_by(Category.position, Category.name, Category.id)
    )
    return tuple(CatalogCategory(id=row.id, slug=row.slug, name=row.name) for row in rows)


async def select_catalog_fingerprint(session: AsyncSession) -> tuple[Any, ...]:
    """What changes whenever the catalog does: the bumped version, plus the newest product
    edit and the product count, which also catch product writes that forgot to bump."""
    row = (
        await session.execute(
            select(
                select(CatalogVersion.version)
                .where(CatalogVersion.id == CATALOG_VERSION_ROW_ID)
                .scalar_subquery(),
                select(func.max(Product.updated_at)).scalar_subquery(),
                select(func.count(Product.id)).scalar_subquery(),
            )
        )
    ).one()
    return tuple(row)


def _count_local_change(_session: Session) -> None:
    global _local_catalog_changes
    _local_catalog_changes += 1


def local_catalog_changes() -> int:
    """How many catalog changes this process has committed (the page cache watches it)."""
    return _local_catalog_changes


async def bump_catalog_version(session: AsyncSession) -> None:
    """Record a catalog change in the caller's transaction; every worker's cache sees it.

    Call it in the same transaction as any change to products, categories or sliders (the back
    office and the seed command do). This process notices at commit; others within a second.
    """
    now = utcnow()
    dialect = dialect_name(session)
    insert = postgresql_insert if dialect == "postgresql" else sqlite_insert
    statement = insert(CatalogVersion).values(id=CATALOG_VERSION_ROW_ID, version=1, updated_at=now)
    statement = statement.on_conflict_do_update(
        index_elements=[CatalogVersion.id],
        set_={"version": CatalogVersion.version + 1, "updated_at": now},
    )
    await session.execute(statement)
    event.listen(session.sync_session, "after_commit", _count_local_change, once=True)


async def update_product(session: AsyncSession, product_id: int, **changes: Any) -> bool:
    """Change a product's fields and bump the catalog version; False when there is no such
    product. The caller validates values and owns the transaction."""
    unknown = set(changes) - EDITABLE_PRODUCT_FIELDS
    if unknown:
        raise ValueError(f"not editable product fields: {', '.join(sorted(unknown))}")
    if not changes:
        return True
    result = await session.execute(
        update(Product).where(Product.id == product_id).values(**changes)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return False
    await bump_catalog_version(session)
    return True


def find_category(categories: Sequence[CatalogCategory], slug: str) -> CatalogCategory | None:
    """The category with this slug among those already loaded (no query)."""
    for category in categories:
        if category.slug == slug:
            return category
    return None
