"""Liveness and readiness for load balancers and operators."""

from quart import Blueprint, current_app
from sqlalchemy import text

from storefront.db import sessionmaker_for

blueprint = Blueprint("health", __name__)


@blueprint.get("/healthz")
async def healthz() -> tuple[dict[str, str], int]:
    """The process is up; touches nothing else."""
    return {"status": "ok"}, 200


@blueprint.get("/readyz")
async def readyz() -> tuple[dict[str, object], int]:
    """The database answers; 503 with the reason when it does not."""
    checks: dict[str, object] = {}
    try:
        async with sessionmaker_for(current_app)() as session:
            await session.execute(text("SELECT 1 FROM products LIMIT 1"))
        checks["database"] = "ok"
    except Exception as error:  # noqa: BLE001 - any failure means not ready; say which
        checks["database"] = f"unavailable: {type(error).__name__}: {error}"[:300]
        return {"status": "unavailable", "checks": checks}, 503
    return {"status": "ok", "checks": checks}, 200
