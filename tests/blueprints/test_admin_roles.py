"""The owner's staff page and role form: with JavaScript off (303, flash in the status line)
and with htmx (the list and the status line out of band), and every refusal changing nothing."""

import pytest
from sqlalchemy import func, select

from storefront.db.engine import sessionmaker_for
from storefront.models import AuditEntry, User, UserRole
from tests.conftest import CSRF_TOKEN

pytestmark = pytest.mark.both_databases

HTMX = {"HX-Request": "true"}


async def role_of(app, user_id: int) -> str:
    async with sessionmaker_for(app)() as session:
        return await session.scalar(select(User.role).where(User.id == user_id))


async def audit_count(app) -> int:
    async with sessionmaker_for(app)() as session:
        return await session.scalar(select(func.count()).select_from(AuditEntry))


async def post_role(client, user_id: int, role: str, headers=None, **extra: str):
    return await client.post(
        f"/admin/customers/{user_id}/role",
        form={"csrf_token": CSRF_TOKEN, "role": role, **extra},
        headers=headers or {},
    )


@pytest.fixture(name="owner")
async def _owner(make_user):
    return await make_user(role=UserRole.OWNER, email="boss@shop.test", name="Boss")


async def test_the_staff_page_lists_staff_and_finds_accounts(client, sign_in, make_user, owner):
    await make_user(role=UserRole.STAFF, email="kofi@shop.test", name="Kofi")
    ama = await make_user(email="ama@shop.test")
    sign_in(client, owner)
    page = await (await client.get("/admin/staff")).get_data(as_text=True)
    assert "boss@shop.test" in page and "kofi@shop.test" in page
    assert "ama@shop.test" not in page
    found = await client.get("/admin/staff?q=AMA@")
    html = await found.get_data(as_text=True)
    assert found.status_code == 200
    assert f'action="/admin/customers/{ama.id}/role"' in html
    assert 'name="role"' in html and 'name="q" value="AMA@"' in html
    assert 'aria-current="page">Staff<' in html
    too_long = await client.get("/admin/staff?q=" + "x" * 255)
    assert too_long.status_code == 400
    assert "at most 254 characters" in await too_long.get_data(as_text=True)


async def test_an_owner_makes_a_customer_staff_without_javascript(
    app, client, sign_in, make_user, owner
):
    ama = await make_user(email="ama@shop.test")
    sign_in(client, owner)
    response = await post_role(client, ama.id, "staff")
    assert response.status_code == 303
    assert response.headers["Location"] == "/admin/staff"
    assert await role_of(app, ama.id) == "staff"
    page = await (await client.get("/admin/staff")).get_data(as_text=True)
    status_line = page.split('id="admin-status"')[1].split("</div>")[0]
    assert "ama@shop.test is now staff (was customer)." in status_line
    async with sessionmaker_for(app)() as session:
        [entry] = await session.scalars(select(AuditEntry))
    assert (entry.actor_id, entry.action, entry.record_type, entry.record_id) == (
        owner.id,
        "user.role",
        "user",
        str(ama.id),
    )
    assert (entry.before, entry.after) == ({"role": "customer"}, {"role": "staff"})


async def test_with_htmx_the_list_comes_back_with_the_status_line_out_of_band(
    app, client, sign_in, make_user, owner
):
    ama = await make_user(email="ama@shop.test")
    sign_in(client, owner)
    response = await post_role(client, ama.id, "owner", headers=HTMX, q="ama")
    html = await response.get_data(as_text=True)
    assert response.status_code == 200
    assert "<html" not in html and 'id="staff-list"' in html
    assert '<div id="admin-status"' in html and 'hx-swap-oob="innerHTML"' in html
    assert "ama@shop.test is now owner (was customer)." in html
    assert await role_of(app, ama.id) == "owner"


@pytest.mark.parametrize("headers", [None, HTMX], ids=["no-js", "htmx"])
async def test_refusals_change_nothing(app, client, sign_in, make_user, owner, headers):
    ama = await make_user(email="ama@shop.test")
    sign_in(client, owner)
    cases = [
        (owner.id, "staff", 409, "boss@shop.test is the only owner"),
        (owner.id, "customer", 409, "is the only owner"),
        (ama.id, "admin", 422, "Choose a role: customer, staff, owner."),
        (ama.id, "", 422, "Choose a role"),
        (424242, "staff", 404, "There is no account #424242."),
    ]
    for user_id, role, status, message in cases:
        response = await post_role(client, user_id, role, headers=headers)
        assert response.status_code == status, (user_id, role)
        assert message in await response.get_data(as_text=True), (user_id, role)
    assert await role_of(app, owner.id) == "owner"
    assert await role_of(app, ama.id) == "customer"
    assert await audit_count(app) == 0


async def test_staff_may_not_change_roles(app, client, sign_in, make_user, owner):
    staff = await make_user(role=UserRole.STAFF)
    sign_in(client, staff)
    response = await post_role(client, staff.id, "owner")
    assert response.status_code == 403
    assert "Only the shop&#39;s owner may do this." in await response.get_data(as_text=True)
    assert (await client.get("/admin/staff")).status_code == 403
    assert await role_of(app, staff.id) == "staff"
    assert await audit_count(app) == 0


async def test_an_owner_who_steps_down_leaves_for_the_pages_still_theirs(
    app, client, sign_in, make_user, owner
):
    await make_user(role=UserRole.OWNER, email="partner@shop.test")
    sign_in(client, owner)
    response = await post_role(client, owner.id, "staff")
    assert response.status_code == 303 and response.headers["Location"] == "/admin"
    page = await (await client.get("/admin")).get_data(as_text=True)
    assert "boss@shop.test is now staff (was owner)." in page
    # Staff do not see the owner's pages in the nav any more.
    assert 'href="/admin/staff"' not in page and 'href="/admin/audit"' not in page
    response = await post_role(client, owner.id, "customer")
    assert response.status_code == 403  # no longer an owner
