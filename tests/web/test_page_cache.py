"""The page cache: an LRU that builds once per key, drops stale generations and entries past their
age, and stays within its byte budget; gzip negotiation; shared pages show per-shopper values
only through the known hooks (the CSRF token and cart badge slots; `customer` and flash messages,
which send a shopper to a per-request render)."""

import asyncio

import pytest
from quart.signals import template_rendered

from storefront.blueprints.cart import CART_TOKEN_KEY
from storefront.web import page_cache
from storefront.web.page_cache import (
    CART_COUNT_SLOT,
    CSRF_SLOT,
    SLOT_MARKERS,
    PageCache,
    SharedPage,
    page_cache_for,
)
from tests.fixtures_shop import set_badge_cookie


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_shared_page_puts_the_values_in_every_slot():
    card = '<form><input name="csrf_token" value="{token}"></form>'
    text = (
        f'<meta name="csrf-token" content="{SLOT_MARKERS[CSRF_SLOT]}">'
        f'<span class="count">{SLOT_MARKERS[CART_COUNT_SLOT]}</span>'
        + card.format(token=SLOT_MARKERS[CSRF_SLOT]) * 12
        + "<p>GH₵ 5.00</p>"
    )
    page = SharedPage(text)
    assert page.slots == {CSRF_SLOT, CART_COUNT_SLOT}
    for token, count in (("a" * 43, "7"), ("short", "123456")):
        body = page.body({CSRF_SLOT: token.encode(), CART_COUNT_SLOT: count.encode()})
        expected = text.replace(SLOT_MARKERS[CSRF_SLOT], token)
        assert body.decode() == expected.replace(SLOT_MARKERS[CART_COUNT_SLOT], count)
    assert SharedPage("<p>no slots</p>").body({}) == b"<p>no slots</p>"


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


async def _shared_page_urls(add_category, add_product) -> list[str]:
    """The pages every guest shares: home, a category, a product and a search."""
    category = await add_category("Radios")
    product = await add_product("Transistor Radio", category=category)
    return ["/", f"/?category={category.slug}", f"/products/{product.slug}", "/?q=radio"]


async def _body_and_token(client, url: str) -> tuple[str, str]:
    response = await client.get(url)
    assert response.status_code == 200, url
    async with client.session_transaction() as browser_session:
        return await response.get_data(as_text=True), browser_session["csrf_token"]


async def test_shared_pages_differ_between_guests_only_at_the_token_and_the_badge(
    app, add_category, add_product
):
    urls = await _shared_page_urls(add_category, add_product)
    renders = []

    def record(_app, **kwargs):
        renders.append(kwargs["template"])

    template_rendered.connect(record, app)
    # Badge counts no page shows otherwise, so each one found is the badge slot.
    first, second = app.test_client(), app.test_client()
    set_badge_cookie(first, 731)
    set_badge_cookie(second, 946)
    for guest, cart_token in ((first, "first-guests-cart-token"), (second, "second-cart-token")):
        async with guest.session_transaction() as browser_session:
            browser_session[CART_TOKEN_KEY] = cart_token
    for url in urls:
        first_body, first_token = await _body_and_token(first, url)
        second_body, second_token = await _body_and_token(second, url)
        assert first_token != second_token
        assert first_token in first_body and "731" in first_body
        assert second_token in second_body and "946" in second_body
        assert "cart-token" not in first_body + second_body
        first_page = first_body.replace(first_token, "TOKEN").replace("731", "COUNT")
        second_page = second_body.replace(second_token, "TOKEN").replace("946", "COUNT")
        assert first_page == second_page, url
    template_rendered.disconnect(record, app)
    assert len(renders) == len(urls)  # the second guest got the cached bytes


async def test_nothing_of_a_signed_in_or_flashed_shopper_reaches_a_shared_page(
    app, add_category, add_product, make_user, sign_in
):
    urls = await _shared_page_urls(add_category, add_product)
    user = await make_user(email="ama.mensah@example.com", name="Ama Mensah")
    signed_in, flashed = app.test_client(), app.test_client()
    sign_in(signed_in, user)
    shoppers = ((signed_in, "Welcome back, Ama."), (flashed, "Added 1 × Radio."))
    for shopper, _flash in shoppers:
        set_badge_cookie(shopper, 731)
        async with shopper.session_transaction() as browser_session:
            browser_session[CART_TOKEN_KEY] = "own-cart-token"
    private_values = ["Ama Mensah", "ama.mensah@example.com", "own-cart-token", "731"]
    # They ask first, so a page built from their request would be the one cached.
    for url in urls:
        for shopper, flash in shoppers:
            async with shopper.session_transaction() as browser_session:
                browser_session["_flashes"] = [("ok", flash)]
            body, token = await _body_and_token(shopper, url)
            assert flash in body and ("Ama Mensah" in body) == (shopper is signed_in)
            private_values += [flash, token]
    for url in urls:
        guest_body, _ = await _body_and_token(app.test_client(), url)
        assert [value for value in private_values if value in guest_body] == [], url


# Everything a guest's request carries besides the cache key and the hooks' values differs between
# these two: session contents, cookies, headers and query parameters outside the key.
DISTINCT_GUEST = {
    "cart_token": "distinct-guests-cart-token",
    "badge": 731,
    "cookies": {"theme": "distinct-guests-theme"},
    "headers": {
        "User-Agent": "DistinctGuestBrowser/1.0",
        "Accept-Language": "tw-GH",
        "Referer": "https://distinct-guest.example/came-from",
    },
    "query": "utm_source=distinct-guests-campaign",
}
PLAIN_GUEST: dict = {"cart_token": None, "badge": None, "cookies": {}, "headers": {}, "query": ""}


async def _guest_client(app, guest: dict):
    client = app.test_client()
    if guest["badge"] is not None:
        set_badge_cookie(client, guest["badge"])
    for name, value in guest["cookies"].items():
        client.set_cookie("localhost", name, value, path="/")
    if guest["cart_token"]:
        async with client.session_transaction() as browser_session:
            browser_session[CART_TOKEN_KEY] = guest["cart_token"]
    return client


async def _guest_page(client, guest: dict, url: str) -> str:
    if guest["query"]:
        url += ("&" if "?" in url else "?") + guest["query"]
    response = await client.get(url, headers=guest["headers"])
    assert response.status_code == 200, url
    return await response.get_data(as_text=True)


async def test_a_shared_page_is_the_page_the_guest_would_get_rendered_alone(
    app, add_category, add_product
):
    """Whoever filled the cache, a guest gets exactly what a render for their own request gives.

    A template in a shared page that showed anything of the request outside the hooks (the
    session, a cookie, a header, a query parameter outside the key, even only whether a value is
    there) would show the guest who filled the cache, and this comparison would tell.
    """
    urls = await _shared_page_urls(add_category, add_product)
    cache = page_cache_for(app)
    renders = []

    def record(_app, **kwargs):
        renders.append(kwargs["template"])

    template_rendered.connect(record, app)
    for url in urls:
        for filler, reader in ((DISTINCT_GUEST, PLAIN_GUEST), (PLAIN_GUEST, DISTINCT_GUEST)):
            filler_client = await _guest_client(app, filler)
            reader_client = await _guest_client(app, reader)
            cache.enabled = True
            cache.invalidate()
            await _guest_page(filler_client, filler, url)
            rendered = len(renders)
            shared = await _guest_page(reader_client, reader, url)
            assert len(renders) == rendered, f"{url}: the reader's page was not the shared one"
            cache.enabled = False
            cache.invalidate()
            alone = await _guest_page(reader_client, reader, url)
            assert len(renders) == rendered + 1
            assert shared == alone, url
    template_rendered.disconnect(record, app)
