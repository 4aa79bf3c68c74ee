"""Coupons in the back office: the owner creates them (values as typed: "10" is 10 %, "20.00" is
GH₵ 20), staff change windows, limits and the active flag but no money value, a used coupon
keeps its code, kind and value (also against a redemption racing the change) and can be ended;
with JavaScript off and with htmx; every refusal changes nothing."""

import asyncio
from datetime import datetime

import pytest
from sqlalchemy import select

from storefront.db.engine import sessionmaker_for
from storefront.db.transactions import write_transaction
from storefront.models import AuditEntry, Coupon, Order, utcnow
from storefront.services.audit import audited_write
from storefront.services.cart import select_cart_for_user
from storefront.services.checkout.placement import place_wallet_order
from storefront.services.checkout.refusals import CheckoutError
from storefront.services.coupon_editing import CouponInUse, update_coupon
from storefront.services.coupons import discount_for
from tests.conftest import CSRF_TOKEN
from tests.test_admin_policy import database_rows

pytestmark = pytest.mark.both_databases

HTMX = {"HX-Request": "true"}
NEW_COUPON = {
    "code": " welcome10 ",
    "kind": "percent",
    "value": "10",
    "min_subtotal": "150.00",
    "starts_at": "2026-12-01T08:00",
    "ends_at": "2026-12-31T23:59",
    "max_uses": "100",
    "max_uses_per_customer": "1",
    "is_active": "1",
}


@pytest.fixture(name="owner")
async def _owner(make_user):
    return await make_user(role="owner", email="akosua@shop.test")


@pytest.fixture(name="staff")
async def _staff(make_user):
    return await make_user(role="staff", email="yaw@shop.test")


async def post(client, path: str, headers=None, **form: str):
    return await client.post(path, form={"csrf_token": CSRF_TOKEN, **form}, headers=headers or {})


async def read_coupon(app, coupon_id: int) -> Coupon:
    async with sessionmaker_for(app)() as session:
        return await session.get(Coupon, coupon_id)


async def use_coupon_in_an_order(app, make_user, make_product, fill_cart, coupon) -> Order:
    shopper = await make_user(balance_minor=100_000)
    product = await make_product(price_minor=20_000, stock=50)
    await fill_cart(shopper, [(product, 1)], coupon.code)
    async with sessionmaker_for(app)() as session, write_transaction(session):
        cart = await select_cart_for_user(session, shopper.id)
        return await place_wallet_order(
            session, shopper, cart, "pickup", "0241234567", "", utcnow()
        )


async def test_the_owner_creates_a_coupon_without_javascript(app, client, sign_in, owner):
    sign_in(client, owner)
    response = await post(client, "/admin/coupons", **NEW_COUPON)
    assert response.status_code == 303 and response.headers["Location"] == "/admin/coupons"
    async with sessionmaker_for(app)() as session:
        coupon = await session.scalar(select(Coupon))
        [entry] = await session.scalars(select(AuditEntry))
    assert (coupon.code, coupon.kind, coupon.value, coupon.min_subtotal_minor) == (
        "WELCOME10",
        "percent",
        1_000,
        15_000,
    )
    assert (coupon.starts_at, coupon.ends_at) == (
        datetime(2026, 12, 1, 8, 0),  # Accra's time is UTC: stored as typed
        datetime(2026, 12, 31, 23, 59),
    )
    assert (coupon.max_uses, coupon.max_uses_per_customer, coupon.is_active) == (100, 1, True)
    assert (entry.actor_id, entry.action, entry.record_id) == (
        owner.id,
        "coupon.create",
        str(coupon.id),
    )
    assert entry.after["value"] == 1_000 and entry.before is None
    page = await (await client.get("/admin/coupons")).get_data(as_text=True)
    assert "Coupon WELCOME10 added: 10 % off." in page.split('id="admin-status"')[1]
    assert ">WELCOME10<" in page and "GH₵ 150.00" in page and "0 of 100" in page


async def test_a_fixed_coupon_with_htmx(app, client, sign_in, owner):
    sign_in(client, owner)
    form = {**NEW_COUPON, "code": "SAVE20", "kind": "fixed", "value": "20.00", "ends_at": ""}
    response = await post(client, "/admin/coupons", HTMX, **form)
    html = await response.get_data(as_text=True)
    assert response.status_code == 200
    assert html.lstrip().startswith('<section id="coupon-list"')
    assert "Coupon SAVE20 added: GH₵ 20.00 off." in html and 'hx-swap-oob="innerHTML"' in html
    async with sessionmaker_for(app)() as session:
        coupon = await session.scalar(select(Coupon))
    assert (coupon.kind, coupon.value, coupon.ends_at) == ("fixed", 2_000, None)


@pytest.mark.parametrize(
    ("changes", "status", "field", "message"),
    [
        ({"code": "save 20"}, 422, "code", "letters, digits, - or _"),
        ({"code": ""}, 422, "code", "Enter a code"),
        ({"kind": "bogo"}, 422, "kind", "Choose the kind: percent or fixed."),
        ({"value": "0"}, 422, "value", "from 1 to 100 %"),
        ({"value": "0.5"}, 422, "value", "from 1 to 100 %"),
        ({"value": "101"}, 422, "value", "from 1 to 100 %"),
        ({"value": "ten"}, 422, "value", "like 10 or 12.5"),
        ({"kind": "fixed", "value": "0.00"}, 422, "value", "more than GH₵ 0.00"),
        ({"kind": "fixed", "value": "1.005"}, 422, "value", "at most 2 decimal places"),
        ({"min_subtotal": "-5"}, 422, "min_subtotal", "cannot be negative"),
        ({"starts_at": "tomorrow"}, 422, "starts_at", "like 2026-12-24T18:00"),
        ({"ends_at": "2026-11-30T08:00"}, 422, "ends_at", "must end after it starts"),
        ({"max_uses": "0"}, 422, "max_uses", "whole number from 1"),
        ({"max_uses_per_customer": "1.5"}, 422, "max_uses_per_customer", "whole number"),
        ({"code": "Existing"}, 409, "code", "already a coupon with the code EXISTING"),
    ],
)
async def test_create_refusals_name_their_field_and_change_nothing(
    app, client, sign_in, owner, make_coupon, changes, status, field, message
):
    await make_coupon("EXISTING")
    sign_in(client, owner)
    before = await database_rows(app)
    for headers in (None, HTMX):
        response = await post(client, "/admin/coupons", headers, **{**NEW_COUPON, **changes})
        assert response.status_code == status
        html = await response.get_data(as_text=True)
        assert message in html.split(f'id="coupon-new-{field}-error"')[1].split("</p>")[0]
    assert await database_rows(app) == before


async def test_staff_see_coupons_and_change_no_money_value(
    app, client, sign_in, staff, make_coupon
):
    coupon = await make_coupon("STAFFTEST", kind="fixed", value=2_000, min_subtotal_minor=10_000)
    sign_in(client, staff)
    page = await (await client.get("/admin/coupons")).get_data(as_text=True)
    assert "STAFFTEST" in page and 'hx-post="/admin/coupons"' not in page
    editor = await (await client.get(f"/admin/coupons/{coupon.id}")).get_data(as_text=True)
    assert 'name="ends_at"' in editor and 'name="max_uses"' in editor
    assert 'name="value"' not in editor and 'name="kind"' not in editor
    assert 'name="min_subtotal"' not in editor

    before = await database_rows(app)
    for money in ({"value": "25.00"}, {"kind": "percent", "value": "10"}, {"min_subtotal": "1"}):
        for headers in (None, HTMX):
            response = await post(client, f"/admin/coupons/{coupon.id}", headers, **money)
            assert response.status_code == 403
            assert "Only the owner may set a coupon&#39;s money values" in (
                await response.get_data(as_text=True)
            )
    create = await post(client, "/admin/coupons", **NEW_COUPON)
    assert create.status_code == 403
    assert await database_rows(app) == before

    # The same money values as now are no change: staff may post them with the rest.
    response = await post(
        client,
        f"/admin/coupons/{coupon.id}",
        value="20.00",
        min_subtotal="100",
        ends_at="2027-01-31T18:00",
        max_uses="30",
        is_active="1",
    )
    assert response.status_code == 303
    assert response.headers["Location"] == f"/admin/coupons/{coupon.id}"
    stored = await read_coupon(app, coupon.id)
    assert (stored.value, stored.ends_at, stored.max_uses) == (2_000, datetime(2027, 1, 31, 18), 30)
    async with sessionmaker_for(app)() as session:
        [entry] = await session.scalars(select(AuditEntry))
    assert (entry.actor_id, entry.action) == (staff.id, "coupon.update")
    assert entry.before == {"ends_at": None, "max_uses": None}
    assert entry.after == {"ends_at": "2027-01-31T18:00:00", "max_uses": 30}


async def test_the_owner_changes_money_values_of_an_unused_coupon_with_htmx(
    app, client, sign_in, owner, make_coupon
):
    coupon = await make_coupon("CHANGEME", kind="percent", value=1_000)
    sign_in(client, owner)
    response = await post(
        client, f"/admin/coupons/{coupon.id}", HTMX, code="changed", kind="fixed", value="5"
    )
    html = await response.get_data(as_text=True)
    assert response.status_code == 200
    assert html.lstrip().startswith('<section id="coupon-editor"')
    assert "Coupon CHANGED saved." in html and "GH₵ 5.00 off" in html
    stored = await read_coupon(app, coupon.id)
    assert (stored.code, stored.kind, stored.value, stored.is_active) == (
        "CHANGED",
        "fixed",
        500,
        False,
    )


async def test_a_used_coupon_keeps_code_kind_and_value_and_can_be_ended(
    app, client, sign_in, owner, make_coupon, make_user, make_product, fill_cart
):
    coupon = await make_coupon("USED10", kind="percent", value=1_000, max_uses=5)
    order = await use_coupon_in_an_order(app, make_user, make_product, fill_cart, coupon)
    sign_in(client, owner)
    editor = await (await client.get(f"/admin/coupons/{coupon.id}")).get_data(as_text=True)
    assert "This coupon has been used" in editor and order.number in editor
    assert 'name="value"' not in editor and 'name="code"' not in editor
    assert 'class="redemptions">1<' in editor and 'class="uses">1<' in editor

    before = await database_rows(app)
    for changes in ({"value": "20"}, {"kind": "fixed"}, {"code": "USED20"}, {"max_uses": "0"}):
        response = await post(client, f"/admin/coupons/{coupon.id}", **changes, is_active="1")
        assert response.status_code in (409, 422), changes
    refused = await post(client, f"/admin/coupons/{coupon.id}", HTMX, value="20", is_active="1")
    assert refused.status_code == 409
    assert "USED10 has been used (1 so far)" in await refused.get_data(as_text=True)
    below = await post(client, f"/admin/coupons/{coupon.id}", max_uses="1", is_active="1")
    assert below.status_code == 303  # a limit may come down to the uses so far
    assert (await read_coupon(app, coupon.id)).max_uses == 1
    assert await database_rows(app) != before

    page = await (await client.get(f"/admin/coupons/{coupon.id}")).get_data(as_text=True)
    assert 'hx-confirm="End USED10 now? No order can use it after this."' in page
    ended = await post(client, f"/admin/coupons/{coupon.id}/end", HTMX)
    assert "Coupon USED10 ended." in await ended.get_data(as_text=True)
    stored = await read_coupon(app, coupon.id)
    assert stored.ends_at is not None and stored.ends_at <= utcnow()
    again = await post(client, f"/admin/coupons/{coupon.id}/end")
    assert again.status_code == 303
    listing = await (await client.get("/admin/coupons")).get_data(as_text=True)
    row = listing.split(f'id="coupon-{coupon.id}"')[1].split("</tr>")[0]
    assert "ended" in row and ">1 of 1<" in row.replace(" ", " ")


async def test_search_by_code_answers_the_table_only_for_htmx(client, sign_in, staff, make_coupon):
    await make_coupon("KENTE5")
    await make_coupon("SHEA10")
    sign_in(client, staff)
    response = await client.get(
        "/admin/coupons?q=ken", headers={**HTMX, "HX-Target": "coupon-table"}
    )
    html = await response.get_data(as_text=True)
    assert html.lstrip().startswith('<div id="coupon-table"')
    assert "KENTE5" in html and "SHEA10" not in html
    page = await (await client.get("/admin/coupons?q=%25")).get_data(as_text=True)
    assert "No coupon's code contains" in page  # % is a character, not a wildcard
    assert (await client.get("/admin/coupons?q=" + "x" * 41)).status_code == 400


async def test_inline_validation_of_code_and_value(client, sign_in, owner, make_coupon):
    existing = await make_coupon("TAKEN")
    sign_in(client, owner)
    for field, query, error_id, message in (
        ("code", {"code": "taken"}, "coupon-new-code-error", "already a coupon"),
        (
            "code",
            {"code": "TAKEN", "form": "edit", "id": str(existing.id)},
            "coupon-edit-code-error",
            "",
        ),
        ("code", {"code": "a b"}, "coupon-new-code-error", "letters, digits"),
        ("value", {"value": "150", "kind": "percent"}, "coupon-new-value-error", "1 to 100"),
        ("value", {"value": "150", "kind": "fixed"}, "coupon-new-value-error", ""),
    ):
        response = await client.get(
            f"/admin/coupons/check/{field}", query_string=query, headers=HTMX
        )
        html = await response.get_data(as_text=True)
        assert response.status_code == 200
        assert html.startswith(f'<p id="{error_id}"') and message in html
    assert (await client.get("/admin/coupons/check/csrf_token")).status_code == 404


@pytest.mark.parametrize("started_after", [0, 4])
async def test_a_value_change_racing_redemptions_never_reprices_a_used_coupon(
    app, make_user, make_product, make_coupon, fill_cart, started_after
):
    """Shoppers pay with the coupon while the owner changes its value: either the change comes
    first (and every order has the new discount) or a use does (and the change is refused)."""
    owner = await make_user(role="owner")
    coupon = await make_coupon("RACE10", kind="percent", value=1_000)
    product = await make_product(price_minor=10_000, stock=100)
    shoppers = [await make_user(balance_minor=100_000) for _ in range(8)]
    for shopper in shoppers:
        await fill_cart(shopper, [(product, 1)], coupon.code)

    async def pay(shopper) -> bool:
        async with sessionmaker_for(app)() as session:
            try:
                async with write_transaction(session):
                    cart = await select_cart_for_user(session, shopper.id)
                    await place_wallet_order(
                        session, shopper, cart, "pickup", "0241234567", "", utcnow()
                    )
            except CheckoutError:
                return False
        return True

    async def reprice() -> bool:
        async with sessionmaker_for(app)() as session:
            try:
                async with audited_write(session):
                    await update_coupon(session, owner, coupon.id, {"value": 5_000})
            except CouponInUse:
                return False
        return True

    # SQLite runs the writes in the order they start: the change first, then after 4 uses.
    # PostgreSQL interleaves them.
    results = await asyncio.gather(
        *(pay(shopper) for shopper in shoppers[:started_after]),
        reprice(),
        *(pay(shopper) for shopper in shoppers[started_after:]),
    )
    stored = await read_coupon(app, coupon.id)
    assert results[started_after] == (stored.value == 5_000)
    if started_after == 0 and "sqlite" in str(app.config["DATABASE_URL"]):
        assert stored.value == 5_000  # the change came first: every order has 50 % off
    # Shoppers whose checkout read the old value before the change get "your coupon's discount
    # changed" (PostgreSQL). Once an order has used it, the value stays.
    late = await make_user(balance_minor=100_000)
    await fill_cart(late, [(product, 1)], coupon.code)
    assert await pay(late)
    if stored.value != 5_000:
        assert not await reprice()  # used now: refused
    stored = await read_coupon(app, coupon.id)
    async with sessionmaker_for(app)() as session:
        discounts = list(
            await session.scalars(select(Order.discount_minor).where(Order.coupon_code == "RACE10"))
        )
    assert discounts and all(discount == discount_for(stored, 10_000) for discount in discounts)
