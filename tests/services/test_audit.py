"""The audit log service: what record_change writes, the changing block, audited_write's
refusal of an unaudited change, and the page's query."""

from datetime import datetime

import pytest
from sqlalchemy import func, select, update

from storefront.db.engine import sessionmaker_for
from storefront.db.transactions import write_transaction
from storefront.models import AuditEntry, Product, ProductImage, StockMovementKind, UserRole
from storefront.services.audit import (
    RecordRef,
    UnauditedChange,
    audited_write,
    changing,
    json_safe,
    record_change,
    record_type_of,
    select_audit_actors,
    select_audit_rows,
)

pytestmark = pytest.mark.both_databases

PRODUCT_FIELDS = ("name", "price_minor", "stock", "is_active", "updated_at")


async def entries(app) -> list[AuditEntry]:
    async with sessionmaker_for(app)() as session:
        return list(await session.scalars(select(AuditEntry).order_by(AuditEntry.id)))


async def price_of(app, product_id: int) -> int:
    async with sessionmaker_for(app)() as session:
        return await session.scalar(select(Product.price_minor).where(Product.id == product_id))


def test_json_safe_keeps_money_as_pesewas_and_writes_times_and_enums_as_text():
    assert json_safe(
        {
            "price_minor": 1250,
            "kind": StockMovementKind.RESTOCK,
            "at": datetime(2026, 12, 1, 9, 30),
            "tags": ("a", 1),
            "none": None,
            "active": True,
        }
    ) == {
        "price_minor": 1250,
        "kind": "restock",
        "at": "2026-12-01T09:30:00",
        "tags": ["a", 1],
        "none": None,
        "active": True,
    }


def test_record_types_are_the_model_names_in_snake_case():
    assert record_type_of(Product) == "product"
    assert record_type_of(ProductImage) == "product_image"


async def test_record_change_keeps_only_the_changed_fields_and_who(app, make_user, add_product):
    owner = await make_user(role=UserRole.OWNER)
    product = await add_product(name="Kente", price_minor=12_000)
    async with sessionmaker_for(app)() as session, write_transaction(session):
        entry = await record_change(
            session,
            owner,
            "product.update",
            await session.get(Product, product.id),
            {"name": "Kente", "price_minor": 12_000, "stock": 10},
            {"name": "Kente", "price_minor": 12_500, "stock": 10},
        )
        unchanged = await record_change(
            session, owner, "product.update", product, {"stock": 10}, {"stock": 10}
        )
    assert entry is not None and unchanged is None
    [saved] = await entries(app)
    assert (saved.actor_id, saved.action, saved.record_type, saved.record_id) == (
        owner.id,
        "product.update",
        "product",
        str(product.id),
    )
    assert (saved.before, saved.after) == ({"price_minor": 12_000}, {"price_minor": 12_500})
    assert saved.created_at is not None


async def test_a_creation_gets_its_new_id_and_a_record_ref_names_any_record(app, make_user):
    owner = await make_user(role=UserRole.OWNER)
    async with sessionmaker_for(app)() as session, write_transaction(session):
        product = Product(slug="new-one", name="New one", price_minor=500)
        session.add(product)  # not flushed: record_change asks the database for its id
        await record_change(session, owner, "product.create", product, None, {"name": "New one"})
        await record_change(
            session,
            None,
            "settings.update",
            RecordRef("settings", "shop"),
            {"tin": ""},
            {"tin": "X"},
        )
    created, settings_entry = await entries(app)
    assert (created.record_type, created.record_id) == ("product", str(product.id))
    assert (created.before, created.after) == (None, {"name": "New one"})
    assert (settings_entry.actor_id, settings_entry.record_type, settings_entry.record_id) == (
        None,
        "settings",
        "shop",
    )


async def test_changing_records_what_the_block_changed(app, make_user, add_product):
    owner = await make_user(role=UserRole.OWNER)
    product = await add_product(price_minor=10_000)
    async with sessionmaker_for(app)() as session, audited_write(session):
        row = await session.get(Product, product.id)
        async with changing(session, owner, "product.update", row, ("name", "price_minor")):
            row.price_minor = 9_000
    [entry] = await entries(app)
    assert (entry.before, entry.after) == ({"price_minor": 10_000}, {"price_minor": 9_000})
    assert await price_of(app, product.id) == 9_000


async def test_audited_write_rolls_back_a_change_without_an_audit_row(app, add_product):
    product = await add_product(price_minor=10_000)
    async with sessionmaker_for(app)() as session:
        with pytest.raises(UnauditedChange):
            async with audited_write(session):
                await session.execute(
                    update(Product).where(Product.id == product.id).values(price_minor=1)
                )
        # The session is usable after the refusal: the request can still render its page.
        assert await session.scalar(select(func.count()).select_from(Product)) == 1
    assert await price_of(app, product.id) == 10_000
    assert await entries(app) == []


async def test_audited_write_lets_reads_and_no_op_updates_through(app, add_product):
    product = await add_product(price_minor=10_000)
    async with sessionmaker_for(app)() as session, audited_write(session):
        assert await session.get(Product, product.id) is not None
        # An update that matched no row changed nothing, so it needs no audit row.
        await session.execute(update(Product).where(Product.id == -1).values(price_minor=1))
    assert await entries(app) == []


async def test_the_audit_row_goes_with_its_change_when_the_write_fails(app, make_user, add_product):
    owner = await make_user(role=UserRole.OWNER)
    product = await add_product(price_minor=10_000)
    async with sessionmaker_for(app)() as session:
        with pytest.raises(RuntimeError, match="later step"):
            async with audited_write(session):
                row = await session.get(Product, product.id)
                async with changing(session, owner, "product.update", row, PRODUCT_FIELDS):
                    row.price_minor = 1
                raise RuntimeError("a later step of the same change failed")
    assert await price_of(app, product.id) == 10_000
    assert await entries(app) == []


async def test_select_audit_rows_filters_by_actor_and_record_and_pages_by_id(app, make_user):
    owner = await make_user(role=UserRole.OWNER, email="owner@shop.test")
    staff = await make_user(role=UserRole.STAFF, email="staff@shop.test")
    former = await make_user(email="former@shop.test")
    async with sessionmaker_for(app)() as session, write_transaction(session):
        for number in range(1, 6):
            actor = owner if number % 2 else staff
            await record_change(
                session,
                actor,
                "product.update",
                RecordRef("product", number % 3),
                {"n": 0},
                {"n": number},
            )
        await record_change(session, former, "x", RecordRef("product", 9), {"n": 0}, {"n": 1})
    async with sessionmaker_for(app)() as session:
        every = await select_audit_rows(session)
        assert [row.entry.after for row in every] == [{"n": n} for n in (1, 5, 4, 3, 2, 1)]
        assert every[1].actor_email == "owner@shop.test"
        by_staff = await select_audit_rows(session, actor_id=staff.id)
        assert [row.entry.after["n"] for row in by_staff] == [4, 2]
        one_record = await select_audit_rows(session, record_type="product", record_id="1")
        assert [row.entry.after["n"] for row in one_record] == [4, 1]
        first_page = await select_audit_rows(session, limit=2)
        second_page = await select_audit_rows(session, before_id=first_page[-1].entry.id, limit=2)
        assert [row.entry.after["n"] for row in second_page] == [4, 3]
        actors = await select_audit_actors(session)
    # Staff, owners and anyone who has acted; never a customer who has not.
    assert [email for _, email in actors] == [
        "former@shop.test",
        "owner@shop.test",
        "staff@shop.test",
    ]
