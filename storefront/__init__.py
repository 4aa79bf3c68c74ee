"""CyberWorld Storefront: create_app builds the Quart app from configuration."""

import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from inspect import iscoroutinefunction
from pathlib import Path
from typing import Any, cast

from hypercorn.middleware import ProxyFixMiddleware
from quart import Quart, Response, g, make_response, render_template, request
from sqlalchemy import inspect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from werkzeug.exceptions import HTTPException, ServiceUnavailable

from storefront.background.outbox_sender import serve_outbox_sender
from storefront.background.paystack_serving import serve_paystack_client, serve_reconciler
from storefront.blueprints import (
    account,
    admin,
    admin_audit,
    admin_categories,
    admin_coupons,
    admin_emails,
    admin_product_photos,
    admin_products,
    admin_roles,
    admin_stock,
    api,
    cart,
    checkout,
    health,
    orders,
    paystack,
    paystack_webhook,
    shop,
)
from storefront.config import Settings, load_config
from storefront.db.engine import close_session, serve_database
from storefront.db.errors import is_database_busy
from storefront.db.sqlite_batches import serve_sqlite_batch_writer
from storefront.extensions import init_auth
from storefront.lib.money import format_minor
from storefront.logs import configure_logging
from storefront.models import STATE_ENUMS
from storefront.web import (
    back_office,
    csrf,
    request_input,
    security,
    sessions,
    static_files,
    uploads,
)
from storefront.web.auth import current_customer
from storefront.web.cart_badge import badge_count
from storefront.web.htmx import is_htmx

PROJECT_ROOT = Path(__file__).resolve().parent.parent

ServingHook = Callable[[Quart], AbstractAsyncContextManager[None]]

# Started in this order when serving begins, stopped in reverse: the database first and last.
SERVING_HOOKS: list[ServingHook] = [serve_database, serve_sqlite_batch_writer]
SERVING_HOOKS.append(serve_outbox_sender)
SERVING_HOOKS.extend([serve_paystack_client, serve_reconciler])


def create_app(overrides: dict[str, Any] | None = None) -> Quart:
    """Build the app: config, extensions, blueprints, error pages and the serving lifespan."""
    config = load_config(overrides)
    configure_logging()
    app = Quart(
        __name__,
        template_folder=str(PROJECT_ROOT / "templates"),
        static_folder=str(PROJECT_ROOT / "static"),
    )
    app.config.update(config)
    settings = Settings.from_config(config)
    app.extensions["settings"] = settings
    # First of the before-request hooks: nothing may touch the database before the body is in.
    request_input.init_request_input(app)
    init_auth(app)
    csrf.init_csrf(app)
    static_files.init_static_files(app)
    uploads.init_uploads(app)
    sessions.init_sessions(app)
    back_office.init_back_office(app)
    app.jinja_env.filters["money"] = format_minor
    app.jinja_env.globals.update({enum.__name__: enum for enum in STATE_ENUMS})
    app.teardown_appcontext(close_session)

    for module in (
        health,
        shop,
        cart,
        api,
        account,
        checkout,
        orders,
        paystack,
        paystack_webhook,
        admin,
        admin_audit,
        admin_emails,
        admin_roles,
        admin_products,
        admin_product_photos,
        admin_stock,
        admin_categories,
        admin_coupons,
    ):
        app.register_blueprint(module.blueprint)

    app.register_error_handler(HTTPException, _render_http_error)
    for database_failure in (DBAPIError, sqlite3.OperationalError, PoolTimeoutError, OSError):
        app.register_error_handler(database_failure, _render_database_busy)
    security.init_security(app)

    @app.context_processor
    async def inject_customer() -> dict[str, Any]:
        return {"customer": await current_customer()}

    @app.context_processor
    async def inject_cart_count() -> dict[str, Any]:
        # The header badge shows the count the cart code keeps in its cookie: no query.
        return {"cart_count": badge_count()}

    _run_template_context_processors_inline(app)
    if settings.trusted_proxy_hops:
        # The client address (rate limits), scheme and host as the trusted proxies saw them.
        app.asgi_app = ProxyFixMiddleware(  # type: ignore[method-assign]
            app.asgi_app, mode="legacy", trusted_hops=settings.trusted_proxy_hops
        )

    @app.while_serving  # type: ignore[type-var]
    async def lifespan() -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            for hook in SERVING_HOOKS:
                await stack.enter_async_context(hook(app))
            yield

    return app


def _run_template_context_processors_inline(app: Quart) -> None:
    """Every render runs every context processor, and Quart runs a synchronous one in a thread:
    a hop per processor per render. The synchronous ones (quart-auth's `current_user`, and the
    Flask default every blueprint inherits, which returns {} under Quart) are cheap and never
    block, so each runs inline instead."""
    for name, processors in app.template_context_processors.items():
        app.template_context_processors[name] = [
            processor if iscoroutinefunction(processor) else _inline(cast(SyncProcessor, processor))
            for processor in processors
        ]


SyncProcessor = Callable[[], dict[str, Any]]


def _inline(processor: SyncProcessor) -> Callable[[], Awaitable[dict[str, Any]]]:
    async def run_inline() -> dict[str, Any]:
        return processor()

    return run_inline


async def _render_database_busy(error: Exception) -> Response:
    """A lock the shop could not get in time, a database that is unreachable or dropped the
    connection, or no pooled connection free in time: 503 with a message and Retry-After, not a
    500 page; the transaction that met it was rolled back. Any other error is a 500."""
    if not is_database_busy(error):
        raise error
    # The page must not touch the database: the customer shows only if still loaded.
    customer = g.get("customer")
    if customer is None or inspect(customer).expired:
        g.customer = None
    busy = ServiceUnavailable(
        "The shop is very busy right now and could not finish that. Please try again in a moment."
    )
    response = await make_response(await _render_http_error(busy))
    response.headers["Retry-After"] = "5"
    return cast(Response, response)


async def _render_http_error(error: HTTPException) -> Response | tuple[str, int]:
    status = error.code or 500
    if request.path.startswith("/api/"):
        return {"error": error.description or error.name}, status  # type: ignore[return-value]
    template = "errors/fragment.html" if is_htmx() else "errors/page.html"
    return await render_template(template, error=error, status=status), status
