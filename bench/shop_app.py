"""The storefront as bench/pages.py serves it (configured by environment variables)."""

from storefront import create_app

app = create_app()
