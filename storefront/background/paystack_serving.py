"""Paystack for the serving lifetime: the one pooled HTTP client and the reconciler task."""

import asyncio
import logging
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

from quart import Quart

from storefront.config import app_settings
from storefront.db.engine import sessionmaker_for
from storefront.lib.paystack import PaystackClient, make_http_client
from storefront.services.payments.reconciliation import reconcile_once
from storefront.services.payments.settings import payment_settings

log = logging.getLogger(__name__)

CLIENT_EXTENSION = "paystack_client"


def paystack_client_for(app: Quart) -> PaystackClient:
    """The app's Paystack client; only present while serving with Paystack keys configured."""
    client = app.extensions.get(CLIENT_EXTENSION)
    if client is None:
        raise RuntimeError("Paystack is not configured (PAYSTACK_SECRET_KEY/PUBLIC_KEY unset)")
    return client


@asynccontextmanager
async def serve_paystack_client(app: Quart) -> AsyncIterator[None]:
    """Open one httpx.AsyncClient for every Paystack call of this worker; close it at shutdown."""
    settings = app_settings(app)
    if not settings.paystack_enabled:
        yield
        return
    http = make_http_client(
        settings.paystack_base_url,
        settings.paystack_secret_key,
        float(settings.paystack_timeout_seconds),
    )
    app.extensions[CLIENT_EXTENSION] = PaystackClient(http)
    try:
        yield
    finally:
        app.extensions.pop(CLIENT_EXTENSION, None)
        await http.aclose()


async def _reconcile_forever(app: Quart) -> None:
    settings = payment_settings(app_settings(app))
    interval = max(float(app_settings(app).reconciler_interval_seconds), 1.0)
    while True:
        # Jitter spreads the workers' passes; their claims keep them off each other's rows.
        await asyncio.sleep(interval * random.uniform(0.5, 1.0))
        try:
            report = await reconcile_once(sessionmaker_for(app), paystack_client_for(app), settings)
        except Exception:
            log.exception("Paystack reconciliation pass failed; trying again next pass")
            continue
        if report.checked:
            log.info("reconciled %d pending payments: %s", report.checked, report.statuses)


@asynccontextmanager
async def serve_reconciler(app: Quart) -> AsyncIterator[None]:
    """Re-verify stale pending payments in the background while serving (RECONCILER_ENABLED)."""
    settings = app_settings(app)
    if not (settings.reconciler_enabled and settings.paystack_enabled):
        yield
        return
    task = asyncio.create_task(_reconcile_forever(app), name="paystack-reconciler")
    try:
        yield
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task
