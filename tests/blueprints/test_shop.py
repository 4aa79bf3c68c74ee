"""The home page and product pages: sliders, grid, filters, search, pages, stock states, 404s,
escaping, the shared-page cache (per-shopper token and badge, invalidation, query counts),
gzip, static file caching and the first-load weight."""

import gzip
import re
from html import unescape

import pytest
from sqlalchemy import text, update

from storefront.db.engine import sessionmaker_for
from storefront.db.transactions import write_transaction
from storefront.models import Product
from storefront.services.catalog import update_product
from storefront.web.page_cache import page_cache_for
from tests.conftest import CSRF_TOKEN
from tests.fixtures_shop import counted_statements, set_badge_cookie

XSS_NAME = "<script>alert(1)</script>"


@pytest.fixture(name="app_overrides")
def _app_overrides():
    return {"RATELIMIT_ENABLED": False}


async def page_text(client, url: str, **kwargs) -> str:
    response = await client.get(url, **kwargs)
    assert response.status_code == 200, await response.get_data(as_text=True)
    return await response.get_data(as_text=True)


def card_names(body: str) -> list[str]:
    return [unescape(name) for name in re.findall(r'<h2 class="card-title">([^<]*)</h2>', body)]


def form_tokens(body: str) -> set[str]:
    return set(re.findall(r'name="csrf_token" value="([^"]*)"', body))


def badge(body: str) -> str:
    match = re.search(r'id="cart-badge"[^>]*>Cart <span class="count">([^<]*)</span>', body)
    assert match, body
    return match[1]


async def test_home_shows_active_sliders_in_position_order(client, add_slider, add_product):
    await add_product("Kente Stole")
    await add_slider("Second slide", position=2, link_url="/?category=fashion")
    await add_slider("Hidden slide", position=0, is_active=False)
    await add_slider("First slide", position=1, link_url="javascript:alert(1)")
    body = await page_text(client, "/")
    slides = re.findall(r'<figure class="slide"[^>]*>.*?<strong>([^<]*)</strong>', body, re.S)
    assert slides == ["First slide", "Second slide"]
    assert 'class="slider"' in body and "scroll-snap" not in body  # CSS does it, not inline
    assert 'href="/?category=fashion"' in body
    assert "javascript:" not in body


async def test_home_grid_cards_and_inactive_products(client, add_product):
    await add_product("Hidden Radio", is_active=False)
    shown = await add_product("Shea Butter", price_minor=6_000, stock=3)
    body = await page_text(client, "/")
    assert card_names(body) == ["Shea Butter"]
    assert "Hidden Radio" not in body
    card = body[body.index('<li class="card">') :]
    assert f'href="/products/{shown.slug}"' in card
    assert "GH₵ 60.00" in card
    assert "Only 3 left" in card
    assert '<form class="add-to-cart"' in card and 'action="/cart/items"' in card
    assert f'name="product_id" value="{shown.id}"' in card
    assert f'name="csrf_token" value="{CSRF_TOKEN}"' in card
    assert 'max="3"' in card
    assert "<img" in card


async def test_category_filter(client, add_category, add_product):
    phones = await add_category("Phones", slug="phones")
    await add_category("Pantry", slug="pantry")
    await add_product("Tecno Spark", category=phones)
    await add_product("Gari 2kg")
    body = await page_text(client, "/?category=phones")
    assert card_names(body) == ["Tecno Spark"]
    assert '<a href="/?category=phones" class="current" aria-current="page">Phones</a>' in body
    assert '<a href="/?category=pantry">Pantry</a>' in body
    everything = await page_text(client, "/")
    assert set(card_names(everything)) == {"Tecno Spark", "Gari 2kg"}


async def test_unknown_category_is_a_404_page(client):
    response = await client.get("/?category=no-such-category")
    assert response.status_code == 404
    assert "There is no such category" in await response.get_data(as_text=True)


async def test_search_by_name_or_description_in_any_case(client, add_product):
    await add_product("Kente Stole")
    await add_product("Batakari Smock", description="Woven like KENTE in the north")
    await add_product("Gari")
    await add_product("Hidden Kente", is_active=False)
    body = await page_text(client, "/?q=kEnTe")
    assert sorted(card_names(body)) == ["Batakari Smock", "Kente Stole"]
    assert "Results for “kEnTe”" in body and "2 products found" in body
    assert 'name="q" value="kEnTe"' in body
    none = await page_text(client, "/?q=nothing-like-this")
    assert card_names(none) == [] and "No products match your search" in none


async def test_pagination(client, add_products):
    await add_products(14)
    first = await page_text(client, "/")
    assert len(card_names(first)) == 12
    assert "Page 1 of 2" in first and 'rel="next" href="/?page=2"' in first
    second = await page_text(client, "/?page=2")
    assert len(card_names(second)) == 2
    assert 'rel="prev" href="/"' in second
    assert set(card_names(first)).isdisjoint(card_names(second))
    # A page past the end (an old link after products went away) shows the last page.
    past_end = await page_text(client, "/?page=999")
    assert card_names(past_end) == card_names(second) and "Page 2 of 2" in past_end


@pytest.mark.parametrize("page", ["abc", "-1", "0", "1.5", "99999999999999999999", "9" * 5000])
async def test_bad_page_numbers_get_a_clear_400_page(client, add_product, page):
    await add_product()
    response = await client.get(f"/?page={page}")
    assert response.status_code == 400
    body = await response.get_data(as_text=True)
    assert "page must be a whole number from 1" in body
    assert "<!doctype html>" in body


async def test_overlong_search_is_refused(client):
    response = await client.get("/?q=" + "x" * 101)
    assert response.status_code == 400
    assert "at most 100 characters" in await response.get_data(as_text=True)


@pytest.mark.parametrize(
    ("stock", "label", "disabled"),
    [(20, "In stock", False), (5, "Only 5 left", False), (3, "Only 3 left", False),
     (0, "Out of stock", True)],
)  # fmt: skip
async def test_product_page_stock_states(client, add_product, stock, label, disabled):
    product = await add_product(
        "Ahenema Sandals",
        price_minor=25_050,
        stock=stock,
        description="Made in Kumasi.\n\nLeather.",
    )
    body = await page_text(client, f"/products/{product.slug}")
    assert "<h1>Ahenema Sandals</h1>" in body
    assert "GH₵ 250.50" in body
    assert "<p>Made in Kumasi.</p>" in body and "<p>Leather.</p>" in body
    assert (
        f'<p class="stock {"out" if stock == 0 else "low" if stock <= 5 else "in"}">{label}' in body
    )
    start = body.index('<form class="add-to-cart"')
    form = body[start : body.index("</form>", start)]
    assert 'name="quantity" value="1" min="1"' in form
    assert f'name="product_id" value="{product.id}"' in form
    assert ('<button type="submit" disabled>' in form) is disabled
    if disabled:
        assert ">Out of stock</button>" in form


async def test_unknown_and_inactive_products_get_a_404_page(client, add_product):
    hidden = await add_product("Old Phone", is_active=False)
    for url in (f"/products/{hidden.slug}", "/products/no-such-product", "/products/" + "x" * 300):
        response = await client.get(url)
        assert response.status_code == 404
        body = await response.get_data(as_text=True)
        assert "We could not find that product" in body and "<!doctype html>" in body
        assert "Old Phone" not in body


async def test_names_are_escaped_on_home_and_product_page(client, add_product):
    product = await add_product(XSS_NAME, description=XSS_NAME)
    for url in ("/", f"/products/{product.slug}", "/?q=script"):
        body = await page_text(client, url)
        assert XSS_NAME not in body
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body


async def test_home_takes_a_fixed_number_of_queries_whatever_the_catalog_size(
    app, client, add_products, add_slider
):
    await add_slider("Welcome")
    cache = page_cache_for(app)

    async def cold_queries() -> int:
        cache.invalidate()
        with counted_statements(app) as statements:
            await page_text(client, "/")
        return len(statements)

    await add_products(3, prefix="Few")
    with_few = await cold_queries()
    await add_products(40, prefix="Many")
    with_many = await cold_queries()
    assert with_many == with_few
    assert with_few == 6  # BEGIN, fingerprint, categories, count, page, sliders
    with counted_statements(app) as statements:
        await page_text(client, "/")
    warm = [statement for statement in statements if "catalog_versions" not in statement]
    assert [s for s in warm if s.strip().upper() not in {"BEGIN", "ROLLBACK"}] == []


async def test_a_price_change_through_the_service_shows_at_once(app, client, add_product):
    product = await add_product("Shito", price_minor=4_500)
    assert "GH₵ 45.00" in await page_text(client, f"/products/{product.slug}")
    assert "GH₵ 45.00" in await page_text(client, "/")
    # A cache that would wait a full minute between checks: the bump still reaches it.
    cache = page_cache_for(app)
    cache.check_seconds = 60
    async with sessionmaker_for(app)() as db_session, write_transaction(db_session):
        await update_product(db_session, product.id, price_minor=5_000)
    assert "GH₵ 50.00" in await page_text(client, f"/products/{product.slug}")
    home = await page_text(client, "/")
    assert "GH₵ 50.00" in home and "GH₵ 45.00" not in home


class Clock:
    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now


async def test_another_workers_edit_shows_within_the_check_interval(app, client, add_product):
    """A write in another process (no local bump) is seen at the next once-a-second check."""
    product = await add_product("Gari", price_minor=3_000, stock=9)
    cache = page_cache_for(app)
    cache.check_seconds = 1.0
    clock = Clock()
    cache.clock = clock
    assert "GH₵ 30.00" in await page_text(client, "/")
    async with sessionmaker_for(app)() as db_session, write_transaction(db_session):
        # What checkout does to stock, and an edit that forgot to bump (updated_at moves).
        await db_session.execute(
            update(Product).where(Product.id == product.id).values(price_minor=3_300, stock=0)
        )
    clock.now += 0.5
    stale = await page_text(client, "/")
    assert "GH₵ 30.00" in stale  # inside the window the cached generation is acceptable
    clock.now += 0.6
    fresh = await page_text(client, "/")
    assert "GH₵ 33.00" in fresh and "Out of stock" in fresh


async def test_raw_sql_edits_show_after_the_maximum_age(app, client, add_product):
    product = await add_product("Sobolo", price_minor=2_500)
    cache = page_cache_for(app)
    cache.check_seconds = 1.0
    clock = Clock()
    cache.clock = clock
    assert "GH₵ 25.00" in await page_text(client, "/")
    async with sessionmaker_for(app)() as db_session, write_transaction(db_session):
        await db_session.execute(
            text("UPDATE products SET price_minor = 2700 WHERE id = :id"), {"id": product.id}
        )
    clock.now += 30
    assert "GH₵ 25.00" in await page_text(client, "/")
    clock.now += cache.max_age_seconds
    assert "GH₵ 27.00" in await page_text(client, "/")


async def test_new_sliders_and_categories_show_after_their_bump(client, add_slider, add_category):
    await page_text(client, "/")
    await add_category("Kente & Fashion", slug="fashion")
    await add_slider("Made in Ghana")
    body = await page_text(client, "/")
    assert "Made in Ghana" in body and "Kente &amp; Fashion" in body


async def test_each_shopper_gets_their_own_token_and_badge_in_the_shared_page(app, add_product):
    await add_product("Radio")
    first, second = app.test_client(), app.test_client()
    set_badge_cookie(second, 4)
    first_body = await page_text(first, "/")
    second_body = await page_text(second, "/")
    async with first.session_transaction() as browser_session:
        first_token = browser_session["csrf_token"]
    async with second.session_transaction() as browser_session:
        second_token = browser_session["csrf_token"]
    assert first_token != second_token and len(first_token) == 43
    assert form_tokens(first_body) == {first_token}
    assert form_tokens(second_body) == {second_token}
    assert f'<meta name="csrf-token" content="{second_token}">' in second_body
    assert f'"X-CSRF-Token": "{second_token}"' in second_body
    assert (badge(first_body), badge(second_body)) == ("0", "4")
    assert len(page_cache_for(app)) > 0


async def test_a_first_visit_sets_the_session_cookie_once(app, add_product):
    await add_product("Radio")
    shopper = app.test_client()
    first = await shopper.get("/")
    assert "storefront_session=" in first.headers.get("Set-Cookie", "")
    for url in ("/", "/", "/?page=1"):
        again = await shopper.get(url)
        assert again.status_code == 200
        assert "Set-Cookie" not in again.headers
    assert "Cookie" in first.headers["Vary"] and "Accept-Encoding" in first.headers["Vary"]


async def test_gzip_answers_are_the_same_page(app, add_product):
    await add_product("Radio")
    shopper = app.test_client()
    plain = await page_text(shopper, "/")  # a guest: the shared page
    response = await shopper.get("/", headers={"Accept-Encoding": "gzip"})
    assert response.headers["Content-Encoding"] == "gzip"
    assert "Accept-Encoding" in response.headers["Vary"]
    assert gzip.decompress(await response.get_data()).decode() == plain
    assert "Content-Encoding" not in (await shopper.get("/")).headers


async def test_gzip_with_an_odd_sized_token_still_decodes(client, add_product):
    product = await add_product("Radio")
    for url in ("/", f"/products/{product.slug}"):
        response = await client.get(url, headers={"Accept-Encoding": "gzip"})
        body = gzip.decompress(await response.get_data()).decode()
        assert form_tokens(body) == {CSRF_TOKEN}


async def test_signed_in_shoppers_get_their_own_header_and_nobody_else_does(
    app, client, make_user, sign_in, add_product
):
    await add_product("Radio")
    await page_text(app.test_client(), "/")  # fill the cache as a guest
    user = await make_user(name="Ama Mensah")
    sign_in(client, user)
    signed_in = await page_text(client, "/")
    assert "Ama Mensah" in signed_in and "Log in" not in signed_in
    assert form_tokens(signed_in) == {CSRF_TOKEN}
    guest = await page_text(app.test_client(), "/")
    assert "Ama Mensah" not in guest and "Log in" in guest


async def test_flash_messages_show_once_and_never_reach_the_shared_page(app, client, add_product):
    await add_product("Radio")
    async with client.session_transaction() as browser_session:
        browser_session["_flashes"] = [("ok", "Added 1 × Radio to your cart.")]
    assert "Added 1 × Radio to your cart." in await page_text(client, "/")
    assert "Added 1 × Radio" not in await page_text(client, "/")
    assert "Added 1 × Radio" not in await page_text(app.test_client(), "/")


async def test_no_js_add_from_the_home_page_comes_back_with_the_flash(client, add_product):
    product = await add_product("Radio", stock=8)
    body = await page_text(client, "/")
    assert 'name="next" value="/"' in body
    response = await client.post(
        "/cart/items",
        form={
            "csrf_token": CSRF_TOKEN,
            "product_id": str(product.id),
            "quantity": "2",
            "next": "/",
        },
    )
    assert response.status_code == 303 and response.headers["Location"] == "/"
    back = await page_text(client, "/")
    assert "Added 2 × Radio" in back and badge(back) == "2"


async def test_static_files_are_versioned_cached_for_a_year_and_gzipped(client):
    body = await page_text(client, "/")
    css_url = re.search(r'href="(/static/css/site\.css\?v=[0-9a-f]+)"', body)[1]
    js_url = re.search(r'src="(/static/vendor/htmx-2\.0\.11\.min\.js\?v=[0-9a-f]+)"', body)[1]
    for url in (css_url, js_url):
        response = await client.get(url, headers={"Accept-Encoding": "gzip"})
        assert response.status_code == 200
        assert response.headers["Cache-Control"] == "public, max-age=31536000, immutable"
        assert response.headers["Content-Encoding"] == "gzip"
        assert "Accept-Encoding" in response.headers["Vary"]
        plain = await client.get(url)
        assert gzip.decompress(await response.get_data()) == await plain.get_data()
        assert "Content-Encoding" not in plain.headers
        revalidated = await client.get(url, headers={"If-None-Match": plain.headers["ETag"]})
        assert revalidated.status_code == 304
    unversioned = await client.get("/static/css/site.css")
    assert unversioned.headers["Cache-Control"] == "public, max-age=3600"
    stale_version = await client.get("/static/css/site.css?v=000000000000")
    assert stale_version.headers["Cache-Control"] == "public, max-age=3600"
    assert unversioned.headers["Content-Type"] == "text/css; charset=utf-8"


async def test_missing_and_outside_static_paths_are_404(client):
    for url in ("/static/nope.css", "/static/../pyproject.toml", "/static/%2e%2e/pyproject.toml"):
        assert (await client.get(url)).status_code == 404


async def test_first_load_html_css_and_js_gzip_to_at_most_40_kb(app, add_products, add_slider):
    for position in range(3):
        await add_slider(f"Slide {position}", position=position)
    await add_products(30, description="A product description of ordinary length. " * 4)
    shopper = app.test_client()
    gzip_header = {"Accept-Encoding": "gzip"}
    home = await shopper.get("/", headers=gzip_header)
    total = len(await home.get_data())
    html = gzip.decompress(await home.get_data()).decode()
    assets = re.findall(r'(?:href|src)="(/static/(?:css|vendor)/[^"]+)"', html)
    assert len(assets) >= 2
    for url in assets:
        asset = await shopper.get(url, headers=gzip_header)
        assert asset.headers.get("Content-Encoding") == "gzip"
        total += len(await asset.get_data())
    assert total <= 40 * 1024, total


async def test_a_template_that_leaks_the_real_token_is_never_shared(app, add_product):
    from jinja2 import ChoiceLoader, DictLoader

    product = await add_product("Radio")
    leaky = DictLoader(
        {
            "leaky.html": '{% macro form() %}<input value="{{ csrf_token() }}">{% endmacro %}',
            "shop/product.html": "{% import 'leaky.html' as leaky %}{{ leaky.form() }}",
        }
    )
    app.jinja_env.loader = ChoiceLoader([leaky, app.jinja_env.loader])
    first, second = app.test_client(), app.test_client()
    bodies = [await page_text(shopper, f"/products/{product.slug}") for shopper in (first, second)]
    tokens = []
    for shopper in (first, second):
        async with shopper.session_transaction() as browser_session:
            tokens.append(browser_session["csrf_token"])
    assert tokens[0] != tokens[1]
    assert tokens[0] in bodies[0] and tokens[0] not in bodies[1]
    assert tokens[1] in bodies[1]


async def test_images_stream_from_disk_with_their_hash_in_the_url(client, add_product):
    from storefront import PROJECT_ROOT

    images = sorted((PROJECT_ROOT / "static/img/products").glob("*.webp"))
    if not images:
        pytest.skip("no demo images in static/img/products")
    image = images[0]
    product = await add_product("Pictured", image=f"img/products/{image.name}")
    body = await page_text(client, f"/products/{product.slug}")
    url = re.search(rf'src="(/static/img/products/{re.escape(image.name)}\?v=[0-9a-f]+)"', body)[1]
    response = await client.get(url, headers={"Accept-Encoding": "gzip"})
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert response.mimetype == "image/webp"
    assert "Content-Encoding" not in response.headers
    assert await response.get_data() == image.read_bytes()


async def test_pages_name_a_cached_icon_so_browsers_skip_favicon_ico(client):
    html = await (await client.get("/")).get_data(as_text=True)
    match = re.search(r'<link rel="icon" href="([^"]+)" type="image/svg\+xml">', html)
    assert match, "no icon link"
    icon = await client.get(match[1])
    assert icon.status_code == 200
    assert "immutable" in icon.headers["Cache-Control"]
    assert (await icon.get_data()).startswith(b"<svg")
