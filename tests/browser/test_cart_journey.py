"""The shopper's journey in Chromium, served over real HTTP by hypercorn: from the home page add
two products, change a quantity on the cart page and apply WELCOME10 — once with htmx (no page
loads) and once with JavaScript off (plain form posts and redirects)."""

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from storefront import create_app
from storefront.db.engine import make_engine, make_sessionmaker
from storefront.db.transactions import write_transaction
from storefront.models import Base, Coupon, Product
from storefront.services.stock import receive_stock
from tests.fixtures_shop import TEST_STOCK_REASON
from tests.live import app_test_config, served_over_http

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
MARKER = "window.__journeyMarker"

if not os.path.exists(CHROMIUM):
    if os.environ.get("CI") == "true":
        raise RuntimeError(f"{CHROMIUM} is missing and CI=true: the browser journey must run")
    pytest.skip(
        f"{CHROMIUM} is missing: install Debian's chromium to run the browser journey",
        allow_module_level=True,
    )

playwright_api = pytest.importorskip("playwright.async_api")
expect = playwright_api.expect


@dataclass(frozen=True)
class Shop:
    base_url: str
    necklace_id: int  # GH₵ 100.00
    kente_id: int  # GH₵ 50.00


async def _seed(database_url: str) -> tuple[int, int]:
    engine = make_engine(database_url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(Base.metadata.create_all)
        async with make_sessionmaker(engine)() as db_session, write_transaction(db_session):
            necklace = Product(
                slug="bead-necklace",
                name="Krobo Bead Necklace",
                description="Glass beads from Odumase Krobo.",
                price_minor=10_000,
            )
            kente = Product(
                slug="kente-stole",
                name="Kente Stole",
                description="Handwoven in Bonwire.",
                price_minor=5_000,
            )
            soap = Product(slug="black-soap", name="Black Soap", price_minor=1_500, description="")
            db_session.add_all([necklace, kente, soap])
            db_session.add(Coupon(code="WELCOME10", kind="percent", value=1000))
            await db_session.flush()
            await receive_stock(
                db_session, {necklace.id: 10, kente.id: 10, soap.id: 3}, TEST_STOCK_REASON
            )
            return necklace.id, kente.id
    finally:
        await engine.dispose()


@pytest.fixture(name="shop", scope="module")
async def _shop(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Shop]:
    database_url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('journey') / 'shop.db'}"
    necklace_id, kente_id = await _seed(database_url)
    app = create_app(
        app_test_config(
            database_url,
            SECRET_KEY="journey-secret-key-that-is-long-enough-0123456789",
            TESTING=False,
            ADMIN_EMAIL="",
            RATELIMIT_ENABLED=False,
        )
    )
    async with served_over_http(app) as base_url:
        yield Shop(base_url, necklace_id, kente_id)


@pytest.fixture(name="browser", scope="module")
async def _browser() -> AsyncIterator[object]:
    async with playwright_api.async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


async def test_journey_with_htmx(shop: Shop, browser) -> None:
    context = await browser.new_context()
    page = await context.new_page()
    document_loads: list[str] = []
    cart_posts: list[str] = []
    page.on(
        "request",
        lambda request: (
            document_loads.append(request.url) if request.resource_type == "document" else None,
            cart_posts.append(request.resource_type) if request.method == "POST" else None,
        ),
    )
    try:
        await page.goto(shop.base_url + "/")
        await page.wait_for_function("window.htmx !== undefined")
        await page.evaluate(f"{MARKER} = 'home'")
        badge = page.locator("#cart-badge .count")
        await expect(badge).to_have_text("0")
        loads_before = len(document_loads)

        necklace_form = page.locator(f"#add-form-{shop.necklace_id}")
        await necklace_form.get_by_role("button", name="Add to cart").click()
        await expect(page.locator(f"#add-form-{shop.necklace_id}")).to_contain_text(
            "Added — 1 in cart"
        )
        await expect(badge).to_have_text("1")

        kente_form = page.locator(f"#add-form-{shop.kente_id}")
        await kente_form.locator("input[name=quantity]").fill("2")
        await kente_form.get_by_role("button", name="Add to cart").click()
        await expect(page.locator(f"#add-form-{shop.kente_id}")).to_contain_text(
            "Added — 2 in cart"
        )
        await expect(badge).to_have_text("3")
        # No page load happened: the same window (and its marker) is still there.
        assert await page.evaluate(MARKER) == "home"
        assert len(document_loads) == loads_before
        assert cart_posts and set(cart_posts) <= {"xhr", "fetch"}

        await page.goto(shop.base_url + "/cart")
        await page.wait_for_function("window.htmx !== undefined")
        await page.evaluate(f"{MARKER} = 'cart'")
        loads_before = len(document_loads)
        await expect(page.locator("#cart-total")).to_have_text("GH₵ 200.00")

        necklace_line = page.locator(f"#cart-line-{shop.necklace_id}")
        await page.locator(f"#line-quantity-{shop.necklace_id}").fill("3")
        await necklace_line.get_by_role("button", name="Update").click()
        await expect(page.locator("#cart-total")).to_have_text("GH₵ 400.00")
        await expect(page.locator(f"#cart-line-{shop.necklace_id}")).to_contain_text(
            "quantity now 3"
        )
        await expect(badge).to_have_text("5")

        await page.locator("#coupon-code").fill(" welcome10 ")
        await page.get_by_role("button", name="Apply").click()
        await expect(page.locator("#cart-discount")).to_have_text("−GH₵ 40.00")
        await expect(page.locator("#cart-total")).to_have_text("GH₵ 360.00")
        await expect(page.locator("#cart-subtotal")).to_have_text("GH₵ 400.00")
        await expect(page.locator("#coupon-status")).to_contain_text("WELCOME10")
        assert await page.evaluate(MARKER) == "cart"
        assert len(document_loads) == loads_before
    finally:
        await context.close()


async def test_journey_without_javascript(shop: Shop, browser) -> None:
    context = await browser.new_context(java_script_enabled=False)
    page = await context.new_page()
    try:
        await page.goto(shop.base_url + "/")
        badge = page.locator("#cart-badge .count")
        await expect(badge).to_have_text("0")

        async with page.expect_navigation():
            await (
                page.locator(f"#add-form-{shop.necklace_id}")
                .get_by_role("button", name="Add to cart")
                .click()
            )
        assert page.url == shop.base_url + "/"
        await expect(page.locator(".flash")).to_contain_text("Krobo Bead Necklace")
        await expect(badge).to_have_text("1")

        kente_form = page.locator(f"#add-form-{shop.kente_id}")
        await kente_form.locator("input[name=quantity]").fill("2")
        async with page.expect_navigation():
            await kente_form.get_by_role("button", name="Add to cart").click()
        await expect(badge).to_have_text("3")

        async with page.expect_navigation():
            await page.locator("#cart-badge").click()
        assert page.url == shop.base_url + "/cart"
        await expect(page.locator("#cart-total")).to_have_text("GH₵ 200.00")

        necklace_line = page.locator(f"#cart-line-{shop.necklace_id}")
        await page.locator(f"#line-quantity-{shop.necklace_id}").fill("3")
        async with page.expect_navigation():
            await necklace_line.get_by_role("button", name="Update").click()
        await expect(page.locator(".flash")).to_contain_text("quantity now 3")
        await expect(page.locator("#cart-total")).to_have_text("GH₵ 400.00")
        await expect(badge).to_have_text("5")

        await page.locator("#coupon-code").fill("welcome10")
        async with page.expect_navigation():
            await page.get_by_role("button", name="Apply").click()
        assert page.url == shop.base_url + "/cart"
        await expect(page.locator(".flash")).to_contain_text("WELCOME10 applied")
        await expect(page.locator("#cart-discount")).to_have_text("−GH₵ 40.00")
        await expect(page.locator("#cart-total")).to_have_text("GH₵ 360.00")
    finally:
        await context.close()
