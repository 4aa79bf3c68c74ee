"""The shop's public address, for links that leave the request (emails, Paystack callbacks)."""

from quart import current_app, request


def public_base_url() -> str:
    """PUBLIC_BASE_URL when set, else the host this request was sent to; no trailing slash."""
    return (current_app.config.get("PUBLIC_BASE_URL") or request.host_url).rstrip("/")
