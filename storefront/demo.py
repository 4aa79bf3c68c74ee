"""Demo catalogue for `storefront seed-demo`: a small Ghanaian shop with real pictures.

Images are paths under static/ (render them with `url_for('static', filename=image)`); the
pictures themselves are committed under static/img/ and drawn by scripts/make_demo_images.py.
Seeding only inserts what is missing (matched by slug, title or code), so it is safe to repeat
and never overwrites what an admin has changed since.
"""

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from storefront.models import Category, Coupon, Product, Slider
from storefront.models.coupon import CouponKind
from storefront.services.catalog import bump_catalog_version
from storefront.services.stock import receive_stock

DEMO_STOCK_REASON = "Demo shop: opening stock"


@dataclass(frozen=True)
class DemoCategory:
    slug: str
    name: str


@dataclass(frozen=True)
class DemoProduct:
    slug: str
    name: str
    category_slug: str
    price_minor: int
    stock: int
    description: str

    @property
    def image(self) -> str:
        return f"img/products/{self.slug}.webp"


@dataclass(frozen=True)
class DemoSlider:
    slug: str
    title: str
    subtitle: str
    link_url: str

    @property
    def image(self) -> str:
        return f"img/sliders/{self.slug}.webp"


@dataclass(frozen=True)
class DemoCoupon:
    code: str
    kind: str
    value: int
    min_subtotal_minor: int = 0
    max_uses_per_customer: int | None = None


@dataclass(frozen=True)
class SeedReport:
    categories: int
    products: int
    sliders: int
    coupons: int

    def __str__(self) -> str:
        return (
            f"added {self.categories} categories, {self.products} products, "
            f"{self.sliders} sliders, {self.coupons} coupons"
        )


DEMO_CATEGORIES = (
    DemoCategory("phones", "Phones"),
    DemoCategory("accessories", "Chargers & Accessories"),
    DemoCategory("fashion", "Kente & Fashion"),
    DemoCategory("beauty", "Shea & Beauty"),
    DemoCategory("pantry", "Pantry"),
)

DEMO_PRODUCTS = (
    DemoProduct(
        "tecno-spark-20",
        "Tecno Spark 20",
        "phones",
        189_900,
        12,
        "6.6-inch screen, 128 GB storage, dual SIM and a 5000 mAh battery that lasts the day.",
    ),
    DemoProduct(
        "infinix-hot-40i",
        "Infinix Hot 40i",
        "phones",
        165_000,
        9,
        "Big 6.56-inch display, 128 GB storage and 18 W charging. Dual SIM for MTN and Telecel.",
    ),
    DemoProduct(
        "samsung-galaxy-a15",
        "Samsung Galaxy A15",
        "phones",
        245_000,
        6,
        "Super AMOLED screen, 50 MP camera and four years of security updates.",
    ),
    DemoProduct(
        "itel-a70",
        "itel A70",
        "phones",
        99_900,
        20,
        "An affordable smartphone with a 6.6-inch screen and face unlock.",
    ),
    DemoProduct(
        "nokia-105-feature-phone",
        "Nokia 105 Feature Phone",
        "phones",
        25_000,
        40,
        "Calls, SMS, FM radio and a torch; the battery goes for weeks.",
    ),
    DemoProduct(
        "usb-c-fast-charger-20w",
        "20 W USB-C Fast Charger",
        "accessories",
        12_000,
        50,
        "Ghana three-pin plug, USB-C power delivery, safe for every phone we sell.",
    ),
    DemoProduct(
        "power-bank-20000mah",
        "Power Bank 20,000 mAh",
        "accessories",
        28_000,
        25,
        "Keeps two phones going through dumsor; USB-C in and out.",
    ),
    DemoProduct(
        "braided-usb-c-cable",
        "Braided USB-C Cable (1 m)",
        "accessories",
        4_500,
        80,
        "Nylon braided, 3 A, survives being pulled out of the trotro socket.",
    ),
    DemoProduct(
        "wireless-earbuds",
        "Wireless Earbuds",
        "accessories",
        35_000,
        15,
        "Bluetooth 5.3 earbuds with a charging case and 30 hours of music.",
    ),
    DemoProduct(
        "bluetooth-speaker",
        "Portable Bluetooth Speaker",
        "accessories",
        42_000,
        7,
        "Loud enough for the whole compound; splash-proof, 12-hour battery.",
    ),
    DemoProduct(
        "kente-tote-bag",
        "Kente Tote Bag",
        "fashion",
        18_000,
        14,
        "Hand-woven Bonwire kente panels on a sturdy canvas tote with leather handles.",
    ),
    DemoProduct(
        "kente-graduation-stole",
        "Kente Graduation Stole",
        "fashion",
        15_000,
        30,
        "Traditional kente stole, 72 inches, for graduations and celebrations.",
    ),
    DemoProduct(
        "ankara-print-shirt",
        "Ankara Print Shirt",
        "fashion",
        22_000,
        18,
        "Short-sleeved cotton shirt in a bold wax print. Sizes S to XXL.",
    ),
    DemoProduct(
        "batakari-smock",
        "Batakari Smock",
        "fashion",
        45_000,
        3,
        "Hand-woven northern smock (fugu) in striped cotton.",
    ),
    DemoProduct(
        "ahenema-leather-sandals",
        "Ahenema Leather Sandals",
        "fashion",
        20_000,
        10,
        "Traditional leather sandals made in Kumasi.",
    ),
    DemoProduct(
        "raw-shea-butter-500g",
        "Raw Shea Butter (500 g)",
        "beauty",
        6_000,
        60,
        "Unrefined ivory shea butter from the Northern Region, for skin and hair.",
    ),
    DemoProduct(
        "african-black-soap-250g",
        "African Black Soap (250 g)",
        "beauty",
        3_500,
        45,
        "Alata samina made with plantain skin ash, palm kernel oil and shea butter.",
    ),
    DemoProduct(
        "coconut-oil-250ml",
        "Cold-Pressed Coconut Oil (250 ml)",
        "beauty",
        5_500,
        22,
        "Virgin coconut oil pressed in the Western Region.",
    ),
    DemoProduct(
        "baobab-seed-oil-100ml",
        "Baobab Seed Oil (100 ml)",
        "beauty",
        8_500,
        0,
        "Light, fast-absorbing oil rich in vitamins A and E.",
    ),
    DemoProduct(
        "moringa-leaf-powder-200g",
        "Moringa Leaf Powder (200 g)",
        "beauty",
        4_000,
        33,
        "Shade-dried moringa leaves, finely milled. Stir into porridge or smoothies.",
    ),
    DemoProduct(
        "shito-pepper-sauce",
        "Shito Hot Pepper Sauce (350 g)",
        "pantry",
        4_500,
        40,
        "Black pepper sauce with dried fish and shrimp, the way Auntie makes it.",
    ),
    DemoProduct(
        "dried-sobolo-leaves",
        "Dried Sobolo Leaves (250 g)",
        "pantry",
        2_500,
        35,
        "Hibiscus flowers for sobolo: add ginger, pineapple peel and a little sugar.",
    ),
    DemoProduct(
        "gari-2kg",
        "Gari (2 kg)",
        "pantry",
        3_000,
        70,
        "Crisp, well-roasted cassava gari for soakings and eba.",
    ),
    DemoProduct(
        "ghana-dark-chocolate",
        "Ghana Dark Chocolate Bar",
        "pantry",
        1_850,
        100,
        "70 % dark chocolate made from Ghanaian cocoa.",
    ),
)

DEMO_SLIDERS = (
    DemoSlider(
        "phones-for-every-pocket",
        "Phones for every pocket",
        "Tecno, Infinix, Samsung and itel, delivered across Accra and Kumasi.",
        "/?category=phones",
    ),
    DemoSlider(
        "made-in-ghana",
        "Made in Ghana",
        "Hand-woven kente, batakari and Ahenema sandals.",
        "/?category=fashion",
    ),
    DemoSlider(
        "welcome10",
        "10 % off your first order",
        "Use code WELCOME10 at checkout. Pay with your wallet or mobile money.",
        "/",
    ),
)

DEMO_COUPONS = (
    # 10 % (1000 basis points), once per customer.
    DemoCoupon("WELCOME10", CouponKind.PERCENT, 1_000, max_uses_per_customer=1),
    # GH₵ 20.00 off orders of GH₵ 150.00 or more.
    DemoCoupon("SAVE20", CouponKind.FIXED, 2_000, min_subtotal_minor=15_000),
)


async def seed_demo(session: AsyncSession) -> SeedReport:
    """Insert the demo categories, products, sliders and coupons that are not there yet."""
    existing_categories = {
        category.slug: category for category in await session.scalars(select(Category))
    }
    added_categories = 0
    for position, demo_category in enumerate(DEMO_CATEGORIES):
        if demo_category.slug not in existing_categories:
            category = Category(slug=demo_category.slug, name=demo_category.name, position=position)
            session.add(category)
            existing_categories[demo_category.slug] = category
            added_categories += 1
    await session.flush()

    existing_product_slugs = set(await session.scalars(select(Product.slug)))
    added: list[tuple[Product, int]] = []
    for demo_product in DEMO_PRODUCTS:
        if demo_product.slug in existing_product_slugs:
            continue
        product = Product(
            slug=demo_product.slug,
            name=demo_product.name,
            description=demo_product.description,
            price_minor=demo_product.price_minor,
            image=demo_product.image,
            category_id=existing_categories[demo_product.category_slug].id,
            is_active=True,
        )
        session.add(product)
        added.append((product, demo_product.stock))
    await session.flush()
    await receive_stock(session, {product.id: stock for product, stock in added}, DEMO_STOCK_REASON)
    added_products = len(added)

    existing_slider_titles = set(await session.scalars(select(Slider.title)))
    added_sliders = 0
    for position, demo_slider in enumerate(DEMO_SLIDERS):
        if demo_slider.title in existing_slider_titles:
            continue
        session.add(
            Slider(
                title=demo_slider.title,
                subtitle=demo_slider.subtitle,
                image=demo_slider.image,
                link_url=demo_slider.link_url,
                position=position,
                is_active=True,
            )
        )
        added_sliders += 1

    existing_codes = set(await session.scalars(select(func.upper(Coupon.code))))
    added_coupons = 0
    for demo_coupon in DEMO_COUPONS:
        if demo_coupon.code in existing_codes:
            continue
        session.add(
            Coupon(
                code=demo_coupon.code,
                kind=demo_coupon.kind,
                value=demo_coupon.value,
                min_subtotal_minor=demo_coupon.min_subtotal_minor,
                max_uses_per_customer=demo_coupon.max_uses_per_customer,
                uses=0,
                is_active=True,
            )
        )
        added_coupons += 1
    await session.flush()
    if added_categories or added_products or added_sliders:
        await bump_catalog_version(session)
    return SeedReport(added_categories, added_products, added_sliders, added_coupons)


async def catalog_is_empty(session: AsyncSession) -> bool:
    """True when there is not a single product: `make run` seeds the demo shop then."""
    return await session.scalar(select(Product.id).limit(1)) is None
