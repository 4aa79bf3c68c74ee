"""Configuration: defaults, the environment names operators know, and production fail-fast."""

import logging
import os
import secrets
from typing import Any

from dotenv import load_dotenv

log = logging.getLogger(__name__)

KNOWN_WEAK_SECRETS = {
    "",
    "dev",
    "secret",
    "changeme",
    "change-me",
    "your-secret-key",
    "your_secret_key_here",
    "supersecretkey",
    "development",
}
MIN_SECRET_LENGTH = 32
DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///storefront.db"


class ConfigError(RuntimeError):
    """The configuration is unsafe or incomplete; the message names the variable."""


def _env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    return raw.strip().lower() in {"1", "true", "yes", "on"}


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError as error:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from error


def normalise_database_url(url: str) -> str:
    """Map the plain URLs hosting providers hand out onto the async drivers we use."""
    for prefix in ("postgres://", "postgresql://", "postgresql+psycopg2://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    if url.startswith("sqlite:///"):
        return "sqlite+aiosqlite:///" + url[len("sqlite:///") :]
    return url


def database_url_from_env() -> str:
    """DATABASE_URL from the environment (or .env) on its async driver, for the CLI and Alembic."""
    load_dotenv(override=False)
    return normalise_database_url(os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL)


def load_config(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Read settings from the environment (and .env), apply overrides, refuse unsafe production."""
    load_dotenv(override=False)
    env = os.environ.get("STOREFRONT_ENV") or os.environ.get("FLASK_ENV") or "development"
    config: dict[str, Any] = {
        "STOREFRONT_ENV": env,
        "SECRET_KEY": os.environ.get("SECRET_KEY") or os.environ.get("FLASK_SECRET_KEY"),
        "DATABASE_URL": os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL,
        "SHOP_NAME": os.environ.get("SHOP_NAME", "CyberWorld Storefront"),
        "PAYSTACK_PUBLIC_KEY": os.environ.get("PAYSTACK_PUBLIC_KEY", ""),
        "PAYSTACK_SECRET_KEY": os.environ.get("PAYSTACK_SECRET_KEY", ""),
        "PAYSTACK_BASE_URL": os.environ.get("PAYSTACK_BASE_URL", "https://api.paystack.co"),
        "PAYSTACK_CURRENCY": os.environ.get("PAYSTACK_CURRENCY", "GHS"),
        "PAYSTACK_TIMEOUT_SECONDS": _env_int("PAYSTACK_TIMEOUT_SECONDS", 15),
        "PAYSTACK_ABANDON_AFTER_MINUTES": _env_int("PAYSTACK_ABANDON_AFTER_MINUTES", 30),
        "PAYSTACK_RECONCILE_AFTER_MINUTES": _env_int("PAYSTACK_RECONCILE_AFTER_MINUTES", 3),
        "PAYSTACK_MAX_UNITS_PER_PRODUCT": _env_int("PAYSTACK_MAX_UNITS_PER_PRODUCT", 10),
        "RECONCILER_INTERVAL_SECONDS": _env_int("RECONCILER_INTERVAL_SECONDS", 60),
        "MAIL_SERVER": os.environ.get("MAIL_SERVER", ""),
        "MAIL_PORT": _env_int("MAIL_PORT", 0),
        "MAIL_USE_SSL": _env_bool("MAIL_USE_SSL", False),
        "MAIL_USE_TLS": _env_bool("MAIL_USE_TLS", False),
        "MAIL_USERNAME": os.environ.get("MAIL_USERNAME", ""),
        "MAIL_PASSWORD": os.environ.get("MAIL_PASSWORD", ""),
        "MAIL_DEFAULT_SENDER": os.environ.get(
            "MAIL_DEFAULT_SENDER", "CyberWorld Storefront <shop@localhost>"
        ),
        "ADMIN_EMAIL": os.environ.get("ADMIN_EMAIL", ""),
        "SENDGRID_API_KEY": os.environ.get("SENDGRID_API_KEY", ""),
        "SENDGRID_BASE_URL": os.environ.get("SENDGRID_BASE_URL", "https://api.sendgrid.com"),
        "SENTRY_DSN": os.environ.get("SENTRY_DSN", ""),
        "UPLOAD_FOLDER": os.environ.get("UPLOAD_FOLDER", "static/uploads"),
        "PUBLIC_BASE_URL": os.environ.get("PUBLIC_BASE_URL", ""),
        "OUTBOX_SENDER_ENABLED": _env_bool("OUTBOX_SENDER_ENABLED", True),
        "OUTBOX_BATCH_SIZE": _env_int("OUTBOX_BATCH_SIZE", 50),
        "OUTBOX_POLL_SECONDS": _env_int("OUTBOX_POLL_SECONDS", 5),
        "OUTBOX_CLAIM_SECONDS": _env_int("OUTBOX_CLAIM_SECONDS", 300),
        "OUTBOX_SEND_CONCURRENCY": _env_int("OUTBOX_SEND_CONCURRENCY", 4),
        "MAIL_TIMEOUT_SECONDS": _env_int("MAIL_TIMEOUT_SECONDS", 30),
        "MAIL_SMTPUTF8": _env_bool("MAIL_SMTPUTF8", False),
        "RECONCILER_ENABLED": _env_bool("RECONCILER_ENABLED", True),
        "RATELIMIT_ENABLED": _env_bool("RATELIMIT_ENABLED", True),
        "REDIS_URL": os.environ.get("REDIS_URL", ""),
        "RATELIMIT_STORE_PATH": os.environ.get("RATELIMIT_STORE_PATH", ""),
        "WALLET_TOPUP_MAX_MINOR": _env_int("WALLET_TOPUP_MAX_MINOR", 500_000),
        "SQLITE_BUSY_TIMEOUT_MS": _env_int("SQLITE_BUSY_TIMEOUT_MS", 30_000),
        "TRUSTED_PROXY_HOPS": _env_int("TRUSTED_PROXY_HOPS", 0),
        "DATABASE_TIMEOUT_SECONDS": _env_int("DATABASE_TIMEOUT_SECONDS", 10),
        "FORM_BODY_TIMEOUT_SECONDS": _env_int("FORM_BODY_TIMEOUT_SECONDS", 10),
        "QUART_AUTH_COOKIE_SAMESITE": "Lax",
        "QUART_AUTH_COOKIE_NAME": "storefront_auth",
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "SESSION_COOKIE_NAME": "storefront_session",
        "BACKGROUND_TASK_SHUTDOWN_TIMEOUT": 5,
        "MAX_CONTENT_LENGTH": 8 * 1024 * 1024,
    }
    config.update(overrides or {})
    # Secure cookies follow the environment the app really runs in (an override included).
    cookie_secure = config.get(
        "QUART_AUTH_COOKIE_SECURE",
        _env_bool("QUART_AUTH_COOKIE_SECURE", config["STOREFRONT_ENV"] == "production"),
    )
    config["QUART_AUTH_COOKIE_SECURE"] = cookie_secure
    config.setdefault("SESSION_COOKIE_SECURE", cookie_secure)
    config["DATABASE_URL"] = normalise_database_url(config["DATABASE_URL"])
    config["QUART_RATE_LIMITER_ENABLED"] = config["RATELIMIT_ENABLED"]
    config["PAYSTACK_ENABLED"] = bool(
        config["PAYSTACK_SECRET_KEY"] and config["PAYSTACK_PUBLIC_KEY"]
    )
    _check(config)
    return config


def _check(config: dict[str, Any]) -> None:
    production = config["STOREFRONT_ENV"] == "production"
    if not 0 <= config["TRUSTED_PROXY_HOPS"] <= 10:
        raise ConfigError("TRUSTED_PROXY_HOPS must be the number of proxies in front, 0 to 10")
    secret = config.get("SECRET_KEY") or ""
    if production:
        if not secret:
            raise ConfigError("SECRET_KEY is not set; production needs a random key of 32+ chars")
        if secret.lower() in KNOWN_WEAK_SECRETS or len(secret) < MIN_SECRET_LENGTH:
            raise ConfigError(
                f"SECRET_KEY is weak (a known default or under {MIN_SECRET_LENGTH} characters); "
                "generate one with: python -c 'import secrets; print(secrets.token_hex(32))'"
            )
        wants_paystack = _env_bool("PAYSTACK_ENABLED", False) or bool(
            config["PAYSTACK_SECRET_KEY"] or config["PAYSTACK_PUBLIC_KEY"]
        )
        for name in ("PAYSTACK_SECRET_KEY", "PAYSTACK_PUBLIC_KEY"):
            if wants_paystack and not config[name]:
                raise ConfigError(f"Paystack is enabled but {name} is not set")
        if not str(config.get("PUBLIC_BASE_URL") or "").startswith(("https://", "http://")):
            # Reset links, email links and Paystack's callback_url must not come from a
            # request's Host header, which anyone can set.
            raise ConfigError(
                "PUBLIC_BASE_URL is not set; production needs the shop's address, "
                "like https://shop.example.com"
            )
        return
    if not secret:
        config["SECRET_KEY"] = secrets.token_hex(32)
        log.warning(
            "SECRET_KEY is not set: generated a random one for this process only. Sessions and "
            "logins will not survive a restart or be shared across workers; set SECRET_KEY."
        )
