"""GET /admin/audit: newest first, filtered by actor and record, paged by id, refusing bad
filters with a message; the owner's page only."""

import pytest

from storefront.db.engine import sessionmaker_for
from storefront.db.transactions import write_transaction
from storefront.models import UserRole
from storefront.services.audit import RecordRef, record_change

pytestmark = pytest.mark.both_databases

HTMX = {"HX-Request": "true"}


async def write_entries(app, actor, count: int, record_type: str = "product") -> None:
    async with sessionmaker_for(app)() as session, write_transaction(session):
        for number in range(1, count + 1):
            await record_change(
                session,
                actor,
                f"{record_type}.update",
                RecordRef(record_type, number),
                {"price_minor": 100},
                {"price_minor": 100 + number},
            )


@pytest.fixture(name="owner")
async def _owner(make_user):
    return await make_user(role=UserRole.OWNER, email="boss@shop.test")


async def test_the_log_shows_who_what_which_record_before_and_after(
    app, client, sign_in, make_user, owner
):
    staff = await make_user(role=UserRole.STAFF, email="kofi@shop.test")
    await write_entries(app, staff, 2)
    await write_entries(app, None, 1, record_type="category")
    sign_in(client, owner)
    response = await client.get("/admin/audit")
    html = await response.get_data(as_text=True)
    assert response.status_code == 200
    assert 'aria-current="page">Audit<' in html
    rows = html.split('<tr id="audit-')[1:]
    assert len(rows) == 3
    assert "storefront command" in rows[0] and "category:1" in rows[0]
    assert "kofi@shop.test" in rows[1] and "product.update" in rows[1] and "product:2" in rows[1]
    assert "<dt>price_minor</dt><dd><code>100</code>" in rows[1]
    assert "<dt>price_minor</dt><dd><code>102</code>" in rows[1]
    assert f'href="/admin/audit?actor={staff.id}"' in rows[1]
    assert 'href="/admin/audit?record=product:2"' in rows[1]


async def test_filters_by_actor_and_record(app, client, sign_in, make_user, owner):
    staff = await make_user(role=UserRole.STAFF, email="kofi@shop.test")
    await write_entries(app, staff, 3)
    await write_entries(app, owner, 2, record_type="coupon")
    sign_in(client, owner)

    by_staff = await (await client.get(f"/admin/audit?actor={staff.id}")).get_data(as_text=True)
    assert by_staff.count('<tr id="audit-') == 3 and "coupon:" not in by_staff
    assert f'<option value="{staff.id}" selected>kofi@shop.test</option>' in by_staff

    one = await (await client.get("/admin/audit?record=product:2")).get_data(as_text=True)
    assert one.count('<tr id="audit-') == 1 and "product:2" in one

    coupons = await (await client.get("/admin/audit?record=coupon")).get_data(as_text=True)
    assert coupons.count('<tr id="audit-') == 2

    none = await (await client.get(f"/admin/audit?actor={owner.id}&record=product")).get_data(
        as_text=True
    )
    assert '<tr id="audit-' not in none and "No changes match these filters." in none


async def test_pages_by_id_and_htmx_gets_the_list_only(app, client, sign_in, owner):
    await write_entries(app, owner, 55)
    sign_in(client, owner)
    first = await (await client.get("/admin/audit")).get_data(as_text=True)
    assert first.count('<tr id="audit-') == 50
    assert "product:55" in first and "product:6<" in first and "product:5<" not in first
    older_link = first.split('href="/admin/audit?before=')[1].split('"')[0]
    older = await client.get(f"/admin/audit?before={older_link}", headers=HTMX)
    html = await older.get_data(as_text=True)
    assert older.status_code == 200 and "<html" not in html
    assert html.count('<tr id="audit-') == 5 and "product:5<" in html and "product:1<" in html
    assert "Newest" in html and "Older" not in html
    assert 'id="admin-status"' in html and 'hx-swap-oob="innerHTML"' in html


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("actor=boss", "The actor must be a whole number from 1."),
        ("actor=0", "The actor must be a whole number from 1."),
        ("actor=99999999999", "The actor must be a whole number from 1."),
        ("record=Product:1", "e.g. &#34;product:12&#34;"),
        ("record=product:", "e.g. &#34;product:12&#34;"),
        ("record=product:1%202", "e.g. &#34;product:12&#34;"),
        ("before=-3", "The page marker must be a whole number from 1."),
    ],
)
async def test_bad_filters_get_a_message_and_400(client, sign_in, owner, query, message):
    sign_in(client, owner)
    for headers in (None, HTMX):
        response = await client.get(f"/admin/audit?{query}", headers=headers or {})
        assert response.status_code == 400, query
        assert message in await response.get_data(as_text=True), query


async def test_staff_cannot_read_the_audit_log(client, sign_in, make_user):
    sign_in(client, await make_user(role=UserRole.STAFF))
    assert (await client.get("/admin/audit")).status_code == 403
