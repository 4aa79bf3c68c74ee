"""Security baseline: headers on every response; the rate limiter and the `per_minute` limits
that login-ish and payment views declare with `@rate_limit`."""

from collections.abc import Awaitable, Callable
from datetime import timedelta

from quart import Quart, Response, render_template, request
from quart_rate_limiter import RateLimit, RateLimitExceeded

from storefront.config import app_settings
from storefront.web.htmx import is_htmx
from storefront.web.rate_limits import SharedRateLimiter, make_rate_limit_store

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "frame-ancestors 'none'; base-uri 'self'; form-action 'self' https://checkout.paystack.com"
)
BASE_HEADERS: tuple[tuple[str, str], ...] = (
    ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
    ("X-Content-Type-Options", "nosniff"),
    # Paystack's callback must not learn the page we came from; same-origin keeps full paths.
    ("Referrer-Policy", "strict-origin-when-cross-origin"),
    ("X-Frame-Options", "DENY"),
)
HSTS_HEADER = ("Strict-Transport-Security", "max-age=63072000; includeSubDomains")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


async def client_address_key() -> str:
    """The client the limit counts against: the connection's address (never X-Forwarded-For,
    which a client can forge; behind a proxy wrap the app in hypercorn's ProxyFixMiddleware)."""
    return request.remote_addr or "no-address"


async def skip_safe_methods() -> bool:
    """Showing a form is free; only submitting it counts."""
    return request.method in SAFE_METHODS


def per_minute(count: int) -> list[RateLimit]:
    """Limits for `@rate_limit(limits=...)`: `count` submissions a minute per client address."""
    return [RateLimit(count, timedelta(minutes=1), client_address_key, skip_safe_methods)]


def security_headers_hook(production: bool) -> Callable[[Response], Awaitable[Response]]:
    """An after_request hook adding the precomputed headers (HSTS only in production)."""
    headers = BASE_HEADERS + ((HSTS_HEADER,) if production else ())

    async def add_security_headers(response: Response) -> Response:
        response_headers = response.headers
        for name, value in headers:
            response_headers[name] = value
        return response

    return add_security_headers


async def render_rate_limited(error: RateLimitExceeded) -> tuple[str, int, dict[str, str]]:
    """429 as a readable page or fragment (JSON under /api/), keeping Retry-After."""
    wait_seconds = max(1, int(getattr(error, "retry_after", 60)))
    error.description = (
        f"Too many attempts from your connection. Wait {wait_seconds} seconds and try again."
    )
    headers = {"Retry-After": str(wait_seconds)}
    if request.path.startswith("/api/"):
        return {"error": error.description}, 429, headers  # type: ignore[return-value]
    template = "errors/fragment.html" if is_htmx() else "errors/page.html"
    body = await render_template(template, error=error, status=429)
    return body, 429, headers


def init_security(app: Quart) -> None:
    """Security headers, and a rate limiter of this app's own (call after blueprints)."""
    # Counts shared by every worker (Redis, else a file on this machine), named after the
    # database: apps on other databases (tests) never share them.
    settings = app_settings(app)
    SharedRateLimiter(
        app,
        key_function=client_address_key,
        store=make_rate_limit_store(
            settings.database_url, settings.redis_url, settings.ratelimit_store_path
        ),
    )
    app.register_error_handler(RateLimitExceeded, render_rate_limited)
    app.after_request(security_headers_hook(settings.production))
