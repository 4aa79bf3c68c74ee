"""In Chromium, against hypercorn: the owner changes a role on the staff page with htmx (the
list and the status line change in place, after a confirm) and with JavaScript off (303, the
flash in the same status line)."""

from playwright.async_api import Page, expect

from storefront.db.engine import sessionmaker_for
from storefront.db.transactions import write_transaction
from storefront.models import UserRole
from storefront.services.users import insert_user
from tests import conftest


async def log_in(page: Page, base_url: str, email: str) -> None:
    await page.goto(f"{base_url}/login?next=/admin/staff")
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password").fill(conftest.TEST_PASSWORD)
    await page.get_by_role("button", name="Log in", exact=True).click()
    await expect(page).to_have_url(f"{base_url}/admin/staff")


async def give_role(page: Page, email: str, role: str) -> None:
    await page.get_by_label("Email contains").fill(email)
    await page.get_by_role("button", name="Find", exact=True).click()
    row = page.locator("[id^=found-]", has_text=email)
    await row.get_by_label(f"Role of {email}").select_option(role)
    await row.get_by_role("button", name="Save role").click()


async def test_the_owner_changes_roles_with_and_without_javascript(
    accounts_live_server, chromium_browser
):
    app, base_url = accounts_live_server.app, accounts_live_server.base_url
    async with sessionmaker_for(app)() as session, write_transaction(session):
        for email, role in (
            ("akosua@shop.test", UserRole.OWNER),
            ("ama@shop.test", UserRole.CUSTOMER),
            ("kofi@shop.test", UserRole.CUSTOMER),
        ):
            await insert_user(session, email, conftest.test_password_hash(), name=email, role=role)

    context = await chromium_browser.new_context()
    page = await context.new_page()
    dialogs: list[str] = []

    async def accept(dialog) -> None:
        dialogs.append(dialog.message)
        await dialog.accept()

    page.on("dialog", accept)
    await log_in(page, base_url, "akosua@shop.test")
    await expect(page.locator(".admin-nav [aria-current=page]")).to_have_text("Staff")
    await page.evaluate("window.samePage = true")  # gone if anything reloads the page
    await give_role(page, "ama@shop.test", "staff")
    status = page.locator("#admin-status")
    await expect(status).to_have_text("ama@shop.test is now staff (was customer).")
    await expect(page.locator("#staff-list tbody").first).to_contain_text("ama@shop.test")
    assert dialogs == ["Change the role of ama@shop.test?"]
    assert await page.locator("#admin-status").count() == 1
    assert await page.evaluate("window.samePage") is True
    await context.close()

    context = await chromium_browser.new_context(java_script_enabled=False)
    page = await context.new_page()
    await log_in(page, base_url, "akosua@shop.test")
    await give_role(page, "kofi@shop.test", "owner")
    await expect(page).to_have_url(f"{base_url}/admin/staff?q=kofi%40shop.test")
    await expect(page.locator("#admin-status")).to_have_text(
        "kofi@shop.test is now owner (was customer)."
    )
    await context.close()
