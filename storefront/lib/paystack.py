"""A thin Paystack client: initialize, verify, refund, and the one webhook signature check.

The client wraps one shared `httpx.AsyncClient` (made for the serving lifetime) and knows nothing
about the shop: amounts are int minor units in and out, and every failure is a `PaystackError`
subclass saying whether Paystack refused (4xx, with its message), failed (5xx), timed out (the
outcome is unknown) or answered something we cannot read.
"""

import hashlib
import hmac
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

from storefront.lib.money import is_minor_units

REFERENCE_PATTERN = re.compile(r"[A-Za-z0-9.=-]{1,100}")
SIGNATURE_HEADER = "x-paystack-signature"


class PaystackError(Exception):
    """Any failure talking to Paystack; `message` is safe to show a shopper."""

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code


class PaystackRefused(PaystackError):
    """Paystack answered 4xx: the request was understood and refused (its message says why)."""


class PaystackUnavailable(PaystackError):
    """Paystack answered 5xx or could not be reached."""


class PaystackTimeout(PaystackError):
    """No answer in time: whether Paystack acted on the request is unknown."""


class PaystackBadResponse(PaystackError):
    """The answer was not the JSON envelope Paystack documents."""


@dataclass(frozen=True)
class InitializedTransaction:
    authorization_url: str
    access_code: str
    reference: str


@dataclass(frozen=True)
class VerifiedTransaction:
    """What `/transaction/verify` says about a reference; `raw` is Paystack's `data` object."""

    status: str
    reference: str
    amount_minor: int
    currency: str
    gateway_response: str
    paid_at: str | None
    channel: str
    customer_email: str
    metadata: dict[str, Any]
    raw: dict[str, Any] = field(repr=False, compare=False)


@dataclass(frozen=True)
class RefundResult:
    status: str
    amount_minor: int
    currency: str
    transaction_reference: str
    raw: dict[str, Any] = field(repr=False, compare=False)


def require_minor_units(amount_minor: object, name: str = "amount") -> int:
    """Refuse floats, bools, strings and non-positive numbers before they reach the wire."""
    if not is_minor_units(amount_minor):
        raise TypeError(f"{name} must be int minor units, got {type(amount_minor).__name__}")
    if amount_minor <= 0:
        raise ValueError(f"{name} must be positive, got {amount_minor}")
    return amount_minor


def webhook_signature_valid(secret: str, raw_body: bytes, header: str | None) -> bool:
    """HMAC-SHA512 of the raw body keyed with the secret key, compared in constant time."""
    if not secret or not header or not isinstance(raw_body, bytes | bytearray):
        return False
    expected = hmac.new(secret.encode(), bytes(raw_body), hashlib.sha512).hexdigest()
    return hmac.compare_digest(expected.encode(), header.strip().lower().encode())


def sign_webhook_body(secret: str, raw_body: bytes) -> str:
    """The signature Paystack would send for this body (used by tests and local tools)."""
    return hmac.new(secret.encode(), raw_body, hashlib.sha512).hexdigest()


def make_http_client(
    base_url: str, secret_key: str, timeout_seconds: float = 15.0
) -> httpx.AsyncClient:
    """The one pooled HTTP client for the serving lifetime; the caller closes it."""
    return httpx.AsyncClient(
        base_url=base_url.rstrip("/"),
        headers={
            "Authorization": f"Bearer {secret_key}",
            "Accept": "application/json",
            "User-Agent": "cyberworld-storefront",
        },
        timeout=httpx.Timeout(timeout_seconds, connect=min(5.0, timeout_seconds)),
        follow_redirects=False,
    )


class PaystackClient:
    """Paystack's transaction API over a shared `httpx.AsyncClient`."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    async def initialize(
        self,
        *,
        email: str,
        amount_minor: int,
        currency: str,
        reference: str,
        callback_url: str,
        metadata: dict[str, Any] | None = None,
        channels: list[str] | None = None,
    ) -> InitializedTransaction:
        """Start a transaction; the shopper pays at the returned `authorization_url`."""
        require_minor_units(amount_minor)
        if not REFERENCE_PATTERN.fullmatch(reference):
            raise ValueError(f"reference {reference!r} has characters Paystack refuses")
        body: dict[str, Any] = {
            "email": email,
            "amount": amount_minor,
            "currency": currency,
            "reference": reference,
            "callback_url": callback_url,
            "metadata": metadata or {},
        }
        if channels:
            body["channels"] = channels
        payload = await self._request("POST", "/transaction/initialize", json=body)
        found = _object(payload.get("data"), "data")
        try:
            return InitializedTransaction(
                authorization_url=_text(found, "authorization_url", required=True),
                access_code=_text(found, "access_code"),
                reference=_text(found, "reference") or reference,
            )
        except KeyError as error:
            raise PaystackBadResponse(f"Paystack's answer lacks {error.args[0]}") from error

    async def verify(self, reference: str) -> VerifiedTransaction:
        """Ask Paystack what happened to a transaction."""
        if not reference:
            raise ValueError("a reference is required")
        path = "/transaction/verify/" + quote(reference, safe="")
        payload = await self._request("GET", path)
        found = _object(payload.get("data"), "data")
        amount = found.get("amount")
        if not is_minor_units(amount):
            raise PaystackBadResponse("Paystack's verify answer has no whole-number amount")
        status = found.get("status")
        if not isinstance(status, str) or not status:
            raise PaystackBadResponse("Paystack's verify answer has no status")
        customer = found.get("customer")
        metadata = found.get("metadata")
        return VerifiedTransaction(
            status=status,
            reference=_text(found, "reference"),
            amount_minor=amount,
            currency=_text(found, "currency"),
            gateway_response=_text(found, "gateway_response"),
            paid_at=found.get("paid_at") if isinstance(found.get("paid_at"), str) else None,
            channel=_text(found, "channel"),
            customer_email=_text(customer, "email") if isinstance(customer, dict) else "",
            # Paystack sends "" or 0 when no metadata was given.
            metadata=metadata if isinstance(metadata, dict) else {},
            raw=found,
        )

    async def refund(
        self,
        reference: str,
        amount_minor: int | None = None,
        currency: str | None = None,
        merchant_note: str = "",
        customer_note: str = "",
    ) -> RefundResult:
        """Refund a charge in full, or `amount_minor` of it; the result starts as pending."""
        body: dict[str, Any] = {"transaction": reference}
        if amount_minor is not None:
            body["amount"] = require_minor_units(amount_minor)
        if currency:
            body["currency"] = currency
        if merchant_note:
            body["merchant_note"] = merchant_note
        if customer_note:
            body["customer_note"] = customer_note
        payload = await self._request("POST", "/refund", json=body)
        found = _object(payload.get("data"), "data")
        transaction = found.get("transaction")
        amount = found.get("amount")
        if not is_minor_units(amount):
            raise PaystackBadResponse("Paystack's refund answer has no whole-number amount")
        return RefundResult(
            status=_text(found, "status"),
            amount_minor=amount,
            currency=_text(found, "currency"),
            transaction_reference=(
                _text(transaction, "reference") if isinstance(transaction, dict) else reference
            ),
            raw=found,
        )

    async def _request(
        self, method: str, path: str, json: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        try:
            response = await self.http.request(method, path, json=json)
        except httpx.TimeoutException as error:
            raise PaystackTimeout("Paystack did not answer in time.", status_code=None) from error
        except httpx.TransportError as error:
            raise PaystackUnavailable(
                f"Paystack could not be reached ({type(error).__name__})."
            ) from error
        if response.status_code >= 500:
            raise PaystackUnavailable(
                f"Paystack had a problem (HTTP {response.status_code}).", response.status_code
            )
        try:
            payload = response.json()
        except ValueError:
            payload = None
        if response.status_code >= 400:
            message = payload.get("message") if isinstance(payload, dict) else None
            if not isinstance(message, str) or not message.strip():
                message = f"Paystack refused the request (HTTP {response.status_code})."
            raise PaystackRefused(message.strip(), response.status_code)
        if not isinstance(payload, dict):
            raise PaystackBadResponse(
                f"Paystack answered HTTP {response.status_code} with a body that is not JSON.",
                response.status_code,
            )
        if payload.get("status") is not True:
            message = payload.get("message")
            raise PaystackRefused(
                message if isinstance(message, str) and message else "Paystack refused it.",
                response.status_code,
            )
        return payload


def _object(value: object, name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise PaystackBadResponse(f"Paystack's answer has no {name} object")
    return value


def _text(source: dict[str, Any], key: str, required: bool = False) -> str:
    value = source.get(key)
    if isinstance(value, str):
        return value
    if required:
        raise KeyError(key)
    return ""
