"""Catalog reads through the page cache: each query runs once per catalog version per worker."""

from storefront.db.engine import get_session
from storefront.services.catalog import (
    CatalogCategory,
    CatalogProduct,
    CatalogSlide,
    ProductPage,
    select_active_product,
    select_active_sliders,
    select_categories,
    select_product_page,
)
from storefront.web.page_cache import PageCache

# Rough per-object sizes, only to keep the cache within its byte budget.
_ROW_OVERHEAD_BYTES = 200


def _product_size(product: CatalogProduct) -> int:
    return (
        _ROW_OVERHEAD_BYTES
        + len(product.name)
        + len(product.description)
        + len(product.slug)
        + len(product.image)
        + _ROW_OVERHEAD_BYTES * len(product.photos)
    )


async def cached_categories(cache: PageCache) -> tuple[CatalogCategory, ...]:
    """Active categories, in the admin's order."""

    async def build() -> tuple[tuple[CatalogCategory, ...], int]:
        categories = await select_categories(get_session())
        return categories, _ROW_OVERHEAD_BYTES * (1 + len(categories))

    return await cache.get_or_build(("categories",), build)


async def cached_sliders(cache: PageCache) -> tuple[CatalogSlide, ...]:
    """Active sliders in position order."""

    async def build() -> tuple[tuple[CatalogSlide, ...], int]:
        slides = await select_active_sliders(get_session())
        return slides, _ROW_OVERHEAD_BYTES * (1 + len(slides))

    return await cache.get_or_build(("sliders",), build)


async def cached_product_page(
    cache: PageCache,
    *,
    search: str,
    category_id: int | None,
    page: int,
    per_page: int,
    clamp: bool,
) -> ProductPage:
    """One page of active products for this search and category."""

    async def build() -> tuple[ProductPage, int]:
        product_page = await select_product_page(
            get_session(),
            search=search,
            category_id=category_id,
            page=page,
            per_page=per_page,
            clamp=clamp,
        )
        size = _ROW_OVERHEAD_BYTES + sum(_product_size(item) for item in product_page.items)
        return product_page, size

    key = ("products", search, category_id, page, per_page, clamp)
    return await cache.get_or_build(key, build)


async def cached_product(cache: PageCache, slug: str) -> CatalogProduct | None:
    """The active product with this slug (None is cached too, as it is an answer)."""

    async def build() -> tuple[CatalogProduct | None, int]:
        product = await select_active_product(get_session(), slug)
        return product, _product_size(product) if product else _ROW_OVERHEAD_BYTES

    return await cache.get_or_build(("product", slug), build)
