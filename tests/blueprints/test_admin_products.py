"""The back office's products: the list (search, category, status, pages, its queries), creating
and editing with JavaScript off (303, flash) and with htmx (the form or row back, the status line
out of band), every refusal changing nothing, the checks on blur, and the storefront showing a
change at once."""

import re
from html import unescape

import pytest
from sqlalchemy import func, select

from storefront.db.engine import sessionmaker_for
from storefront.models import AuditEntry, CatalogVersion, Product, UserRole
from tests.conftest import CSRF_TOKEN
from tests.fixtures_shop import counted_statements

pytestmark = pytest.mark.both_databases

HTMX = {"HX-Request": "true"}


@pytest.fixture(name="app_overrides")
def _app_overrides():
    return {"RATELIMIT_ENABLED": False}


@pytest.fixture(name="staff")
async def _staff(make_user):
    return await make_user(role=UserRole.STAFF, email="kofi@shop.test", name="Kofi")


@pytest.fixture(name="staff_client")
async def _staff_client(client, sign_in, staff):
    sign_in(client, staff)
    return client


async def text_of(response) -> str:
    return await response.get_data(as_text=True)


def status_line(html: str) -> str:
    return unescape(re.sub(r"<[^>]+>", "", html.split('id="admin-status"')[1].split("</div>")[0]))


def listed_names(html: str) -> list[str]:
    return [
        unescape(name)
        for name in re.findall(r'<tr id="product-\d+">.*?<a href="[^"]+">([^<]*)</a>', html, re.S)
    ]


async def products_in_db(app) -> list[Product]:
    async with sessionmaker_for(app)() as session:
        return list(await session.scalars(select(Product).order_by(Product.id)))


async def audit_entries(app) -> list[AuditEntry]:
    async with sessionmaker_for(app)() as session:
        return list(await session.scalars(select(AuditEntry).order_by(AuditEntry.id)))


async def catalog_version(app) -> int:
    async with sessionmaker_for(app)() as session:
        return await session.scalar(select(func.coalesce(func.max(CatalogVersion.version), 0)))


def product_form(**fields: str) -> dict[str, str]:
    form = {
        "csrf_token": CSRF_TOKEN,
        "name": "Kente Stole",
        "price": "120.50",
        "description": "Hand-woven in Bonwire.",
        "is_active": "1",
        "low_stock_threshold": "3",
    }
    form.update(fields)
    return {name: value for name, value in form.items() if value is not None}


async def test_the_list_searches_and_filters_by_category_and_status(
    staff_client, add_category, add_product
):
    fashion = await add_category("Fashion")
    food = await add_category("Food")
    await add_product("Kente Stole", category=fashion, stock=10, slug="kente-stole")
    await add_product("Shito Sauce", category=food, stock=2, slug="shito-hot")
    await add_product("Old Radio", is_active=False, stock=0, slug="old-radio")
    await add_product("Batakari Smock", category=fashion, stock=5, slug="smock-north")

    async def names(query: str = "", headers=None) -> list[str]:
        response = await staff_client.get("/admin/products" + query, headers=headers or {})
        assert response.status_code == 200, await text_of(response)
        return listed_names(await text_of(response))

    assert await names() == ["Batakari Smock", "Old Radio", "Shito Sauce", "Kente Stole"]
    assert await names("?q=KENTE") == ["Kente Stole"]
    assert await names("?q=hot") == ["Shito Sauce"]  # by slug
    assert await names("?q=100%25") == []  # LIKE wildcards are literal
    assert await names(f"?category={fashion.id}") == ["Batakari Smock", "Kente Stole"]
    assert await names("?status=active") == ["Batakari Smock", "Shito Sauce", "Kente Stole"]
    assert await names("?status=inactive") == ["Old Radio"]
    # At or below the threshold (5 by default), active only: the inactive radio is not for sale.
    assert await names("?status=low_stock") == ["Batakari Smock", "Shito Sauce"]
    assert await names(f"?status=low_stock&category={food.id}&q=shito") == ["Shito Sauce"]

    page = await text_of(await staff_client.get("/admin/products?status=low_stock"))
    assert 'aria-current="page">Products<' in page
    assert '<option value="low_stock" selected>' in page
    assert 'hx-trigger="input changed delay:300ms from:#products-q' in page
    assert 'data-label="Stock"' in page and "<html" in page

    fragment = await staff_client.get("/admin/products?q=kente&category=&status=", headers=HTMX)
    html = await text_of(fragment)
    assert fragment.status_code == 200 and fragment.headers["Vary"] == "HX-Request"
    assert fragment.headers["HX-Push-Url"] == "/admin/products?q=kente"
    assert "<html" not in html and html.lstrip().startswith('<section id="products"')
    assert listed_names(html) == ["Kente Stole"]
    assert 'id="admin-status"' in html and 'hx-swap-oob="innerHTML"' in html


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("?status=sold_out", "Status must be one of active, inactive, low_stock."),
        ("?category=fashion", "Choose a category from the list."),
        ("?page=0", "Page must be a whole number from 1"),
        ("?page=99999999999", "Page must be a whole number from 1"),
        ("?q=" + "x" * 101, "Search for at most 100 characters."),
    ],
)
async def test_an_unusable_filter_is_a_400_with_its_message(staff_client, query, message):
    for headers in (None, HTMX):
        response = await staff_client.get("/admin/products" + query, headers=headers or {})
        assert response.status_code == 400
        assert message in unescape(await text_of(response))


async def test_pages_of_fifty_without_counting_the_catalogue(app, staff_client, add_products):
    await add_products(120)
    first = await text_of(await staff_client.get("/admin/products"))
    assert listed_names(first)[:2] == ["Bulk 120", "Bulk 119"] and len(listed_names(first)) == 50
    assert 'rel="next" href="/admin/products?page=2"' in first and 'rel="prev"' not in first
    last = await text_of(await staff_client.get("/admin/products?page=3&q=bulk"))
    assert listed_names(last) == [f"Bulk {number:03d}" for number in range(20, 0, -1)]
    assert 'rel="prev" href="/admin/products?q=bulk&amp;page=2"' in last
    assert 'rel="next"' not in last
    past = await text_of(await staff_client.get("/admin/products?page=9"))
    assert "No products on page 9." in past

    with counted_statements(app) as statements:
        await staff_client.get("/admin/products?page=2&status=active")
    reads = [s for s in statements if s.strip().upper() not in {"BEGIN", "COMMIT", "ROLLBACK"}]
    # The signed-in user, the categories for the filter and one query for the page.
    assert len(reads) == 3, reads
    assert not any("count(" in statement.lower() for statement in reads)


async def test_staff_create_a_product_without_javascript(app, client, staff_client, staff):
    version = await catalog_version(app)
    response = await staff_client.post("/admin/products", form=product_form())
    [product] = await products_in_db(app)
    assert response.status_code == 303
    assert response.headers["Location"] == f"/admin/products/{product.id}"
    assert (product.name, product.slug, product.price_minor, product.stock) == (
        "Kente Stole",
        "kente-stole",
        12_050,
        0,
    )
    assert (product.description, product.is_active, product.low_stock_threshold) == (
        "Hand-woven in Bonwire.",
        True,
        3,
    )
    page = await text_of(await staff_client.get(response.headers["Location"]))
    assert "Created “Kente Stole”. Add its photos and stock below." in status_line(page)
    assert 'id="product-stock"' in page and 'id="photos"' in page

    [entry] = await audit_entries(app)
    assert (entry.actor_id, entry.action, entry.record_type, entry.record_id) == (
        staff.id,
        "product.create",
        "product",
        str(product.id),
    )
    assert entry.before is None
    assert entry.after == {
        "name": "Kente Stole",
        "slug": "kente-stole",
        "description": "Hand-woven in Bonwire.",
        "price_minor": 12_050,
        "category_id": None,
        "is_active": True,
        "low_stock_threshold": 3,
    }
    assert await catalog_version(app) == version + 1
    shop = await text_of(await app.test_client().get("/"))
    assert "Kente Stole" in shop and "GH₵ 120.50" in shop


async def test_with_htmx_a_created_product_opens_its_page(app, staff_client):
    response = await staff_client.post(
        "/admin/products", form=product_form(name="Shito", slug="", is_active=None), headers=HTMX
    )
    [product] = await products_in_db(app)
    assert response.status_code == 204
    assert response.headers["HX-Redirect"] == f"/admin/products/{product.id}"
    assert (product.slug, product.is_active) == ("shito", False)


@pytest.mark.parametrize("headers", [None, HTMX], ids=["no-js", "htmx"])
async def test_a_new_product_with_problems_is_shown_again_and_nothing_is_saved(
    app, staff_client, add_product, headers
):
    await add_product("Taken", slug="taken-slug")
    cases = [
        ({"name": "  "}, "name", "Enter the product&#39;s name."),
        ({"name": None}, "name", "Enter the product&#39;s name."),
        ({"name": "x" * 201}, "name", "Keep the name to 200 characters or fewer."),
        ({"price": ""}, "price", "Enter the price in cedis, like 12.50."),
        ({"price": "12.345"}, "price", "Use at most 2 decimal places, like 12.50."),
        ({"price": "-4"}, "price", "The amount cannot be negative."),
        ({"price": "0.00"}, "price", "Enter a price above 0, like 12.50."),
        ({"price": "twelve"}, "price", "Enter an amount like 50 or 50.00."),
        ({"slug": "Bad Slug!"}, "slug", "Use lower-case letters, digits and single hyphens"),
        ({"slug": "taken-slug"}, "slug", "“Taken” has this slug already"),
        ({"category_id": "fashion"}, "category_id", "Choose a category from the list."),
        ({"category_id": "424242"}, "category_id", "That category is gone: choose another."),
        ({"low_stock_threshold": "-1"}, "low_stock_threshold", "Enter a whole number from 0"),
        ({"description": "x" * 5001}, "description", "Keep the description to 5,000 characters"),
    ]
    before = await products_in_db(app)
    for fields, field, message in cases:
        response = await staff_client.post(
            "/admin/products", form=product_form(**fields), headers=headers or {}
        )
        html = await text_of(response)
        assert response.status_code == 422, fields
        assert "Check the fields marked below: nothing was saved." in status_line(html)
        shown = re.search(
            rf'<p id="product-{field}-message" class="field-message error"[^>]*>', html
        )
        assert shown, (fields, html)
        assert message in html.split(shown.group(0))[1].split("</p>")[0], fields
        assert 'value="Hand-woven in Bonwire."' not in html  # a textarea keeps it as its text
        assert ">Hand-woven in Bonwire.</textarea>" in html or field == "description"
        assert ("<html" in html) is (headers is None)
    assert [product.id for product in await products_in_db(app)] == [p.id for p in before]
    assert await audit_entries(app) == []


async def test_slugs_are_made_from_the_name_and_kept_unique(app, staff_client):
    for name in ("Kente Stole", "Kente  stole!", "Café Noir", "Ɔkɔm", "🌶️🌶️", "Kente Stole"):
        response = await staff_client.post("/admin/products", form=product_form(name=name))
        assert response.status_code == 303, await text_of(response)
    slugs = [product.slug for product in await products_in_db(app)]
    # Letters with no ASCII form drop out; a name of none gives "product".
    assert slugs == ["kente-stole", "kente-stole-2", "cafe-noir", "km", "product", "kente-stole-3"]
    typed = await staff_client.post(
        "/admin/products", form=product_form(name="Stole", slug="  Gold-Stole ")
    )
    assert typed.status_code == 303
    assert (await products_in_db(app))[-1].slug == "gold-stole"


async def test_an_edit_without_javascript_saves_what_changed_and_the_shop_follows(
    app, staff_client, staff, add_category, add_product
):
    food = await add_category("Food")
    product = await add_product("Shito", price_minor=4_500, description="Hot.", slug="shito")
    shopper = app.test_client()
    assert "GH₵ 45.00" in await text_of(await shopper.get("/products/shito"))

    response = await staff_client.post(
        f"/admin/products/{product.id}",
        form=product_form(
            name="Shito Pepper Sauce",
            slug="shito",
            price="52",
            description="Hot.\r\n\r\nFrom Accra.",
            category_id=str(food.id),
            low_stock_threshold="",
        ),
    )
    assert response.status_code == 303
    assert response.headers["Location"] == f"/admin/products/{product.id}"
    [saved] = await products_in_db(app)
    assert (saved.name, saved.price_minor, saved.category_id, saved.description) == (
        "Shito Pepper Sauce",
        5_200,
        food.id,
        "Hot.\n\nFrom Accra.",
    )
    assert saved.low_stock_threshold == 5  # left empty: the default
    [entry] = await audit_entries(app)
    assert (entry.action, entry.actor_id) == ("product.update", staff.id)
    assert entry.before == {
        "name": "Shito",
        "description": "Hot.",
        "price_minor": 4_500,
        "category_id": None,
    }
    assert entry.after == {
        "name": "Shito Pepper Sauce",
        "description": "Hot.\n\nFrom Accra.",
        "price_minor": 5_200,
        "category_id": food.id,
    }
    shop_page = await text_of(await shopper.get("/products/shito"))
    assert "GH₵ 52.00" in shop_page and "<p>From Accra.</p>" in shop_page
    page = await text_of(await staff_client.get(f"/admin/products/{product.id}"))
    assert "Saved “Shito Pepper Sauce”." in status_line(page)

    hidden = await staff_client.post(
        f"/admin/products/{product.id}",
        form=product_form(name="Shito Pepper Sauce", slug="", price="52", is_active=None),
    )
    assert hidden.status_code == 303
    [saved] = await products_in_db(app)
    assert (saved.is_active, saved.slug) == (False, "shito-pepper-sauce")
    assert (await shopper.get("/products/shito-pepper-sauce")).status_code == 404


async def test_an_edit_that_changes_nothing_writes_nothing(app, staff_client, add_product):
    product = await add_product("Gari", price_minor=3_000, slug="gari", description="")
    version = await catalog_version(app)
    response = await staff_client.post(
        f"/admin/products/{product.id}",
        form=product_form(
            name="Gari", slug="gari", price="30.00", description="", low_stock_threshold="5"
        ),
        headers=HTMX,
    )
    html = await text_of(response)
    assert response.status_code == 200
    assert "Nothing to save: “Gari” is as it was." in unescape(html)
    assert await audit_entries(app) == []
    assert await catalog_version(app) == version


@pytest.mark.parametrize("headers", [None, HTMX], ids=["no-js", "htmx"])
async def test_an_edit_with_problems_changes_nothing(app, staff_client, add_product, headers):
    await add_product("Other", slug="other")
    product = await add_product("Gari", price_minor=3_000, slug="gari")
    for fields, status, message in [
        ({"price": "abc"}, 422, "Enter an amount like 50 or 50.00."),
        ({"slug": "other"}, 422, "“Other” has this slug already"),
        ({"name": ""}, 422, "Enter the product&#39;s name."),
    ]:
        response = await staff_client.post(
            f"/admin/products/{product.id}", form=product_form(**fields), headers=headers or {}
        )
        html = await text_of(response)
        assert response.status_code == status, fields
        assert message in html, fields
        assert ('<section id="product-form"' in html) and (("<html" in html) is (headers is None))
    saved = [p for p in await products_in_db(app) if p.id == product.id][0]
    assert (saved.name, saved.slug, saved.price_minor) == ("Gari", "gari", 3_000)
    assert await audit_entries(app) == []
    missing = await staff_client.post("/admin/products/424242", form=product_form())
    assert missing.status_code == 404
    assert (await staff_client.get("/admin/products/424242")).status_code == 404


async def test_with_htmx_the_form_comes_back_with_the_status_line_out_of_band(
    app, staff_client, add_product
):
    product = await add_product("Gari", price_minor=3_000, slug="gari")
    response = await staff_client.post(
        f"/admin/products/{product.id}",
        form=product_form(name="Gari 2kg", slug="gari", price="35"),
        headers=HTMX,
    )
    html = await text_of(response)
    assert response.status_code == 200
    assert html.lstrip().startswith('<section id="product-form"')
    assert '<h1 id="product-heading">Gari 2kg</h1>' in html and 'value="35.00"' in html
    assert 'hx-swap-oob="innerHTML"' in html and "Saved “Gari 2kg”." in unescape(html)


async def test_a_row_turns_into_a_form_saves_and_keeps_the_focus(app, staff_client, add_product):
    product = await add_product("Gari", price_minor=3_000, slug="gari", description="Dry.")
    row_url = f"/admin/products/{product.id}/row"
    without_js = await staff_client.get(row_url + "?edit=1")
    assert without_js.status_code == 303
    assert without_js.headers["Location"] == f"/admin/products/{product.id}"

    editing = await text_of(await staff_client.get(row_url + "?edit=1", headers=HTMX))
    assert editing.lstrip().startswith(f'<tr id="product-{product.id}" class="editing">')
    assert 'name="name" value="Gari" required maxlength="200" autofocus' in editing
    assert 'hx-include="closest tr"' in editing and 'name="description"' not in editing

    row_post = {**HTMX, "HX-Target": f"product-{product.id}"}
    refused = await staff_client.post(
        f"/admin/products/{product.id}",
        form={"csrf_token": CSRF_TOKEN, "name": "Gari", "price": "3.0.0", "is_active": "1"},
        headers=row_post,
    )
    html = await text_of(refused)
    assert refused.status_code == 422
    assert 'class="editing"' in html and "Enter an amount like 50 or 50.00." in html
    assert 'value="3.0.0"' in html

    saved = await staff_client.post(
        f"/admin/products/{product.id}",
        form={
            "csrf_token": CSRF_TOKEN,
            "name": "Gari 2kg",
            "price": "32.50",
            "low_stock_threshold": "8",
            "is_active": "1",
        },
        headers=row_post,
    )
    html = await text_of(saved)
    assert saved.status_code == 200
    assert html.lstrip().startswith(f'<tr id="product-{product.id}">')
    assert 'aria-label="Edit Gari 2kg" autofocus>Edit</a>' in html
    assert "GH₵ 32.50" in html and "Saved “Gari 2kg”." in unescape(html)
    [stored] = await products_in_db(app)
    # The row posts only its fields: the slug, description and category stay as they were.
    assert (stored.name, stored.price_minor, stored.low_stock_threshold) == ("Gari 2kg", 3_250, 8)
    assert (stored.slug, stored.description, stored.category_id) == ("gari", "Dry.", None)

    cancel = await text_of(await staff_client.get(row_url, headers=HTMX))
    assert cancel.lstrip().startswith(f'<tr id="product-{product.id}">')


async def test_fields_are_checked_on_blur(staff_client, add_product):
    product = await add_product("Kente Stole", slug="kente-stole")

    async def check(field: str, **args: str) -> str:
        response = await staff_client.get(f"/admin/products/check/{field}", query_string=args)
        assert response.status_code == 200
        html = await text_of(response)
        assert html.startswith(f'<p id="product-{field}-message"') and "<html" not in html
        return unescape(html)

    assert "Enter the product's name." in await check("name", name=" ")
    assert 'class="field-message error"' in await check("name", name=" ")
    assert 'class="field-message"' in await check("name", name="Kente")
    assert "GH₵ 1,234.50" in await check("price", price="1234.5")
    assert "Use at most 2 decimal places" in await check("price", price="1.234")
    assert "Enter a whole number from 0" in await check(
        "low_stock_threshold", low_stock_threshold="x"
    )
    assert "Its page: /products/kente-stole-2" in await check("slug", slug="", name="Kente Stole")
    assert "Its page: /products/kente-stole" in await check(
        "slug", slug="", name="Kente Stole", product_id=str(product.id)
    )
    assert "“Kente Stole” has this slug already" in await check("slug", slug="kente-stole")
    assert "Use lower-case letters" in await check("slug", slug="no spaces")
    assert (await staff_client.get("/admin/products/check/description")).status_code == 404


async def test_the_new_product_page_and_the_edit_page(staff_client, add_category, add_product):
    await add_category("Fashion")
    new = await text_of(await staff_client.get("/admin/products/new"))
    assert '<form method="post" action="/admin/products"' in new
    for field in ("name", "slug", "description", "price", "category_id", "low_stock_threshold"):
        assert f'name="{field}"' in new
    assert 'name="is_active" value="1" checked' in new
    assert 'hx-trigger="blur changed"' in new and 'id="photos"' not in new
    product = await add_product("Gari", stock=3, slug="gari")
    page = await text_of(await staff_client.get(f"/admin/products/{product.id}"))
    assert f'action="/admin/products/{product.id}"' in page
    assert f'action="/admin/products/{product.id}/images"' in page
    assert 'name="image"' in page and 'enctype="multipart/form-data"' in page
    stock = page.split('<section id="product-stock"')[1].split("</section>")[0]
    assert '<span class="stock-count">3</span>' in stock and "low (threshold" in stock
    assert 'name="change"' in stock and 'name="reason"' in stock
