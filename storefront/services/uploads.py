"""Uploaded photos on disk: checked and re-encoded off the event loop (lib/images.py), then kept
under UPLOAD_FOLDER by content-hash name, so the same photo is one file however often it comes."""

import asyncio
import os
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path
from weakref import WeakKeyDictionary

from storefront.lib.images import ProcessedImage, process_upload

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
