"""GET /api/products: the JSON shape, filters and pages, 400s for bad parameters, escaping, gzip
and invalidation."""

import gzip
import json

import pytest

from storefront.db.engine import sessionmaker_for
from storefront.db.transactions import write_transaction
from storefront.services.catalog import update_product
from tests.conftest import reconfigure

ITEM_KEYS = {"id", "slug", "name", "price_minor", "price", "currency", "stock", "image_url", "url"}


async def listing(client, query: str = "") -> dict:
    response = await client.get("/api/products" + query)
    assert response.status_code == 200, await response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    return await response.get_json()


@pytest.mark.both_databases
async def test_listing_shape(client, add_product, add_category):
    phones = await add_category("Phones", slug="phones")
    product = await add_product(
        "Tecno Spark 20",
        price_minor=145_050,
        stock=7,
        category=phones,
        image="img/products/tecno-spark-20.webp",
    )
    await add_product("Hidden", is_active=False)
    answer = await listing(client)
    assert set(answer) == {"items", "page", "pages", "total"}
    assert (answer["page"], answer["pages"], answer["total"]) == (1, 1, 1)
    [item] = answer["items"]
    assert set(item) == ITEM_KEYS
    assert item["id"] == product.id
    assert item["slug"] == product.slug
    assert item["name"] == "Tecno Spark 20"
    assert item["price_minor"] == 145_050 and isinstance(item["price_minor"], int)
    assert item["price"] == "GH₵ 1,450.50"
    assert item["currency"] == "GHS"
    assert item["stock"] == 7
    assert item["url"] == f"/products/{product.slug}"
    assert item["image_url"].startswith("/static/img/products/tecno-spark-20.webp")
    assert (await client.get(item["url"])).status_code == 200


@pytest.mark.both_databases
async def test_search_category_and_pages(client, add_product, add_category, add_products):
    pantry = await add_category("Pantry", slug="pantry")
    await add_product("Shito Pepper Sauce", category=pantry)
    await add_product("Kente Stole", description="Hand-woven in Bonwire")
    await add_products(25, prefix="Bulk")
    assert [i["name"] for i in (await listing(client, "?q=SHITO"))["items"]] == [
        "Shito Pepper Sauce"
    ]
    assert [i["name"] for i in (await listing(client, "?q=bonwire"))["items"]] == ["Kente Stole"]
    in_pantry = await listing(client, "?category=pantry")
    assert [i["name"] for i in in_pantry["items"]] == ["Shito Pepper Sauce"]
    first = await listing(client, "?per_page=10")
    assert (len(first["items"]), first["page"], first["pages"], first["total"]) == (10, 1, 3, 27)
    third = await listing(client, "?per_page=10&page=3")
    assert len(third["items"]) == 7
    ids = {
        item["id"]
        for page in (1, 2, 3)
        for item in (await listing(client, f"?per_page=10&page={page}"))["items"]
    }
    assert len(ids) == 27
    past_end = await listing(client, "?per_page=10&page=4")
    assert (past_end["items"], past_end["page"], past_end["pages"], past_end["total"]) == (
        [],
        4,
        3,
        27,
    )
    assert len((await listing(client))["items"]) == 20
    assert len((await listing(client, "?per_page=100"))["items"]) == 27


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("?page=abc", "page must be a whole number from 1"),
        ("?page=0", "page must be a whole number from 1"),
        ("?page=-3", "page must be a whole number from 1"),
        ("?page=1e3", "page must be a whole number from 1"),
        ("?page=99999999999999999999999", "page must be a whole number from 1"),
        ("?per_page=0", "per_page must be a whole number from 1 to 100"),
        ("?per_page=101", "per_page must be a whole number from 1 to 100"),
        ("?per_page=lots", "per_page must be a whole number from 1 to 100"),
        ("?q=" + "x" * 101, "at most 100 characters"),
        ("?category=no-such-category", "Unknown category"),
    ],
)
async def test_bad_parameters_get_400_with_an_error(client, add_product, query, message):
    await add_product()
    response = await client.get("/api/products" + query)
    assert response.status_code == 400
    answer = await response.get_json()
    assert set(answer) == {"error"} and message in answer["error"]


async def test_names_are_escaped_in_json(client, add_product):
    await add_product("<script>alert(1)</script>")
    response = await client.get("/api/products")
    raw = await response.get_data(as_text=True)
    assert "<script>" not in raw and "\\u003cscript\\u003e" in raw
    assert (await response.get_json())["items"][0]["name"] == "<script>alert(1)</script>"
    assert response.headers["X-Content-Type-Options"] == "nosniff"


async def test_gzip_and_no_session_cookie(app, add_product):
    await add_product("Radio")
    api_client = app.test_client()
    response = await api_client.get("/api/products", headers={"Accept-Encoding": "gzip"})
    assert response.headers["Content-Encoding"] == "gzip"
    assert "Accept-Encoding" in response.headers["Vary"]
    assert json.loads(gzip.decompress(await response.get_data()))["total"] == 1
    assert "Set-Cookie" not in response.headers


async def test_a_price_change_shows_in_the_api_at_once(app, client, add_product):
    product = await add_product("Radio", price_minor=10_000)
    assert (await listing(client))["items"][0]["price_minor"] == 10_000
    async with sessionmaker_for(app)() as db_session, write_transaction(db_session):
        await update_product(db_session, product.id, price_minor=12_500)
    item = (await listing(client))["items"][0]
    assert (item["price_minor"], item["price"]) == (12_500, "GH₵ 125.00")


async def test_urls_are_absolute_when_the_public_base_url_is_set(app, client, add_product):
    reconfigure(app, {"PUBLIC_BASE_URL": "https://shop.example.com/"})
    product = await add_product("Radio")
    item = (await listing(client, "?q=radio"))["items"][0]
    assert item["url"] == f"https://shop.example.com/products/{product.slug}"
    assert item["image_url"].startswith("https://shop.example.com/static/img/placeholder.svg?v=")
