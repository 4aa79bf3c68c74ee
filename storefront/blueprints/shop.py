"""The shop window: the home page (sliders, categories, search, product grid) and product pages.

Both are shared pages (storefront.web.page_cache): rendered once per catalog version, with only the
shopper's CSRF token and cart count spliced in per request.
"""

from typing import Any
from urllib.parse import urlencode

from quart import Blueprint, Response, abort, request, url_for

from storefront.services.catalog import (
    InvalidListingQuery,
    find_category,
    parse_listing_query,
)
from storefront.web.cached_catalog import (
    cached_categories,
    cached_product,
    cached_product_page,
    cached_sliders,
)
from storefront.web.page_cache import fresh_page_cache, shared_page
from storefront.web.static_files import asset_url

blueprint = Blueprint("shop", __name__)

HOME_PER_PAGE = 12
MAX_SLUG_LENGTH = 120


def home_url(search: str = "", category_slug: str = "", page: int = 1) -> str:
    """The home page URL for a search, category and page (empty parts left out)."""
    params: dict[str, str | int] = {}
    if search:
        params["q"] = search
    if category_slug:
        params["category"] = category_slug
    if page > 1:
        params["page"] = page
    return url_for("shop.home") + ("?" + urlencode(params) if params else "")


@blueprint.get("/")
async def home() -> Response:
    """Active sliders in order, category filter, search and one page of active products."""
    # A plain dict: werkzeug's MultiDict.get builds an exception for every missing key.
    args = request.args.to_dict() if request.args else {}
    try:
        query = parse_listing_query(args, default_per_page=HOME_PER_PAGE, per_page_allowed=False)
    except InvalidListingQuery as error:
        abort(400, str(error))
    cache = await fresh_page_cache()

    async def load_context() -> dict[str, Any]:
        categories = await cached_categories(cache)
        category = None
        if query.category_slug:
            category = find_category(categories, query.category_slug)
            if category is None:
                abort(404, "There is no such category. Browse all products instead.")
        product_page = await cached_product_page(
            cache,
            search=query.search,
            category_id=category.id if category else None,
            page=query.page,
            per_page=query.per_page,
            clamp=True,
        )
        unfiltered_first_page = not query.search and category is None and product_page.page == 1
        return {
            "sliders": await cached_sliders(cache) if unfiltered_first_page else (),
            "categories": categories,
            "category": category,
            "search": query.search,
            "product_page": product_page,
            "home_url": home_url,
            "asset_url": asset_url,
            "next_url": home_url(query.search, query.category_slug, product_page.page),
        }

    # base.html shows the raw `q` in the search box, so the raw text is part of the key.
    key = ("home", args.get("q", ""), query.category_slug, query.page)
    return await shared_page(cache, key, "shop/home.html", load_context)


@blueprint.get("/products/<slug>")
async def product_page(slug: str) -> Response:
    """An active product: price, stock state and the add-to-cart form; 404 otherwise."""
    not_found = "We could not find that product. It may no longer be sold."
    if len(slug) > MAX_SLUG_LENGTH:
        abort(404, not_found)
    cache = await fresh_page_cache()

    async def load_context() -> dict[str, Any]:
        product = await cached_product(cache, slug)
        if product is None:
            abort(404, not_found)
        return {
            "product": product,
            "asset_url": asset_url,
            "next_url": url_for("shop.product_page", slug=slug),
        }

    key = ("product", slug, request.args.to_dict().get("q", "") if request.args else "")
    return await shared_page(cache, key, "shop/product.html", load_context)
