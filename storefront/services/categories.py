"""Categories in the back office: create (slug derived from the name, unique), rename,
(de)activate, move up or down, delete an empty one. Each change records its audit row and
bumps the catalog version, so every worker's shop pages follow at once."""

import re
import unicodedata
from dataclasses import dataclass

from sqlalchemy import delete, exists, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from storefront.models import Category, Product, User
from storefront.services.audit import changing, record_change, snapshot
from storefront.services.catalog import bump_catalog_version

MAX_NAME_LENGTH = 120
MAX_SLUG_LENGTH = 80
CATEGORY_FIELDS = ("name", "slug", "position", "is_active")


class CategoryRefused(Exception):
    """A category change was refused; the message is fit for the person who asked."""


class UnknownCategory(CategoryRefused):
    def __init__(self) -> None:
        super().__init__("There is no such category.")


@dataclass(frozen=True)
class CategoryRow:
    """A category as the back office lists it, with how many products it holds."""

    category: Category
    product_count: int


def slug_for(name: str) -> str:
    """ "Phones & Tablets" → "phones-tablets"; accents dropped; "category" when nothing is left."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")
    return slug[:MAX_SLUG_LENGTH].rstrip("-") or "category"


def clean_name(raw: str | None) -> str:
    """The name with its spaces tidied; CategoryRefused when empty or too long."""
    name = " ".join((raw or "").split())
    if not name:
        raise CategoryRefused("Give the category a name.")
    if len(name) > MAX_NAME_LENGTH:
        raise CategoryRefused(f"Keep the name under {MAX_NAME_LENGTH} characters.")
    return name


async def name_taken(session: AsyncSession, name: str, except_id: int | None = None) -> bool:
    """Whether another category already has this name, in any case."""
    query = select(Category.id).where(func.lower(Category.name) == name.lower())
    if except_id is not None:
        query = query.where(Category.id != except_id)
    return await session.scalar(query.limit(1)) is not None


async def _unique_slug(session: AsyncSession, name: str) -> str:
    base = slug_for(name)
    taken = set(
        await session.scalars(
            select(Category.slug).where(
                (Category.slug == base) | Category.slug.like(base[: MAX_SLUG_LENGTH - 4] + "-%")
            )
        )
    )
    slug, number = base, 1
    while slug in taken:
        number += 1
        suffix = f"-{number}"
        slug = base[: MAX_SLUG_LENGTH - len(suffix)] + suffix
    return slug


async def select_category_rows(session: AsyncSession) -> list[CategoryRow]:
    """Every category in the shop's order (position, name, id), with its product count."""
    counts = (
        select(Product.category_id, func.count().label("product_count"))
        .where(Product.category_id.is_not(None))
        .group_by(Product.category_id)
        .subquery()
    )
    rows = await session.execute(
        select(Category, func.coalesce(counts.c.product_count, 0))
        .outerjoin(counts, counts.c.category_id == Category.id)
        .order_by(Category.position, Category.name, Category.id)
    )
    return [CategoryRow(category, int(count)) for category, count in rows.all()]


async def create_category(session: AsyncSession, actor: User, raw_name: str | None) -> Category:
    """A new active category at the end of the list."""
    name = clean_name(raw_name)
    if await name_taken(session, name):
        raise CategoryRefused(f"There is already a category called {name}.")
    last = await session.scalar(select(func.max(Category.position)))
    category = Category(
        name=name,
        slug=await _unique_slug(session, name),
        position=(last + 1) if last is not None else 0,
        is_active=True,
    )
    try:
        async with session.begin_nested():
            session.add(category)
            await session.flush()
    except IntegrityError as error:  # PostgreSQL: another create took the same slug meanwhile
        raise CategoryRefused(f"A category like {name} was added meanwhile: try again.") from error
    await record_change(
        session, actor, "category.create", category, None, snapshot(category, CATEGORY_FIELDS)
    )
    await bump_catalog_version(session)
    return category


async def _locked_category(session: AsyncSession, category_id: int) -> Category:
    # FOR NO KEY UPDATE: products that point at the category (their foreign key's KEY SHARE
    # lock) are not held up by a rename.
    category = await session.scalar(
        select(Category)
        .where(Category.id == category_id)
        .with_for_update(key_share=True)
        .execution_options(populate_existing=True)
    )
    if category is None:
        raise UnknownCategory()
    return category


async def update_category(
    session: AsyncSession, actor: User, category_id: int, raw_name: str | None, is_active: bool
) -> Category:
    """Rename and (de)activate. The slug stays, so links to the category keep working."""
    name = clean_name(raw_name)
    category = await _locked_category(session, category_id)
    if await name_taken(session, name, except_id=category_id):
        raise CategoryRefused(f"There is already a category called {name}.")
    before = (category.name, category.is_active)
    async with changing(session, actor, "category.update", category, CATEGORY_FIELDS):
        category.name = name
        category.is_active = is_active
    if (category.name, category.is_active) != before:
        await bump_catalog_version(session)
    return category


async def move_category(
    session: AsyncSession, actor: User, category_id: int, direction: str
) -> tuple[Category, bool]:
    """Swap the category with its neighbour above ("up") or below ("down"); positions are
    renumbered 0, 1, 2… in the shop's order first, so ties in old data move predictably.
    The category, and whether it moved (not when it is already first or last)."""
    if direction not in ("up", "down"):
        raise CategoryRefused('Move a category "up" or "down".')
    # Every category locked in id order: two moves at once take turns instead of interleaving.
    ordered = list(
        await session.scalars(
            select(Category)
            .order_by(Category.id)
            .with_for_update(key_share=True)
            .execution_options(populate_existing=True)
        )
    )
    ordered.sort(key=lambda category: (category.position, category.name, category.id))
    index = next((i for i, row in enumerate(ordered) if row.id == category_id), None)
    if index is None:
        raise UnknownCategory()
    moving = ordered[index]
    other = index - 1 if direction == "up" else index + 1
    moved = 0 <= other < len(ordered)
    if moved:
        ordered[index], ordered[other] = ordered[other], ordered[index]
    renumbered = False
    for position, category in enumerate(ordered):
        if category.position != position:
            async with changing(session, actor, "category.move", category, ("position",)):
                category.position = position
            renumbered = True
    if renumbered:
        await bump_catalog_version(session)
    return moving, moved


async def delete_category(session: AsyncSession, actor: User, category_id: int) -> Category:
    """Delete a category that holds no product (active or not); refused otherwise."""
    category = await session.scalar(
        select(Category)
        .where(Category.id == category_id)
        .with_for_update()  # waits for a product being put in it, which then fails its check
        .execution_options(populate_existing=True)
    )
    if category is None:
        raise UnknownCategory()
    holds_products = await session.scalar(
        select(exists().where(Product.category_id == category_id))
    )
    if holds_products:
        raise CategoryRefused(
            f"{category.name} still holds products: move them to another category first, or "
            "deactivate it to hide it from the shop."
        )
    await record_change(
        session, actor, "category.delete", category, snapshot(category, CATEGORY_FIELDS), None
    )
    await session.execute(delete(Category).where(Category.id == category_id))
    await bump_catalog_version(session)
    return category
