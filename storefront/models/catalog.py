"""What the shop sells and how the home page shows it."""

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    true,
)
from sqlalchemy.orm import Mapped, mapped_column

from storefront.models.base import Base, utcnow

DEFAULT_LOW_STOCK_THRESHOLD = 5


class Category(Base):
    __tablename__ = "categories"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    slug: Mapped[str] = mapped_column(String(80), unique=True)
    name: Mapped[str] = mapped_column(String(120))
    position: Mapped[int] = mapped_column(Integer, default=0)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())


class Product(Base):
    __tablename__ = "products"
    __table_args__ = (
        CheckConstraint("stock >= 0", name="stock_not_negative"),
        CheckConstraint("price_minor >= 0", name="price_not_negative"),
        CheckConstraint("low_stock_threshold >= 0", name="low_stock_threshold_not_negative"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    slug: Mapped[str] = mapped_column(String(120), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    price_minor: Mapped[int] = mapped_column(BigInteger)
    stock: Mapped[int] = mapped_column(Integer, default=0)
    image: Mapped[str] = mapped_column(String(255), default="")
    category_id: Mapped[int | None] = mapped_column(
        ForeignKey("categories.id", ondelete="SET NULL"), index=True
    )
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    # At or below this many in stock the back office lists the product as running low.
    low_stock_threshold: Mapped[int] = mapped_column(
        Integer,
        default=DEFAULT_LOW_STOCK_THRESHOLD,
        server_default=str(DEFAULT_LOW_STOCK_THRESHOLD),
    )
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)


class ProductImage(Base):
    """One uploaded photo, re-encoded to WebP at two sizes under UPLOAD_FOLDER; the file names
    are content hashes. Shown in (position, id) order.

    (product_id, position) is indexed, not unique: a reorder rewrites positions row by row, and
    a unique pair would refuse the swap half-way (SQLite cannot defer the check)."""

    __tablename__ = "product_images"
    __table_args__ = (
        Index("ix_product_images_product_id_position", "product_id", "position"),
        CheckConstraint("position >= 0", name="position_not_negative"),
        CheckConstraint("width > 0 AND height > 0", name="size_positive"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer, default=0)
    card_filename: Mapped[str] = mapped_column(String(100))
    page_filename: Mapped[str] = mapped_column(String(100))
    # Of the page-size file (the card file has the same proportions).
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Slider(Base):
    __tablename__ = "sliders"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    subtitle: Mapped[str] = mapped_column(String(300), default="")
    image: Mapped[str] = mapped_column(String(255), default="")
    # An uploaded image: `image` the wide file, `image_small` the phone-width one (empty for
    # images from static/), width and height those of `image`.
    image_small: Mapped[str] = mapped_column(String(255), default="", server_default="")
    image_width: Mapped[int | None] = mapped_column(Integer)
    image_height: Mapped[int | None] = mapped_column(Integer)
    link_url: Mapped[str] = mapped_column(String(500), default="")
    position: Mapped[int] = mapped_column(Integer, default=0)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)


class CatalogVersion(Base):
    """One row (id 1) bumped with every catalog change; page caches compare it to rebuild."""

    __tablename__ = "catalog_versions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)
