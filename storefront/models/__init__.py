"""All tables; importing this module registers every model on Base.metadata."""

from storefront.models.audit import AuditEntry
from storefront.models.base import Base, utcnow
from storefront.models.cart import Cart, CartItem
from storefront.models.catalog import CatalogVersion, Category, Product, ProductImage, Slider
from storefront.models.coupon import Coupon, CouponKind, CouponRedemption
from storefront.models.order import DeliveryMethod, Order, OrderLine, OrderStatus, PaymentMethod
from storefront.models.outbox import OutboxEmail, OutboxStatus
from storefront.models.payment import (
    GatewayStatus,
    Payment,
    PaymentLookup,
    PaymentPurpose,
    PaymentStatus,
    WebhookEvent,
)
from storefront.models.stock import StockMovement, StockMovementKind
from storefront.models.user import Login, User, UserRole, Wallet, WalletEntry, WalletEntryKind

# Every state set: one StrEnum each, the only place their values are written. Templates see
# them as Jinja globals under their class names (e.g. `order.status == OrderStatus.PAID`).
STATE_ENUMS = (
    CouponKind,
    DeliveryMethod,
    GatewayStatus,
    OrderStatus,
    OutboxStatus,
    PaymentLookup,
    PaymentMethod,
    PaymentPurpose,
    PaymentStatus,
    StockMovementKind,
    UserRole,
    WalletEntryKind,
)

__all__ = [
    "AuditEntry",
    "Base",
    "Cart",
    "CartItem",
    "CatalogVersion",
    "Category",
    "Coupon",
    "CouponKind",
    "CouponRedemption",
    "DeliveryMethod",
    "GatewayStatus",
    "Login",
    "Order",
    "OrderLine",
    "OrderStatus",
    "OutboxEmail",
    "OutboxStatus",
    "Payment",
    "PaymentLookup",
    "PaymentMethod",
    "PaymentPurpose",
    "PaymentStatus",
    "STATE_ENUMS",
    "Product",
    "ProductImage",
    "Slider",
    "StockMovement",
    "StockMovementKind",
    "User",
    "UserRole",
    "Wallet",
    "WalletEntry",
    "WalletEntryKind",
    "WebhookEvent",
    "utcnow",
]
