"""All tables; importing this module registers every model on Base.metadata."""

from storefront.models.base import Base, utcnow
from storefront.models.cart import Cart, CartItem
from storefront.models.catalog import CatalogVersion, Category, Product, Slider
from storefront.models.coupon import Coupon, CouponRedemption
from storefront.models.order import Order, OrderLine
from storefront.models.outbox import OutboxEmail
from storefront.models.payment import Payment, WebhookEvent
from storefront.models.user import Login, User, Wallet, WalletEntry

__all__ = [
    "Base",
    "Cart",
    "CartItem",
    "CatalogVersion",
    "Category",
    "Coupon",
    "CouponRedemption",
    "Login",
    "Order",
    "OrderLine",
    "OutboxEmail",
    "Payment",
    "Product",
    "Slider",
    "User",
    "Wallet",
    "WalletEntry",
    "WebhookEvent",
    "utcnow",
]
