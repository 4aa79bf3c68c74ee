"""Money as integer minor units (pesewas): parse what people type, format what they read."""

import re
from typing import TypeGuard

CURRENCY_SYMBOLS = {"GHS": "GH₵", "NGN": "₦", "USD": "$", "ZAR": "R", "KES": "KSh"}
MAX_AMOUNT_MINOR = 10**12  # GH₵ 10 billion: anything larger is a typo or an attack

_AMOUNT = re.compile(r"(?P<whole>[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)(?:\.(?P<fraction>[0-9]{1,2}))?")
_PREFIXES = ("GH₵", "GHS", "GH¢", "₵", "¢")


class InvalidAmount(ValueError):
    """The text is not an amount of money we accept; the message says why."""


def parse_amount(text: str) -> int:
    """Parse "12.50", "12" or "GH₵ 1,234.50" into pesewas; refuse anything else."""
    if not isinstance(text, str):
        raise InvalidAmount("Enter the amount as text, like 50.00.")
    cleaned = text.strip()
    for prefix in _PREFIXES:
        if cleaned.upper().startswith(prefix.upper()):
            cleaned = cleaned[len(prefix) :].strip()
            break
    if cleaned.startswith("-"):
        raise InvalidAmount("The amount cannot be negative.")
    match = _AMOUNT.fullmatch(cleaned)
    if not match:
        if re.fullmatch(r"[0-9]+\.[0-9]{3,}", cleaned):
            raise InvalidAmount("Use at most 2 decimal places, like 12.50.")
        raise InvalidAmount("Enter an amount like 50 or 50.00.")
    whole = int(match["whole"].replace(",", ""))
    fraction = (match["fraction"] or "").ljust(2, "0")
    amount_minor = whole * 100 + int(fraction or 0)
    if amount_minor > MAX_AMOUNT_MINOR:
        raise InvalidAmount("That amount is too large.")
    return amount_minor


def is_minor_units(value: object) -> TypeGuard[int]:
    """An amount in minor units: an int, never a bool, float or string."""
    return isinstance(value, int) and not isinstance(value, bool)


def format_minor(amount_minor: int, currency: str = "GHS") -> str:
    """1234550 → "GH₵ 12,345.50"; negative amounts keep their sign in front."""
    if not is_minor_units(amount_minor):
        raise TypeError(f"amounts are int minor units, got {type(amount_minor).__name__}")
    sign = "-" if amount_minor < 0 else ""
    whole, fraction = divmod(abs(amount_minor), 100)
    symbol = CURRENCY_SYMBOLS.get(currency, currency)
    return f"{sign}{symbol} {whole:,}.{fraction:02d}"


def amount_as_typed(amount_minor: int) -> str:
    """1234550 → "12345.50": an amount as a form field shows it, for parse_amount to read back."""
    if not is_minor_units(amount_minor):
        raise TypeError(f"amounts are int minor units, got {type(amount_minor).__name__}")
    sign = "-" if amount_minor < 0 else ""
    whole, fraction = divmod(abs(amount_minor), 100)
    return f"{sign}{whole}.{fraction:02d}"


def percent_discount_minor(subtotal_minor: int, basis_points: int) -> int:
    """Half-up rounding of subtotal × basis points / 10000."""
    return (subtotal_minor * basis_points + 5000) // 10000
