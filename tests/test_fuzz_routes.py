"""Hostile values on every form and JSON route: each answer is a 2xx, 3xx or 4xx, never a 5xx.

The routes come from app.url_map, so a route added tomorrow is fuzzed too. Each unsafe route is
posted, anonymously, as a shopper with a full cart and money in the wallet, and as the owner:
with each field missing, duplicated, empty, huge, negative, not a number, in other scripts,
with control characters; as form data and as JSON (deeply nested too). Safe routes get the same
values in their query string.
"""

import json
from typing import Any

import pytest
from quart import Quart
from quart.testing import QuartClient
from werkzeug.datastructures import MultiDict

from storefront.models import Product, User
from tests.conftest import CSRF_TOKEN, sign_in
from tests.fake_paystack import FakePaystack
from tests.fixtures_paystack import paystack_overrides
from tests.test_policy import rules, sample_url, unsafe_methods

pytestmark = pytest.mark.both_databases

# Every form and query field name the shop reads.
FIELDS = (
    "email",
    "password",
    "password_confirm",
    "name",
    "product_id",
    "quantity",
    "code",
    "payment_method",
    "delivery",
    "phone",
    "address",
    "amount",
    "to",
    "next",
    "total_minor",
    "note",
    "reason",
    "status",
    "q",
    "page",
    "per_page",
    "category",
    "sort",
    "in_stock",
    "min_price",
    "max_price",
    "reference",
    "trxref",
    "token",
    "change",
    "kind",
    "value",
    "min_subtotal",
    "starts_at",
    "ends_at",
    "max_uses",
    "max_uses_per_customer",
    "is_active",
    "direction",
    "before",
    "edit",
    "form",
    "id",
)
HOSTILE_VALUES = (
    "",
    " ",
    "0",
    "-1",
    "1",
    "2",
    "1.5",
    "9" * 400,
    "1e309",
    "NaN",
    "١٢٣",  # Arabic-Indic digits: str.isdigit() says yes, int() agrees, ASCII does not
    "²",  # a digit to isdigit(), not to int()
    "\x00\u202e",
    "rénée@exämple.com",
    "💥" * 2000,
    "<script>alert(1)</script>",
    "//evil.example/",
    "GH₵ 1,234.50",
)
DEEP = 10_000
SAMPLE_ARGUMENTS = {"token": "sample-token", "number": "CW-000001"}


@pytest.fixture(name="app_overrides")
def _app_overrides(fake_paystack: FakePaystack) -> dict[str, Any]:
    # Paystack on (through the fake), so its routes parse their input instead of refusing early.
    return paystack_overrides(fake_paystack, RATELIMIT_ENABLED=False)


def form_routes(app: Quart) -> list[tuple[str, str]]:
    """(method, sample path) for every route, unsafe methods and GET alike."""
    found = []
    for rule in rules(app):
        path = sample_url(rule)
        for method in sorted(unsafe_methods(rule)):
            found.append((method, path))
        if "GET" in (rule.methods or ()):
            found.append(("GET", path))
    return found


def hostile_forms() -> list[MultiDict[str, str]]:
    """Forms: each hostile value in every field at once, each field duplicated, none at all."""
    forms: list[MultiDict[str, str]] = [MultiDict({"csrf_token": CSRF_TOKEN})] * 2
    for value in HOSTILE_VALUES:
        forms.append(MultiDict([("csrf_token", CSRF_TOKEN), *((name, value) for name in FIELDS)]))
    duplicated = [("csrf_token", CSRF_TOKEN)]
    for name in FIELDS:
        duplicated += [(name, "1"), (name, "2"), (name, "")]
    forms += [MultiDict(duplicated)] * 2
    return forms


def hostile_json_bodies() -> list[str]:
    bodies = ["[" * DEEP + "]" * DEEP, '{"a":' * DEEP + "1" + "}" * DEEP, "null", "[]", '"x"']
    bodies.append("{" + "not json")
    for value in HOSTILE_VALUES[:8]:
        bodies.append(json.dumps({name: value for name in FIELDS}))
    bodies.append(json.dumps({name: [1, {"a": None}] for name in FIELDS}))
    bodies.append(json.dumps({name: 10**30 for name in FIELDS}))
    return bodies


async def fresh_client(app: Quart, user: User | None) -> QuartClient:
    client = app.test_client()
    async with client.session_transaction() as client_session:
        client_session["csrf_token"] = CSRF_TOKEN
    if user is not None:
        sign_in(client, user)
    return client


async def fuzz(app: Quart, client: QuartClient, label: str) -> list[str]:
    """Send every hostile request; describe each one answered with a 5xx."""
    failures: list[str] = []

    def check(response: Any, what: str) -> None:
        if response.status_code >= 500:
            failures.append(f"{label}: {what} -> {response.status_code}")

    forms = hostile_forms()
    bodies = hostile_json_bodies()
    for method, path in form_routes(app):
        for index, form in enumerate(forms):
            # Every other form as htmx sends it: the fragment paths have error renderings too.
            htmx = index % 2 == 1
            headers = {"X-CSRF-Token": CSRF_TOKEN, **({"HX-Request": "true"} if htmx else {})}
            if method == "GET":
                query = [(k, v) for k, v in form.items(multi=True) if k != "csrf_token"]
                response = await client.get(path, query_string=query, headers=headers)
            else:
                response = await client.open(path, method=method, form=form, headers=headers)
            check(response, f"{method} {path} {dict(form.items())!r:.80} htmx={htmx}")
        if method == "GET":
            continue
        for index, body in enumerate(bodies):
            response = await client.open(
                path,
                method=method,
                data=body,
                headers={"X-CSRF-Token": CSRF_TOKEN, "Content-Type": "application/json"},
            )
            check(response, f"{method} {path} json #{index}")
    return failures


async def test_hostile_values_on_every_route_never_give_a_5xx(
    app: Quart,
    make_user: Any,
    make_product: Any,
    fill_cart: Any,
    add_category: Any,
    make_coupon: Any,
) -> None:
    product: Product = await make_product(stock=5)
    # Id 1 of each, so that the sample URLs (/admin/categories/1...) reach their forms.
    await add_category("Fuzzed")
    await make_coupon("FUZZED")
    shopper = await make_user(balance_minor=1_000_000)
    owner = await make_user(role="owner")
    failures: list[str] = []
    for label, user in (("anonymous", None), ("shopper", shopper), ("owner", owner)):
        if user is shopper:
            await fill_cart(shopper, [(product, 2)])
        client = await fresh_client(app, user)
        failures += await fuzz(app, client, label)
    assert failures == [], "\n".join(failures[:40])
