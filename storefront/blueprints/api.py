"""JSON API: the product listing, answered from the page cache."""

import json
from typing import Any

from quart import Blueprint, Response, abort, request, url_for

from storefront.lib.money import format_minor
from storefront.services.catalog import (
    CatalogProduct,
    InvalidListingQuery,
    find_category,
    parse_listing_query,
)
from storefront.web.cached_catalog import cached_categories, cached_product_page
from storefront.web.page_cache import PageCache, fresh_page_cache, shared_json
from storefront.web.settings import settings
from storefront.web.static_files import asset_url
from storefront.web.uploads import upload_url

blueprint = Blueprint("api", __name__)

API_PER_PAGE = 20
HTML_SAFE_JSON = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026"})


def _product_json(product: CatalogProduct, currency: str, base_url: str) -> dict[str, Any]:
    if product.photos:
        image_url = upload_url(product.photos[0].page_name)
    else:
        image_url = asset_url(product.image)
    if image_url.startswith("/"):
        image_url = base_url + image_url
    return {
        "id": product.id,
        "slug": product.slug,
        "name": product.name,
        "price_minor": product.price_minor,
        "price": format_minor(product.price_minor, currency),
        "currency": currency,
        "stock": product.stock,
        "image_url": image_url,
        "url": base_url + url_for("shop.product_page", slug=product.slug),
    }


async def _listing_json(
    cache: PageCache, search: str, category_slug: str, page: int, per_page: int
) -> bytes:
    category_id = None
    if category_slug:
        category = find_category(await cached_categories(cache), category_slug)
        if category is None:
            abort(400, f"Unknown category {category_slug!r}.")
        category_id = category.id
    product_page = await cached_product_page(
        cache,
        search=search,
        category_id=category_id,
        page=page,
        per_page=per_page,
        clamp=False,
    )
    currency = settings().paystack_currency
    # Never request.host: a cached answer must not carry one client's Host header to others.
    base_url = settings().public_base_url.rstrip("/")
    listing = {
        "items": [_product_json(item, currency, base_url) for item in product_page.items],
        "page": product_page.page,
        "pages": product_page.pages,
        "total": product_page.total,
    }
    text = json.dumps(listing, ensure_ascii=False, separators=(",", ":"))
    # Safe even if someone pastes the JSON into a page: no raw <, > or & reach the client.
    return text.translate(HTML_SAFE_JSON).encode()


@blueprint.get("/api/products")
async def list_products() -> Response:
    """Active products as JSON: `q`, `category`, `page`, `per_page` (1..100); 400 when bad."""
    try:
        query = parse_listing_query(
            request.args.to_dict() if request.args else {},
            default_per_page=API_PER_PAGE,
            per_page_allowed=True,
        )
    except InvalidListingQuery as error:
        abort(400, str(error))
    cache = await fresh_page_cache()

    async def load_json() -> bytes:
        return await _listing_json(
            cache, query.search, query.category_slug, query.page, query.per_page
        )

    key = ("api-products", query.search, query.category_slug, query.page, query.per_page)
    return await shared_json(cache, key, load_json)
