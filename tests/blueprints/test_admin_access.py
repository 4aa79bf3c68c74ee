"""The back office: admins only. A customer gets a 403 page, an anonymous visitor the login page."""

from werkzeug.routing import Rule

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
