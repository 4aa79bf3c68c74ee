"""The back office's product form: what each field may hold, read from the form as typed (price
in cedis), with a message per field the owner can act on. No database here: the slug's
uniqueness and the category's existence are checked where the product is written."""

import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from storefront.lib.money import InvalidAmount, amount_as_typed, parse_amount
from storefront.models.catalog import DEFAULT_LOW_STOCK_THRESHOLD

NAME_MAX_LENGTH = 200
SLUG_MAX_LENGTH = 120
# A derived slug leaves room for the "-12" that makes it unique.
DERIVED_SLUG_MAX_LENGTH = SLUG_MAX_LENGTH - 8
DESCRIPTION_MAX_LENGTH = 5000
LOW_STOCK_THRESHOLD_MAX = 1_000_000
MAX_ID = 2**31 - 1
SLUG = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
FALLBACK_SLUG = "product"
TICKED = frozenset({"1", "on", "true"})

# Form field → the product attribute it sets, in the order the form shows them.
FORM_FIELDS = {
    "name": "name",
    "slug": "slug",
    "description": "description",
    "price": "price_minor",
    "category_id": "category_id",
    "is_active": "is_active",
    "low_stock_threshold": "low_stock_threshold",
}
# What the audit log keeps of a product's details.
PRODUCT_AUDIT_FIELDS = tuple(FORM_FIELDS.values())


@dataclass(frozen=True, slots=True)
class ProductDetails:
    """A product's editable details; an empty `slug` means "derive it from the name"."""

    name: str
    slug: str
    description: str
    price_minor: int
    category_id: int | None
    is_active: bool
    low_stock_threshold: int


NEW_PRODUCT = ProductDetails(
    name="",
    slug="",
    description="",
    price_minor=0,
    category_id=None,
    is_active=True,
    low_stock_threshold=DEFAULT_LOW_STOCK_THRESHOLD,
)


class FieldProblem(ValueError):
    """One field's value is unusable; the message says what to type instead."""


def check_name(raw: str) -> str:
    name = " ".join(raw.split())
    if not name:
        raise FieldProblem("Enter the product's name.")
    if len(name) > NAME_MAX_LENGTH:
        raise FieldProblem(f"Keep the name to {NAME_MAX_LENGTH} characters or fewer.")
    return name


def check_slug(raw: str) -> str:
    """The slug as typed, lower-cased; "" (derive it from the name) when left empty."""
    slug = raw.strip().lower()
    if not slug:
        return ""
    if len(slug) > SLUG_MAX_LENGTH:
        raise FieldProblem(f"Keep the slug to {SLUG_MAX_LENGTH} characters or fewer.")
    if not SLUG.fullmatch(slug):
        raise FieldProblem(
            "Use lower-case letters, digits and single hyphens, like kente-stole "
            "(or leave it empty to make one from the name)."
        )
    return slug


def check_description(raw: str) -> str:
    # Browsers send CRLF from a textarea; the shop splits paragraphs on blank lines.
    description = raw.replace("\r\n", "\n").replace("\r", "\n").strip()
    if len(description) > DESCRIPTION_MAX_LENGTH:
        raise FieldProblem(
            f"Keep the description to {DESCRIPTION_MAX_LENGTH:,} characters or fewer "
            f"(it has {len(description):,})."
        )
    return description


def check_price(raw: str) -> int:
    if not raw.strip():
        raise FieldProblem("Enter the price in cedis, like 12.50.")
    try:
        price_minor = parse_amount(raw)
    except InvalidAmount as error:
        raise FieldProblem(str(error)) from None
    if price_minor == 0:
        raise FieldProblem("Enter a price above 0, like 12.50.")
    return price_minor


def check_category_id(raw: str) -> int | None:
    text = raw.strip()
    if not text:
        return None
    if not text.isdigit() or not 1 <= int(text) <= MAX_ID:
        raise FieldProblem("Choose a category from the list.")
    return int(text)


def check_low_stock_threshold(raw: str) -> int:
    text = raw.strip()
    if not text:
        return DEFAULT_LOW_STOCK_THRESHOLD
    if not text.isdigit() or int(text) > LOW_STOCK_THRESHOLD_MAX:
        raise FieldProblem(
            f"Enter a whole number from 0 to {LOW_STOCK_THRESHOLD_MAX:,} "
            "(how few left counts as running low)."
        )
    return int(text)


FIELD_CHECKS: dict[str, Callable[[str], Any]] = {
    "name": check_name,
    "slug": check_slug,
    "description": check_description,
    "price": check_price,
    "category_id": check_category_id,
    "low_stock_threshold": check_low_stock_threshold,
}


def is_ticked(raw: str | None) -> bool:
    """Whether a checkbox's value says ticked ("1", as the form sends it)."""
    return (raw or "").strip().lower() in TICKED


def parse_product_form(
    form: Mapping[str, str], current: ProductDetails = NEW_PRODUCT
) -> tuple[ProductDetails, dict[str, str]]:
    """The details the form asks for, and a message per form field that cannot be used.

    A field left out of the form keeps its `current` value (so a table row may post only the
    fields it shows); `is_active`, a checkbox, is "1" when ticked and not active when left out.
    """
    changes: dict[str, Any] = {"is_active": is_ticked(form.get("is_active"))}
    problems: dict[str, str] = {}
    for field, check in FIELD_CHECKS.items():
        raw = form.get(field)
        if raw is None:
            continue
        try:
            changes[FORM_FIELDS[field]] = check(raw)
        except FieldProblem as problem:
            problems[field] = str(problem)
    return replace(current, **changes), problems


def form_values(details: ProductDetails) -> dict[str, str]:
    """The details as the form shows them (price in cedis as typed, "" for no category)."""
    return {
        "name": details.name,
        "slug": details.slug,
        "description": details.description,
        "price": amount_as_typed(details.price_minor) if details.price_minor else "",
        "category_id": str(details.category_id) if details.category_id is not None else "",
        "is_active": "1" if details.is_active else "",
        "low_stock_threshold": str(details.low_stock_threshold),
    }


def slug_from_name(name: str) -> str:
    """ "Kente Stole (Gold)" → "kente-stole-gold"; accents dropped, "product" when nothing is
    left."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")
    slug = slug[:DERIVED_SLUG_MAX_LENGTH].rstrip("-")
    return slug or FALLBACK_SLUG
