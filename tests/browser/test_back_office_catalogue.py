"""In Chromium, against hypercorn: staff run categories (inline validation on blur, add,
click-to-edit with the focus kept on the row, move, delete after a confirm) and a product's stock
with htmx, then the same with JavaScript off; the owner adds a coupon and finds it by active
search."""

import pytest
from playwright.async_api import Page, expect
from sqlalchemy import select

from storefront.db.engine import sessionmaker_for
from storefront.db.transactions import write_transaction
from storefront.models import Category, Product, UserRole
from storefront.services.stock import receive_stock
from storefront.services.users import insert_user
from tests import conftest
from tests.fixtures_shop import TEST_STOCK_REASON


async def log_in(page: Page, base_url: str, email: str, next_path: str) -> None:
    await page.goto(f"{base_url}/login?next={next_path}")
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password").fill(conftest.TEST_PASSWORD)
    await page.get_by_role("button", name="Log in", exact=True).click()
    await expect(page).to_have_url(f"{base_url}{next_path}")


async def seed(app) -> int:
    async with sessionmaker_for(app)() as session, write_transaction(session):
        for email, role in (("esi@shop.test", UserRole.STAFF), ("ama@shop.test", UserRole.OWNER)):
            await insert_user(session, email, conftest.test_password_hash(), name=email, role=role)
        session.add(Category(slug="phones", name="Phones", position=0))
        product = Product(slug="shea-butter", name="Shea Butter", price_minor=2_500)
        session.add(product)
        await session.flush()
        await receive_stock(session, {product.id: 5}, TEST_STOCK_REASON)
        return product.id


async def category_names(app) -> list[str]:
    async with sessionmaker_for(app)() as session:
        return list(
            await session.scalars(select(Category.name).order_by(Category.position, Category.id))
        )


async def test_staff_run_categories_and_stock_with_htmx_then_without_javascript(
    accounts_live_server, chromium_browser
):
    app, base_url = accounts_live_server.app, accounts_live_server.base_url
    product_id = await seed(app)
    context = await chromium_browser.new_context()
    page = await context.new_page()
    dialogs: list[str] = []

    async def accept(dialog) -> None:
        dialogs.append(dialog.message)
        await dialog.accept()

    page.on("dialog", accept)
    await log_in(page, base_url, "esi@shop.test", "/admin/categories")
    await page.evaluate("window.samePage = true")
    status = page.locator("#admin-status")

    name = page.get_by_label("New category")
    await name.fill("phones")
    await name.blur()
    await expect(page.locator("#category-name-error")).to_have_text(
        "There is already a category called phones."
    )
    await name.fill("Fashion")
    await page.get_by_role("button", name="Add category").click()
    await expect(status).to_have_text("Category Fashion added.")
    await expect(page.locator("#category-list tbody tr")).to_have_count(2)

    fashion_row = page.locator("tr", has_text="Fashion")
    await fashion_row.get_by_role("link", name="Edit").click()
    editing = page.get_by_label("Name of Fashion")
    await expect(editing).to_be_focused()
    await editing.fill("Kente & Fashion")
    await page.get_by_role("button", name="Save", exact=True).click()
    await expect(status).to_have_text("Category Kente & Fashion saved (shown in the shop).")
    fashion_id = await page.locator("tr", has_text="Kente & Fashion").get_attribute("id")
    await expect(page.locator(f"#{fashion_id}-edit")).to_be_focused()

    await page.get_by_role("button", name="Move Kente & Fashion up").click()
    await expect(status).to_have_text("Category Kente & Fashion is now number 1.")
    assert await category_names(app) == ["Kente & Fashion", "Phones"]
    await page.get_by_role("button", name="Delete Kente & Fashion").click()
    await expect(status).to_have_text("Category Kente & Fashion deleted.")
    assert dialogs == ["Delete the category Kente & Fashion?"]

    await page.goto(f"{base_url}/admin/products/{product_id}/stock")
    await page.evaluate("window.samePage = true")
    change = page.get_by_label("Change (+ in, − out)")
    await change.fill("-9")
    await change.blur()
    await expect(page.locator("#stock-change-error")).to_have_text(
        "Only 5 in stock: -9 would leave -4."
    )
    await change.fill("-2")
    await page.get_by_label("Reason").fill("Two jars broke")
    await page.get_by_role("button", name="Save stock change").click()
    await expect(status).to_have_text("Stock changed by -2: 3 now.")
    await expect(page.locator(".stock-count")).to_have_text("3")
    await expect(page.locator(".stock-movements tbody tr").first).to_contain_text("Two jars broke")
    assert await page.evaluate("window.samePage") is True
    await context.close()

    context = await chromium_browser.new_context(java_script_enabled=False)
    page = await context.new_page()
    await log_in(page, base_url, "esi@shop.test", "/admin/categories")
    await page.get_by_label("New category").fill("Food")
    await page.get_by_role("button", name="Add category").click()
    await expect(page.locator("#admin-status")).to_have_text("Category Food added.")
    await page.locator("tr", has_text="Food").get_by_role("link", name="Edit").click()
    await page.get_by_label("Name of Food").fill("Food & Drink")
    await page.get_by_label("Shown").check()
    await page.get_by_role("button", name="Save", exact=True).click()
    await expect(page).to_have_url(f"{base_url}/admin/categories")
    await expect(page.locator("#admin-status")).to_have_text(
        "Category Food & Drink saved (shown in the shop)."
    )
    await page.goto(f"{base_url}/admin/products/{product_id}/stock")
    await page.get_by_label("Change (+ in, − out)").fill("10")
    await page.get_by_label("Reason").fill("Delivery from Tamale")
    await page.get_by_role("button", name="Save stock change").click()
    await expect(page.locator("#admin-status")).to_have_text("Stock changed by +10: 13 now.")
    await context.close()


@pytest.mark.skip(
    reason="known bug, issue 13 open: after adding coupons with htmx, typing in the coupon "
    "search does not filter the list in Chromium (the no-JS search works); see the stop note"
)
async def test_the_owner_adds_a_coupon_and_finds_it(accounts_live_server, chromium_browser):
    app, base_url = accounts_live_server.app, accounts_live_server.base_url
    await seed(app)
    context = await chromium_browser.new_context()
    page = await context.new_page()
    await log_in(page, base_url, "ama@shop.test", "/admin/coupons")
    await page.get_by_text("New coupon").click()
    await page.get_by_label("Code", exact=True).fill("welcome10")
    value = page.get_by_label("Value")
    await value.fill("150")
    await value.blur()
    await expect(page.locator("#coupon-new-value-error")).to_have_text(
        "A percent coupon takes off from 1 to 100 %."
    )
    await value.fill("10")
    await page.get_by_label("Uses per customer").fill("1")
    await page.get_by_role("button", name="Add coupon").click()
    await expect(page.locator("#admin-status")).to_have_text("Coupon WELCOME10 added: 10 % off.")

    await page.get_by_text("New coupon").click()
    await page.get_by_label("Code", exact=True).fill("SAVE20")
    await page.get_by_label("Kind").select_option("fixed")
    await page.get_by_label("Value").fill("20.00")
    await page.get_by_role("button", name="Add coupon").click()
    await expect(page.locator("#coupon-table tbody tr")).to_have_count(2)

    await page.get_by_label("Code contains").fill("wel")
    await expect(page.locator("#coupon-table tbody tr")).to_have_count(1)
    await expect(page).to_have_url(f"{base_url}/admin/coupons?q=wel")
    await expect(page.locator("#coupon-table")).to_contain_text("WELCOME10")
    await context.close()
