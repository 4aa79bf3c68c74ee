"""What every shopper sees, built once per catalog version and kept in this process's memory.

A shared page is rendered once with markers where the per-shopper values go (the CSRF token and
the cart badge count) and split there. A response joins the parts with the shopper's values and,
when the client takes gzip, compresses the joined body at level 1: no request re-renders the
template. (Splicing the values into parts deflated once saved 5–14 % of a home page's CPU for
~9 % more bytes and 300 lines: docs/PERFORMANCE.md, "Shared pages are gzipped whole".)

Invalidation, across hypercorn workers: each worker reads the catalog fingerprint
(`catalog_versions.version`, bumped by `bump_catalog_version` in the writer's transaction, plus
max(products.updated_at) and the product count, which catch product writes that forgot to bump)
at most once per CHECK seconds, and at once after this process commits a bump. A changed
fingerprint empties the cache. Entries also expire after MAX_AGE seconds, which bounds staleness
even for a raw SQL edit that touched neither. Only anonymous shoppers with no flash message
waiting get the shared bytes; everyone else gets a per-request render of the cached query results.
"""

import asyncio
import gzip
import logging
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from markupsafe import escape
from quart import Quart, Response, current_app, render_template, request, session
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from storefront.config import app_settings
from storefront.db.engine import get_session
from storefront.services.catalog import local_catalog_changes, select_catalog_fingerprint
from storefront.web.cart_badge import badge_count
from storefront.web.csrf import SESSION_KEY as CSRF_SESSION_KEY
from storefront.web.csrf import csrf_token

log = logging.getLogger(__name__)

T = TypeVar("T")

CSRF_SLOT = "csrf_token"
CART_COUNT_SLOT = "cart_count"
_MARKER_NONCE = secrets.token_hex(8)
SLOT_MARKERS = {
    CSRF_SLOT: f"cwslot{_MARKER_NONCE}csrf",
    CART_COUNT_SLOT: f"cwslot{_MARKER_NONCE}cartcount",
}
_MARKER_PATTERN = re.compile("(" + "|".join(map(re.escape, SLOT_MARKERS.values())) + ")")
_SLOT_BY_MARKER = {marker: name for name, marker in SLOT_MARKERS.items()}

HTML_TYPE = "text/html; charset=utf-8"
JSON_TYPE = "application/json"
# Pages carry the shopper's CSRF token: browsers may keep them, shared caches may not.
PAGE_CACHE_CONTROL = "private, no-cache"
PAGE_VARY = "Accept-Encoding, Cookie"
# Pages are compressed per response; level 1 costs half of level 6's CPU for ~9 % more bytes.
PAGE_GZIP_LEVEL = 1
JSON_GZIP_LEVEL = 9  # compressed once per catalog version


class SharedPage:
    """A rendered page split at the slot markers: parts with a named slot between each two."""

    __slots__ = ("slots", "size", "_pieces", "_slot_positions")

    def __init__(self, text: str) -> None:
        self._pieces = [piece.encode() for piece in _MARKER_PATTERN.split(text)]
        self._slot_positions = [
            (index, _SLOT_BY_MARKER[self._pieces[index].decode()])
            for index in range(1, len(self._pieces), 2)
        ]
        self.slots = frozenset(name for _, name in self._slot_positions)
        self.size = sum(map(len, self._pieces)) + 64 * len(self._slot_positions)

    def body(self, values: Mapping[str, bytes]) -> bytes:
        """The page with the values in their slots."""
        pieces = self._pieces.copy()
        for index, name in self._slot_positions:
            pieces[index] = values[name]
        return b"".join(pieces)


@dataclass(slots=True)
class _Entry:
    value: Any
    size: int
    generation: int
    built_at: float


class PageCache:
    """A byte-bounded LRU of shared answers, emptied when the catalog fingerprint changes.

    Concurrent misses for one key build once; the others wait for that build.
    """

    def __init__(
        self,
        *,
        enabled: bool = True,
        check_seconds: float = 1.0,
        max_age_seconds: float = 60.0,
        max_bytes: int = 32 * 1024 * 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.enabled = enabled
        self.check_seconds = check_seconds
        self.max_age_seconds = max_age_seconds
        self.max_bytes = max_bytes
        self.clock = clock
        self.generation = 0
        self.total_bytes = 0
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()
        self._building: dict[Hashable, asyncio.Future[Any]] = {}
        self._fingerprint: tuple[Any, ...] | None = None
        self._checked_at = float("-inf")
        self._seen_local_changes = -1
        self._checking = False

    def __len__(self) -> int:
        return len(self._entries)

    def invalidate(self) -> None:
        """Forget every entry; builds already running will not store their result."""
        self._entries.clear()
        self.total_bytes = 0
        self.generation += 1

    async def refresh(self, open_session: Callable[[], AsyncSession]) -> None:
        """Re-read the catalog fingerprint when due; empty the cache when it changed.

        `open_session` is called only when a check is due: most requests touch no database.
        """
        local_changes = local_catalog_changes()
        now = self.clock()
        if (
            local_changes == self._seen_local_changes
            and now - self._checked_at < self.check_seconds
        ) or self._checking:
            return
        self._checking = True
        try:
            fingerprint = await select_catalog_fingerprint(open_session())
        except SQLAlchemyError:
            # While the database is away, pages already cached (up to MAX_AGE) still serve.
            log.warning("catalog version check failed; serving cached pages", exc_info=True)
            self._checked_at = now
            return
        finally:
            self._checking = False
        self._checked_at = now
        self._seen_local_changes = local_changes
        if fingerprint != self._fingerprint:
            if self._fingerprint is not None:
                self.invalidate()
            self._fingerprint = fingerprint

    def _lookup(self, key: Hashable) -> _Entry | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if (
            entry.generation != self.generation
            or self.clock() - entry.built_at > self.max_age_seconds
        ):
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return entry

    def _drop(self, key: Hashable) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self.total_bytes -= entry.size

    def _store(
        self, key: Hashable, value: Any, size: int, generation: int, built_at: float
    ) -> None:
        if not self.enabled or generation != self.generation or size > self.max_bytes:
            return
        self._drop(key)
        self._entries[key] = _Entry(value, size, generation, built_at)
        self.total_bytes += size
        while self.total_bytes > self.max_bytes and self._entries:
            self._drop(next(iter(self._entries)))

    async def get_or_build(self, key: Hashable, build: Callable[[], Awaitable[tuple[T, int]]]) -> T:
        """The cached value for `key`, or `build()`'s (value, size in bytes), stored."""
        while True:
            entry = self._lookup(key)
            if entry is not None:
                return entry.value  # type: ignore[no-any-return]
            pending = self._building.get(key)
            if pending is None:
                break
            # shield: a waiter that is cancelled must not cancel the build others wait for.
            built = await asyncio.shield(pending)
            if built is not _BUILD_FAILED:
                return built  # type: ignore[no-any-return]
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._building[key] = future
        generation = self.generation
        built_at = self.clock()
        try:
            value, size = await build()
        except BaseException:
            # Waiters build for themselves: an exception is answered per request, not shared.
            future.set_result(_BUILD_FAILED)
            raise
        finally:
            if self._building.get(key) is future:
                del self._building[key]
        self._store(key, value, size, generation, built_at)
        future.set_result(value)
        return value


_BUILD_FAILED = object()


def page_cache_for(app: Quart) -> PageCache:
    """The app's page cache, made on first use from the CATALOG_CACHE_* settings."""
    cache = app.extensions.get("page_cache")
    if cache is None:
        settings = app_settings(app)
        cache = PageCache(
            enabled=settings.catalog_cache_enabled,
            check_seconds=settings.catalog_cache_check_seconds,
            max_age_seconds=settings.catalog_cache_max_age_seconds,
            max_bytes=settings.catalog_cache_max_bytes,
        )
        app.extensions["page_cache"] = cache
    return cache


async def fresh_page_cache() -> PageCache:
    """The current app's page cache, after the at-most-once-a-second version check."""
    cache = page_cache_for(current_app)  # type: ignore[arg-type]
    await cache.refresh(get_session)
    return cache


def shopper_can_share() -> bool:
    """Anonymous (no auth cookie) and no flash message waiting: the shared page fits."""
    auth_cookie = current_app.config["QUART_AUTH_COOKIE_NAME"]
    if auth_cookie in request.cookies and request.cookies[auth_cookie]:
        return False
    return "_flashes" not in session


def accepts_gzip() -> bool:
    """The client takes gzip (the plain header is read without the full parse when it can)."""
    header = request.headers.get("Accept-Encoding", "")
    if "gzip" not in header and "*" not in header:
        return False
    if ";" not in header:
        return True
    return request.accept_encodings["gzip"] > 0


def _shopper_values(page: SharedPage) -> dict[str, bytes]:
    values: dict[str, bytes] = {}
    if CSRF_SLOT in page.slots:
        values[CSRF_SLOT] = str(escape(csrf_token())).encode()
    if CART_COUNT_SLOT in page.slots:
        values[CART_COUNT_SLOT] = str(badge_count()).encode()
    return values


def _no_flashes(*_args: Any, **_kwargs: Any) -> list[Any]:
    return []


class PageNotShareable(RuntimeError):
    """A render put a shopper's own value into a page meant for everyone."""


async def _render_shared(template: str, context: dict[str, Any]) -> tuple[SharedPage, int]:
    token_before = session.get(CSRF_SESSION_KEY)
    html = await render_template(
        template,
        **context,
        csrf_token=lambda: SLOT_MARKERS[CSRF_SLOT],
        cart_count=SLOT_MARKERS[CART_COUNT_SLOT],
        customer=None,
        get_flashed_messages=_no_flashes,
    )
    # A macro imported without context calls the real csrf_token(): never share that page.
    for token in {token_before, session.get(CSRF_SESSION_KEY)}:
        if token and str(token) in html:
            raise PageNotShareable(f"{template} rendered the shopper's own CSRF token")
    page = SharedPage(html)
    return page, page.size


def _encoded_response(
    plain: Callable[[], bytes],
    gzipped: Callable[[], bytes],
    content_type: str,
    cache_control: str,
    vary: str = "Accept-Encoding",
) -> Response:
    headers = {"Content-Type": content_type, "Vary": vary, "Cache-Control": cache_control}
    if accepts_gzip():
        headers["Content-Encoding"] = "gzip"
        return Response(gzipped(), headers=headers)
    return Response(plain(), headers=headers)


async def shared_page(
    cache: PageCache,
    key: Hashable,
    template: str,
    load_context: Callable[[], Awaitable[dict[str, Any]]],
) -> Response:
    """The page for `key`: the shared page with this shopper's token and count put in, or a
    render of the cached query results for signed-in shoppers and pending flash messages."""
    if shopper_can_share():

        async def build() -> tuple[SharedPage | None, int]:
            try:
                return await _render_shared(template, await load_context())
            except PageNotShareable:
                # Remembered as None, so this generation renders it per request, logged once.
                log.exception("page cache refused a page with per-shopper content")
                return None, 64

        page = await cache.get_or_build(("page", key), build)
        if page is not None:
            body = page.body(_shopper_values(page))
            return _encoded_response(
                lambda: body,
                lambda: gzip.compress(body, PAGE_GZIP_LEVEL, mtime=0),
                HTML_TYPE,
                PAGE_CACHE_CONTROL,
                PAGE_VARY,
            )
    rendered = (await render_template(template, **await load_context())).encode()
    return _encoded_response(
        lambda: rendered,
        lambda: gzip.compress(rendered, PAGE_GZIP_LEVEL, mtime=0),
        HTML_TYPE,
        PAGE_CACHE_CONTROL,
        PAGE_VARY,
    )


async def shared_json(
    cache: PageCache,
    key: Hashable,
    load_json: Callable[[], Awaitable[bytes]],
    max_age_seconds: int = 5,
) -> Response:
    """A JSON body that is the same for everyone, encoded and compressed once per version."""

    async def build() -> tuple[tuple[bytes, bytes], int]:
        plain = await load_json()
        gzipped = gzip.compress(plain, JSON_GZIP_LEVEL, mtime=0)
        return (plain, gzipped), len(plain) + len(gzipped) + 64

    plain, gzipped = await cache.get_or_build(("json", key), build)
    return _encoded_response(
        lambda: plain, lambda: gzipped, JSON_TYPE, f"public, max-age={max_age_seconds}"
    )
