"""Fixtures for the cart and coupon tests (products come from fixtures_shop's add_product)."""

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import pytest
from quart import Quart

from storefront.db.engine import sessionmaker_for
from storefront.db.transactions import write_transaction
from storefront.models import Coupon


@pytest.fixture(name="add_coupon")
def _add_coupon(app: Quart) -> Callable[..., Awaitable[Coupon]]:
    """Create a coupon; `value` is basis points for percent and pesewas for fixed."""

    async def make(
        code: str = "WELCOME10",
        kind: str = "percent",
        value: int = 1000,
        min_subtotal_minor: int = 0,
        starts_at: datetime | None = None,
        ends_at: datetime | None = None,
        max_uses: int | None = None,
        uses: int = 0,
        max_uses_per_customer: int | None = None,
        is_active: bool = True,
        **extra: Any,
    ) -> Coupon:
        async with sessionmaker_for(app)() as db_session, write_transaction(db_session):
            coupon = Coupon(
                code=code.strip().upper(),
                kind=kind,
                value=value,
                min_subtotal_minor=min_subtotal_minor,
                starts_at=starts_at,
                ends_at=ends_at,
                max_uses=max_uses,
                uses=uses,
                max_uses_per_customer=max_uses_per_customer,
                is_active=is_active,
                **extra,
            )
            db_session.add(coupon)
            await db_session.flush()
        return coupon

    return make
