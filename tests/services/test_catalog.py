"""Catalog reads (active only, search, category, pages), stock states, listing parameters and the
catalog version that drives cache invalidation, on SQLite and PostgreSQL."""

import pytest
from sqlalchemy import select

from storefront.db.engine import sessionmaker_for
from storefront.db.transactions import write_transaction
from storefront.models import Product
from storefront.services.catalog import (
    CatalogProduct,
    CatalogSlide,
    InvalidListingQuery,
    bump_catalog_version,
    local_catalog_changes,
    parse_listing_query,
    select_active_product,
    select_active_sliders,
    select_catalog_fingerprint,
    select_product_page,
    update_product,
)


def _product(stock: int) -> CatalogProduct:
    return CatalogProduct(
        id=1,
        slug="x",
        name="X",
        description="",
        price_minor=100,
        stock=stock,
        image="",
        category_id=None,
    )


@pytest.mark.parametrize(
    ("stock", "state", "label"),
    [
        (0, "out", "Out of stock"),
        (1, "low", "Only 1 left"),
        (3, "low", "Only 3 left"),
        (5, "low", "Only 5 left"),
        (6, "in", "In stock"),
    ],
)
def test_stock_states(stock, state, label):
    assert _product(stock).stock_state == state
    assert _product(stock).stock_label == label


@pytest.mark.parametrize(
    ("link", "safe"),
    [
        ("/?category=phones", "/?category=phones"),
        ("https://example.com/sale", "https://example.com/sale"),
        ("javascript:alert(1)", ""),
        (" JavaScript:alert(1)", ""),
        ("//evil.example/", ""),
        ("data:text/html,hi", ""),
        ("/\\evil.example", ""),
    ],
)
def test_slider_links_only_go_to_web_pages(link, safe):
    slide = CatalogSlide(id=1, title="t", subtitle="", image="", link_url=link)
    assert slide.safe_link == safe


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"page": "abc"}, "page must be a whole number"),
        ({"page": "-1"}, "page must be a whole number"),
        ({"page": "0"}, "page must be a whole number"),
        ({"page": "1.5"}, "page must be a whole number"),
        ({"page": "1" * 5000}, "page must be a whole number"),
        ({"page": "99999999999999999999"}, "page must be a whole number"),
        ({"per_page": "0"}, "per_page must be a whole number from 1 to 100"),
        ({"per_page": "101"}, "per_page must be a whole number from 1 to 100"),
        ({"per_page": "ten"}, "per_page must be a whole number from 1 to 100"),
        ({"q": "x" * 101}, "at most 100 characters"),
        ({"category": "c" * 81}, "category does not exist"),
    ],
)
def test_bad_listing_parameters_are_refused_with_a_reason(args, message):
    with pytest.raises(InvalidListingQuery, match=message):
        parse_listing_query(args, default_per_page=20, per_page_allowed=True)


def test_listing_parameters_are_trimmed_and_defaulted():
    query = parse_listing_query(
        {"q": "  kente ", "category": " fashion ", "page": " 2 ", "per_page": ""},
        default_per_page=20,
        per_page_allowed=True,
    )
    assert (query.search, query.category_slug, query.page, query.per_page) == (
        "kente",
        "fashion",
        2,
        20,
    )
    home = parse_listing_query({"per_page": "100000"}, default_per_page=12, per_page_allowed=False)
    assert home.per_page == 12


@pytest.mark.both_databases
async def test_listing_shows_only_active_products_matching_search_and_category(
    session, add_product, add_category
):
    phones = await add_category("Phones")
    await add_product("Tecno Spark 20", category=phones)
    await add_product("Infinix Hot 40", category=phones, description="A big KENTE-blue phone")
    await add_product("Kente Stole", description="Hand-woven")
    await add_product("Hidden Kente", is_active=False)
    await add_product("100% Shea_Butter")

    everything = await select_product_page(session, per_page=10)
    assert {item.name for item in everything.items} == {
        "Tecno Spark 20",
        "Infinix Hot 40",
        "Kente Stole",
        "100% Shea_Butter",
    }
    kente = await select_product_page(session, search="kEnTe", per_page=10)
    assert {item.name for item in kente.items} == {"Kente Stole", "Infinix Hot 40"}
    in_phones = await select_product_page(session, search="kente", category_id=phones.id)
    assert [item.name for item in in_phones.items] == ["Infinix Hot 40"]
    # LIKE wildcards in the search are literal characters.
    assert (await select_product_page(session, search="%")).total == 1
    assert (await select_product_page(session, search="_")).total == 1
    assert (await select_product_page(session, search="s_e")).total == 0


@pytest.mark.both_databases
async def test_pages_count_and_clamp(session, add_products):
    await add_products(25)
    first = await select_product_page(session, page=1, per_page=10)
    assert (first.total, first.pages, first.page, len(first.items)) == (25, 3, 1, 10)
    last = await select_product_page(session, page=3, per_page=10)
    assert len(last.items) == 5
    seen = {
        item.id
        for page in (1, 2, 3)
        for item in (await select_product_page(session, page=page, per_page=10)).items
    }
    assert len(seen) == 25
    clamped = await select_product_page(session, page=999_999_999, per_page=10)
    assert (clamped.page, len(clamped.items)) == (3, 5)
    past_end = await select_product_page(session, page=999_999_999, per_page=10, clamp=False)
    assert (past_end.page, past_end.items, past_end.total) == (999_999_999, (), 25)


async def test_empty_catalog_has_one_empty_page(session):
    empty = await select_product_page(session, page=5)
    assert (empty.total, empty.pages, empty.page, empty.items) == (0, 1, 1, ())


async def test_sliders_in_position_order_without_inactive(session, add_slider):
    await add_slider("Third", position=3)
    await add_slider("First", position=1)
    await add_slider("Off", position=0, is_active=False)
    await add_slider("Second", position=2)
    assert [slide.title for slide in await select_active_sliders(session)] == [
        "First",
        "Second",
        "Third",
    ]


async def test_inactive_and_unknown_products_are_not_found(session, add_product):
    product = await add_product("Gone", is_active=False)
    assert await select_active_product(session, product.slug) is None
    assert await select_active_product(session, "no-such-thing") is None
    await session.rollback()  # end the read snapshot so the next commit is visible
    shown = await add_product("Shown", stock=4)
    found = await select_active_product(session, shown.slug)
    assert found is not None and found.stock_label == "Only 4 left"


@pytest.mark.both_databases
async def test_bump_changes_the_fingerprint_and_is_counted_only_after_commit(app, session):
    before = await select_catalog_fingerprint(session)
    await session.rollback()
    changes_before = local_catalog_changes()
    async with sessionmaker_for(app)() as own:
        async with write_transaction(own):
            await bump_catalog_version(own)
            assert local_catalog_changes() == changes_before
        assert local_catalog_changes() == changes_before + 1
        with pytest.raises(RuntimeError):
            async with write_transaction(own):
                await bump_catalog_version(own)
                raise RuntimeError("rolled back")
    async with sessionmaker_for(app)() as own, write_transaction(own):
        await bump_catalog_version(own)
    after = await select_catalog_fingerprint(session)
    assert before[0] is None and after[0] == 2
    assert after != before


@pytest.mark.both_databases
async def test_update_product_changes_fields_and_bumps(app, session, add_product):
    product = await add_product("Radio", price_minor=5_000)
    before = await select_catalog_fingerprint(session)
    await session.rollback()
    async with sessionmaker_for(app)() as own, write_transaction(own):
        assert await update_product(own, product.id, price_minor=6_500)
        assert not await update_product(own, product.id + 1000, price_minor=1)
    with pytest.raises(ValueError, match="not editable"):
        await update_product(session, product.id, id=99)
    with pytest.raises(ValueError, match="not editable"):  # stock moves with its movement only
        await update_product(session, product.id, stock=2)
    stored = await session.scalar(select(Product).where(Product.id == product.id))
    assert (stored.price_minor, stored.stock) == (6_500, 10)
    after = await select_catalog_fingerprint(session)
    assert after[0] == before[0] + 1
