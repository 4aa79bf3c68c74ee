"""A product's photos in the back office: add (up to six), move up or down, delete. Each change
is one write with its audit row and a catalog version bump; files are shared by content hash,
so a file goes only when no record names it any more (services/uploads.py)."""

from enum import StrEnum
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from storefront.lib.images import ProcessedImage
from storefront.models import Product, ProductImage, User
from storefront.services.audit import record_change, snapshot
from storefront.services.catalog import bump_catalog_version
from storefront.services.product_admin import UnknownProduct
from storefront.services.uploads import keep_photo_files, lock_photo_names, photo_names

MAX_PHOTOS_PER_PRODUCT = 6
PHOTO_AUDIT_FIELDS = ("product_id", "position", "card_filename", "page_filename")


class PhotoDirection(StrEnum):
    UP = "up"
    DOWN = "down"


class PhotoRefused(ValueError):
    """The photo change was not made; the message says why."""


class UnknownPhoto(LookupError):
    pass


def too_many_photos() -> PhotoRefused:
    return PhotoRefused(
        f"A product has at most {MAX_PHOTOS_PER_PRODUCT} photos: delete one to add another."
    )


async def select_photos(session: AsyncSession, product_id: int) -> list[ProductImage]:
    """The product's photos in the order the shop shows them."""
    return list(
        await session.scalars(
            select(ProductImage)
            .where(ProductImage.product_id == product_id)
            .order_by(ProductImage.position, ProductImage.id)
        )
    )


async def count_photos(session: AsyncSession, product_id: int) -> int:
    return (
        await session.scalar(select(func.count()).where(ProductImage.product_id == product_id)) or 0
    )


async def _lock_product(session: AsyncSession, product_id: int) -> Product:
    """The product row, locked (PostgreSQL) so that its photo changes take turns."""
    product = await session.scalar(
        select(Product).where(Product.id == product_id).with_for_update()
    )
    if product is None:
        raise UnknownProduct(f"There is no product #{product_id}.")
    return product


async def _locked_photos(session: AsyncSession, product_id: int) -> list[ProductImage]:
    return list(
        await session.scalars(
            select(ProductImage)
            .where(ProductImage.product_id == product_id)
            .order_by(ProductImage.position, ProductImage.id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    )


async def add_photo(
    session: AsyncSession, actor: User, product_id: int, folder: Path, photo: ProcessedImage
) -> ProductImage:
    """Add a stored photo (services/uploads store_photo) after the product's others, with its
    audit row; PhotoRefused past MAX_PHOTOS_PER_PRODUCT, UnknownProduct."""
    product = await _lock_product(session, product_id)
    photos = await _locked_photos(session, product.id)
    if len(photos) >= MAX_PHOTOS_PER_PRODUCT:
        raise too_many_photos()
    if any(existing.page_filename == photo.page.name for existing in photos):
        raise PhotoRefused("That photo is one of this product's already.")
    await lock_photo_names(session, photo_names(photo))
    await keep_photo_files(folder, photo)
    image = ProductImage(
        product_id=product.id,
        position=photos[-1].position + 1 if photos else 0,
        card_filename=photo.card.name,
        page_filename=photo.page.name,
        width=photo.page.width,
        height=photo.page.height,
    )
    session.add(image)
    await session.flush()
    await record_change(
        session, actor, "product_image.create", image, None, snapshot(image, PHOTO_AUDIT_FIELDS)
    )
    await bump_catalog_version(session)
    return image


def _photo_in(photos: list[ProductImage], image_id: int, product_id: int) -> ProductImage:
    for photo in photos:
        if photo.id == image_id:
            return photo
    raise UnknownPhoto(f"Product #{product_id} has no photo #{image_id}.")


async def _renumber(session: AsyncSession, photos: list[ProductImage]) -> None:
    """Positions 0, 1, 2... in this order, writing only the rows whose position changes."""
    for position, photo in enumerate(photos):
        if photo.position != position:
            photo.position = position
    await session.flush()


async def move_photo(
    session: AsyncSession,
    actor: User,
    product_id: int,
    image_id: int,
    direction: PhotoDirection,
) -> bool:
    """Swap the photo with its neighbour; False (nothing written) when it is first and moves
    up, or last and moves down. UnknownProduct, UnknownPhoto."""
    await _lock_product(session, product_id)
    photos = await _locked_photos(session, product_id)
    photo = _photo_in(photos, image_id, product_id)
    index = photos.index(photo)
    neighbour = index - 1 if direction == PhotoDirection.UP else index + 1
    if not 0 <= neighbour < len(photos):
        return False
    before = [each.id for each in photos]
    photos[index], photos[neighbour] = photos[neighbour], photos[index]
    await _renumber(session, photos)
    after = [each.id for each in photos]
    await record_change(
        session,
        actor,
        "product.photos.move",
        photo,
        {"photo_order": before},
        {"photo_order": after},
    )
    await bump_catalog_version(session)
    return True


async def delete_photo(
    session: AsyncSession, actor: User, product_id: int, image_id: int
) -> list[str]:
    """Delete the photo's record (the others close up) with its audit row; the file names it
    held, for delete_unused_photo_files once this write is committed. UnknownProduct,
    UnknownPhoto."""
    await _lock_product(session, product_id)
    photos = await _locked_photos(session, product_id)
    photo = _photo_in(photos, image_id, product_id)
    await record_change(
        session, actor, "product_image.delete", photo, snapshot(photo, PHOTO_AUDIT_FIELDS), None
    )
    names = sorted({photo.card_filename, photo.page_filename})
    await session.delete(photo)
    await session.flush()
    photos.remove(photo)
    await _renumber(session, photos)
    await bump_catalog_version(session)
    return names
