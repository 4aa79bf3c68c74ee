"""One valid change for every unsafe /admin route, in one place.

tests/test_admin_policy.py posts each sample as the least role its view admits and checks that
the change left an audit row by that user (with JavaScript off and with htmx), and that the
same post from a visitor, a customer, a staff member on an owner-only route or without the CSRF
token changed nothing. A new unsafe /admin route adds its sample here; the policy test fails
until it does.

A sample maker is called once per check, so each call sets up its own rows (a fresh product, a
fresh dead email...) and returns the rule's arguments and the form that changes them."""

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from io import BytesIO
from typing import Any

import pytest
from PIL import Image
from quart import Quart
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession
from werkzeug.datastructures import FileStorage

from storefront.db.engine import sessionmaker_for
from storefront.db.transactions import write_transaction
from storefront.models import OutboxEmail, OutboxStatus, Product, ProductImage, User
from storefront.services.outbox.queueing import queue_email
from storefront.services.uploads import store_photo
from storefront.web.uploads import upload_folder


@dataclass
class SampleContext:
    app: Quart
    request: pytest.FixtureRequest

    def fixture(self, name: str) -> Any:
        """A factory fixture by name (add_product, add_category, make_user...)."""
        return self.request.getfixturevalue(name)

    def session(self) -> AsyncSession:
        return sessionmaker_for(self.app)()


@dataclass(frozen=True)
class ChangeSample:
    path_values: dict[str, Any] = field(default_factory=dict)
    form: dict[str, str] = field(default_factory=dict)
    files: dict[str, FileStorage] = field(default_factory=dict)


SampleMaker = Callable[[SampleContext], Awaitable[ChangeSample]]
CHANGE_SAMPLES: dict[str, SampleMaker] = {}


def change_sample(endpoint: str) -> Callable[[SampleMaker], SampleMaker]:
    """Register the sample maker of one endpoint ("blueprint.view")."""

    def register(maker: SampleMaker) -> SampleMaker:
        assert endpoint not in CHANGE_SAMPLES, f"two samples for {endpoint}"
        CHANGE_SAMPLES[endpoint] = maker
        return maker

    return register


async def _dead_email(context: SampleContext) -> int:
    async with context.session() as session, write_transaction(session):
        email = await queue_email(
            session,
            "gone@example.com",
            "test_email",
            {"sent_by": "tests"},
            f"sample:{uuid.uuid4().hex}",
        )
        assert email is not None
        await session.execute(
            update(OutboxEmail)
            .where(OutboxEmail.id == email.id)
            .values(status=OutboxStatus.DEAD, attempts=5)
        )
    return email.id


@change_sample("admin_emails.retry_email")
async def _retry_email(context: SampleContext) -> ChangeSample:
    return ChangeSample({"email_id": await _dead_email(context)})


@change_sample("admin_emails.retry_all_dead")
async def _retry_all_dead(context: SampleContext) -> ChangeSample:
    await _dead_email(context)
    return ChangeSample()


@change_sample("admin_emails.send_test_email")
async def _send_test_email(context: SampleContext) -> ChangeSample:
    return ChangeSample(form={"to": "check@example.com"})


@change_sample("admin_roles.change_user_role")
async def _change_user_role(context: SampleContext) -> ChangeSample:
    user: User = await context.fixture("make_user")()
    return ChangeSample({"user_id": user.id}, {"role": "staff"})


def _png(colour: str) -> bytes:
    buffer = BytesIO()
    Image.new("RGB", (60, 40), colour).save(buffer, "PNG")
    return buffer.getvalue()


async def _product_with_photos(context: SampleContext, count: int) -> tuple[int, list[int]]:
    """A fresh product with `count` stored photos (files and rows); its id and the photos' ids."""
    product: Product = await context.fixture("add_product")()
    photos = [
        await store_photo(upload_folder(context.app), _png(colour), max_bytes=1024 * 1024)
        for colour in ("teal", "orange", "navy")[:count]
    ]
    async with context.session() as session, write_transaction(session):
        images = [
            ProductImage(
                product_id=product.id,
                position=position,
                card_filename=photo.card.name,
                page_filename=photo.page.name,
                width=photo.page.width,
                height=photo.page.height,
            )
            for position, photo in enumerate(photos)
        ]
        session.add_all(images)
    return product.id, [image.id for image in images]


@change_sample("admin_products.add_product")
async def _add_product(context: SampleContext) -> ChangeSample:
    return ChangeSample(
        form={
            "name": f"Kente Stole {uuid.uuid4().hex[:6]}",
            "price": "120.00",
            "description": "Hand-woven in Bonwire.",
            "is_active": "1",
            "low_stock_threshold": "3",
        }
    )


@change_sample("admin_products.update_product")
async def _update_product(context: SampleContext) -> ChangeSample:
    product: Product = await context.fixture("add_product")(price_minor=5_000)
    return ChangeSample(
        {"product_id": product.id}, {"name": product.name, "price": "55.50", "is_active": "1"}
    )


@change_sample("admin_product_photos.upload_photo")
async def _upload_photo(context: SampleContext) -> ChangeSample:
    product: Product = await context.fixture("add_product")()
    image = FileStorage(BytesIO(_png("crimson")), filename="stole.png", content_type="image/png")
    return ChangeSample({"product_id": product.id}, files={"image": image})


@change_sample("admin_product_photos.move_photo")
async def _move_photo(context: SampleContext) -> ChangeSample:
    product_id, image_ids = await _product_with_photos(context, 2)
    return ChangeSample({"product_id": product_id, "image_id": image_ids[1]}, {"direction": "up"})


@change_sample("admin_product_photos.delete_photo")
async def _delete_photo(context: SampleContext) -> ChangeSample:
    product_id, image_ids = await _product_with_photos(context, 1)
    return ChangeSample({"product_id": product_id, "image_id": image_ids[0]})


@change_sample("admin_stock.adjust")
async def _adjust_stock(context: SampleContext) -> ChangeSample:
    product = await context.fixture("add_product")(stock=5)
    return ChangeSample({"product_id": product.id}, {"change": "-2", "reason": "Counted"})


@change_sample("admin_categories.create")
async def _create_category(context: SampleContext) -> ChangeSample:
    return ChangeSample(form={"name": f"Sample {uuid.uuid4().hex[:8]}"})


@change_sample("admin_categories.update")
async def _update_category(context: SampleContext) -> ChangeSample:
    category = await context.fixture("add_category")("Renamed soon")
    return ChangeSample({"category_id": category.id}, {"name": f"Renamed {uuid.uuid4().hex[:8]}"})


@change_sample("admin_categories.move")
async def _move_category(context: SampleContext) -> ChangeSample:
    category = await context.fixture("add_category")("Moved up", position=10**6)
    return ChangeSample({"category_id": category.id}, {"direction": "up"})


@change_sample("admin_categories.delete")
async def _delete_category(context: SampleContext) -> ChangeSample:
    category = await context.fixture("add_category")("Deleted soon")
    return ChangeSample({"category_id": category.id})


@change_sample("admin_coupons.create")
async def _create_coupon(context: SampleContext) -> ChangeSample:
    return ChangeSample(
        form={
            "code": f"NEW{uuid.uuid4().hex[:8]}",
            "kind": "percent",
            "value": "10",
            "min_subtotal": "50.00",
            "starts_at": "2026-01-01T00:00",
            "ends_at": "",
            "max_uses": "100",
            "max_uses_per_customer": "1",
            "is_active": "1",
        }
    )


@change_sample("admin_coupons.update")
async def _update_coupon(context: SampleContext) -> ChangeSample:
    coupon = await context.fixture("make_coupon")(kind="fixed", value=2_000)
    return ChangeSample({"coupon_id": coupon.id}, {"max_uses": "50", "is_active": "1"})


@change_sample("admin_coupons.end")
async def _end_coupon(context: SampleContext) -> ChangeSample:
    coupon = await context.fixture("make_coupon")(kind="percent", value=1_000)
    return ChangeSample({"coupon_id": coupon.id})
