"""Uploaded photos on disk: checked and re-encoded off the event loop (lib/images.py), then kept
under UPLOAD_FOLDER by content-hash name, so the same photo is one file however often it comes.

A file may serve several records (product photos, sliders): a record that names a file is
written with `keep_photo_files` and a file is removed with `delete_unused_photo_files`, both
inside a write transaction that has taken `lock_photo_names`, so a file is never deleted while
another record is being written that names it."""

import asyncio
import os
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path
from weakref import WeakKeyDictionary

from sqlalchemy import func, select, union_all
from sqlalchemy.ext.asyncio import AsyncSession

from storefront.db.engine import dialect_name
from storefront.lib.images import ProcessedImage, process_upload
from storefront.models import ProductImage, Slider

PHOTO_NAME = re.compile(r"[0-9a-f]{64}\.webp")
# A 40-megapixel photo takes ~160 MB while it is decoded: a worker works on this many at once.
CONCURRENT_PHOTOS = 2
_photo_slots: WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = WeakKeyDictionary()


def is_photo_name(name: str) -> bool:
    """Whether `name` is one store_photo gives (a hash and .webp): nothing else is ever a path."""
    return PHOTO_NAME.fullmatch(name) is not None


def photo_path(folder: Path, name: str) -> Path | None:
    """The file a photo name stands for, or None for a name store_photo never gives."""
    return folder / name if is_photo_name(name) else None


async def store_photo(folder: Path, upload: bytes, *, max_bytes: int) -> ProcessedImage:
    """Check and re-encode an upload, and keep both sizes in `folder`; ImageRefused (nothing
    stored) when it is not a photo the shop takes."""
    loop = asyncio.get_running_loop()
    slots = _photo_slots.setdefault(loop, asyncio.Semaphore(CONCURRENT_PHOTOS))
    async with slots:
        photo = await asyncio.to_thread(process_upload, upload, max_bytes=max_bytes)
    await asyncio.to_thread(_write_photo_files, folder, photo)
    return photo


async def delete_photos(folder: Path, names: Iterable[str]) -> None:
    """Remove these photo files (gone already is fine). A file may serve several records (same
    bytes, same name): delete only names no record holds any more."""
    await asyncio.to_thread(_delete_photo_files, folder, list(names))


def photo_names(photo: ProcessedImage) -> list[str]:
    """The file names of both sizes (one name when the photo is small enough for both)."""
    return sorted({photo.card.name, photo.page.name})


async def lock_photo_names(session: AsyncSession, names: Iterable[str]) -> None:
    """Hold these photo names until the write ends: PostgreSQL takes an advisory lock per name
    (in name order); on SQLite the write already excludes every other writer."""
    if dialect_name(session) != "postgresql":
        return
    for name in sorted(set(names)):
        key = int.from_bytes(bytes.fromhex(name[:16]), "big", signed=True)
        await session.execute(select(func.pg_advisory_xact_lock(key)))


async def keep_photo_files(folder: Path, photo: ProcessedImage) -> None:
    """Write the photo's files again if they are gone (deleted since store_photo as unused):
    call it in the write that adds the record naming them, after lock_photo_names."""
    await asyncio.to_thread(_write_photo_files, folder, photo)


async def select_photo_names_in_use(session: AsyncSession, names: Iterable[str]) -> set[str]:
    """Which of these names a product photo or a slider still holds."""
    wanted = sorted(set(names))
    if not wanted:
        return set()
    holders = union_all(
        select(ProductImage.card_filename).where(ProductImage.card_filename.in_(wanted)),
        select(ProductImage.page_filename).where(ProductImage.page_filename.in_(wanted)),
        select(Slider.image).where(Slider.image.in_(wanted)),
        select(Slider.image_small).where(Slider.image_small.in_(wanted)),
    )
    return set(await session.scalars(select(holders.subquery().c[0]).distinct()))


async def delete_unused_photo_files(
    session: AsyncSession, folder: Path, names: Iterable[str]
) -> list[str]:
    """Delete the files of these names that no record holds any more; the names deleted. Call
    it in a write transaction, after the records that held them are gone."""
    wanted = [name for name in sorted(set(names)) if is_photo_name(name)]
    await lock_photo_names(session, wanted)
    in_use = await select_photo_names_in_use(session, wanted)
    unused = [name for name in wanted if name not in in_use]
    await delete_photos(folder, unused)
    return unused


def _write_photo_files(folder: Path, photo: ProcessedImage) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for encoded in (photo.card, photo.page):
        _write_atomically(folder / encoded.name, encoded.body)


def _write_atomically(path: Path, body: bytes) -> None:
    """Write through a temporary file renamed into place: a reader (or a crash) never sees half
    a file. A file already there has these bytes (its name is their hash) and is kept."""
    if path.exists():
        return
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=".upload-", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(body)
            file.flush()
            os.fsync(file.fileno())
        # mkstemp makes the file private; a web server in front may serve the folder itself.
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _delete_photo_files(folder: Path, names: list[str]) -> None:
    for name in names:
        path = photo_path(folder, name)
        if path is None:
            raise ValueError(f"not a photo name: {name!r}")
        path.unlink(missing_ok=True)
