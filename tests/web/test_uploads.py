"""/uploads/<name>: a stored photo with a year of caching, 304 when the browser has it, and 404
for any name that is not a stored photo's, however it tries to reach outside the folder."""

from io import BytesIO
from pathlib import Path

import pytest
from PIL import Image
from quart import Quart

from storefront.lib.images import ProcessedImage
from storefront.services.uploads import store_photo
from storefront.web.uploads import upload_folder, upload_url

IMMUTABLE = "public, max-age=31536000, immutable"


async def stored_photo(app: Quart) -> ProcessedImage:
    buffer = BytesIO()
    Image.new("RGB", (900, 600), "crimson").save(buffer, "JPEG")
    return await store_photo(upload_folder(app), buffer.getvalue(), max_bytes=1024 * 1024)


async def test_the_folder_is_upload_folder_made_absolute(app: Quart, tmp_path: Path) -> None:
    assert upload_folder(app) == tmp_path / "uploads"
    assert upload_folder(app).is_absolute()


async def test_a_stored_photo_is_served_as_webp_for_a_year(app: Quart, client) -> None:
    photo = await stored_photo(app)
    async with app.test_request_context("/"):
        url = upload_url(photo.page.name)
    assert url == f"/uploads/{photo.page.name}"

    response = await client.get(url)

    assert response.status_code == 200
    assert await response.get_data() == photo.page.body
    assert response.headers["Content-Type"] == "image/webp"
    assert response.headers["Cache-Control"] == IMMUTABLE
    assert response.headers["Content-Length"] == str(len(photo.page.body))
    assert response.headers["ETag"] == f'"{photo.page.name.removesuffix(".webp")}"'
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "Set-Cookie" not in response.headers


async def test_a_browser_that_has_it_gets_304(app: Quart, client) -> None:
    photo = await stored_photo(app)
    etag = f'"{photo.card.name.removesuffix(".webp")}"'

    response = await client.get(f"/uploads/{photo.card.name}", headers={"If-None-Match": etag})

    assert response.status_code == 304
    assert await response.get_data() == b""
    assert response.headers["Cache-Control"] == IMMUTABLE


async def test_head_answers_with_the_headers(app: Quart, client) -> None:
    photo = await stored_photo(app)

    response = await client.head(f"/uploads/{photo.card.name}")

    assert response.status_code == 200
    assert response.headers["Content-Length"] == str(len(photo.card.body))
    assert response.headers["Cache-Control"] == IMMUTABLE


async def test_an_unknown_photo_is_404(app: Quart, client) -> None:
    await stored_photo(app)

    response = await client.get(f"/uploads/{'0' * 64}.webp")

    assert response.status_code == 404
    assert "immutable" not in response.headers.get("Cache-Control", "")


async def test_before_any_upload_the_folder_need_not_exist(app: Quart, client) -> None:
    assert not upload_folder(app).exists()

    response = await client.get(f"/uploads/{'a' * 64}.webp")

    assert response.status_code == 404


@pytest.mark.parametrize(
    "path",
    [
        "/uploads/../storefront.db",
        "/uploads/..%2Fstorefront.db",
        "/uploads/%2e%2e%2fstorefront.db",
        "/uploads/%2E%2E/storefront.db",
        "/uploads/..%5Cstorefront.db",
        "/uploads/%2Fetc%2Fpasswd",
        "/uploads/secret.txt",
        "/uploads/.upload-leftover.tmp",
        "/uploads/",
        "/uploads/..",
    ],
)
async def test_nothing_outside_the_stored_photos_is_served(app: Quart, client, path: str) -> None:
    await stored_photo(app)
    folder = upload_folder(app)
    # Files that exist, inside the folder and beside it (the test's SQLite database).
    (folder / "secret.txt").write_text("not for anyone")
    (folder / ".upload-leftover.tmp").write_bytes(b"half a photo")
    assert (folder.parent / "storefront.db").exists()

    response = await client.get(path)

    assert response.status_code == 404
    body = await response.get_data()
    assert b"not for anyone" not in body
    assert b"half a photo" not in body
    assert b"SQLite format" not in body
