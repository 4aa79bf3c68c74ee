"""The current app's settings, for request code."""

from quart import current_app

from storefront.config import Settings, app_settings


def settings() -> Settings:
    """The settings of the app serving this request."""
    return app_settings(current_app)  # type: ignore[arg-type]
