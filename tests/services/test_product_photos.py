"""A photo file shared by records goes with the last one: a delete that finds the file unused
removes it, and an add that names it (its files stored before that delete) writes it again, in
whatever order the two meet, on SQLite and PostgreSQL."""

import asyncio
from io import BytesIO
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import select

from storefront.db.engine import sessionmaker_for
from storefront.db.transactions import write_transaction
from storefront.lib.images import ProcessedImage
from storefront.models import ProductImage, User, UserRole
from storefront.services.audit import audited_write
from storefront.services.product_photos import add_photo, delete_photo
from storefront.services.uploads import delete_unused_photo_files, photo_names, store_photo
from storefront.web.uploads import upload_folder

pytestmark = pytest.mark.both_databases

ROUNDS = 6


def png(colour: str) -> bytes:
    buffer = BytesIO()
    Image.new("RGB", (900, 600), colour).save(buffer, "PNG")
    return buffer.getvalue()


async def added(app, actor: User, product_id: int, photo: ProcessedImage) -> ProductImage:
    async with sessionmaker_for(app)() as session, audited_write(session):
        return await add_photo(session, actor, product_id, upload_folder(app), photo)


async def deleted(app, actor: User, product_id: int, image_id: int) -> None:
    async with sessionmaker_for(app)() as session:
        async with audited_write(session):
            names = await delete_photo(session, actor, product_id, image_id)
        async with write_transaction(session):
            await delete_unused_photo_files(session, upload_folder(app), names)


async def held_names(app) -> set[str]:
    async with sessionmaker_for(app)() as session:
        rows = await session.execute(select(ProductImage.card_filename, ProductImage.page_filename))
        return {name for row in rows for name in row}


def files_in(folder: Path) -> set[str]:
    return {path.name for path in folder.iterdir()} if folder.exists() else set()


async def test_an_add_after_a_delete_that_took_its_files_writes_them_again(
    app, make_user, add_product
):
    staff = await make_user(role=UserRole.STAFF)
    first, second = await add_product("First"), await add_product("Second")
    folder = upload_folder(app)
    photo = await store_photo(folder, png("teal"), max_bytes=1024 * 1024)
    image = await added(app, staff, first.id, photo)
    # The same picture uploaded for the second product: its files exist, so nothing is written...
    again = await store_photo(folder, png("teal"), max_bytes=1024 * 1024)
    # ...then the first product's photo goes, and with it the files no record names yet.
    await deleted(app, staff, first.id, image.id)
    assert files_in(folder) == set()

    await added(app, staff, second.id, again)

    assert files_in(folder) == set(photo_names(again))
    assert (folder / again.page.name).read_bytes() == again.page.body


async def test_deletes_and_adds_of_one_picture_racing_leave_every_held_file(
    app, make_user, add_product
):
    staff = await make_user(role=UserRole.STAFF)
    folder = upload_folder(app)
    for round_number in range(ROUNDS):
        colour = f"#{round_number * 40:02x}8040"
        owner, other = await add_product(), await add_product()
        image = await added(
            app, staff, owner.id, await store_photo(folder, png(colour), max_bytes=1024 * 1024)
        )

        async def add_to(product_id: int, upload: bytes) -> None:
            photo = await store_photo(folder, upload, max_bytes=1024 * 1024)
            await added(app, staff, product_id, photo)

        await asyncio.gather(deleted(app, staff, owner.id, image.id), add_to(other.id, png(colour)))
        held = await held_names(app)
        assert held <= files_in(folder), round_number
        assert files_in(folder) == held, round_number
