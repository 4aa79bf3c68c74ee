"""Extension objects, bound to the app in create_app."""

from quart_auth import QuartAuth
from quart_rate_limiter import RateLimiter

auth_manager = QuartAuth()
rate_limiter = RateLimiter()
