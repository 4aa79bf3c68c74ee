"""Product and slider photos: an upload checked by what it holds (JPEG, PNG or WebP, whatever its
name says), turned upright, stripped of metadata and re-encoded as WebP at a card and a page
size, each named by the hash of its bytes. CPU-bound: call it in a thread
(services/uploads.py `store_photo` does)."""

import hashlib
import warnings
from dataclasses import dataclass
from io import BytesIO

from PIL import Image, ImageFile, ImageOps

MAX_UPLOAD_BYTES = 8 * 1024 * 1024
MAX_UPLOAD_PIXELS = 40_000_000
CARD_WIDTH = 400
PAGE_WIDTH = 1200
# A very tall photo is cut down to this height per unit of width (WebP itself stops at 16383).
MAX_HEIGHT_PER_WIDTH = 2
WEBP_QUALITY = 82
# Pillow's names; a multi-picture JPEG from a phone camera (MPO) is a JPEG whose first picture
# is the photo.
ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP")
ACCEPTED_NAMES = "JPEG, PNG or WebP"
# Other formats people upload, known by their first bytes, so the refusal can name them.
OTHER_FORMAT_SIGNATURES: tuple[tuple[int, bytes, str], ...] = (
    (0, b"GIF87a", "a GIF"),
    (0, b"GIF89a", "a GIF"),
    (4, b"ftypheic", "a HEIC photo (the iPhone's own format)"),
    (4, b"ftypheix", "a HEIC photo (the iPhone's own format)"),
    (4, b"ftypmif1", "a HEIF photo"),
    (4, b"ftypavif", "an AVIF image"),
    (0, b"BM", "a BMP image"),
    (0, b"II*\x00", "a TIFF image"),
    (0, b"MM\x00*", "a TIFF image"),
    (0, b"%PDF", "a PDF document"),
)

# Pillow's own bomb check, at our limit: Image.open warns past it and refuses at twice it. The
# warning is made an error too (once, at import: changing warning filters per call is not
# thread-safe); process_upload also compares the header's size itself, so the limit holds even
# where something resets the warning filters.
Image.MAX_IMAGE_PIXELS = MAX_UPLOAD_PIXELS
warnings.simplefilter("error", Image.DecompressionBombWarning)
# A truncated file must fail to load, not load with grey where its end should be.
ImageFile.LOAD_TRUNCATED_IMAGES = False


class ImageRefused(ValueError):
    """The upload is not a photo the shop takes; the message says why, for the person uploading."""


@dataclass(frozen=True, slots=True)
class EncodedImage:
    """One WebP rendition: its bytes, its size in pixels, and its name (`<sha256>.webp`)."""

    name: str
    body: bytes
    width: int
    height: int


@dataclass(frozen=True, slots=True)
class ProcessedImage:
    """An accepted upload as the shop keeps it: a card-sized and a page-sized WebP."""

    card: EncodedImage
    page: EncodedImage
    source_format: str  # JPEG, PNG or WEBP: what the upload was


def process_upload(
    upload: bytes, *, max_bytes: int = MAX_UPLOAD_BYTES, max_pixels: int = MAX_UPLOAD_PIXELS
) -> ProcessedImage:
    """Check an uploaded file by its content and re-encode it; ImageRefused says why not.

    `max_pixels` may lower the limit, not raise it: Pillow's own check stops at
    MAX_UPLOAD_PIXELS."""
    if len(upload) > max_bytes:
        raise ImageRefused(
            f"That file is {size_text(len(upload))}; a photo may be at most "
            f"{size_text(max_bytes)}. Please choose a smaller one."
        )
    image = _open(upload, max_pixels)
    source_format = "JPEG" if image.format == "MPO" else str(image.format)
    try:
        image.load()
    except Exception as error:
        # Truncated or corrupt data fails here (OSError, SyntaxError, EOFError, ValueError...):
        # whatever Pillow cannot decode is refused, never a 500.
        raise ImageRefused(
            "That photo is damaged or incomplete (perhaps it did not finish copying). "
            "Please choose the file again or export it anew."
        ) from error
    upright = _upright(image)
    page_image = _resized(_without_metadata(_rgb_or_rgba(upright)), PAGE_WIDTH)
    card_image = _resized(page_image, CARD_WIDTH)
    return ProcessedImage(
        card=_encoded(card_image), page=_encoded(page_image), source_format=source_format
    )


def _open(upload: bytes, max_pixels: int) -> Image.Image:
    """The image with only its header read, refused when it is not one we take or too large."""
    try:
        image = Image.open(BytesIO(upload), formats=ACCEPTED_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise _too_many_pixels(max_pixels) from error
    except Exception as error:
        raise ImageRefused(_not_accepted_message(upload)) from error
    if image.width < 1 or image.height < 1:
        raise ImageRefused(_not_accepted_message(upload))
    if image.width * image.height > max_pixels:
        raise _too_many_pixels(max_pixels)
    if image.format in {"PNG", "WEBP"} and getattr(image, "is_animated", False):
        # Refused rather than cut to its first frame, which may not be the picture meant.
        raise ImageRefused(
            "That is an animated image; the shop shows still photos only. "
            "Please choose a still JPEG, PNG or WebP."
        )
    return image


def _not_accepted_message(upload: bytes) -> str:
    for offset, signature, described in OTHER_FORMAT_SIGNATURES:
        if upload[offset : offset + len(signature)] == signature:
            return (
                f"That file is {described}; the shop takes {ACCEPTED_NAMES} photos. "
                "Please save it as one of those and upload it again."
            )
    return (
        f"That file is not a {ACCEPTED_NAMES} photo (the shop looks at what the file holds, "
        "not its name). Please choose a photo in one of those formats."
    )


def _too_many_pixels(max_pixels: int) -> ImageRefused:
    millions = max_pixels // 1_000_000
    limit = f"{millions} million" if millions else f"{max_pixels:,}"
    return ImageRefused(
        f"That image has more than {limit} pixels, the most a photo may have. "
        "Please choose a smaller one (or resize it)."
    )


def size_text(size: int) -> str:
    """A file size as people read it: "293 KB", "8.0 MB"."""
    if size < 1024 * 1024:
        return f"{-(-size // 1024)} KB"
    return f"{size / (1024 * 1024):.1f} MB"


def _upright(image: Image.Image) -> Image.Image:
    """The image turned as its EXIF orientation says (phone cameras store it sideways)."""
    try:
        return ImageOps.exif_transpose(image)
    except Exception:
        # Unreadable EXIF: the pixels are fine, so show them as stored rather than refuse.
        return image


def _rgb_or_rgba(image: Image.Image) -> Image.Image:
    if image.mode in {"I;16", "I;16B", "I;16L", "I;16N", "I"}:
        # 16-bit greyscale: scale to 8 bits (a plain convert would clip nearly all to white).
        image = image.convert("I").point(lambda value: value * (1 / 256)).convert("L")
    elif image.mode == "F":
        image = image.convert("L")
    if image.has_transparency_data:
        rgba = image.convert("RGBA")
        # An alpha channel that hides nothing costs bytes and nothing else.
        if rgba.getchannel("A").getextrema() == (255, 255):
            return rgba.convert("RGB")
        return rgba
    return image if image.mode == "RGB" else image.convert("RGB")


def _without_metadata(image: Image.Image) -> Image.Image:
    # WebP's encoder writes only the EXIF, ICC and XMP passed to save(); dropping info as well
    # keeps the camera's data (GPS, serial numbers) from travelling any further.
    image.info = {}
    return image


def fitted_size(width: int, height: int, max_width: int) -> tuple[int, int]:
    """The size a picture of width × height gets at `max_width`: scaled down to fit it (and a
    height of MAX_HEIGHT_PER_WIDTH times it), never up. The card size of a stored page-size
    photo is fitted_size(page width, page height, CARD_WIDTH)."""
    scale = min(1.0, max_width / width, max_width * MAX_HEIGHT_PER_WIDTH / height)
    if scale >= 1.0:
        return width, height
    return max(1, round(width * scale)), max(1, round(height * scale))


def _resized(image: Image.Image, max_width: int) -> Image.Image:
    """Scaled down to fitted_size; the same image when it fits already."""
    size = fitted_size(image.width, image.height, max_width)
    if size == image.size:
        return image
    resized = image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    resized.info = {}
    return resized


def _encoded(image: Image.Image) -> EncodedImage:
    buffer = BytesIO()
    image.save(buffer, format="WEBP", quality=WEBP_QUALITY, method=4)
    body = buffer.getvalue()
    name = f"{hashlib.sha256(body).hexdigest()}.webp"
    return EncodedImage(name=name, body=body, width=image.width, height=image.height)
