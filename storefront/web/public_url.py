"""The shop's public address, for links that leave the request (emails, Paystack callbacks)."""

from quart import request

from storefront.web.settings import settings


def public_base_url() -> str:
    """PUBLIC_BASE_URL when set, else the host this request was sent to; no trailing slash."""
    return (settings().public_base_url or request.host_url).rstrip("/")
