"""The checkout form's delivery choice and contact, cleaned or refused field by field."""

import re
from dataclasses import dataclass

from storefront.models.order import DeliveryMethod
from storefront.services.checkout.refusals import InvalidDelivery

DELIVERY_CHOICES = tuple(DeliveryMethod)
PHONE_PATTERN = re.compile(r"\+?[0-9][0-9 ()-]{6,24}")
MIN_PHONE_DIGITS = 9
MAX_ADDRESS_LENGTH = 500


@dataclass(frozen=True)
class Delivery:
    method: str
    phone: str
    address: str


def validate_delivery(delivery: str, phone: str, address: str) -> Delivery:
    """Clean the delivery choice and contact; InvalidDelivery names each bad field."""
    method = (delivery or "").strip()
    phone = (phone or "").strip()
    address = (address or "").strip()
    field_errors: dict[str, str] = {}
    if method not in DELIVERY_CHOICES:
        field_errors["delivery"] = "Choose delivery to an address or pickup at the shop."
    digits = sum(character.isdigit() for character in phone)
    if not phone:
        field_errors["phone"] = "Enter a phone number so we can reach you about this order."
    elif not PHONE_PATTERN.fullmatch(phone) or digits < MIN_PHONE_DIGITS:
        field_errors["phone"] = "Enter a phone number like 024 123 4567 or +233 24 123 4567."
    if method == DeliveryMethod.ADDRESS and not address:
        field_errors["address"] = "Enter the delivery address (or choose pickup)."
    elif len(address) > MAX_ADDRESS_LENGTH:
        field_errors["address"] = f"Keep the address under {MAX_ADDRESS_LENGTH} characters."
    if field_errors:
        raise InvalidDelivery(field_errors)
    return Delivery(method, phone, address if method == DeliveryMethod.ADDRESS else "")
