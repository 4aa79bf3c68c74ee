"""The page cache: an LRU that builds once per key, drops stale generations and entries past their
age, and stays within its byte budget; gzip negotiation."""

import asyncio

import pytest

from storefront.web import page_cache
from storefront.web.page_cache import PageCache


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_concurrent_misses_build_once():
    cache = PageCache()
    builds = 0

    async def build():
        nonlocal builds
        builds += 1
        await asyncio.sleep(0.01)
        return "page", 10

    values = await asyncio.gather(*(cache.get_or_build("home", build) for _ in range(20)))
    assert values == ["page"] * 20 and builds == 1
    assert await cache.get_or_build("home", build) == "page" and builds == 1


async def test_a_failed_build_is_not_shared_and_not_stored():
    cache = PageCache()
    attempts = 0

    async def build():
        nonlocal attempts
        attempts += 1
        await asyncio.sleep(0.01)
        if attempts == 1:
            raise LookupError("first build fails")
        return "page", 10

    results = await asyncio.gather(
        *(cache.get_or_build("home", build) for _ in range(3)), return_exceptions=True
    )
    assert isinstance(results[0], LookupError)
    assert results[1:] == ["page", "page"]
    assert attempts == 2


async def test_invalidation_discards_entries_and_builds_in_flight():
    cache = PageCache()
    started = asyncio.Event()
    release = asyncio.Event()

    async def slow_build():
        started.set()
        await release.wait()
        return "old", 10

    task = asyncio.create_task(cache.get_or_build("home", slow_build))
    await started.wait()
    cache.invalidate()
    release.set()
    assert await task == "old"  # its requester gets it, but it is not kept

    async def new_build():
        return "new", 10

    assert await cache.get_or_build("home", new_build) == "new"


async def test_entries_expire_after_max_age():
    clock = Clock()
    cache = PageCache(max_age_seconds=60, clock=clock)
    counter = iter(range(100))

    async def build():
        return next(counter), 10

    assert await cache.get_or_build("k", build) == 0
    clock.now += 59
    assert await cache.get_or_build("k", build) == 0
    clock.now += 2
    assert await cache.get_or_build("k", build) == 1


async def test_least_recently_used_entries_leave_first_within_the_byte_budget():
    cache = PageCache(max_bytes=100)

    def sized(value, size):
        async def build():
            return value, size

        return build

    await cache.get_or_build("a", sized("a", 40))
    await cache.get_or_build("b", sized("b", 40))
    await cache.get_or_build("a", sized("unused", 40))  # touch a
    await cache.get_or_build("c", sized("c", 40))  # over budget: b leaves
    assert cache.total_bytes == 80 and len(cache) == 2
    assert await cache.get_or_build("a", sized("rebuilt", 1)) == "a"
    assert await cache.get_or_build("b", sized("rebuilt", 1)) == "rebuilt"
    await cache.get_or_build("huge", sized("huge", 1000))
    assert await cache.get_or_build("huge", sized("again", 1)) == "again"


async def test_disabled_cache_always_builds():
    cache = PageCache(enabled=False)
    counter = iter(range(10))

    async def build():
        return next(counter), 1

    assert [await cache.get_or_build("k", build) for _ in range(3)] == [0, 1, 2]


@pytest.mark.parametrize("accepting", ["gzip", "gzip, deflate, br", "*"])
async def test_gzip_negotiation(app, accepting):
    async with app.test_request_context("/", headers={"Accept-Encoding": accepting}):
        assert page_cache.accepts_gzip()
    async with app.test_request_context("/", headers={"Accept-Encoding": "gzip;q=0, br"}):
        assert not page_cache.accepts_gzip()


async def test_cached_pages_still_serve_when_the_version_check_fails(
    app, client, add_product, monkeypatch
):
    from sqlalchemy.exc import OperationalError

    await add_product("Radio")
    assert "Radio" in await (await client.get("/")).get_data(as_text=True)

    async def unreachable(_session):
        raise OperationalError("SELECT", {}, Exception("database is away"))

    monkeypatch.setattr(page_cache, "select_catalog_fingerprint", unreachable)
    response = await client.get("/")
    assert response.status_code == 200
    assert "Radio" in await response.get_data(as_text=True)
