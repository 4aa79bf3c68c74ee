"""Static files: URLs carry a content hash (`?v=`) so browsers may keep them for a year; text
assets (CSS, JS, SVG) are held in memory and gzipped once per process, not per request; images
and other files stream from disk (only their hash is kept)."""

import gzip
import hashlib
import mimetypes
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quart import Quart, Response, abort, current_app, request, send_from_directory, url_for
from werkzeug.security import safe_join

IMMUTABLE = "public, max-age=31536000, immutable"
# A URL without the current hash (an old page, a hand-typed link): cache, but not for long.
UNVERSIONED = "public, max-age=3600"
MAX_MEMORY_BYTES = 2 * 1024 * 1024
HASH_CHUNK_BYTES = 1024 * 1024
COMPRESSIBLE_TYPES = frozenset(
    {
        "text/css",
        "text/javascript",
        "application/javascript",
        "application/json",
        "image/svg+xml",
        "text/plain",
        "text/html",
        "application/manifest+json",
        "font/ttf",
        "application/vnd.ms-fontobject",
    }
)
TEXT_APPLICATION_TYPES = frozenset({"application/javascript", "application/json"})
PLACEHOLDER_IMAGE = "img/placeholder.svg"


@dataclass(frozen=True, slots=True)
class StaticAsset:
    mtime_ns: int
    size: int
    mimetype: str
    version: str
    body: bytes | None = None  # None: stream the file from disk
    gzip_body: bytes | None = None

    @property
    def content_type(self) -> str:
        if self.mimetype.startswith("text/") or self.mimetype in TEXT_APPLICATION_TYPES:
            return f"{self.mimetype}; charset=utf-8"
        return self.mimetype

    @property
    def etag(self) -> str:
        return f'"{self.version}"'


class StaticFiles:
    """The static folder's files, hashed on first use (text assets kept in memory) and re-read
    when they change on disk."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self._assets: dict[str, StaticAsset] = {}

    def path_of(self, filename: str) -> str | None:
        """The file's path inside the folder, or None when it is missing or outside."""
        path = safe_join(self.folder, filename)
        if path is None or not os.path.isfile(path):
            return None
        return path

    def asset(self, filename: str) -> StaticAsset | None:
        """The file's hash (and, for small text assets, its bytes), or None when missing."""
        path = self.path_of(filename)
        if path is None:
            return None
        stat = os.stat(path)
        cached = self._assets.get(filename)
        if cached is not None and (cached.mtime_ns, cached.size) == (
            stat.st_mtime_ns,
            stat.st_size,
        ):
            return cached
        mimetype = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        if mimetype not in COMPRESSIBLE_TYPES or stat.st_size > MAX_MEMORY_BYTES:
            asset = StaticAsset(stat.st_mtime_ns, stat.st_size, mimetype, _file_hash(path))
        else:
            body = Path(path).read_bytes()
            gzip_body: bytes | None = gzip.compress(body, 9, mtime=0)
            if gzip_body is not None and len(gzip_body) >= len(body):
                gzip_body = None
            version = hashlib.sha256(body).hexdigest()[:12]
            asset = StaticAsset(stat.st_mtime_ns, stat.st_size, mimetype, version, body, gzip_body)
        self._assets[filename] = asset
        return asset

    def version(self, filename: str) -> str | None:
        asset = self.asset(filename)
        return asset.version if asset is not None else None


def _file_hash(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()[:12]


def static_files_for(app: Quart) -> StaticFiles:
    return app.extensions["static_files"]  # type: ignore[no-any-return]


async def serve_static(filename: str) -> Response:
    """A static file with a year of caching when the URL names its current content hash."""
    files = static_files_for(current_app)  # type: ignore[arg-type]
    asset = files.asset(filename)
    if asset is None:
        abort(404)
    versioned = request.args.get("v") == asset.version
    cache_control = IMMUTABLE if versioned else UNVERSIONED
    if asset.body is None:
        response = await send_from_directory(files.folder, filename)
        response.headers["Cache-Control"] = cache_control
        return response
    headers = {
        "Content-Type": asset.content_type,
        "Cache-Control": cache_control,
        "ETag": asset.etag,
        "Vary": "Accept-Encoding",
    }
    if request.if_none_match.contains(asset.version):
        return Response(b"", status=304, headers=headers)
    body = asset.body
    if asset.gzip_body is not None and request.accept_encodings["gzip"] > 0:
        body = asset.gzip_body
        headers["Content-Encoding"] = "gzip"
    return Response(body, headers=headers)


def _add_static_version(endpoint: str, values: dict[str, Any]) -> None:
    if endpoint != "static" or "v" in values or "filename" not in values:
        return
    version = static_files_for(current_app).version(values["filename"])  # type: ignore[arg-type]
    if version is not None:
        values["v"] = version


def asset_url(path: str) -> str:
    """A URL for an image as stored on a product or slider: a path under static/ (versioned),
    an absolute http(s) URL or site path as given, or the placeholder when empty."""
    path = (path or "").strip()
    if not path:
        path = PLACEHOLDER_IMAGE
    lowered = path.lower()
    if lowered.startswith(("https://", "http://")):
        return path
    if path.startswith("/") and not path.startswith("//"):
        return path
    return url_for("static", filename=path.removeprefix("static/"))


def init_static_files(app: Quart) -> None:
    """Serve app.static_folder from memory with hashed URLs (url_for adds `v`)."""
    app.extensions["static_files"] = StaticFiles(str(app.static_folder))
    app.view_functions["static"] = serve_static
    app.url_defaults(_add_static_version)
