"""In Chromium, against hypercorn: a staff member runs products from the browser. With htmx: the
form's fields are checked on blur, the new product opens its page, a photo is added in place,
the list searches as she types, and a row turns into a form whose save keeps the keyboard on
the row; a shopper sees the photo. With JavaScript off: the same forms post, answer 422 with
messages, then 303 with the flash."""

import re
from pathlib import Path

import pytest
from PIL import Image
from playwright.async_api import Page, expect

from storefront.db.engine import sessionmaker_for
from storefront.db.transactions import write_transaction
from storefront.models import UserRole
from storefront.services.users import insert_user
from tests import conftest

EMAIL = "kofi@shop.test"


@pytest.fixture(name="app_overrides")
def _app_overrides(tmp_path: Path):
    return {"UPLOAD_FOLDER": str(tmp_path / "uploads")}


def photo_file(tmp_path: Path) -> Path:
    path = tmp_path / "stole.jpg"
    Image.new("RGB", (1600, 1000), "goldenrod").save(path, "JPEG")
    return path


async def log_in(page: Page, base_url: str, next_path: str) -> None:
    await page.goto(f"{base_url}/login?next={next_path}")
    await page.get_by_label("Email").fill(EMAIL)
    await page.get_by_label("Password").fill(conftest.TEST_PASSWORD)
    await page.get_by_role("button", name="Log in", exact=True).click()
    await expect(page).to_have_url(f"{base_url}{next_path}")


async def test_staff_run_products_with_and_without_javascript(
    accounts_live_server, chromium_browser, tmp_path
):
    app, base_url = accounts_live_server.app, accounts_live_server.base_url
    async with sessionmaker_for(app)() as session, write_transaction(session):
        await insert_user(
            session, EMAIL, conftest.test_password_hash(), name="Kofi", role=UserRole.STAFF
        )

    context = await chromium_browser.new_context()
    page = await context.new_page()
    page.on("dialog", lambda dialog: dialog.accept())
    await log_in(page, base_url, "/admin/products/new")
    status = page.locator("#admin-status")

    await page.get_by_label("Name", exact=True).fill("Kente Stole")
    await page.get_by_label("Price (GH₵)").fill("12.345")
    # Leaving the name changed checks the slug left empty: its hint is the page's address.
    await expect(page.locator("#product-slug-message")).to_have_text(
        "Its page: /products/kente-stole"
    )
    await page.get_by_label("Price (GH₵)").blur()
    price_message = page.locator("#product-price-message")
    await expect(price_message).to_have_text("Use at most 2 decimal places, like 12.50.")
    await expect(price_message).to_have_class("field-message error")
    await page.get_by_label("Price (GH₵)").fill("120.5")
    await page.get_by_label("Price (GH₵)").blur()
    await expect(price_message).to_have_text("GH₵ 120.50")
    await page.get_by_role("button", name="Create product").click()
    await expect(page).to_have_url(f"{base_url}/admin/products/1")
    await expect(status).to_have_text("Created “Kente Stole”. Add its photos and stock below.")

    await page.evaluate("window.samePage = true")  # gone if anything reloads the page
    await page.get_by_label("Add a photo").set_input_files(photo_file(tmp_path))
    await page.get_by_role("button", name="Upload").click()
    await expect(status).to_have_text("Photo added to “Kente Stole”.")
    await expect(page.locator("#photos .photo img")).to_have_count(1)
    await expect(page.get_by_label("Add a photo")).to_be_focused()
    assert await page.evaluate("window.samePage") is True

    await page.goto(f"{base_url}/admin/products")
    await page.evaluate("window.samePage = true")
    await page.get_by_label("Name or slug").fill("nothing like it")
    await expect(page.locator("#products")).to_contain_text("No products match these filters.")
    await page.get_by_label("Name or slug").fill("kente")
    await expect(page.locator("#products tbody tr")).to_have_count(1)
    await expect(page).to_have_url(f"{base_url}/admin/products?q=kente")

    row = page.locator("#product-1")
    await row.get_by_role("link", name="Edit Kente Stole").click()
    await expect(row.get_by_label("Name")).to_be_focused()
    await row.get_by_label("Price (GH₵)").fill("99")
    await row.get_by_role("button", name="Save").click()
    await expect(status).to_have_text("Saved “Kente Stole”.")
    await expect(row).to_contain_text("GH₵ 99.00")
    await expect(row.get_by_role("link", name="Edit Kente Stole")).to_be_focused()
    assert await page.evaluate("window.samePage") is True
    await context.close()

    shopper = await chromium_browser.new_context()
    shop = await shopper.new_page()
    await shop.goto(f"{base_url}/")
    card_photo = shop.locator(".card img[alt='Kente Stole']")
    await expect(card_photo).to_have_attribute("src", re.compile(r"^/uploads/[0-9a-f]{64}\.webp$"))
    # Loaded, and from the srcset the card file: 400w is enough for a 14rem card at 1x.
    loaded = await card_photo.evaluate(
        "image => image.complete && image.naturalWidth > 0 && image.currentSrc === image.src"
    )
    assert loaded is True
    await shopper.close()

    context = await chromium_browser.new_context(java_script_enabled=False)
    page = await context.new_page()
    await log_in(page, base_url, "/admin/products/new")
    await page.get_by_label("Name", exact=True).fill("Shito")
    await page.get_by_label("Price (GH₵)").fill("free")
    await page.get_by_role("button", name="Create product").click()
    await expect(page.locator("#product-price-message")).to_have_text(
        "Enter an amount like 50 or 50.00."
    )
    await expect(page.locator("#admin-status")).to_have_text(
        "Check the fields marked below: nothing was saved."
    )
    await page.get_by_label("Price (GH₵)").fill("45")
    await page.get_by_role("button", name="Create product").click()
    await expect(page).to_have_url(f"{base_url}/admin/products/2")
    await expect(page.locator("#admin-status")).to_contain_text("Created “Shito”.")
    text_file = tmp_path / "photo.jpg"
    text_file.write_text("not a photo")
    await page.get_by_label("Add a photo").set_input_files(text_file)
    await page.get_by_role("button", name="Upload").click()
    await expect(page.locator("#photo-image-message")).to_contain_text(
        "That file is not a JPEG, PNG or WebP photo"
    )
    await expect(page.locator("#photos .photo")).to_have_count(0)
    await context.close()
