"""The product form read as typed: each field's rule and message, fields left out keeping their
values, the checkbox, and slugs made from names."""

import pytest

from storefront.services.product_form import (
    NEW_PRODUCT,
    ProductDetails,
    form_values,
    parse_product_form,
    slug_from_name,
)

CURRENT = ProductDetails(
    name="Shito",
    slug="shito",
    description="Hot.",
    price_minor=4_500,
    category_id=3,
    is_active=True,
    low_stock_threshold=2,
)


def test_a_full_form_is_read_as_typed():
    parsed, problems = parse_product_form(
        {
            "name": "  Kente   Stole ",
            "slug": " Kente-Stole ",
            "description": "One.\r\n\r\nTwo.\r\n",
            "price": "GH₵ 1,234.5",
            "category_id": "7",
            "is_active": "1",
            "low_stock_threshold": "0",
        }
    )
    assert problems == {}
    assert parsed == ProductDetails(
        name="Kente Stole",
        slug="kente-stole",
        description="One.\n\nTwo.",
        price_minor=123_450,
        category_id=7,
        is_active=True,
        low_stock_threshold=0,
    )


def test_fields_left_out_keep_their_values_but_the_checkbox_does_not():
    parsed, problems = parse_product_form({"price": "50"}, CURRENT)
    assert problems == {}
    assert parsed == ProductDetails(
        name="Shito",
        slug="shito",
        description="Hot.",
        price_minor=5_000,
        category_id=3,
        is_active=False,
        low_stock_threshold=2,
    )
    emptied, _ = parse_product_form(
        {"slug": "", "category_id": "", "low_stock_threshold": "", "is_active": "on"}, CURRENT
    )
    assert (emptied.slug, emptied.category_id, emptied.low_stock_threshold) == ("", None, 5)
    assert emptied.is_active is True


@pytest.mark.parametrize(
    ("field", "raw", "message"),
    [
        ("name", "", "Enter the product's name."),
        ("slug", "-kente", "Use lower-case letters, digits and single hyphens"),
        ("slug", "kente--stole", "Use lower-case letters, digits and single hyphens"),
        ("slug", "k" * 121, "Keep the slug to 120 characters or fewer."),
        ("price", "0", "Enter a price above 0"),
        ("price", "10000000001", "That amount is too large."),
        ("category_id", "0", "Choose a category from the list."),
        ("category_id", "99999999999", "Choose a category from the list."),
        ("low_stock_threshold", "1000001", "Enter a whole number from 0 to 1,000,000"),
        ("low_stock_threshold", "2.5", "Enter a whole number from 0 to 1,000,000"),
    ],
)
def test_each_problem_names_its_field(field, raw, message):
    parsed, problems = parse_product_form({field: raw}, CURRENT)
    assert list(problems) == [field]
    assert message in problems[field]


def test_the_form_shows_a_product_as_it_would_be_typed():
    assert form_values(CURRENT) == {
        "name": "Shito",
        "slug": "shito",
        "description": "Hot.",
        "price": "45.00",
        "category_id": "3",
        "is_active": "1",
        "low_stock_threshold": "2",
    }
    assert form_values(NEW_PRODUCT)["price"] == ""
    assert parse_product_form(form_values(CURRENT), CURRENT) == (CURRENT, {})


@pytest.mark.parametrize(
    ("name", "slug"),
    [
        ("Kente Stole (Gold)", "kente-stole-gold"),
        ("Crème brûlée & Co.", "creme-brulee-co"),
        ("  --Samsung Galaxy A15--  ", "samsung-galaxy-a15"),
        ("🌶️", "product"),
        ("a" * 200, "a" * 112),
    ],
)
def test_slugs_are_made_from_names(name, slug):
    assert slug_from_name(name) == slug
