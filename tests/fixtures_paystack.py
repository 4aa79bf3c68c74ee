"""Fixtures for the paystack tests: a fake Paystack over real HTTP, config that uses it, and
reads of what a payment changed (its row, its order, stock, coupon uses, queued emails)."""

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from quart import Quart, Response
from quart.testing import QuartClient
from sqlalchemy import func, select

from storefront.db.engine import sessionmaker_for
from storefront.models import Coupon, CouponRedemption, Order, OutboxEmail, Payment, Product, User
from tests.fake_paystack import FakePaystack
from tests.fixtures_checkout import checkout_form

PAYSTACK_SECRET_KEY = "sk_test_fake_secret"
PAYSTACK_PUBLIC_KEY = "pk_test_fake_public"


def paystack_overrides(fake: FakePaystack, **extra: Any) -> dict[str, Any]:
    """App config pointing at the fake, with a short timeout so slow answers time out fast."""
    return {
        "PAYSTACK_BASE_URL": fake.base_url,
        "PAYSTACK_SECRET_KEY": PAYSTACK_SECRET_KEY,
        "PAYSTACK_PUBLIC_KEY": PAYSTACK_PUBLIC_KEY,
        "PAYSTACK_TIMEOUT_SECONDS": 1.0,
        "PUBLIC_BASE_URL": "http://shop.test",
        **extra,
    }


@pytest.fixture(name="fake_paystack")
async def _fake_paystack() -> AsyncIterator[FakePaystack]:
    """A running fake; a request that Paystack's spec rejects fails the test at teardown."""
    fake = FakePaystack(secret_key=PAYSTACK_SECRET_KEY)
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()
    assert fake.spec_violations == [], "requests Paystack's spec rejects were sent"


async def drain_background_tasks(app: Quart) -> None:
    """Wait for the webhook's follow-ups (Quart background tasks) to finish."""
    while app.background_tasks:
        await asyncio.gather(*list(app.background_tasks), return_exceptions=True)


async def count_rows(app: Quart, **statements: Any) -> dict[str, int]:
    """Each named count statement's result, read in a fresh session."""
    async with sessionmaker_for(app)() as db_session:
        counts = {}
        for name, statement in statements.items():
            counts[name] = await db_session.scalar(statement)
        return counts


async def read_payment(app: Quart, reference: str) -> Payment:
    async with sessionmaker_for(app)() as db_session:
        payment = await db_session.scalar(select(Payment).where(Payment.reference == reference))
        assert payment is not None
        return payment


async def read_order(app: Quart, number: str) -> Order:
    async with sessionmaker_for(app)() as db_session:
        order = await db_session.scalar(select(Order).where(Order.number == number))
        assert order is not None
        return order


async def read_stock(app: Quart, product: Product) -> int:
    async with sessionmaker_for(app)() as db_session:
        return await db_session.scalar(select(Product.stock).where(Product.id == product.id))


async def read_coupon_uses(app: Quart, coupon: Coupon) -> tuple[int, int]:
    """(the coupon's use count, its redemption rows)."""
    async with sessionmaker_for(app)() as db_session:
        uses = await db_session.scalar(select(Coupon.uses).where(Coupon.id == coupon.id))
        redemptions = await db_session.scalar(
            select(func.count())
            .select_from(CouponRedemption)
            .where(CouponRedemption.coupon_id == coupon.id)
        )
        return uses, redemptions


async def queued_emails(app: Quart) -> list[tuple[str, str]]:
    """(dedupe key's template part, recipient) of every queued email."""
    async with sessionmaker_for(app)() as db_session:
        rows = await db_session.execute(
            select(OutboxEmail.dedupe_key, OutboxEmail.to_address).order_by(OutboxEmail.id)
        )
        return [(key.split(":")[0], to) for key, to in rows]


def paystack_form(total_minor: int | None = None, **fields: str) -> dict[str, str]:
    """The checkout form as the Paystack button posts it to /paystack/init."""
    return checkout_form(total_minor, payment_method="paystack", **fields)


@dataclass
class StartedPayment:
    """A shopper's Paystack checkout after POST /paystack/init."""

    client: QuartClient
    user: User
    product: Product
    coupon: Coupon | None
    response: Response
    reference: str | None
    order_number: str | None

    @property
    def authorization_url(self) -> str:
        return self.response.headers.get("Location") or self.response.headers["HX-Redirect"]


@pytest.fixture(name="start_order_payment")
def _start_order_payment(
    app: Quart,
    make_user: Callable[..., Awaitable[User]],
    make_product: Callable[..., Awaitable[Product]],
    make_coupon: Callable[..., Awaitable[Coupon]],
    fill_cart: Callable[..., Awaitable[Any]],
    shopper_client: Callable[[User], Awaitable[QuartClient]],
) -> Callable[..., Awaitable[StartedPayment]]:
    """A signed-in shopper with 2 × GH₵ 100.00 and a 10 % coupon in the cart presses Paystack."""

    async def start(
        quantity: int = 2, stock: int = 5, with_coupon: bool = True, **headers: str
    ) -> StartedPayment:
        user = await make_user()
        product = await make_product(price_minor=10_000, stock=stock)
        coupon = None
        if with_coupon:
            code = f"PAY{uuid.uuid4().hex[:8]}".upper()
            coupon = await make_coupon(code=code, kind="percent", value=1000, max_uses=5)
        await fill_cart(user, [(product, quantity)], coupon.code if coupon else None)
        client = await shopper_client(user)
        response = await client.post("/paystack/init", form=paystack_form(), headers=headers)
        async with sessionmaker_for(app)() as db_session:
            payment = await db_session.scalar(
                select(Payment).where(Payment.user_id == user.id).order_by(Payment.id.desc())
            )
            order = (
                await db_session.get(Order, payment.order_id)
                if payment and payment.order_id
                else None
            )
        return StartedPayment(
            client=client,
            user=user,
            product=product,
            coupon=coupon,
            response=response,
            reference=payment.reference if payment else None,
            order_number=order.number if order else None,
        )

    return start
