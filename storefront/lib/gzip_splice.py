"""Gzip bodies with per-request values, assembled from parts deflated once.

A body is parts with named slots between them. Each part is deflated once, in one deflate stream
that is flushed to a byte boundary at every slot. A request's gzip body is then the stored parts
joined with its values in stored (uncompressed) deflate blocks and a CRC over the plain bytes; the
compressor never runs per request.

Slots of a fixed width (a CSRF token) keep the stream's history across the slot: the compressor is
fed NUL bytes of that width there, so later parts may refer back across the slot (the distance is
right because the value has the same length) but never into it (no part contains a NUL byte). A
repeat of such a slot, when the distance to its previous copy is known, is a static deflate block
that copies the earlier value, so it costs ~8 bytes and no work per request. Slots of any width
(a cart count) reset the compressor's history (Z_FULL_FLUSH) instead.
"""

import struct
import zlib
from collections.abc import Mapping, Sequence

GZIP_HEADER = bytes((0x1F, 0x8B, 8, 0, 0, 0, 0, 0, 0, 0xFF))  # no name, no mtime, unknown OS
MAX_STORED_BLOCK = 0xFFFF
WINDOW_BYTES = 32_768
MIN_MATCH, MAX_MATCH = 3, 258
EMPTY_STORED_BLOCK_BODY = b"\x00\x00\xff\xff"

_LENGTH_BASES = (3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83,
                 99, 115, 131, 163, 195, 227, 258)  # fmt: skip
_LENGTH_EXTRA = (0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5,
                 5, 0)  # fmt: skip
_DISTANCE_BASES = (1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769,
                   1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577)  # fmt: skip
_DISTANCE_EXTRA = (0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11,
                   11, 12, 12, 13, 13)  # fmt: skip


def gzip_compress(body: bytes, level: int = 6) -> bytes:
    """A gzip member with a zero mtime, so equal bodies give equal bytes."""
    compressor = zlib.compressobj(level, zlib.DEFLATED, -15, 9)
    deflated = compressor.compress(body) + compressor.flush(zlib.Z_FINISH)
    return GZIP_HEADER + deflated + _trailer(body)


def _trailer(body: bytes) -> bytes:
    return struct.pack("<II", zlib.crc32(body) & 0xFFFFFFFF, len(body) & 0xFFFFFFFF)


def stored_blocks(value: bytes) -> bytes:
    """`value` as non-final stored deflate blocks (the stream is byte-aligned where they go)."""
    pieces = []
    for start in range(0, len(value), MAX_STORED_BLOCK):
        chunk = value[start : start + MAX_STORED_BLOCK]
        pieces.append(b"\x00" + struct.pack("<HH", len(chunk), len(chunk) ^ 0xFFFF) + chunk)
    return b"".join(pieces)


class _Bits:
    """Deflate's bit order: fields least significant bit first, Huffman codes most first."""

    def __init__(self) -> None:
        self.value = 0
        self.count = 0

    def field(self, value: int, width: int) -> None:
        self.value |= value << self.count
        self.count += width

    def code(self, code: int, width: int) -> None:
        self.field(int(format(code, f"0{width}b")[::-1], 2), width)

    def aligned_bytes(self) -> bytes:
        return self.value.to_bytes((self.count + 7) // 8, "little")


def _fixed_literal_code(symbol: int) -> tuple[int, int]:
    if symbol <= 143:
        return 0x30 + symbol, 8
    if symbol <= 255:
        return 0x190 + symbol - 144, 9
    if symbol <= 279:
        return symbol - 256, 7
    return 0xC0 + symbol - 280, 8


def _bucket(value: int, bases: Sequence[int]) -> int:
    index = 0
    while index + 1 < len(bases) and bases[index + 1] <= value:
        index += 1
    return index


def copy_block(length: int, distance: int) -> bytes:
    """A non-final fixed-Huffman block copying `length` bytes from `distance` back, then an empty
    stored block, so the stream is byte-aligned again afterwards."""
    if not MIN_MATCH <= length <= MAX_MATCH or not 1 <= distance <= WINDOW_BYTES:
        raise ValueError("a single deflate match copies 3..258 bytes from at most 32 KiB back")
    bits = _Bits()
    bits.field(0, 1)  # not the final block
    bits.field(1, 2)  # fixed Huffman codes
    length_index = _bucket(length, _LENGTH_BASES)
    bits.code(*_fixed_literal_code(257 + length_index))
    bits.field(length - _LENGTH_BASES[length_index], _LENGTH_EXTRA[length_index])
    distance_index = _bucket(distance, _DISTANCE_BASES)
    bits.code(distance_index, 5)
    bits.field(distance - _DISTANCE_BASES[distance_index], _DISTANCE_EXTRA[distance_index])
    bits.code(*_fixed_literal_code(256))  # end of block
    bits.field(0, 3)  # an empty stored block: not final, type 00, then pad to the byte
    return bits.aligned_bytes() + EMPTY_STORED_BLOCK_BODY


class SplicedBody:
    """Parts with named slots between them; plain and gzip bodies for given slot values."""

    __slots__ = (
        "parts",
        "slots",
        "fixed_widths",
        "size",
        "_plain_pieces",
        "_plain_positions",
        "_gzip_pieces",
        "_gzip_positions",
    )

    def __init__(
        self,
        parts: Sequence[bytes],
        slots: Sequence[str],
        widths: Mapping[str, int | None],
        level: int = 9,
    ) -> None:
        if len(parts) != len(slots) + 1:
            raise ValueError("a spliced body has one more part than slots")
        if any(b"\x00" in part for part in parts):
            raise ValueError("parts must not contain NUL bytes")
        self.parts = tuple(parts)
        self.slots = tuple(slots)
        self.fixed_widths = {
            name: width for name in self.slots if (width := widths.get(name)) is not None
        }
        self._plain_pieces: list[bytes] = [self.parts[0]]
        self._plain_positions: list[tuple[int, str]] = []
        compressor = zlib.compressobj(level, zlib.DEFLATED, -15, 9)
        gzip_pieces: list[bytes] = [GZIP_HEADER]
        self._gzip_positions: list[tuple[int, str]] = []
        offset = 0
        last_offsets: dict[str, int] = {}  # where each fixed slot last began, since a reset
        for index, part in enumerate(self.parts):
            offset += len(part)
            chunk = compressor.compress(part)
            if index == len(self.slots):
                gzip_pieces.append(chunk + compressor.flush(zlib.Z_FINISH))
                break
            name = self.slots[index]
            self._plain_positions.append((len(self._plain_pieces), name))
            self._plain_pieces += [b"", self.parts[index + 1]]
            width = self.fixed_widths.get(name)
            if width is None:
                gzip_pieces.append(chunk + compressor.flush(zlib.Z_FULL_FLUSH))
                self._gzip_positions.append((len(gzip_pieces), name))
                gzip_pieces.append(b"")
                last_offsets.clear()  # later distances depend on this value's length
                continue
            gzip_pieces.append(chunk + compressor.flush(zlib.Z_SYNC_FLUSH))
            previous = last_offsets.get(name)
            if (
                previous is not None
                and MIN_MATCH <= width <= MAX_MATCH
                and (offset - previous <= WINDOW_BYTES)
            ):
                gzip_pieces.append(copy_block(width, offset - previous))
            else:
                self._gzip_positions.append((len(gzip_pieces), name))
                gzip_pieces.append(b"")
            last_offsets[name] = offset
            offset += width
            compressor.compress(b"\x00" * width)
            compressor.flush(zlib.Z_SYNC_FLUSH)  # discarded: the value itself goes here
        self._gzip_pieces = gzip_pieces
        self.size = sum(map(len, self.parts)) + sum(map(len, gzip_pieces)) + 64 * len(self.slots)

    def body(self, values: Mapping[str, bytes]) -> bytes:
        """The plain body with the values in their slots."""
        pieces = self._plain_pieces.copy()
        for position, name in self._plain_positions:
            pieces[position] = values[name]
        return b"".join(pieces)

    def gzip_body(self, values: Mapping[str, bytes]) -> bytes:
        """The gzip body; compresses per request only when a fixed-width value has another
        width (then it is simply the compressed plain body)."""
        plain = self.body(values)
        for name, width in self.fixed_widths.items():
            if len(values[name]) != width:
                return gzip_compress(plain)
        stored = {name: stored_blocks(value) for name, value in values.items()}
        pieces = self._gzip_pieces.copy()
        for position, name in self._gzip_positions:
            pieces[position] = stored[name]
        pieces.append(_trailer(plain))
        return b"".join(pieces)
