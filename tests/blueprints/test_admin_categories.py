"""Categories in the back office: create (slug derived and unique), click-to-edit rename and
hide, move up and down, delete only when empty; with JavaScript off and with htmx; the shop
follows at once; refusals change nothing."""

import asyncio

import pytest
from sqlalchemy import func, select

from storefront.db.engine import sessionmaker_for
from storefront.models import AuditEntry, Category, Product
from storefront.services.audit import audited_write
from storefront.services.categories import (
    CategoryRefused,
    delete_category,
    move_category,
    slug_for,
)
from tests.conftest import CSRF_TOKEN
from tests.test_admin_policy import database_rows

pytestmark = pytest.mark.both_databases

HTMX = {"HX-Request": "true"}


@pytest.fixture(name="staff")
async def _staff(make_user):
    return await make_user(role="staff", email="kojo@shop.test")


async def categories_in_order(app) -> list[tuple[str, str, int, bool]]:
    async with sessionmaker_for(app)() as session:
        rows = await session.execute(
            select(Category.name, Category.slug, Category.position, Category.is_active).order_by(
                Category.position, Category.name, Category.id
            )
        )
        return [tuple(row) for row in rows]


async def post(client, path: str, headers=None, **form: str):
    return await client.post(path, form={"csrf_token": CSRF_TOKEN, **form}, headers=headers or {})


async def audit_actions(app) -> list[tuple[str, dict | None, dict | None]]:
    async with sessionmaker_for(app)() as session:
        entries = await session.scalars(select(AuditEntry).order_by(AuditEntry.id))
        return [(entry.action, entry.before, entry.after) for entry in entries]


@pytest.mark.parametrize(
    ("name", "slug"),
    [
        ("Phones & Tablets", "phones-tablets"),
        ("  Kɛntɛ   Cloth ", "knt-cloth"),
        ("Crème brûlée", "creme-brulee"),
        ("!!!", "category"),
        ("x" * 120, "x" * 80),
    ],
)
def test_slug_for(name, slug):
    assert slug_for(name) == slug


async def test_staff_create_categories_without_javascript(app, client, sign_in, staff):
    sign_in(client, staff)
    response = await post(client, "/admin/categories", name="  Phones ")
    assert response.status_code == 303 and response.headers["Location"] == "/admin/categories"
    page = await (await client.get("/admin/categories")).get_data(as_text=True)
    assert "Category Phones added." in page.split('id="admin-status"')[1].split("</div>")[0]
    assert 'aria-current="page">Categories<' in page
    # Same slug base, another name: the slug gets a number.
    assert (await post(client, "/admin/categories", name="Phones!")).status_code == 303
    assert await categories_in_order(app) == [
        ("Phones", "phones", 0, True),
        ("Phones!", "phones-2", 1, True),
    ]
    [(action, before, after), _] = await audit_actions(app)
    assert (action, before) == ("category.create", None)
    assert after == {"name": "Phones", "slug": "phones", "position": 0, "is_active": True}


@pytest.mark.parametrize(
    ("name", "message"),
    [("", "Give the category a name."), ("x" * 121, "under 120"), ("PHONES", "already a")],
)
async def test_create_refusals_change_nothing(
    app, client, sign_in, staff, add_category, name, message
):
    await add_category("Phones", slug="phones")
    sign_in(client, staff)
    before = await database_rows(app)
    for headers in (None, HTMX):
        response = await post(client, "/admin/categories", headers, name=name)
        assert response.status_code == 422
        html = await response.get_data(as_text=True)
        assert message in html and 'aria-invalid="true"' in html
    assert await database_rows(app) == before


async def test_inline_validation_of_the_name(client, sign_in, staff, add_category):
    phones = await add_category("Phones")
    sign_in(client, staff)
    for query, message in (
        ({"name": "phones"}, "There is already a category called phones."),
        ({"name": "Phones", "id": str(phones.id)}, ""),  # its own name, while renaming it
        ({"name": ""}, "Give the category a name."),
        ({"name": "Fashion"}, ""),
    ):
        response = await client.get(
            "/admin/categories/check/name", query_string=query, headers=HTMX
        )
        html = await response.get_data(as_text=True)
        assert response.status_code == 200 and message in html
        expected_id = f"category-{query['id']}-name-error" if "id" in query else "category-name"
        assert f'id="{expected_id}' in html


async def test_click_to_edit_rename_and_hide_with_htmx_and_the_shop_follows(
    app, client, sign_in, staff, add_category, add_product
):
    phones = await add_category("Phones", slug="phones")
    await add_product(name="Tecno Spark", category=phones)
    shopper = app.test_client()
    assert ">Phones<" in await (await shopper.get("/")).get_data(as_text=True)
    sign_in(client, staff)

    editing = await client.get(f"/admin/categories/{phones.id}?edit=1", headers=HTMX)
    html = await editing.get_data(as_text=True)
    assert html.lstrip().startswith(f'<tr id="category-{phones.id}"')
    assert 'name="name" value="Phones"' in html and "autofocus" in html
    assert f'action="/admin/categories/{phones.id}"' in html
    cancel = await client.get(f"/admin/categories/{phones.id}", headers=HTMX)
    assert 'name="name"' not in await cancel.get_data(as_text=True)
    no_js = await client.get(f"/admin/categories/{phones.id}?edit=1")
    assert no_js.headers["Location"] == f"/admin/categories?edit={phones.id}"
    page = await (await client.get(no_js.headers["Location"])).get_data(as_text=True)
    assert f'id="category-{phones.id}-name"' in page

    response = await post(
        client, f"/admin/categories/{phones.id}", HTMX, name="Mobile phones", is_active="1"
    )
    html = await response.get_data(as_text=True)
    assert response.status_code == 200
    assert html.lstrip().startswith('<section id="category-list"')
    assert "Category Mobile phones saved (shown in the shop)." in html
    assert f'id="category-{phones.id}-edit"' in html  # the edited row's Edit link takes focus
    assert ">Mobile phones<" in await (await shopper.get("/")).get_data(as_text=True)
    assert (await shopper.get("/?category=phones")).status_code == 200  # the slug stays

    response = await post(client, f"/admin/categories/{phones.id}", name="Mobile phones")
    assert response.status_code == 303  # no is_active: hidden
    assert await categories_in_order(app) == [("Mobile phones", "phones", 0, False)]
    home = await (await shopper.get("/")).get_data(as_text=True)
    assert "Mobile phones" not in home and "Tecno Spark" in home  # its products stay on sale
    assert (await shopper.get("/?category=phones")).status_code == 404
    assert [action for action, *_ in await audit_actions(app)] == ["category.update"] * 2


async def test_rename_refusals_show_the_row_in_edit_mode(app, client, sign_in, staff, add_category):
    await add_category("Phones")
    fashion = await add_category("Fashion")
    sign_in(client, staff)
    before = await database_rows(app)
    response = await post(client, f"/admin/categories/{fashion.id}", name="phones", is_active="1")
    assert response.status_code == 422
    html = await response.get_data(as_text=True)
    assert "There is already a category called phones." in html
    assert f'id="category-{fashion.id}-name" form="category-{fashion.id}-form"' in html
    missing = await post(client, "/admin/categories/999", name="Anything")
    assert missing.status_code == 404
    assert await database_rows(app) == before


async def test_move_up_and_down_and_the_shop_order_follows(
    app, client, sign_in, staff, add_category
):
    for name in ("Phones", "Fashion", "Food"):
        await add_category(name, position=0)  # ties, as old data has them: by name then
    sign_in(client, staff)
    [fashion, food, phones] = [row[0] for row in await categories_in_order(app)]
    assert (fashion, food, phones) == ("Fashion", "Food", "Phones")
    async with sessionmaker_for(app)() as session:
        phones_id = await session.scalar(select(Category.id).where(Category.name == "Phones"))
    response = await post(client, f"/admin/categories/{phones_id}/move", HTMX, direction="up")
    html = await response.get_data(as_text=True)
    assert "Category Phones is now number 2." in html
    assert [row[:3:2] for row in await categories_in_order(app)] == [
        ("Fashion", 0),
        ("Phones", 1),
        ("Food", 2),
    ]
    response = await post(client, f"/admin/categories/{phones_id}/move", direction="up")
    assert response.status_code == 303
    response = await post(client, f"/admin/categories/{phones_id}/move", HTMX, direction="up")
    assert "Category Phones is already first." in await response.get_data(as_text=True)
    home = await (await app.test_client().get("/")).get_data(as_text=True)
    assert home.index(">Phones<") < home.index(">Fashion<") < home.index(">Food<")
    bad = await post(client, f"/admin/categories/{phones_id}/move", direction="sideways")
    assert bad.status_code == 422


async def test_concurrent_moves_keep_positions_a_permutation(app, make_user, add_category):
    owner = await make_user(role="owner")
    categories = [await add_category(f"Category {number}") for number in range(6)]

    async def move(category, direction: str) -> None:
        async with sessionmaker_for(app)() as session, audited_write(session):
            await move_category(session, owner, category.id, direction)

    await asyncio.gather(
        *(move(category, ("up", "down")[index % 2]) for index, category in enumerate(categories))
    )
    positions = [row[2] for row in await categories_in_order(app)]
    assert positions == list(range(6))


async def test_only_an_empty_category_can_be_deleted(
    app, client, sign_in, staff, add_category, add_product
):
    empty = await add_category("Empty")
    full = await add_category("Full")
    await add_product(category=full, is_active=False)  # an inactive product counts too
    sign_in(client, staff)
    page = await (await client.get("/admin/categories")).get_data(as_text=True)
    assert f'action="/admin/categories/{empty.id}/delete"' in page
    assert f'action="/admin/categories/{full.id}/delete"' not in page
    assert 'hx-confirm="Delete the category Empty?"' in page

    before = await database_rows(app)
    for headers in (None, HTMX):
        response = await post(client, f"/admin/categories/{full.id}/delete", headers)
        assert response.status_code == 409
        assert "Full still holds products" in await response.get_data(as_text=True)
    assert await database_rows(app) == before

    response = await post(client, f"/admin/categories/{empty.id}/delete", HTMX)
    assert response.status_code == 200
    assert "Category Empty deleted." in await response.get_data(as_text=True)
    assert [row[0] for row in await categories_in_order(app)] == ["Full"]
    [(action, before_values, after_values)] = await audit_actions(app)
    assert action == "category.delete" and after_values is None
    assert before_values["name"] == "Empty"


async def test_a_product_put_in_a_category_being_deleted_is_never_left_without_it(
    app, make_user, add_category, add_product
):
    """Deleting a category while a product is added to it: either the delete is refused (the
    product came first) or the product is refused (the category was gone); never a product
    whose category silently became empty (the foreign key's ON DELETE SET NULL)."""
    owner = await make_user(role="owner")
    for attempt in range(5):
        category = await add_category(f"Racing {attempt}")

        async def delete(category_id: int) -> None:
            async with sessionmaker_for(app)() as session, audited_write(session):
                await delete_category(session, owner, category_id)

        deleted, added = await asyncio.gather(
            delete(category.id), add_product(category=category), return_exceptions=True
        )
        async with sessionmaker_for(app)() as session:
            still_there = await session.get(Category, category.id) is not None
            orphans = await session.scalar(
                select(func.count()).select_from(Product).where(Product.category_id.is_(None))
            )
        assert orphans == 0
        assert still_there == isinstance(deleted, CategoryRefused)
        assert isinstance(added, Product) == still_there
