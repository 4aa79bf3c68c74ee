"""Spliced gzip bodies: the same bytes as the plain body, no compression per request, repeated
tokens as tiny copy blocks, and a size close to compressing the whole page."""

import gzip
import secrets
import zlib

import pytest

from storefront.lib import gzip_splice
from storefront.lib.gzip_splice import SplicedBody, copy_block, gzip_compress
from storefront.web.page_cache import CART_COUNT_SLOT, CSRF_SLOT, SLOT_MARKERS, split_rendered

CARD = (
    '<li class="card"><a href="/products/item-{n}"><h2>Item {n}</h2></a><p class="price">GH₵ {n}.00'
    '</p><form method="post" action="/cart/items"><input type="hidden" name="csrf_token" value="'
    + SLOT_MARKERS[CSRF_SLOT]
    + '"><input type="hidden" name="product_id" value="{n}"><button>Add to cart</button></form>'
    "</li>\n"
)
PAGE = (
    '<html><head><meta name="csrf-token" content="'
    + SLOT_MARKERS[CSRF_SLOT]
    + '"></head><body><a id="cart-badge">Cart <span class="count">'
    + SLOT_MARKERS[CART_COUNT_SLOT]
    + "</span></a><ul>"
    + "".join(CARD.replace("{n}", str(number)) for number in range(12))
    + "</ul>\x00</body></html>"
)


def shopper_values(token: str, count: str = "3") -> dict[str, bytes]:
    return {CSRF_SLOT: token.encode(), CART_COUNT_SLOT: count.encode()}


def test_plain_body_puts_the_values_in_every_slot():
    page = split_rendered(PAGE)
    token = secrets.token_urlsafe(32)
    body = page.body(shopper_values(token, "7")).decode()
    assert body.count(token) == 13
    assert 'class="count">7</span>' in body
    assert "cwslot" not in body
    assert "\x00" not in body and "\ufffd" in body  # a NUL in content is shown as browsers do


def test_gzip_body_is_the_plain_body_without_compressing_per_request(monkeypatch):
    page = split_rendered(PAGE)

    def refuse(*_args, **_kwargs):
        raise AssertionError("compressed per request")

    monkeypatch.setattr(gzip_splice, "gzip_compress", refuse)
    monkeypatch.setattr(zlib, "compressobj", refuse)
    for _ in range(5):
        values = shopper_values(secrets.token_urlsafe(32), str(secrets.randbelow(10**6)))
        assert gzip.decompress(page.gzip_body(values)) == page.body(values)


def test_repeated_tokens_cost_a_few_bytes_and_the_page_stays_near_whole_compression():
    page = split_rendered(PAGE)
    values = shopper_values(secrets.token_urlsafe(32))
    spliced = page.gzip_body(values)
    whole = gzip_compress(page.body(values), 9)
    parts_alone = sum(len(gzip_compress(part, 9)) for part in page.parts)
    # Two tokens before the badge and the first after it travel as stored blocks (3 × 48
    # bytes); the other eleven are copy blocks of ~8 bytes; each flush costs a few bytes.
    assert len(spliced) <= len(whole) + 3 * 48 + 11 * 8 + 15 * 12, (len(spliced), len(whole))
    assert len(spliced) < parts_alone / 2


def test_values_of_another_width_fall_back_to_compressing():
    page = split_rendered(PAGE)
    for values in (shopper_values("short-token"), shopper_values("t" * 43, "9" * 70_000)):
        assert gzip.decompress(page.gzip_body(values)) == page.body(values)


def test_a_body_without_slots():
    page = SplicedBody([b'{"items":[]}'], [], {})
    assert page.body({}) == b'{"items":[]}'
    assert gzip.decompress(page.gzip_body({})) == b'{"items":[]}'


def test_distant_repeats_are_stored_not_copied():
    filler = b"x" * 40_000
    page = SplicedBody([b"<a>", filler, b"</a>"], ["token", "token"], {"token": 43})
    values = {"token": b"T" * 43}
    assert (
        gzip.decompress(page.gzip_body(values)) == b"<a>" + b"T" * 43 + filler + b"T" * 43 + b"</a>"
    )


@pytest.mark.parametrize("length", [3, 10, 11, 43, 100, 257, 258])
@pytest.mark.parametrize("distance", [1, 4, 5, 100, 1024, 1025, 24577, 32768])
def test_copy_blocks_decode_as_copies(length, distance):
    history = bytes(secrets.randbelow(256) for _ in range(distance))
    stream = gzip_splice.stored_blocks(history) + copy_block(length, distance)
    stream += b"\x03\x00"  # an empty final fixed block
    decoded = zlib.decompress(stream, -15)
    expected = history + bytes(history[-distance + i % distance] for i in range(length))
    assert decoded == expected


def test_copy_block_limits():
    for length, distance in ((2, 10), (259, 10), (10, 0), (10, 32769)):
        with pytest.raises(ValueError):
            copy_block(length, distance)
