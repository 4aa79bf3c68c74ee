"""The photo pipeline: an upload is judged by its content, refused with a reason, or made upright,
stripped and re-encoded as WebP at two sizes that are never larger than the original."""

import hashlib
import struct
import warnings
import zlib
from io import BytesIO

import pytest
from PIL import Image

from storefront.lib.images import (
    CARD_WIDTH,
    MAX_UPLOAD_PIXELS,
    PAGE_WIDTH,
    EncodedImage,
    ImageRefused,
    fitted_size,
    process_upload,
)

EXIF_ORIENTATION = 0x0112
EXIF_GPS_IFD = 0x8825
# EXIF orientation 6: the camera was turned a quarter to the right; show the stored pixels
# turned a quarter clockwise.
ROTATE_CLOCKWISE = 6


def encoded(image: Image.Image, image_format: str, **options: object) -> bytes:
    buffer = BytesIO()
    image.save(buffer, image_format, **options)
    return buffer.getvalue()


def opened(rendition: EncodedImage) -> Image.Image:
    image = Image.open(BytesIO(rendition.body))
    image.load()
    return image


def halves(size: tuple[int, int], left: str, right: str) -> Image.Image:
    """A picture whose left half is one colour and right half another."""
    image = Image.new("RGB", size, left)
    image.paste(Image.new("RGB", (size[0] // 2, size[1]), right), (size[0] // 2, 0))
    return image


def sideways_camera_jpeg() -> bytes:
    """A 1600 × 800 JPEG as a phone stores a portrait photo: sideways, with EXIF orientation 6,
    and the camera's GPS position."""
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = ROTATE_CLOCKWISE
    exif[0x010F] = "PhoneMaker"
    exif.get_ifd(EXIF_GPS_IFD)[2] = (5.0, 33.0, 0.0)  # latitude: Accra
    return encoded(halves((1600, 800), "red", "blue"), "JPEG", exif=exif, quality=95)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares its size and holds no pixel data at all: decoding it would fail."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body))
            + kind
            + body
            + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def sixty_megapixel_png() -> bytes:
    """8000 × 7500 pixels of one colour, 1 bit each: a few kilobytes on disk."""
    return encoded(Image.new("1", (8000, 7500)), "PNG")


def test_a_sideways_phone_jpeg_comes_out_upright_without_its_metadata() -> None:
    photo = process_upload(sideways_camera_jpeg())

    assert photo.source_format == "JPEG"
    assert (photo.page.width, photo.page.height) == (800, 1600)
    assert (photo.card.width, photo.card.height) == (CARD_WIDTH, 800)
    for rendition in (photo.card, photo.page):
        image = opened(rendition)
        assert image.format == "WEBP"
        assert image.size == (rendition.width, rendition.height)
        # Turned clockwise: the stored left half (red) is now on top, the right (blue) below.
        top = image.getpixel((image.width // 2, image.height // 10))
        bottom = image.getpixel((image.width // 2, image.height * 9 // 10))
        assert isinstance(top, tuple) and isinstance(bottom, tuple)
        assert top[0] > 200 and top[2] < 60, top
        assert bottom[2] > 200 and bottom[0] < 60, bottom
        assert not image.getexif()
        assert not {"exif", "icc_profile", "xmp"} & set(image.info)
        assert b"PhoneMaker" not in rendition.body


def test_a_png_keeps_its_transparency() -> None:
    picture = Image.new("RGBA", (600, 300), (0, 128, 0, 255))
    picture.paste(Image.new("RGBA", (300, 300), (0, 0, 0, 0)), (0, 0))

    photo = process_upload(encoded(picture, "PNG"))

    assert photo.source_format == "PNG"
    assert (photo.page.width, photo.page.height) == (600, 300)
    assert (photo.card.width, photo.card.height) == (400, 200)
    image = opened(photo.page)
    assert image.mode == "RGBA"
    transparent = image.getpixel((10, 150))
    opaque = image.getpixel((590, 150))
    assert isinstance(transparent, tuple) and isinstance(opaque, tuple)
    assert transparent[3] == 0
    assert opaque[3] == 255


def test_an_alpha_channel_that_hides_nothing_is_dropped() -> None:
    photo = process_upload(encoded(Image.new("RGBA", (50, 50), (9, 9, 9, 255)), "PNG"))

    assert opened(photo.page).mode == "RGB"


def test_a_webp_is_accepted_and_scaled_to_both_widths() -> None:
    photo = process_upload(encoded(Image.new("RGB", (2400, 1200), "orange"), "WEBP"))

    assert photo.source_format == "WEBP"
    assert (photo.page.width, photo.page.height) == (PAGE_WIDTH, 600)
    assert (photo.card.width, photo.card.height) == (CARD_WIDTH, 200)


def test_a_multi_picture_jpeg_from_a_camera_is_a_jpeg() -> None:
    pictures = [Image.new("RGB", (64, 48), "red"), Image.new("RGB", (64, 48), "blue")]
    upload = encoded(pictures[0], "MPO", save_all=True, append_images=pictures[1:])

    photo = process_upload(upload)

    assert photo.source_format == "JPEG"
    assert (photo.page.width, photo.page.height) == (64, 48)


def test_sixteen_bit_greyscale_keeps_its_shades() -> None:
    photo = process_upload(encoded(Image.new("I;16", (20, 20), 32768), "PNG"))

    grey = opened(photo.page).getpixel((10, 10))
    assert isinstance(grey, tuple)
    assert 120 <= grey[0] <= 136, grey


@pytest.mark.parametrize(
    ("size", "page_size", "card_size"),
    [
        ((300, 200), (300, 200), (300, 200)),
        ((800, 100), (800, 100), (400, 50)),
        ((1, 1), (1, 1), (1, 1)),
        ((1200, 1200), (1200, 1200), (400, 400)),
    ],
)
def test_small_pictures_are_never_enlarged(
    size: tuple[int, int], page_size: tuple[int, int], card_size: tuple[int, int]
) -> None:
    photo = process_upload(encoded(Image.new("RGB", size, "teal"), "PNG"))

    assert (photo.page.width, photo.page.height) == page_size
    assert (photo.card.width, photo.card.height) == card_size
    assert opened(photo.page).size == page_size


def test_a_very_tall_picture_is_cut_down_to_twice_its_width_in_height() -> None:
    photo = process_upload(encoded(Image.new("RGB", (1000, 20000), "navy"), "PNG"))

    assert (photo.page.width, photo.page.height) == (120, 2400)
    assert (photo.card.width, photo.card.height) == (40, 800)


def test_the_same_upload_gets_the_same_names_and_bytes() -> None:
    upload = sideways_camera_jpeg()

    first, second = process_upload(upload), process_upload(upload)

    assert (first.card.name, first.page.name) == (second.card.name, second.page.name)
    assert first.card.body == second.card.body
    assert first.card.name != first.page.name
    for rendition in (first.card, first.page):
        assert rendition.name == hashlib.sha256(rendition.body).hexdigest() + ".webp"


@pytest.mark.parametrize(
    ("upload", "reason"),
    [
        pytest.param(
            b"Dear shop, this is a text file named photo.jpg\n",
            "not a JPEG, PNG or WebP",
            id="text-named-jpg",
        ),
        pytest.param(b"", "not a JPEG, PNG or WebP", id="empty"),
        pytest.param(encoded(Image.new("RGB", (40, 40), "red"), "GIF"), "is a GIF", id="gif"),
        pytest.param(encoded(Image.new("RGB", (40, 40), "red"), "BMP"), "is a BMP", id="bmp"),
        pytest.param(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00", "HEIC", id="heic"),
        pytest.param(encoded(Image.new("RGB", (40, 40)), "TIFF"), "is a TIFF", id="tiff"),
    ],
)
def test_anything_but_jpeg_png_or_webp_is_refused_by_its_content(
    upload: bytes, reason: str
) -> None:
    with pytest.raises(ImageRefused, match=reason) as refusal:
        process_upload(upload)

    assert "JPEG, PNG or WebP" in str(refusal.value)


def test_a_sixty_megapixel_png_is_refused() -> None:
    with pytest.raises(ImageRefused, match="more than 40 million pixels"):
        process_upload(sixty_megapixel_png())


# "error" is how the app runs (lib/images.py sets it, pyproject.toml too for the tests): Pillow's
# own check refuses in Image.open. "ignore": ours, on the header's size, still does.
@pytest.mark.parametrize("bomb_warning", ["error", "ignore"])
def test_too_many_pixels_are_refused_from_the_header_before_decoding(bomb_warning: str) -> None:
    # The header says 8000 × 7500 and no pixel data follows: decoding it would say "damaged",
    # so the pixel refusal shows the size was judged before any decoding.
    with warnings.catch_warnings():
        warnings.simplefilter(bomb_warning, Image.DecompressionBombWarning)
        with pytest.raises(ImageRefused, match="more than 40 million pixels"):
            process_upload(png_header_only(8000, 7500))


def test_a_limit_just_above_the_picture_lets_it_through() -> None:
    upload = encoded(Image.new("RGB", (100, 100), "white"), "PNG")

    with pytest.raises(ImageRefused, match="more than 9,999 pixels"):
        process_upload(upload, max_pixels=9_999)
    assert process_upload(upload, max_pixels=10_000).page.width == 100
    assert MAX_UPLOAD_PIXELS == 40_000_000


def test_a_decompression_bomb_far_past_the_limit_is_refused() -> None:
    with pytest.raises(ImageRefused, match="million pixels"):
        process_upload(png_header_only(20_000, 20_000))


def test_a_truncated_jpeg_is_refused_as_damaged() -> None:
    photo = encoded(Image.effect_noise((640, 480), 64).convert("RGB"), "JPEG", quality=90)

    with pytest.raises(ImageRefused, match="damaged or incomplete"):
        process_upload(photo[: len(photo) // 2])


def test_a_png_with_corrupt_data_is_refused_as_damaged() -> None:
    picture = encoded(Image.effect_noise((200, 200), 64).convert("RGB"), "PNG")
    corrupt = bytearray(picture)
    middle = len(corrupt) // 2
    corrupt[middle : middle + 64] = bytes(64)

    with pytest.raises(ImageRefused, match="damaged or incomplete"):
        process_upload(bytes(corrupt))


def test_an_oversize_file_is_refused_before_it_is_read() -> None:
    upload = encoded(Image.new("RGB", (10, 10)), "PNG") + bytes(2048)

    with pytest.raises(ImageRefused, match="That file is 3 KB; a photo may be at most 1 KB"):
        process_upload(upload, max_bytes=1024)


def test_an_eight_megabyte_limit_names_the_sizes() -> None:
    upload = b"\xff\xd8\xff" + bytes(9 * 1024 * 1024)

    with pytest.raises(ImageRefused, match=r"That file is 9\.0 MB; a photo may be at most 8\.0 MB"):
        process_upload(upload)


@pytest.mark.parametrize("image_format", ["PNG", "WEBP"])
def test_an_animated_image_is_refused(image_format: str) -> None:
    frames = [Image.new("RGB", (30, 30), colour) for colour in ("red", "green", "blue")]
    upload = encoded(frames[0], image_format, save_all=True, append_images=frames[1:])

    with pytest.raises(ImageRefused, match="animated image"):
        process_upload(upload)


@pytest.mark.parametrize(
    "size", [(1600, 1000), (900, 1800), (1000, 20000), (300, 200), (401, 3), (1, 5000)]
)
def test_the_card_size_follows_from_the_page_size_alone(size: tuple[int, int]) -> None:
    photo = process_upload(encoded(Image.new("RGB", size, "teal"), "PNG"))

    page = (photo.page.width, photo.page.height)
    assert fitted_size(*size, PAGE_WIDTH) == page
    assert fitted_size(*page, CARD_WIDTH) == (photo.card.width, photo.card.height)
