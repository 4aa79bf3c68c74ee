"""The back office: staff and owners only. A customer gets a 403 page, an anonymous visitor the
login page; every page has the admin nav (by role) and the status line."""

from werkzeug.routing import Rule

from storefront.web.back_office import BACK_OFFICE_NAV
from tests.conftest import CSRF_TOKEN
from tests.test_policy import rules, sample_url

HTMX = {"HX-Request": "true"}


def admin_rules(app) -> list[Rule]:
    return [rule for rule in rules(app) if rule.rule.startswith("/admin")]


def methods_of(rule: Rule) -> list[str]:
    return sorted(set(rule.methods or ()) - {"HEAD", "OPTIONS"})


async def test_a_customer_gets_403_on_every_admin_route(client, make_user, sign_in):
    sign_in(client, await make_user(role="customer"))
    seen = []
    for rule in admin_rules(client.app):
        url = sample_url(rule)
        for method in methods_of(rule):
            form = {"csrf_token": CSRF_TOKEN} if method != "GET" else None
            response = await client.open(url, method=method, form=form)
            assert response.status_code == 403, (method, url)
            body = await response.get_data(as_text=True)
            assert "<html" in body and "Forbidden" in body, (method, url)
            response = await client.open(url, method=method, form=form, headers=HTMX)
            assert response.status_code == 403, (method, url)
            assert "<html" not in await response.get_data(as_text=True)
            seen.append(f"{method} {url}")
    assert "GET /admin" in seen


async def test_anonymous_visitors_go_to_login_and_come_back(client):
    response = await client.get("/admin")
    assert response.status_code == 303
    assert response.headers["Location"] == "/login?next=/admin"
    response = await client.get("/admin", headers=HTMX)
    assert response.status_code == 204 and response.headers["HX-Redirect"] == "/login?next=/admin"
    for rule in admin_rules(client.app):
        if "GET" in methods_of(rule):
            url = sample_url(rule)
            response = await client.get(url)
            assert response.status_code == 303, url
            assert response.headers["Location"].startswith("/login?next=/admin"), url


async def test_the_landing_page_links_every_back_office_area(client, make_user, sign_in):
    sign_in(client, await make_user(role="owner", email="boss@example.com"))
    response = await client.get("/admin")
    assert response.status_code == 200
    page = await response.get_data(as_text=True)
    assert "Back office" in page and "boss@example.com" in page
    areas = [
        rule.rule
        for rule in admin_rules(client.app)
        if rule.rule.startswith("/admin/") and not rule.arguments and "GET" in methods_of(rule)
    ]
    for path in areas:
        assert f'href="{path}"' in page, path
    # The header shows admins the way in; customers never see it.
    assert 'href="/admin"' in page.split("</header>")[0]


async def test_customers_do_not_see_the_admin_link(client, make_user, sign_in):
    sign_in(client, await make_user(role="customer"))
    page = await (await client.get("/account")).get_data(as_text=True)
    assert 'href="/admin"' not in page


async def test_staff_open_the_staff_pages_and_see_no_owner_links(client, make_user, sign_in):
    sign_in(client, await make_user(role="staff", email="kofi@example.com"))
    page = await (await client.get("/admin")).get_data(as_text=True)
    assert "kofi@example.com (staff)" in page
    # Owner-only pages: a link opens a GET, and a staff page may share its path with an
    # owner-only POST (GET /admin/coupons lists, POST /admin/coupons creates).
    owner_only = [
        rule.rule
        for rule in admin_rules(client.app)
        if getattr(client.app.view_functions[rule.endpoint], "requires", None) == "owner"
        and "GET" in methods_of(rule)
    ]
    assert "/admin/staff" in owner_only and "/admin/audit" in owner_only
    for path in owner_only:
        assert f'href="{path}"' not in page, path
    assert 'href="/admin/emails"' in page
    assert (await client.get("/admin/emails")).status_code == 200
    assert (await client.get("/admin/staff")).status_code == 403


def test_every_nav_link_names_a_back_office_page(app):
    for link in BACK_OFFICE_NAV:
        [rule] = list(app.url_map.iter_rules(link.endpoint))
        assert rule.rule.startswith("/admin") and not rule.arguments, link
        assert "GET" in (rule.methods or ()), link


async def test_every_back_office_page_has_the_nav_the_status_line_and_its_styles(
    client, make_user, sign_in
):
    sign_in(client, await make_user(role="owner"))
    pages = [
        rule.rule
        for rule in admin_rules(client.app)
        if not rule.arguments and "GET" in methods_of(rule)
    ]
    assert len(pages) >= 5
    for path in pages:
        page = await (await client.get(path)).get_data(as_text=True)
        assert '<nav class="admin-nav" aria-label="Back office">' in page, path
        assert '<div id="admin-status" class="admin-status" role="status"' in page, path
        assert "/static/css/admin.css" in page, path
        for link in BACK_OFFICE_NAV:
            assert f">{link.title}</a>" in page, (path, link.title)
    shop = await (await client.get("/")).get_data(as_text=True)
    assert "admin.css" not in shop and "admin-status" not in shop


async def test_a_no_js_change_flashes_into_the_status_line(client, make_user, sign_in):
    sign_in(client, await make_user(role="owner"))
    response = await client.post(
        "/admin/test-email", form={"csrf_token": CSRF_TOKEN, "to": "check@example.com"}
    )
    assert response.status_code == 303
    page = await (await client.get(response.headers["Location"])).get_data(as_text=True)
    status_line = page.split('id="admin-status"')[1].split("</div>")[0]
    assert "to check@example.com is queued" in status_line
    assert 'class="flashes"' not in page  # the shop's flash box is not shown twice
