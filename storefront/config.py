"""Configuration: defaults, the environment names operators know, and production fail-fast."""

import logging
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from dotenv import load_dotenv

if TYPE_CHECKING:
    from quart import Quart

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
UPLOAD_FORM_ALLOWANCE = 1024 * 1024


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


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return float(raw)
    except ValueError as error:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from error


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


# A field's environment name is its name in capitals, unless its metadata names another
# (`env`), or none for a value derived from the others.
DERIVED: dict[str, Any] = {"env": None}


@dataclass(frozen=True)
class Settings:
    """Every setting the shop reads, with its default: the one place for both (README's table)."""

    storefront_env: str = "development"
    database_url: str = DEFAULT_DATABASE_URL
    shop_name: str = "CyberWorld Storefront"
    public_base_url: str = ""
    paystack_public_key: str = ""
    paystack_secret_key: str = ""
    # Production refuses to start without both keys (a deployment that must take cards).
    paystack_required: bool = field(default=False, metadata={"env": "PAYSTACK_ENABLED"})
    paystack_enabled: bool = field(default=False, metadata=DERIVED)  # both keys are set
    paystack_base_url: str = "https://api.paystack.co"
    paystack_currency: str = "GHS"
    paystack_timeout_seconds: int = 15
    paystack_abandon_after_minutes: int = 30
    paystack_reconcile_after_minutes: int = 3
    paystack_max_units_per_product: int = 10
    reconciler_enabled: bool = True
    reconciler_interval_seconds: int = 60
    mail_server: str = ""
    mail_port: int = 0
    mail_use_ssl: bool = False
    mail_use_tls: bool = False
    mail_username: str = ""
    mail_password: str = ""
    mail_default_sender: str = "CyberWorld Storefront <shop@localhost>"
    mail_timeout_seconds: int = 30
    mail_smtputf8: bool = False
    admin_email: str = ""
    sendgrid_api_key: str = ""
    sendgrid_base_url: str = "https://api.sendgrid.com"
    sentry_dsn: str = ""
    upload_folder: str = "var/uploads"
    upload_max_bytes: int = 8 * 1024 * 1024
    outbox_sender_enabled: bool = True
    outbox_batch_size: int = 50
    outbox_poll_seconds: int = 5
    outbox_claim_seconds: int = 300
    outbox_send_concurrency: int = 4
    ratelimit_enabled: bool = True
    redis_url: str = ""
    ratelimit_store_path: str = ""
    wallet_topup_max_minor: int = 500_000
    sqlite_busy_timeout_ms: int = 30_000
    trusted_proxy_hops: int = 0
    database_timeout_seconds: int = 10
    form_body_timeout_seconds: int = 10
    catalog_cache_enabled: bool = True
    # Tests write rows without bumping the catalog version and look at once: 0 under TESTING.
    catalog_cache_check_seconds: float = 1.0
    catalog_cache_max_age_seconds: float = 60.0
    catalog_cache_max_bytes: int = 32 * 1024 * 1024

    @property
    def production(self) -> bool:
        return self.storefront_env == "production"

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "Settings":
        """The settings in a load_config mapping (or app.config), by their capitalised names."""
        return cls(**{setting.name: config[setting.name.upper()] for setting in fields(cls)})


# Names read besides the fields' own: the old Flask shop's, and quart-auth's cookie flag.
OTHER_ENVIRONMENT_NAMES = (
    "FLASK_ENV",
    "SECRET_KEY",
    "FLASK_SECRET_KEY",
    "QUART_AUTH_COOKIE_SECURE",
)


def environment_names() -> set[str]:
    """Every environment variable load_config reads."""
    names = {setting.metadata.get("env", setting.name.upper()) for setting in fields(Settings)}
    return (names - {None}) | set(OTHER_ENVIRONMENT_NAMES)


def _settings_from_env() -> dict[str, Any]:
    readers = {bool: _env_bool, int: _env_int, float: _env_float}
    config: dict[str, Any] = {}
    for setting in fields(Settings):
        name = setting.metadata.get("env", setting.name.upper())
        default: Any = setting.default
        if name is None:
            config[setting.name.upper()] = default
        elif setting.type in readers:
            config[setting.name.upper()] = readers[setting.type](name, default)
        else:
            config[setting.name.upper()] = os.environ.get(name, default)
    return config


def load_config(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Read settings from the environment (and .env), apply overrides, refuse unsafe production.

    The result goes into app.config: the Settings fields by their capitalised names, and the
    keys Quart and quart-auth read themselves."""
    load_dotenv(override=False)
    config = _settings_from_env()
    config.update(
        {
            "STOREFRONT_ENV": os.environ.get("STOREFRONT_ENV")
            or os.environ.get("FLASK_ENV")
            or Settings.storefront_env,
            "SECRET_KEY": os.environ.get("SECRET_KEY") or os.environ.get("FLASK_SECRET_KEY"),
            "DATABASE_URL": os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL,
            "QUART_AUTH_COOKIE_SAMESITE": "Lax",
            "QUART_AUTH_COOKIE_NAME": "storefront_auth",
            "SESSION_COOKIE_HTTPONLY": True,
            "SESSION_COOKIE_SAMESITE": "Lax",
            "SESSION_COOKIE_NAME": "storefront_session",
            "BACKGROUND_TASK_SHUTDOWN_TIMEOUT": 5,
        }
    )
    overrides = overrides or {}
    config.update(overrides)
    # A request may carry the largest photo and the form around it: a photo a little over the
    # limit gets the upload's own message; a far larger body is refused (413) before it is read.
    config.setdefault("MAX_CONTENT_LENGTH", config["UPLOAD_MAX_BYTES"] + UPLOAD_FORM_ALLOWANCE)
    if (
        config.get("TESTING")
        and "CATALOG_CACHE_CHECK_SECONDS" not in overrides
        and not os.environ.get("CATALOG_CACHE_CHECK_SECONDS", "").strip()
    ):
        config["CATALOG_CACHE_CHECK_SECONDS"] = 0.0
    # Secure cookies follow the environment the app really runs in (an override included).
    cookie_secure = config.get(
        "QUART_AUTH_COOKIE_SECURE",
        _env_bool("QUART_AUTH_COOKIE_SECURE", config["STOREFRONT_ENV"] == "production"),
    )
    config["QUART_AUTH_COOKIE_SECURE"] = cookie_secure
    config.setdefault("SESSION_COOKIE_SECURE", cookie_secure)
    config["DATABASE_URL"] = normalise_database_url(config["DATABASE_URL"])
    for name in (
        "PAYSTACK_CURRENCY",
        "MAIL_DEFAULT_SENDER",
        "MAIL_TIMEOUT_SECONDS",
        "SENDGRID_BASE_URL",
    ):
        # Left blank (or 0) in .env: the default, as the readers of these once did themselves.
        config[name] = config[name] or getattr(Settings, name.lower())
    config["QUART_RATE_LIMITER_ENABLED"] = config["RATELIMIT_ENABLED"]
    config["PAYSTACK_ENABLED"] = bool(
        config["PAYSTACK_SECRET_KEY"] and config["PAYSTACK_PUBLIC_KEY"]
    )
    _check(config)
    return config


def app_settings(app: "Quart") -> Settings:
    """The app's settings, made by create_app from its configuration."""
    settings: Settings = app.extensions["settings"]
    return settings


def _check(config: dict[str, Any]) -> None:
    production = config["STOREFRONT_ENV"] == "production"
    if not 0 <= config["TRUSTED_PROXY_HOPS"] <= 10:
        raise ConfigError("TRUSTED_PROXY_HOPS must be the number of proxies in front, 0 to 10")
    if config["UPLOAD_MAX_BYTES"] < 1:
        raise ConfigError("UPLOAD_MAX_BYTES must be the largest photo upload in bytes, above 0")
    secret = config.get("SECRET_KEY") or ""
    if production:
        if not secret:
            raise ConfigError("SECRET_KEY is not set; production needs a random key of 32+ chars")
        if secret.lower() in KNOWN_WEAK_SECRETS or len(secret) < MIN_SECRET_LENGTH:
            raise ConfigError(
                f"SECRET_KEY is weak (a known default or under {MIN_SECRET_LENGTH} characters); "
                "generate one with: python -c 'import secrets; print(secrets.token_hex(32))'"
            )
        wants_paystack = config["PAYSTACK_REQUIRED"] or bool(
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
