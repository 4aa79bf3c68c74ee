"""A product's photos in the back office: upload (with JavaScript off and with htmx), the
refusals that store nothing, at most six even when two uploads race, reorder, delete (a file
goes only when no record holds it), and the storefront showing them at once."""

import asyncio
import re
from html import unescape
from io import BytesIO
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import select
from werkzeug.datastructures import FileStorage

from storefront.db.engine import sessionmaker_for
from storefront.db.transactions import write_transaction
from storefront.models import AuditEntry, ProductImage, Slider, UserRole
from storefront.services.uploads import store_photo
from storefront.web.uploads import upload_folder
from tests.conftest import CSRF_TOKEN

pytestmark = pytest.mark.both_databases

HTMX = {"HX-Request": "true"}
UPLOAD_MAX_BYTES = 300_000


@pytest.fixture(name="app_overrides")
def _app_overrides():
    return {"RATELIMIT_ENABLED": False, "UPLOAD_MAX_BYTES": UPLOAD_MAX_BYTES}


@pytest.fixture(name="staff")
async def _staff(make_user):
    return await make_user(role=UserRole.STAFF, email="kofi@shop.test")


@pytest.fixture(name="staff_client")
async def _staff_client(client, sign_in, staff):
    sign_in(client, staff)
    return client


def png(colour: str, size: tuple[int, int] = (1600, 1000)) -> bytes:
    buffer = BytesIO()
    Image.new("RGB", size, colour).save(buffer, "PNG")
    return buffer.getvalue()


def truncated_jpeg() -> bytes:
    buffer = BytesIO()
    Image.effect_noise((320, 240), 64).convert("RGB").save(buffer, "JPEG")
    whole = buffer.getvalue()
    return whole[: len(whole) // 2]


def sixty_megapixel_png() -> bytes:
    buffer = BytesIO()
    Image.new("1", (8000, 7500)).save(buffer, "PNG")
    return buffer.getvalue()


def oversize_png() -> bytes:
    buffer = BytesIO()
    Image.merge("RGB", [Image.effect_noise((400, 400), 100)] * 3).save(buffer, "PNG")
    body = buffer.getvalue()
    assert UPLOAD_MAX_BYTES < len(body) < UPLOAD_MAX_BYTES + 1024 * 1024
    return body


async def post_photo(client, product_id: int, body: bytes, name="photo.png", headers=None):
    return await client.post(
        f"/admin/products/{product_id}/images",
        form={"csrf_token": CSRF_TOKEN},
        files={"image": FileStorage(BytesIO(body), filename=name, content_type="image/png")},
        headers=headers or {},
    )


async def photos_of(app, product_id: int) -> list[ProductImage]:
    async with sessionmaker_for(app)() as session:
        return list(
            await session.scalars(
                select(ProductImage)
                .where(ProductImage.product_id == product_id)
                .order_by(ProductImage.position, ProductImage.id)
            )
        )


async def audit_actions(app) -> list[str]:
    async with sessionmaker_for(app)() as session:
        return list(await session.scalars(select(AuditEntry.action).order_by(AuditEntry.id)))


def stored_files(app) -> set[str]:
    folder: Path = upload_folder(app)
    return {path.name for path in folder.iterdir()} if folder.exists() else set()


def names_of(photos: list[ProductImage]) -> set[str]:
    return {name for photo in photos for name in (photo.card_filename, photo.page_filename)}


async def test_an_upload_without_javascript_adds_the_photo_and_the_shop_shows_it(
    app, staff_client, staff, add_product
):
    product = await add_product("Kente Stole", slug="kente-stole")
    shopper = app.test_client()
    assert "/uploads/" not in await (await shopper.get("/")).get_data(as_text=True)

    response = await post_photo(staff_client, product.id, png("gold"), name="stole.jpg")

    assert response.status_code == 303
    assert response.headers["Location"] == f"/admin/products/{product.id}#photos"
    [photo] = await photos_of(app, product.id)
    assert (photo.position, photo.width, photo.height) == (0, 1200, 750)
    assert stored_files(app) == {photo.card_filename, photo.page_filename}
    async with sessionmaker_for(app)() as session:
        [entry] = await session.scalars(select(AuditEntry))
    assert (entry.action, entry.actor_id, entry.record_type) == (
        "product_image.create",
        staff.id,
        "product_image",
    )
    assert entry.after == {
        "product_id": product.id,
        "position": 0,
        "card_filename": photo.card_filename,
        "page_filename": photo.page_filename,
    }
    page = await (await staff_client.get(f"/admin/products/{product.id}")).get_data(as_text=True)
    assert "Photo added to “Kente Stole”." in unescape(page.split('id="admin-status"')[1][:300])
    assert f'src="/uploads/{photo.card_filename}"' in page
    # The shop follows at once: the upload bumped the catalog version.
    home = await (await shopper.get("/")).get_data(as_text=True)
    assert f'src="/uploads/{photo.card_filename}"' in home


async def test_with_htmx_an_upload_answers_the_photos_section(app, staff_client, add_product):
    product = await add_product("Kente Stole")
    response = await post_photo(staff_client, product.id, png("gold"), headers=HTMX)
    html = await response.get_data(as_text=True)
    assert response.status_code == 200
    assert html.lstrip().startswith('<section id="photos"') and "<html" not in html
    assert "(1 of 6)" in html and 'hx-swap-oob="innerHTML"' in html
    assert 'name="image" accept="image/jpeg,image/png,image/webp" required' in html
    assert "autofocus" in html.split('id="photo-image"')[1].split(">")[0]


@pytest.mark.parametrize(
    ("upload", "status", "message"),
    [
        pytest.param(
            lambda: b"Dear shop, a text file named photo.jpg\n",
            422,
            "That file is not a JPEG, PNG or WebP photo",
            id="text-named-jpg",
        ),
        pytest.param(
            sixty_megapixel_png, 422, "That image has more than 40 million pixels", id="60-MP"
        ),
        pytest.param(truncated_jpeg, 422, "That photo is damaged or incomplete", id="truncated"),
        pytest.param(oversize_png, 422, "a photo may be at most 293 KB", id="oversize"),
        pytest.param(lambda: b"", 422, "Choose a photo to upload", id="empty"),
    ],
)
@pytest.mark.parametrize("headers", [None, HTMX], ids=["no-js", "htmx"])
async def test_a_refused_upload_stores_nothing(
    app, staff_client, add_product, upload, status, message, headers
):
    product = await add_product("Kente Stole")
    response = await post_photo(
        staff_client, product.id, upload(), name="photo.jpg", headers=headers
    )
    html = unescape(await response.get_data(as_text=True))
    assert response.status_code == status
    problem = html.split('id="photo-image-message"')[1].split("</p>")[0]
    assert message in problem and "error" in problem
    assert message in html.split('id="admin-status"')[1].split("</div>")[0]
    assert ("<html" in html) is (headers is None)
    assert await photos_of(app, product.id) == []
    assert stored_files(app) == set()
    assert await audit_actions(app) == []


async def test_no_file_and_an_unknown_product_are_refused(app, staff_client, add_product):
    product = await add_product("Kente Stole")
    response = await staff_client.post(
        f"/admin/products/{product.id}/images", form={"csrf_token": CSRF_TOKEN}
    )
    assert response.status_code == 422
    assert "Choose a photo to upload" in await response.get_data(as_text=True)
    missing = await post_photo(staff_client, 424242, png("gold"))
    assert missing.status_code == 404
    assert stored_files(app) == set() and await audit_actions(app) == []


async def test_six_photos_at_most_even_when_two_uploads_race(app, staff_client, add_product):
    product = await add_product("Kente Stole")
    colours = ["red", "orange", "yellow", "green", "blue"]
    for colour in colours:
        assert (await post_photo(staff_client, product.id, png(colour))).status_code == 303
    again = await post_photo(staff_client, product.id, png("red"))
    assert again.status_code == 409
    assert "That photo is one of this product's already." in unescape(
        await again.get_data(as_text=True)
    )

    racing = await asyncio.gather(
        post_photo(staff_client, product.id, png("indigo")),
        post_photo(staff_client, product.id, png("violet")),
    )

    assert sorted(response.status_code for response in racing) == [303, 409]
    photos = await photos_of(app, product.id)
    assert [photo.position for photo in photos] == [0, 1, 2, 3, 4, 5]
    # The loser's files were written before its refusal, then deleted as unused.
    assert stored_files(app) == names_of(photos)
    seventh = await post_photo(staff_client, product.id, png("black"))
    html = unescape(await seventh.get_data(as_text=True))
    assert seventh.status_code == 409
    assert "A product has at most 6 photos: delete one to add another." in html
    page = await (await staff_client.get(f"/admin/products/{product.id}")).get_data(as_text=True)
    assert 'name="image"' not in page and "(6 of 6)" in page
    assert (await audit_actions(app)).count("product_image.create") == 6


async def stored_photos(app, product_id: int, colours: list[str]) -> list[ProductImage]:
    """Rows and files for these photos, written directly (no audit row)."""
    stored = [
        await store_photo(upload_folder(app), png(colour), max_bytes=UPLOAD_MAX_BYTES)
        for colour in colours
    ]
    async with sessionmaker_for(app)() as session, write_transaction(session):
        session.add_all(
            ProductImage(
                product_id=product_id,
                position=position,
                card_filename=photo.card.name,
                page_filename=photo.page.name,
                width=photo.page.width,
                height=photo.page.height,
            )
            for position, photo in enumerate(stored)
        )
    return await photos_of(app, product_id)


@pytest.mark.parametrize("headers", [None, HTMX], ids=["no-js", "htmx"])
async def test_photos_move_earlier_and_later(app, staff_client, add_product, headers):
    product = await add_product("Kente Stole")
    first, second, third = await stored_photos(app, product.id, ["red", "green", "blue"])

    async def move(image_id: int, direction: str, product_id: int = product.id):
        return await staff_client.post(
            f"/admin/products/{product_id}/images/{image_id}/move",
            form={"csrf_token": CSRF_TOKEN, "direction": direction},
            headers=headers or {},
        )

    response = await move(third.id, "up")
    assert response.status_code == (200 if headers else 303)
    assert [p.id for p in await photos_of(app, product.id)] == [first.id, third.id, second.id]
    if headers:
        html = await response.get_data(as_text=True)
        assert html.lstrip().startswith('<section id="photos"')
        assert "Photo moved earlier." in html
        focused = re.search(r"<button[^>]*autofocus[^>]*>", html)
        assert focused and "Move photo 2 earlier" in focused.group(0)
    response = await move(first.id, "down")
    assert [p.id for p in await photos_of(app, product.id)] == [third.id, first.id, second.id]
    assert [p.position for p in await photos_of(app, product.id)] == [0, 1, 2]

    edge = await move(third.id, "up")
    assert edge.status_code == (200 if headers else 303)
    for status, response, message in [
        (422, await move(first.id, "sideways"), "Move a photo up or down."),
        (404, await move(424242, "up"), f"Product #{product.id} has no photo #424242."),
        (404, await move(first.id, "up", product_id=424242), "There is no product #424242."),
    ]:
        assert response.status_code == status
        assert message in await response.get_data(as_text=True)
    other = await add_product("Other")
    assert (await move(first.id, "up", product_id=other.id)).status_code == 404
    assert [p.id for p in await photos_of(app, product.id)] == [third.id, first.id, second.id]
    async with sessionmaker_for(app)() as session:
        entries = list(await session.scalars(select(AuditEntry).order_by(AuditEntry.id)))
    assert [entry.action for entry in entries] == ["product.photos.move"] * 2
    assert entries[0].before == {"photo_order": [first.id, second.id, third.id]}
    assert entries[0].after == {"photo_order": [first.id, third.id, second.id]}


async def test_a_deleted_photo_takes_its_files_only_when_nothing_else_holds_them(
    app, staff_client, add_product, add_slider
):
    product = await add_product("Kente Stole", slug="kente-stole")
    twin = await add_product("Kente Stole Twin")
    red, green, blue = await stored_photos(app, product.id, ["red", "green", "blue"])
    [twin_red] = await stored_photos(app, twin.id, ["red"])  # the same picture: the same files
    slider = await add_slider("Sale")
    async with sessionmaker_for(app)() as session, write_transaction(session):
        stored = await session.get(Slider, slider.id)
        stored.image, stored.image_small = blue.page_filename, blue.card_filename

    async def delete(image_id: int, headers=None):
        return await staff_client.post(
            f"/admin/products/{product.id}/images/{image_id}/delete",
            form={"csrf_token": CSRF_TOKEN},
            headers=headers or {},
        )

    response = await delete(green.id, HTMX)
    html = await response.get_data(as_text=True)
    assert response.status_code == 200 and "Photo deleted from “Kente Stole”." in html
    assert "(2 of 6)" in html and f'id="photo-{green.id}"' not in html
    assert 'hx-confirm="Delete photo 1 of Kente Stole?"' in html
    assert not names_of([green]) & stored_files(app)

    assert (await delete(red.id)).status_code == 303
    assert names_of([red]) <= stored_files(app)  # the twin product shows it too
    assert (await delete(blue.id)).status_code == 303
    assert names_of([blue]) <= stored_files(app)  # the slider shows it
    assert await photos_of(app, product.id) == []
    assert [photo.id for photo in await photos_of(app, twin.id)] == [twin_red.id]
    assert (await delete(blue.id)).status_code == 404
    assert await audit_actions(app) == ["product_image.delete"] * 3
    page = await (await app.test_client().get("/products/kente-stole")).get_data(as_text=True)
    assert "/uploads/" not in page and "placeholder.svg" in page


async def test_positions_close_up_after_a_delete(app, staff_client, add_product):
    product = await add_product("Kente Stole")
    first, second, third = await stored_photos(app, product.id, ["red", "green", "blue"])
    await staff_client.post(
        f"/admin/products/{product.id}/images/{first.id}/delete", form={"csrf_token": CSRF_TOKEN}
    )
    photos = await photos_of(app, product.id)
    assert [(photo.id, photo.position) for photo in photos] == [(second.id, 0), (third.id, 1)]
    added = await post_photo(staff_client, product.id, png("white"))
    assert added.status_code == 303
    assert [photo.position for photo in await photos_of(app, product.id)] == [0, 1, 2]
