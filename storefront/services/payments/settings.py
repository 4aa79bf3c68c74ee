"""What payments need from the shop's settings, and how long an order holds its items."""

from dataclasses import dataclass
from datetime import datetime, timedelta

from storefront.config import Settings
from storefront.models import Order


@dataclass(frozen=True)
class PaymentSettings:
    """What payments need from the app's configuration (services never read Quart's config);
    made by `payment_settings`, so the defaults stay in config.Settings."""

    currency: str
    admin_email: str
    base_url: str
    abandon_after: timedelta  # an order's hold, from its creation
    reconcile_after: timedelta
    max_units_per_product: int  # units of one product one pending order may hold


def payment_settings(settings: Settings, base_url: str | None = None) -> PaymentSettings:
    """From the shop's settings; `base_url` (the request's) when PUBLIC_BASE_URL is unset."""
    return PaymentSettings(
        currency=settings.paystack_currency,
        admin_email=settings.admin_email,
        base_url=(settings.public_base_url or base_url or "").rstrip("/"),
        abandon_after=timedelta(minutes=settings.paystack_abandon_after_minutes),
        reconcile_after=timedelta(minutes=settings.paystack_reconcile_after_minutes),
        max_units_per_product=settings.paystack_max_units_per_product,
    )


def hold_ends_at(order: Order, settings: PaymentSettings) -> datetime:
    """When a Paystack order's hold on its items ends, however many attempts it had."""
    return order.created_at + settings.abandon_after
