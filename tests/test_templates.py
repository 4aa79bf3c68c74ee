"""Templates build internal URLs with url_for (routes are renamed in one place, the rendered
URLs stay the contract), including the fragments htmx.render_fragment renders alone."""

import re
from pathlib import Path
from types import SimpleNamespace

from quart import Quart

from storefront.services.cart import CartLine
from storefront.web.htmx import render_fragment
from storefront.web.static_files import asset_url

TEMPLATES = Path(__file__).resolve().parents[1] / "templates"
URL_ATTRIBUTE = re.compile(
    r"""(?<![\w-])(href|src|action|formaction|hx-(?:get|post|put|patch|delete|push-url|replace-url))"""
    r"""\s*=\s*(?:"([^"]*)"|'([^']*)')""",
    re.IGNORECASE,
)
ALLOWED_PREFIXES = ("{{", "#", "https://", "mailto:")
HX_URL_SWITCHES = frozenset({"true", "false"})


def literal_urls(text: str) -> list[str]:
    """Every URL-bearing attribute whose value is written out instead of built."""
    found = []
    for match in URL_ATTRIBUTE.finditer(text):
        attribute = match.group(1).lower()
        value = match.group(2) if match.group(2) is not None else match.group(3)
        if value.startswith(ALLOWED_PREFIXES):
            continue
        if attribute.startswith("hx-") and value in HX_URL_SWITCHES:
            continue
        found.append(f"{attribute}={value!r}")
    return found


def test_the_check_finds_literal_urls():
    html = (
        '<a href="/cart">x</a><form action="/login" hx-post=\'/login\'>'
        '<button formaction="/pay">p</button><img src="/static/a.png"><a href="orders/1">o</a>'
        '<a href="{{ url_for(\'shop.home\') }}">h</a><a href="#main">m</a>'
        '<a href="https://paystack.com">p</a><a href="mailto:a@example.com">m</a>'
        '<div hx-target="#x" hx-push-url="true"></div>'
    )
    assert literal_urls(html) == [
        "href='/cart'",
        "action='/login'",
        "hx-post='/login'",
        "formaction='/pay'",
        "src='/static/a.png'",
        "href='orders/1'",
    ]


def test_no_template_writes_an_internal_url_literally():
    offenders = {
        str(path.relative_to(TEMPLATES)): urls
        for path in sorted(TEMPLATES.rglob("*.html"))
        if (urls := literal_urls(path.read_text()))
    }
    assert offenders == {}


async def test_fragments_build_the_same_urls_with_url_for(app: Quart):
    line = CartLine(
        product_id=7,
        slug="red-phone",
        name="Red phone",
        image="",
        unit_price_minor=1_000,
        quantity=2,
        stock=5,
        is_active=True,
        line_total_minor=2_000,
    )
    product = SimpleNamespace(id=7, name="Red phone", stock=5)
    async with app.test_request_context("/cart"):
        line_html = await render_fragment("cart/_line.html", line=line, asset_url=asset_url)
        form_html = await render_fragment("cart/_add_form.html", product=product)
        badge_html = await render_fragment("_cart_badge.html", cart_count=3, oob=True)
    assert line_html.startswith('<li class="cart-line" id="cart-line-7">')
    assert '<a href="/products/red-phone">Red phone</a>' in line_html
    assert line_html.count('action="/cart/items/7" hx-post="/cart/items/7"') == 2
    assert 'action="/cart/items" hx-post="/cart/items"' in form_html
    assert badge_html.startswith('<a href="/cart" id="cart-badge"')


async def test_query_strings_come_out_as_the_literal_urls_did(app: Quart):
    async with app.test_request_context("/"):
        page = app.jinja_env.overlay(enable_async=False).from_string(
            "{{ url_for('admin_emails.emails', status=status or None, page=2) }}"
        )
        assert page.render(status="") == "/admin/emails?page=2"
        assert page.render(status="dead") == "/admin/emails?status=dead&amp;page=2"
