"""Uploaded photos served at `/uploads/<name>`: a name is the hash of the file's bytes, so a URL
never changes meaning and browsers and proxies may keep it for a year. Files stream from disk,
as static images do (web/static_files.py)."""

from pathlib import Path

from quart import Quart, Response, abort, current_app, request, send_file, url_for

from storefront.config import app_settings
from storefront.services.uploads import photo_path
from storefront.web.static_files import IMMUTABLE

PHOTO_MIMETYPE = "image/webp"


def upload_folder(app: Quart) -> Path:
    """The absolute folder this app keeps uploaded photos in (UPLOAD_FOLDER)."""
    return app.extensions["upload_folder"]  # type: ignore[no-any-return]


def upload_url(name: str) -> str:
    """The URL of a stored photo, by the name store_photo gave it."""
    return url_for("uploaded_photo", name=name)


async def serve_upload(name: str) -> Response:
    """A stored photo with a year of caching; 404 for a name store_photo never gives or a
    photo that is gone."""
    path = photo_path(upload_folder(current_app), name)  # type: ignore[arg-type]
    if path is None:
        abort(404)
    try:
        response = await send_file(path, mimetype=PHOTO_MIMETYPE, add_etags=False)
    except FileNotFoundError:
        abort(404)
    response.set_etag(name.removesuffix(".webp"))
    await response.make_conditional(request)
    response.headers["Cache-Control"] = IMMUTABLE
    return response


def init_uploads(app: Quart) -> None:
    """Serve UPLOAD_FOLDER (relative to the directory the shop starts in) at /uploads/<name>."""
    app.extensions["upload_folder"] = Path(app_settings(app).upload_folder).resolve()
    app.add_url_rule("/uploads/<name>", "uploaded_photo", serve_upload, methods=["GET"])
    app.jinja_env.globals["upload_url"] = upload_url
