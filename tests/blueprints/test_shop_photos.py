"""Uploaded photos in the storefront: the first on a product's card, all of them on its page
(srcset of the card and page files, width and height, lazy loading, alt text from the name),
today's picture for a product without photos, the JSON API's image, and the shared pages
following a photo change at once."""

import re
from io import BytesIO

import pytest
from PIL import Image

from storefront.db.engine import sessionmaker_for
from storefront.db.transactions import write_transaction
from storefront.models import ProductImage, UserRole
from storefront.services.uploads import store_photo
from storefront.web.uploads import upload_folder
from tests.conftest import CSRF_TOKEN, sign_in

pytestmark = pytest.mark.both_databases


def png(colour: str, size: tuple[int, int]) -> bytes:
    buffer = BytesIO()
    Image.new("RGB", size, colour).save(buffer, "PNG")
    return buffer.getvalue()


async def add_photos(app, product_id: int, pictures: list[tuple[str, tuple[int, int]]]):
    photos = [
        await store_photo(upload_folder(app), png(colour, size), max_bytes=8 * 1024 * 1024)
        for colour, size in pictures
    ]
    async with sessionmaker_for(app)() as session, write_transaction(session):
        images = [
            ProductImage(
                product_id=product_id,
                position=position,
                card_filename=photo.card.name,
                page_filename=photo.page.name,
                width=photo.page.width,
                height=photo.page.height,
            )
            for position, photo in enumerate(photos)
        ]
        session.add_all(images)
    return images


def images_in(html: str, within: str) -> list[str]:
    part = html.split(within, 1)[1]
    return re.findall(r"<img [^>]*>", part)


async def page_text(client, url: str) -> str:
    response = await client.get(url)
    assert response.status_code == 200
    return await response.get_data(as_text=True)


async def test_a_card_shows_the_first_photo_and_the_page_all_of_them(app, client, add_product):
    product = await add_product("Kente Stole", slug="kente-stole")
    wide, tall, small = await add_photos(
        app, product.id, [("gold", (1600, 1000)), ("green", (900, 1800)), ("red", (300, 200))]
    )

    [card_image] = images_in(await page_text(client, "/"), '<li class="card">')[:1]
    assert card_image == (
        f'<img src="/uploads/{wide.card_filename}" srcset="/uploads/{wide.card_filename} 400w, '
        f'/uploads/{wide.page_filename} 1200w" sizes="(max-width: 40rem) 50vw, 14rem" '
        'alt="Kente Stole" width="400" height="250" loading="lazy">'
    )

    page = await page_text(client, "/products/kente-stole")
    shown = images_in(page, '<div class="product-photos">')[:3]
    assert shown[0] == (
        f'<img src="/uploads/{wide.page_filename}" srcset="/uploads/{wide.card_filename} 400w, '
        f'/uploads/{wide.page_filename} 1200w" sizes="(max-width: 40rem) 100vw, 50vw" '
        'alt="Kente Stole, photo 1 of 3" width="1200" height="750">'
    )
    assert (tall.width, tall.height) == (900, 1800)
    assert shown[1] == (
        f'<img src="/uploads/{tall.page_filename}" srcset="/uploads/{tall.card_filename} 400w, '
        f'/uploads/{tall.page_filename} 900w" sizes="(max-width: 40rem) 50vw, 25vw" '
        'alt="Kente Stole, photo 2 of 3" width="900" height="1800" loading="lazy">'
    )
    # Small enough for both sizes: one file, no srcset.
    assert small.card_filename == small.page_filename
    assert shown[2] == (
        f'<img src="/uploads/{small.page_filename}" alt="Kente Stole, photo 3 of 3" '
        'width="300" height="200" loading="lazy">'
    )
    assert "placeholder.svg" not in page.split("<main")[1]


async def test_a_product_without_photos_keeps_todays_picture(app, client, add_product):
    await add_product("Gari", slug="gari", image="img/products/gari-2kg.webp")
    card = images_in(await page_text(client, "/"), '<li class="card">')[0]
    assert re.fullmatch(
        r'<img src="/static/img/products/gari-2kg\.webp\?v=\w+" alt="" width="320" '
        r'height="320" loading="lazy">',
        card,
    )
    page = await page_text(client, "/products/gari")
    assert '<div class="product-photos">' not in page
    assert re.search(
        r'<img src="/static/img/products/gari-2kg\.webp\?v=\w+" alt="Gari" width="640" '
        r'height="640">',
        page,
    )


async def test_the_api_gives_the_first_photo(app, client, add_product):
    product = await add_product("Kente Stole")
    await add_product("Gari")
    [photo] = await add_photos(app, product.id, [("gold", (1600, 1000))])
    listing = await (await client.get("/api/products")).get_json()
    images = {item["name"]: item["image_url"] for item in listing["items"]}
    # Relative to PUBLIC_BASE_URL, which the tests leave empty.
    assert images["Kente Stole"] == f"/uploads/{photo.page_filename}"
    assert images["Gari"].startswith("/static/img/placeholder.svg")


async def test_the_shared_pages_follow_a_photo_change_at_once(app, client, add_product, make_user):
    product = await add_product("Kente Stole", slug="kente-stole")
    first, second = await add_photos(app, product.id, [("gold", (800, 800)), ("blue", (800, 800))])
    assert f"/uploads/{first.card_filename}" in await page_text(client, "/")
    assert f"/uploads/{first.page_filename}" in await page_text(client, "/products/kente-stole")

    staff = await make_user(role=UserRole.STAFF)
    back_office = app.test_client()
    async with back_office.session_transaction() as session:
        session["csrf_token"] = CSRF_TOKEN
    sign_in(back_office, staff)
    response = await back_office.post(
        f"/admin/products/{product.id}/images/{second.id}/move",
        form={"csrf_token": CSRF_TOKEN, "direction": "up"},
    )
    assert response.status_code == 303

    card = images_in(await page_text(client, "/"), '<li class="card">')[0]
    assert f"/uploads/{second.card_filename}" in card
    page = await page_text(client, "/products/kente-stole")
    assert page.index(second.page_filename) < page.index(first.page_filename)
