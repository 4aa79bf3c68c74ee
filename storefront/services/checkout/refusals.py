"""Why checkout says no: each refusal's message is fit for the shopper, and nothing changed."""

from storefront.lib.money import format_minor


class CheckoutError(Exception):
    """Checkout was refused and nothing changed; the message is fit for the shopper."""


class EmptyCart(CheckoutError):
    def __init__(self) -> None:
        super().__init__("Your cart is empty, so there is nothing to pay for.")


class InvalidDelivery(CheckoutError):
    def __init__(self, field_errors: dict[str, str]) -> None:
        self.field_errors = field_errors
        super().__init__("Check the delivery details below.")


class OutOfStock(CheckoutError):
    def __init__(self, product_id: int, name: str, wanted: int, available: int) -> None:
        self.product_id = product_id
        self.name = name
        self.wanted = wanted
        self.available = available
        if available <= 0:
            message = f"{name} is out of stock; remove it from your cart to check out."
        else:
            message = (
                f"Only {available} of {name} left (your cart has {wanted}); "
                "lower the quantity to check out."
            )
        super().__init__(message)


class TooManyUnits(CheckoutError):
    def __init__(self, name: str, cap: int, wanted: int) -> None:
        self.name = name
        self.cap = cap
        super().__init__(
            f"A card payment holds its items until Paystack confirms it, so one order may hold "
            f"at most {cap} of {name} (your cart has {wanted}). Lower the quantity, or pay "
            "from your wallet."
        )


class ProductUnavailable(CheckoutError):
    def __init__(self, product_id: int, name: str) -> None:
        self.product_id = product_id
        self.name = name
        super().__init__(f"{name} is no longer sold; remove it from your cart to check out.")


class CouponNoLongerValid(CheckoutError):
    def __init__(self, reason: str) -> None:
        super().__init__(f"Your coupon can no longer be used: {reason} Remove it or try again.")


class PriceChanged(CheckoutError):
    def __init__(self, message: str) -> None:
        super().__init__(f"{message} Nothing was charged; review the new total and pay again.")

    @classmethod
    def total(cls, shown_minor: int, total_minor: int) -> "PriceChanged":
        return cls(
            f"Prices changed while you were checking out: the total is now "
            f"{format_minor(total_minor)} (you saw {format_minor(shown_minor)})."
        )


class InsufficientFunds(CheckoutError):
    def __init__(self, balance_minor: int, total_minor: int) -> None:
        self.balance_minor = balance_minor
        self.total_minor = total_minor
        self.shortfall_minor = total_minor - balance_minor
        super().__init__(
            f"Your wallet holds {format_minor(balance_minor)} but this order costs "
            f"{format_minor(total_minor)}: top up at least {format_minor(self.shortfall_minor)}."
        )
