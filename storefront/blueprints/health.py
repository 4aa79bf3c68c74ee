"""Liveness and readiness for load balancers and operators."""

import asyncio

from quart import Blueprint, current_app
from sqlalchemy import text

from storefront.db.engine import sessionmaker_for
from storefront.models import utcnow
from storefront.models.outbox import OutboxStatus
from storefront.services.outbox.backlog import select_outbox_backlog

blueprint = Blueprint("health", __name__)
# A database that accepts connections but never answers must not hang the probe.
READY_TIMEOUT_SECONDS = 3


@blueprint.get("/healthz")
async def healthz() -> tuple[dict[str, str], int]:
    """The process is up; touches nothing else."""
    return {"status": "ok"}, 200


@blueprint.get("/readyz")
async def readyz() -> tuple[dict[str, object], int]:
    """The database answers (503 with the reason when not); reports the email outbox backlog."""
    checks: dict[str, object] = {}
    try:
        async with asyncio.timeout(READY_TIMEOUT_SECONDS):
            async with sessionmaker_for(current_app)() as session:
                await session.execute(text("SELECT 1 FROM products LIMIT 1"))
                backlog = await select_outbox_backlog(session, utcnow())
        checks["database"] = "ok"
        checks["outbox"] = {
            "backlog": backlog.backlog,
            "oldest_pending_age_seconds": backlog.oldest_pending_age_seconds,
            "dead": backlog.counts[OutboxStatus.DEAD],
        }
    except Exception as error:  # noqa: BLE001 - any failure means not ready; say which
        reason = str(error) or f"no answer within {READY_TIMEOUT_SECONDS} s"
        checks["database"] = f"unavailable: {type(error).__name__}: {reason}"[:300]
        return {"status": "unavailable", "checks": checks}, 503
    return {"status": "ok", "checks": checks}, 200
