"""Money is int pesewas: parse what people type, refuse everything else, format one way."""

import pytest

from storefront.lib.money import (
    MAX_AMOUNT_MINOR,
    InvalidAmount,
    amount_as_typed,
    format_minor,
    parse_amount,
    percent_discount_minor,
)


@pytest.mark.parametrize(
    ("text", "expected_minor"),
    [
        ("12.50", 1250),
        ("12", 1200),
        ("GH₵ 1,234.50", 123450),
        ("12.5", 1250),
        ("0.01", 1),
        ("0", 0),
        ("  50.00 ", 5000),
        ("GHS 20", 2000),
        ("1,000,000.00", 100_000_000),
        ("₵7.05", 705),
    ],
)
def test_parses_amounts_people_type(text, expected_minor):
    assert parse_amount(text) == expected_minor
    assert isinstance(parse_amount(text), int)


@pytest.mark.parametrize(
    "text",
    [
        "-5",
        "-0.50",
        "GH₵ -5.00",
        "12.345",
        "1.999",
        "NaN",
        "nan",
        "inf",
        "Infinity",
        "-inf",
        "1e3",
        "",
        "   ",
        "GH₵",
        "12.",
        ".50",
        "1,23.00",
        "12,34",
        "12 50",
        "0x10",
        "١٢",  # Arabic-Indic digits
        "１２",  # full-width digits
        "12.５",
        "²",
        "10000000000.01",  # one pesewa over the ceiling
        "9" * 40,
        "12;DROP TABLE",
    ],
)
def test_refuses_anything_else_with_a_message(text):
    with pytest.raises(InvalidAmount) as refusal:
        parse_amount(text)
    assert str(refusal.value)


def test_negative_and_precision_messages_say_why():
    with pytest.raises(InvalidAmount, match="negative"):
        parse_amount("-5")
    with pytest.raises(InvalidAmount, match="2 decimal"):
        parse_amount("12.345")
    with pytest.raises(InvalidAmount, match="too large"):
        parse_amount("9" * 40)


@pytest.mark.parametrize("value", [12.5, 12.0, float("nan"), float("inf"), 1250, None, b"12"])
def test_refuses_values_that_are_not_text(value):
    with pytest.raises(InvalidAmount):
        parse_amount(value)


def test_ceiling_is_accepted_exactly():
    assert parse_amount("10,000,000,000.00") == MAX_AMOUNT_MINOR


@pytest.mark.parametrize(
    ("amount_minor", "text"),
    [
        (0, "GH₵ 0.00"),
        (1, "GH₵ 0.01"),
        (1250, "GH₵ 12.50"),
        (123450, "GH₵ 1,234.50"),
        (100_000_000, "GH₵ 1,000,000.00"),
        (-2000, "-GH₵ 20.00"),
    ],
)
def test_formats_as_cedis(amount_minor, text):
    assert format_minor(amount_minor) == text


def test_format_round_trips_through_parse():
    for amount_minor in (0, 1, 99, 100, 1250, 123450, 987654321):
        assert parse_amount(format_minor(amount_minor)) == amount_minor


@pytest.mark.parametrize("value", [12.5, True, "1250", None])
def test_format_refuses_non_integers(value):
    with pytest.raises(TypeError):
        format_minor(value)


@pytest.mark.parametrize(
    ("subtotal_minor", "basis_points", "discount_minor"),
    [(20000, 1000, 2000), (1005, 1000, 101), (1004, 1000, 100), (999, 1000, 100), (0, 1000, 0)],
)
def test_percent_discount_rounds_half_up(subtotal_minor, basis_points, discount_minor):
    assert percent_discount_minor(subtotal_minor, basis_points) == discount_minor


@pytest.mark.parametrize(
    ("amount_minor", "typed"),
    [(0, "0.00"), (5, "0.05"), (12_050, "120.50"), (123_456_789, "1234567.89"), (-250, "-2.50")],
)
def test_an_amount_as_a_form_shows_it_reads_back_the_same(amount_minor, typed):
    assert amount_as_typed(amount_minor) == typed
    if amount_minor >= 0:
        assert parse_amount(typed) == amount_minor
