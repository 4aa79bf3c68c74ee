"""Creating and editing products as the back office does, raced: creates of one name at once
each get a free slug (on PostgreSQL the loser's insert meets the unique slug and takes the next
one), a typed slug is given to one product only, and every create leaves its audit row."""

import asyncio

import pytest
from sqlalchemy import func, select

from storefront.db.engine import sessionmaker_for
from storefront.models import AuditEntry, Product, UserRole
from storefront.services.audit import audited_write
from storefront.services.product_admin import (
    ProductRefused,
    create_product,
    update_product_details,
)
from storefront.services.product_form import NEW_PRODUCT, ProductDetails

pytestmark = pytest.mark.both_databases

RACERS = 6


def details(name: str, slug: str = "") -> ProductDetails:
    return ProductDetails(
        name=name,
        slug=slug,
        description="",
        price_minor=12_000,
        category_id=None,
        is_active=True,
        low_stock_threshold=NEW_PRODUCT.low_stock_threshold,
    )


async def create_in_own_session(app, actor, wanted: ProductDetails) -> str:
    async with sessionmaker_for(app)() as session:
        async with audited_write(session):
            product = await create_product(session, actor, wanted)
        return product.slug


async def test_creates_of_one_name_at_once_each_get_a_free_slug(app, make_user):
    staff = await make_user(role=UserRole.STAFF)
    slugs = await asyncio.gather(
        *(create_in_own_session(app, staff, details("Kente Stole")) for _ in range(RACERS))
    )
    expected = {"kente-stole"} | {f"kente-stole-{number}" for number in range(2, RACERS + 1)}
    assert set(slugs) == expected
    async with sessionmaker_for(app)() as session:
        stored = set(await session.scalars(select(Product.slug)))
        creates = await session.scalar(
            select(func.count()).where(AuditEntry.action == "product.create")
        )
    assert stored == expected
    assert creates == RACERS


async def test_a_typed_slug_raced_for_goes_to_one_product(app, make_user):
    staff = await make_user(role=UserRole.STAFF)
    results = await asyncio.gather(
        *(
            create_in_own_session(app, staff, details(f"Stole {number}", slug="gold-stole"))
            for number in range(RACERS)
        ),
        return_exceptions=True,
    )
    assert results.count("gold-stole") == 1
    refusals = [result for result in results if isinstance(result, ProductRefused)]
    assert len(refusals) == RACERS - 1
    assert {refusal.field for refusal in refusals} == {"slug"}
    async with sessionmaker_for(app)() as session:
        assert await session.scalar(select(func.count()).select_from(Product)) == 1
        assert await session.scalar(select(func.count()).select_from(AuditEntry)) == 1


async def test_renames_raced_into_one_slug_each_get_a_free_one(app, make_user, add_product):
    staff = await make_user(role=UserRole.STAFF)
    products = [await add_product(f"Item {number}") for number in range(RACERS)]

    async def rename(product_id: int) -> str:
        async with sessionmaker_for(app)() as session:
            async with audited_write(session):
                product, changed = await update_product_details(
                    session, staff, product_id, details("Kente Stole")
                )
            assert changed
            return product.slug

    slugs = await asyncio.gather(*(rename(product.id) for product in products))
    assert len(set(slugs)) == RACERS
    assert set(slugs) == {"kente-stole"} | {f"kente-stole-{n}" for n in range(2, RACERS + 1)}
