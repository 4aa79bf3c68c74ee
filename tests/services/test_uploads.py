"""Photos on disk: an accepted upload is two files named by their hash, written once however often
it comes; a refused one leaves nothing behind; deleting takes only photo names."""

import asyncio
import hashlib
from io import BytesIO
from pathlib import Path

import pytest
from PIL import Image

from storefront.lib.images import ImageRefused
from storefront.services.uploads import delete_photos, is_photo_name, photo_path, store_photo

MAX_BYTES = 8 * 1024 * 1024


def png(size: tuple[int, int] = (1600, 900), colour: str = "purple") -> bytes:
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


def files_in(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir()) if folder.exists() else []


async def test_an_accepted_photo_is_two_webp_files_named_by_their_hash(tmp_path: Path) -> None:
    folder = tmp_path / "uploads"

    photo = await store_photo(folder, png(), max_bytes=MAX_BYTES)

    assert files_in(folder) == sorted([photo.card.name, photo.page.name])
    for rendition in (photo.card, photo.page):
        stored = (folder / rendition.name).read_bytes()
        assert stored == rendition.body
        assert rendition.name == f"{hashlib.sha256(stored).hexdigest()}.webp"
        assert Image.open(folder / rendition.name).size == (rendition.width, rendition.height)
        assert (folder / rendition.name).stat().st_mode & 0o777 == 0o644
    assert (photo.page.width, photo.card.width) == (1200, 400)


async def test_the_same_photo_again_is_the_same_two_files_written_once(tmp_path: Path) -> None:
    folder = tmp_path / "uploads"
    racing = await asyncio.gather(
        *(store_photo(folder, png(), max_bytes=MAX_BYTES) for _ in range(4))
    )
    first = racing[0]
    assert {(photo.card.name, photo.page.name) for photo in racing} == {
        (first.card.name, first.page.name)
    }
    assert files_in(folder) == sorted([first.card.name, first.page.name])
    assert (folder / first.page.name).read_bytes() == first.page.body
    written = {name: (folder / name).stat().st_mtime_ns for name in files_in(folder)}

    again = await store_photo(folder, png(), max_bytes=MAX_BYTES)

    assert (again.card.name, again.page.name) == (first.card.name, first.page.name)
    assert {name: (folder / name).stat().st_mtime_ns for name in files_in(folder)} == written


@pytest.mark.parametrize(
    ("upload", "reason"),
    [
        pytest.param(b"not a photo at all, just text in photo.jpg", "not a JPEG", id="text-as-jpg"),
        pytest.param(sixty_megapixel_png(), "more than 40 million pixels", id="60-megapixels"),
        pytest.param(truncated_jpeg(), "damaged or incomplete", id="truncated-jpeg"),
        pytest.param(png() + bytes(3000), "a photo may be at most 2 KB", id="oversize"),
    ],
)
async def test_a_refused_upload_stores_nothing(tmp_path: Path, upload: bytes, reason: str) -> None:
    folder = tmp_path / "uploads"
    folder.mkdir()
    max_bytes = 2048 if reason.endswith("2 KB") else MAX_BYTES

    with pytest.raises(ImageRefused, match=reason):
        await store_photo(folder, upload, max_bytes=max_bytes)

    assert files_in(folder) == []


async def test_deleting_removes_the_files_and_forgives_ones_already_gone(tmp_path: Path) -> None:
    folder = tmp_path / "uploads"
    kept = await store_photo(folder, png(colour="gold"), max_bytes=MAX_BYTES)
    dropped = await store_photo(folder, png(colour="navy"), max_bytes=MAX_BYTES)

    await delete_photos(folder, [dropped.card.name, dropped.page.name])
    await delete_photos(folder, [dropped.card.name])

    assert files_in(folder) == sorted([kept.card.name, kept.page.name])


@pytest.mark.parametrize(
    "name",
    [
        "../storefront.db",
        "..",
        "/etc/passwd",
        "a" * 64 + ".webp/../x",
        "A" * 64 + ".webp",
        "a" * 63 + ".webp",
        "a" * 64 + ".png",
        "a" * 64 + ".webp\n",
        ".upload-1234.tmp",
        "",
    ],
)
async def test_only_hash_names_are_ever_paths(tmp_path: Path, name: str) -> None:
    assert not is_photo_name(name)
    assert photo_path(tmp_path, name) is None
    with pytest.raises(ValueError, match="not a photo name"):
        await delete_photos(tmp_path, [name])


def test_a_hash_name_is_a_file_in_the_folder(tmp_path: Path) -> None:
    name = "0123456789abcdef" * 4 + ".webp"

    assert photo_path(tmp_path, name) == tmp_path / name
