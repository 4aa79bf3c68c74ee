"""In Chromium, against hypercorn: register → log out → log in (wrong password first) → account
page, with htmx swapping errors in place, no CSP violation, and a script-like name shown as text."""

from playwright.async_api import Page, expect

SCRIPT_NAME = "<script>alert(1)</script>"
EMAIL = "browser.shopper@example.com"
PASSWORD = "a long browser password"


async def submit(page: Page, label: str) -> None:
    await page.get_by_role("button", name=label, exact=True).click()


async def test_register_logout_login_account_in_the_browser(accounts_live_server, chromium_browser):
    base_url = accounts_live_server.base_url
    context = await chromium_browser.new_context()
    page = await context.new_page()
    problems: list[str] = []
    page.on("dialog", lambda dialog: problems.append(f"dialog: {dialog.message}"))
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    # 422s are the form answers htmx swaps in; the browser logs every non-2xx fetch as an error.
    page.on(
        "console",
        lambda message: (
            problems.append(f"console: {message.text}")
            if message.type == "error" and not message.text.startswith("Failed to load resource")
            else None
        ),
    )
    page.on(
        "response",
        lambda response: (
            problems.append(f"{response.status} {response.url}")
            if response.status >= 500
            or (response.status == 404 and not response.url.endswith("/favicon.ico"))
            else None
        ),
    )

    await page.goto(f"{base_url}/register")
    await page.get_by_label("Name").fill(SCRIPT_NAME)
    await page.get_by_label("Email").fill(EMAIL)
    await page.get_by_label("Password (at least 10 characters)").fill(PASSWORD)
    await page.get_by_label("Password again").fill("not the same password")
    await submit(page, "Create account")
    # htmx swapped the 422 form in place: message shown, typed values kept, passwords cleared.
    await expect(page.get_by_text("The two passwords do not match.")).to_be_visible()
    await expect(page).to_have_url(f"{base_url}/register")
    await expect(page.get_by_label("Email")).to_have_value(EMAIL)
    await expect(page.get_by_label("Name")).to_have_value(SCRIPT_NAME)
    await page.get_by_label("Password (at least 10 characters)").fill(PASSWORD)
    await page.get_by_label("Password again").fill(PASSWORD)
    await submit(page, "Create account")

    await expect(page).to_have_url(f"{base_url}/account")
    await expect(page.locator("#account-email")).to_have_text(EMAIL)
    await expect(page.locator("#account-name")).to_have_text(SCRIPT_NAME)
    await expect(page.locator(".account-links")).to_contain_text(SCRIPT_NAME)
    await expect(page.locator("#wallet-balance")).to_have_text("GH₵ 0.00")

    await submit(page, "Log out")
    await expect(page).to_have_url(f"{base_url}/")
    await expect(page.get_by_text("You have logged out.")).to_be_visible()
    await page.goto(f"{base_url}/account")
    await expect(page).to_have_url(f"{base_url}/login?next=/account")

    await page.get_by_label("Email").fill(EMAIL)
    await page.get_by_label("Password").fill("a wrong password here")
    await submit(page, "Log in")
    await expect(page.get_by_text("That email and password do not match")).to_be_visible()
    await expect(page.get_by_label("Email")).to_have_value(EMAIL)
    await page.get_by_label("Password").fill(PASSWORD)
    await submit(page, "Log in")

    await expect(page).to_have_url(f"{base_url}/account")
    await expect(page.locator("#account-email")).to_have_text(EMAIL)

    await submit(page, "Log out everywhere")
    await expect(page).to_have_url(f"{base_url}/login")
    await expect(page.get_by_text("You have logged out on every device.")).to_be_visible()
    await page.goto(f"{base_url}/account")
    await expect(page).to_have_url(f"{base_url}/login?next=/account")
    assert problems == [], problems
    await context.close()
