"""The coupon form of the back office: what people type (cedis, percents, datetime-local in
Accra's time, which is UTC) parsed into a coupon's values, each problem named by its field."""

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from werkzeug.datastructures import MultiDict

from storefront.lib.money import InvalidAmount, format_minor, parse_amount
from storefront.models import Coupon
from storefront.models.coupon import CouponKind
from storefront.services.coupons import normalise_code

MAX_LIMIT = 1_000_000_000
CODE_PATTERN = re.compile(r"[A-Z0-9][A-Z0-9_-]{1,39}")
PERCENT_PATTERN = re.compile(r"([0-9]{1,3})(?:\.([0-9]{1,2}))?")
DATETIME_LOCAL = "%Y-%m-%dT%H:%M"
# The form's fields and the coupon value each sets.
FORM_FIELDS = {
    "code": "code",
    "kind": "kind",
    "value": "value",
    "min_subtotal": "min_subtotal_minor",
    "starts_at": "starts_at",
    "ends_at": "ends_at",
    "max_uses": "max_uses",
    "max_uses_per_customer": "max_uses_per_customer",
    "is_active": "is_active",
}
KIND_CHOICES = " or ".join(CouponKind)


class InvalidField(ValueError):
    pass


@dataclass
class CouponForm:
    """What was typed (to show it again), the values parsed from it, and each field's problem."""

    typed: dict[str, str] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


def parse_code(raw: str) -> str:
    code = normalise_code(raw)
    if not code:
        raise InvalidField("Enter a code, like WELCOME10.")
    if not CODE_PATTERN.fullmatch(code):
        raise InvalidField("Use 2 to 40 letters, digits, - or _, like WELCOME10.")
    return code


def parse_kind(raw: str) -> CouponKind:
    try:
        return CouponKind(raw.strip())
    except ValueError:
        raise InvalidField(f"Choose the kind: {KIND_CHOICES}.") from None


def parse_percent(raw: str) -> int:
    """ "10" or "12.5" (%) → basis points (1000, 1250)."""
    text = raw.strip().removesuffix("%").strip()
    match = PERCENT_PATTERN.fullmatch(text)
    if not match:
        raise InvalidField("Enter the percent off, like 10 or 12.5.")
    basis_points = int(match[1]) * 100 + int((match[2] or "").ljust(2, "0") or 0)
    if not 100 <= basis_points <= 10_000:
        raise InvalidField("A percent coupon takes off from 1 to 100 %.")
    return basis_points


def parse_value(raw: str, kind: str | None) -> int:
    if kind is None:
        raise InvalidField(f"Choose the kind ({KIND_CHOICES}) to read the value by.")
    if kind == CouponKind.PERCENT:
        return parse_percent(raw)
    try:
        amount_minor = parse_amount(raw)
    except InvalidAmount as error:
        raise InvalidField(f"{error} For a fixed coupon, enter cedis like 20.00.") from None
    if amount_minor <= 0:
        raise InvalidField("A fixed coupon takes off more than GH₵ 0.00.")
    return amount_minor


def parse_money(raw: str) -> int:
    if not raw.strip():
        return 0
    try:
        return parse_amount(raw)
    except InvalidAmount as error:
        raise InvalidField(str(error)) from None


def parse_moment(raw: str) -> datetime | None:
    """datetime-local ("2026-12-24T18:00", seconds allowed) in Accra's time, which is UTC."""
    text = raw.strip()
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidField("Enter a date and time, like 2026-12-24T18:00.") from None
    if moment.tzinfo is not None or not 2000 <= moment.year <= 2999:
        raise InvalidField("Enter a date and time, like 2026-12-24T18:00.")
    return moment.replace(microsecond=0)


def parse_limit(raw: str) -> int | None:
    text = raw.strip()
    if not text:
        return None
    if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= MAX_LIMIT:
        raise InvalidField("Enter a whole number from 1, or leave it empty for no limit.")
    return int(text)


def parse_coupon_form(
    form: MultiDict[str, str], *, current_kind: str | None = None, require_all: bool = False
) -> CouponForm:
    """Parse the fields present in the form (all of them when `require_all`, as a new coupon
    needs). `is_active` is a checkbox: "1" when ticked, unticked when absent. `value` is read
    by the kind posted with it, else the coupon's `current_kind`."""
    parsed = CouponForm()
    parsed.typed = {name: (form.get(name) or "")[:200] for name in FORM_FIELDS}
    kind: str | None = current_kind
    for name, target in FORM_FIELDS.items():
        if name == "is_active":
            parsed.values[target] = "1" in form.getlist(name)
            continue
        if name not in form and not require_all:
            continue
        raw = form.get(name) or ""
        try:
            if name == "code":
                parsed.values[target] = parse_code(raw)
            elif name == "kind":
                kind = parsed.values[target] = parse_kind(raw)
            elif name == "value":
                parsed.values[target] = parse_value(raw, kind)
            elif name == "min_subtotal":
                parsed.values[target] = parse_money(raw)
            elif name in ("starts_at", "ends_at"):
                parsed.values[target] = parse_moment(raw)
            else:
                parsed.values[target] = parse_limit(raw)
        except InvalidField as error:
            parsed.errors[name] = str(error)
    return parsed


def typed_from_coupon(coupon: Coupon) -> dict[str, str]:
    """The coupon's values as the form shows them (cedis, percents, datetime-local)."""

    def moment(value: datetime | None) -> str:
        return value.strftime(DATETIME_LOCAL) if value is not None else ""

    if coupon.kind == CouponKind.PERCENT:
        whole, fraction = divmod(coupon.value, 100)
        value = f"{whole}.{fraction:02d}".removesuffix(".00")
    else:
        value = format_minor(coupon.value).split(" ", 1)[1].replace(",", "")
    return {
        "code": coupon.code,
        "kind": coupon.kind,
        "value": value,
        "min_subtotal": format_minor(coupon.min_subtotal_minor).split(" ", 1)[1].replace(",", ""),
        "starts_at": moment(coupon.starts_at),
        "ends_at": moment(coupon.ends_at),
        "max_uses": str(coupon.max_uses or ""),
        "max_uses_per_customer": str(coupon.max_uses_per_customer or ""),
        "is_active": "1" if coupon.is_active else "",
    }


def blank_typed() -> Mapping[str, str]:
    return {name: "" for name in FORM_FIELDS} | {"kind": CouponKind.PERCENT, "is_active": "1"}
