"""A product's photos in the back office: upload (checked by content, up to six), move earlier or
later, delete. htmx answers replace the photos section of the edit page; without JavaScript
each form posts, then the edit page again with a flash."""

import logging

from quart import Blueprint, Response, abort, current_app, request

from storefront.blueprints.admin_products import edit_url, render_product_page
from storefront.db.engine import get_session
from storefront.db.errors import is_database_busy
from storefront.db.transactions import end_read, write_transaction
from storefront.lib.images import ImageRefused
from storefront.models import Product, User
from storefront.services import product_photos
from storefront.services.audit import audited_write
from storefront.services.product_admin import UnknownProduct, select_product
from storefront.services.product_photos import (
    MAX_PHOTOS_PER_PRODUCT,
    PhotoDirection,
    PhotoRefused,
    UnknownPhoto,
    count_photos,
    too_many_photos,
)
from storefront.services.uploads import delete_unused_photo_files, photo_names, store_photo
from storefront.web.auth import current_customer, staff_required
from storefront.web.back_office import answer_change
from storefront.web.settings import settings
from storefront.web.uploads import upload_folder

log = logging.getLogger(__name__)

blueprint = Blueprint("admin_product_photos", __name__)

CHOOSE_A_PHOTO = "Choose a photo to upload: a JPEG, PNG or WebP file."


async def _product(product_id: int) -> Product:
    product = await select_product(get_session(), product_id)
    if product is None:
        abort(404, f"There is no product #{product_id}.")
    return product


async def _actor() -> User:
    actor = await current_customer()
    assert actor is not None  # staff_required
    return actor


async def _refuse(product: Product, status: int, message: str, upload: bool = False) -> Response:
    """The photos section (or without JS the edit page) with the refusal; nothing changed."""
    return await render_product_page(
        product,
        "photos",
        status,
        error=message,
        photo_problem=message if upload else "",
        focus="upload" if upload else "photos",
    )


async def _answer(product: Product, notice: str, focus: str) -> Response:
    return await answer_change(
        notice,
        edit_url(product.id) + "#photos",
        lambda: render_product_page(product, "photos", notice=notice, focus=focus),
    )


async def _forget_files(names: list[str]) -> None:
    """Delete the files no record holds any more. A failure leaves unused files behind, which
    costs disk space only: the change it follows is committed, so it is not refused."""
    session = get_session()
    try:
        async with write_transaction(session):
            await delete_unused_photo_files(session, upload_folder(current_app), names)  # type: ignore[arg-type]
    except Exception as error:
        if not is_database_busy(error) and not isinstance(error, OSError):
            raise
        log.warning("photo files %s kept after a failure: %s", names, error)


@blueprint.post("/admin/products/<int:product_id>/images")
@staff_required
async def upload_photo(product_id: int) -> Response:
    """Add a photo (file field `image`): checked by its content, re-encoded, at most six."""
    product = await _product(product_id)
    session = get_session()
    upload = (await request.files).get("image")
    body = upload.read() if upload is not None else b""
    if not body:
        return await _refuse(product, 422, CHOOSE_A_PHOTO, upload=True)
    if await count_photos(session, product_id) >= MAX_PHOTOS_PER_PRODUCT:
        return await _refuse(product, 409, str(too_many_photos()), upload=True)
    folder = upload_folder(current_app)  # type: ignore[arg-type]
    await end_read(session)  # decoding takes a while and needs no connection
    try:
        photo = await store_photo(folder, body, max_bytes=settings().upload_max_bytes)
    except ImageRefused as refusal:
        return await _refuse(product, 422, str(refusal), upload=True)
    try:
        async with audited_write(session):
            await product_photos.add_photo(session, await _actor(), product_id, folder, photo)
    except UnknownProduct as gone:
        await _forget_files(photo_names(photo))
        abort(404, str(gone))
    except PhotoRefused as refusal:
        await _forget_files(photo_names(photo))
        return await _refuse(product, 409, str(refusal), upload=True)
    return await _answer(product, f"Photo added to “{product.name}”.", "upload")


@blueprint.post("/admin/products/<int:product_id>/images/<int:image_id>/move")
@staff_required
async def move_photo(product_id: int, image_id: int) -> Response:
    """Move a photo one place earlier or later (`direction` up or down)."""
    product = await _product(product_id)
    try:
        direction = PhotoDirection((await request.form).get("direction", ""))
    except ValueError:
        return await _refuse(product, 422, "Move a photo up or down.")
    session = get_session()
    try:
        async with audited_write(session):
            moved = await product_photos.move_photo(
                session, await _actor(), product_id, image_id, direction
            )
    except (UnknownProduct, UnknownPhoto) as gone:
        return await _refuse(product, 404, str(gone))
    if not moved:
        edge = "first" if direction == PhotoDirection.UP else "last"
        notice = f"That photo is {edge} already: nothing moved."
    else:
        notice = "Photo moved " + ("earlier." if direction == PhotoDirection.UP else "later.")
    return await _answer(product, notice, f"photo-{image_id}-{direction}")


@blueprint.post("/admin/products/<int:product_id>/images/<int:image_id>/delete")
@staff_required
async def delete_photo(product_id: int, image_id: int) -> Response:
    """Delete a photo; its files go when no other record shows the same picture."""
    product = await _product(product_id)
    session = get_session()
    try:
        async with audited_write(session):
            names = await product_photos.delete_photo(session, await _actor(), product_id, image_id)
    except (UnknownProduct, UnknownPhoto) as gone:
        return await _refuse(product, 404, str(gone))
    await _forget_files(names)
    return await _answer(product, f"Photo deleted from “{product.name}”.", "photos")
