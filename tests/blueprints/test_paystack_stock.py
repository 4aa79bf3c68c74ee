"""The stock ledger through Paystack over real HTTP: a reservation is a sale and a payment that
fails gives it back as a release, each movement naming its order; a paid one keeps its sale."""

import pytest
from sqlalchemy import select

from storefront.db.engine import sessionmaker_for
from storefront.models import Order, StockMovement
from storefront.services.stock import select_stock_mismatches
from tests.fake_paystack import FakePaystack
from tests.fixtures_paystack import paystack_overrides

pytestmark = pytest.mark.both_databases


@pytest.fixture(name="app_overrides")
def _app_overrides(fake_paystack: FakePaystack) -> dict[str, object]:
    return paystack_overrides(fake_paystack, RATELIMIT_ENABLED=False)


async def movements_of(app, product) -> list[tuple[int, str, str | None]]:
    async with sessionmaker_for(app)() as session:
        rows = await session.execute(
            select(StockMovement.change, StockMovement.kind, Order.number)
            .outerjoin(Order, Order.id == StockMovement.order_id)
            .where(StockMovement.product_id == product.id)
            .order_by(StockMovement.id)
        )
        return [tuple(row) for row in rows]


@pytest.mark.parametrize(("outcome", "released"), [("failed", True), ("success", False)])
async def test_a_paystack_order_takes_stock_and_a_failed_one_gives_it_back(
    app, fake_paystack, start_order_payment, outcome, released
):
    started = await start_order_payment(quantity=2, stock=5)
    assert await movements_of(app, started.product) == [
        (5, "restock", None),
        (-2, "sale", started.order_number),
    ]
    if outcome == "success":
        fake_paystack.mark_paid(started.reference)
    else:
        fake_paystack.mark_status(started.reference, "failed")
    page = await started.client.get(f"/paystack/callback?reference={started.reference}")
    assert page.status_code == 200
    expected = [(5, "restock", None), (-2, "sale", started.order_number)]
    if released:
        expected.append((2, "release", started.order_number))
    assert await movements_of(app, started.product) == expected
    async with sessionmaker_for(app)() as session:
        assert await select_stock_mismatches(session) == []
