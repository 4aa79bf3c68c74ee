"""Draw the demo catalogue's pictures into static/img/ (products 400x400, sliders 960x320, WebP).

The pictures are committed, so nobody needs to run this. Pillow is needed only here and is not a
dependency of the shop; to redraw after changing storefront/demo.py:

    python3 -m venv /tmp/pillow-venv && /tmp/pillow-venv/bin/pip install pillow
    PYTHONPATH=/tmp/pillow-venv/lib/python3.11/site-packages .venv/bin/python \
        scripts/make_demo_images.py
"""

import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from storefront.demo import DEMO_PRODUCTS, DEMO_SLIDERS, DemoProduct  # noqa: E402

MAX_BYTES = 8 * 1024
FONT_PATHS = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Bold.ttf",
)
INK = (29, 36, 48)
SCREEN = (240, 240, 240)
KENTE = ((244, 180, 0), (0, 122, 61), (206, 17, 38), (20, 20, 20))
BACKGROUNDS = {
    "phones": (222, 234, 250),
    "accessories": (232, 226, 248),
    "fashion": (253, 240, 210),
    "beauty": (246, 236, 224),
    "pantry": (228, 243, 228),
}

Draw = ImageDraw.ImageDraw
Shape = Callable[[Draw, tuple[int, int, int]], None]


def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    for path in FONT_PATHS:
        if Path(path).exists():
            return ImageFont.truetype(path, size)
    return ImageFont.load_default(size)


def darker(colour: tuple[int, int, int], by: int = 60) -> tuple[int, int, int]:
    return (max(colour[0] - by, 0), max(colour[1] - by, 0), max(colour[2] - by, 0))


def phone(draw: Draw, colour: tuple[int, int, int]) -> None:
    draw.rounded_rectangle((140, 40, 260, 290), radius=18, fill=darker(colour, 90))
    draw.rounded_rectangle((150, 58, 250, 272), radius=8, fill=colour)
    draw.ellipse((194, 46, 206, 54), fill=(30, 30, 30))
    for row in range(3):
        for column in range(3):
            x, y = 162 + column * 30, 90 + row * 34
            draw.rounded_rectangle((x, y, x + 18, y + 18), radius=4, fill=(255, 255, 255))


def feature_phone(draw: Draw, colour: tuple[int, int, int]) -> None:
    draw.rounded_rectangle((150, 40, 250, 290), radius=22, fill=darker(colour, 60))
    draw.rectangle((165, 60, 235, 130), fill=(190, 220, 240))
    for row in range(4):
        for column in range(3):
            x, y = 168 + column * 24, 150 + row * 30
            draw.rounded_rectangle((x, y, x + 16, y + 18), radius=3, fill=(235, 235, 235))


def charger(draw: Draw, colour: tuple[int, int, int]) -> None:
    draw.rounded_rectangle((140, 110, 260, 240), radius=14, fill=colour)
    for x in (160, 230):
        draw.rectangle((x, 80, x + 10, 110), fill=(150, 150, 150))
    draw.rectangle((195, 60, 205, 110), fill=(150, 150, 150))
    draw.rounded_rectangle((185, 200, 215, 212), radius=3, fill=INK)


def power_bank(draw: Draw, colour: tuple[int, int, int]) -> None:
    draw.rounded_rectangle((120, 60, 280, 280), radius=20, fill=colour)
    for index in range(4):
        draw.ellipse((160 + index * 22, 240, 172 + index * 22, 252), fill=(120, 230, 140))


def cable(draw: Draw, colour: tuple[int, int, int]) -> None:
    draw.arc((90, 60, 310, 280), start=200, end=520, fill=colour, width=12)
    draw.rounded_rectangle((88, 150, 118, 200), radius=6, fill=INK)
    draw.rounded_rectangle((282, 150, 312, 200), radius=6, fill=INK)


def earbuds(draw: Draw, colour: tuple[int, int, int]) -> None:
    draw.rounded_rectangle((130, 170, 270, 280), radius=40, fill=darker(colour, 30))
    for x in (150, 215):
        draw.ellipse((x, 60, x + 40, 100), fill=colour)
        draw.rounded_rectangle((x + 12, 90, x + 26, 160), radius=7, fill=colour)


def speaker(draw: Draw, colour: tuple[int, int, int]) -> None:
    draw.rounded_rectangle((90, 90, 310, 250), radius=50, fill=colour)
    for x in (125, 235):
        draw.ellipse((x - 5, 125, x + 45, 175 + 40), fill=INK)
        draw.ellipse((x + 10, 150, x + 30, 190), fill=(90, 90, 90))


def kente_block(draw: Draw, box: tuple[int, int, int, int]) -> None:
    left, top, right, bottom = box
    stripe = 14
    for index, y in enumerate(range(top, bottom, stripe)):
        draw.rectangle((left, y, right, min(y + stripe - 1, bottom)), fill=KENTE[index % 4])
    for index, x in enumerate(range(left, right, stripe * 3)):
        if index % 2:
            draw.rectangle((x, top, x + stripe, bottom), fill=KENTE[(index + 1) % 4])


def tote(draw: Draw, colour: tuple[int, int, int]) -> None:
    draw.arc((150, 30, 250, 150), start=180, end=360, fill=(120, 70, 30), width=10)
    draw.polygon(((110, 100), (290, 100), (310, 290), (90, 290)), fill=colour)
    kente_block(draw, (120, 150, 280, 240))


def stole(draw: Draw, colour: tuple[int, int, int]) -> None:
    del colour
    kente_block(draw, (120, 40, 180, 290))
    kente_block(draw, (220, 40, 280, 290))
    draw.polygon(((180, 40), (220, 40), (200, 80)), fill=KENTE[0])


def shirt(draw: Draw, colour: tuple[int, int, int]) -> None:
    body = ((140, 60), (260, 60), (320, 110), (290, 150), (260, 130), (260, 290), (140, 290))
    draw.polygon(body + ((140, 130), (110, 150), (80, 110)), fill=colour)
    for row in range(5):
        for column in range(4):
            x, y = 155 + column * 28 + (row % 2) * 14, 90 + row * 40
            draw.ellipse((x, y, x + 16, y + 16), fill=(244, 180, 0))


def smock(draw: Draw, colour: tuple[int, int, int]) -> None:
    draw.polygon(((120, 60), (280, 60), (330, 290), (70, 290)), fill=colour)
    for x in range(90, 320, 24):
        draw.line((x, 70, x, 290), fill=(240, 240, 240), width=6)
    draw.polygon(((180, 60), (220, 60), (200, 100)), fill=(250, 246, 238))


def sandals(draw: Draw, colour: tuple[int, int, int]) -> None:
    for x in (95, 210):
        draw.ellipse((x, 60, x + 95, 290), fill=darker(colour, 20))
        draw.rounded_rectangle((x + 5, 120, x + 90, 160), radius=10, fill=(20, 20, 20))
        draw.ellipse((x + 35, 128, x + 60, 152), fill=(244, 180, 0))


def jar(draw: Draw, colour: tuple[int, int, int]) -> None:
    draw.rounded_rectangle((130, 70, 270, 110), radius=8, fill=darker(colour, 80))
    draw.rounded_rectangle((115, 105, 285, 290), radius=24, fill=colour)
    draw.rectangle((135, 160, 265, 230), fill=(255, 255, 255))


def soap(draw: Draw, colour: tuple[int, int, int]) -> None:
    draw.rounded_rectangle((90, 120, 310, 260), radius=40, fill=colour)
    draw.ellipse((150, 150, 250, 230), outline=darker(colour, 40), width=6)


def bottle(draw: Draw, colour: tuple[int, int, int]) -> None:
    draw.rectangle((180, 40, 220, 80), fill=INK)
    draw.polygon(((180, 80), (220, 80), (260, 130), (140, 130)), fill=colour)
    draw.rounded_rectangle((140, 125, 260, 290), radius=14, fill=colour)
    draw.rectangle((150, 180, 250, 240), fill=(255, 255, 255))


def pouch(draw: Draw, colour: tuple[int, int, int]) -> None:
    draw.polygon(((130, 60), (270, 60), (290, 290), (110, 290)), fill=colour)
    draw.rectangle((130, 60, 270, 80), fill=darker(colour, 50))
    draw.ellipse((160, 150, 240, 230), fill=(255, 255, 255))


def sack(draw: Draw, colour: tuple[int, int, int]) -> None:
    draw.polygon(((150, 60), (250, 60), (300, 290), (100, 290)), fill=colour)
    draw.line((150, 80, 250, 80), fill=(120, 80, 40), width=10)
    draw.rectangle((140, 160, 260, 230), fill=(0, 122, 61))


def chocolate(draw: Draw, colour: tuple[int, int, int]) -> None:
    draw.rounded_rectangle((90, 90, 310, 260), radius=12, fill=colour)
    for row in range(3):
        for column in range(4):
            x, y = 102 + column * 52, 102 + row * 52
            draw.rounded_rectangle((x, y, x + 44, y + 44), radius=6, fill=darker(colour, 25))


PRODUCT_SHAPES: dict[str, tuple[Shape, tuple[int, int, int]]] = {
    "tecno-spark-20": (phone, (80, 140, 230)),
    "infinix-hot-40i": (phone, (40, 180, 160)),
    "samsung-galaxy-a15": (phone, (110, 110, 200)),
    "itel-a70": (phone, (230, 120, 70)),
    "nokia-105-feature-phone": (feature_phone, (70, 90, 130)),
    "usb-c-fast-charger-20w": (charger, (250, 250, 250)),
    "power-bank-20000mah": (power_bank, (60, 70, 90)),
    "braided-usb-c-cable": (cable, (200, 40, 60)),
    "wireless-earbuds": (earbuds, (245, 245, 245)),
    "bluetooth-speaker": (speaker, (20, 120, 200)),
    "kente-tote-bag": (tote, (200, 170, 120)),
    "kente-graduation-stole": (stole, (0, 0, 0)),
    "ankara-print-shirt": (shirt, (30, 90, 170)),
    "batakari-smock": (smock, (70, 50, 120)),
    "ahenema-leather-sandals": (sandals, (150, 90, 40)),
    "raw-shea-butter-500g": (jar, (240, 230, 200)),
    "african-black-soap-250g": (soap, (70, 55, 45)),
    "coconut-oil-250ml": (bottle, (230, 240, 235)),
    "baobab-seed-oil-100ml": (bottle, (220, 170, 60)),
    "moringa-leaf-powder-200g": (pouch, (80, 150, 60)),
    "shito-pepper-sauce": (jar, (120, 40, 30)),
    "dried-sobolo-leaves": (pouch, (150, 20, 60)),
    "gari-2kg": (sack, (235, 220, 180)),
    "ghana-dark-chocolate": (chocolate, (95, 55, 35)),
}


def save_webp(image: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    for quality in (70, 60, 50, 40, 30):
        image.save(path, "WEBP", quality=quality, method=6)
        if path.stat().st_size <= MAX_BYTES:
            return
    raise SystemExit(f"{path} is {path.stat().st_size} bytes even at low quality")


def product_picture(product: DemoProduct) -> Image.Image:
    image = Image.new("RGB", (400, 400), BACKGROUNDS[product.category_slug])
    draw = ImageDraw.Draw(image)
    shape, colour = PRODUCT_SHAPES[product.slug]
    shape(draw, colour)
    label_font = font(24)
    main_name, _, size = product.name.partition(" (")
    lines = [main_name, f"({size}"] if size else textwrap.wrap(product.name, width=24)[:2]
    top = 388 - 30 * len(lines)
    for index, line in enumerate(lines):
        draw.text((200, top + index * 30), line, font=label_font, fill=INK, anchor="ma")
    return image


def slider_picture(index: int) -> Image.Image:
    """Artwork on the right; the left stays plain for the title the page lays over it."""
    backgrounds = ((18, 60, 110), (90, 40, 10), (0, 110, 80))
    image = Image.new("RGB", (960, 320), backgrounds[index % 3])
    draw = ImageDraw.Draw(image)
    if index == 0:
        for offset, colour in enumerate(((80, 140, 230), (40, 180, 160), (230, 120, 70))):
            x = 560 + offset * 120
            draw.rounded_rectangle((x, 50 + offset * 20, x + 100, 280), radius=16, fill=colour)
            draw.rounded_rectangle((x + 8, 66 + offset * 20, x + 92, 262), radius=8, fill=SCREEN)
    elif index == 1:
        kente_block(draw, (560, 0, 960, 320))
    else:
        draw.text((760, 160), "10%", font=font(120), fill=(244, 180, 0), anchor="mm")
    return image


def main() -> None:
    for product in DEMO_PRODUCTS:
        save_webp(product_picture(product), ROOT / "static" / product.image)
    for index, slider in enumerate(DEMO_SLIDERS):
        save_webp(slider_picture(index), ROOT / "static" / slider.image)
    written = sorted((ROOT / "static" / "img").rglob("*.webp"))
    print(f"wrote {len(written)} pictures, largest {max(p.stat().st_size for p in written)} bytes")


if __name__ == "__main__":
    main()
