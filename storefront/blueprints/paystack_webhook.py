"""Paystack's webhook: the signature is the gate; store once, answer at once, settle after."""

import json
from datetime import datetime
from typing import Any

from quart import Blueprint, current_app, request
from sqlalchemy.ext.asyncio import AsyncSession

from storefront.background.paystack_serving import paystack_client_for
from storefront.blueprints.paystack import request_payment_settings
from storefront.db.engine import get_session, sessionmaker_for
from storefront.db.transactions import ShopBusy, run_write_with_retries
from storefront.lib.paystack import REFERENCE_PATTERN, SIGNATURE_HEADER, webhook_signature_valid
from storefront.models import utcnow
from storefront.models.payment import GatewayStatus, PaymentStatus
from storefront.services.payments.closing import credit_success_after_close
from storefront.services.payments.settings import PaymentSettings
from storefront.services.payments.settling import finalize_payment
from storefront.services.payments.webhooks import (
    mark_webhook_processed,
    record_webhook_event,
    run_in_new_session,
)
from storefront.web.csrf import csrf_exempt
from storefront.web.settings import settings

blueprint = Blueprint("paystack_webhook", __name__)

# Paystack's events nest four or five levels deep; far deeper is not an event.
MAX_PAYLOAD_DEPTH = 32


@blueprint.post("/paystack/webhook")
@csrf_exempt
async def webhook() -> tuple[dict[str, str], int] | tuple[dict[str, str], int, dict[str, str]]:
    """Paystack's signed notice: store it once, answer at once, settle in the background."""
    raw_body = await request.get_data(as_text=False)
    if isinstance(raw_body, str):  # never: as_text=False gives bytes (typing says AnyStr)
        raw_body = raw_body.encode()
    secret = settings().paystack_secret_key
    if not webhook_signature_valid(secret, raw_body, request.headers.get(SIGNATURE_HEADER)):
        return {"status": "error", "message": "Invalid signature"}, 401
    payload = _parse_payload(raw_body)
    if payload is None:
        return {"status": "error", "message": "Body is not JSON we can store"}, 400
    event = payload.get("event") if isinstance(payload, dict) else None
    found = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(event, str) or not event or not isinstance(found, dict):
        return {"status": "error", "message": "Expected {event, data}"}, 400
    reference = _event_reference(found)
    now = utcnow()

    async def store(write_session: AsyncSession) -> bool:
        return await record_webhook_event(write_session, event, reference, payload, now)

    try:
        await run_write_with_retries(get_session(), store)
    except ShopBusy:
        return {"status": "error", "message": "Busy; send it again"}, 503, {"Retry-After": "5"}
    if event == "charge.success" and REFERENCE_PATTERN.fullmatch(reference):
        current_app.add_background_task(
            _settle_from_webhook,
            reference,
            found.get("status") == GatewayStatus.SUCCESS,
            request_payment_settings(),
        )
    return {"status": "ok"}, 200


def _parse_payload(raw_body: bytes) -> Any:
    """The body as JSON every database can store, else None: no NaN or Infinity, no nesting
    deeper than MAX_PAYLOAD_DEPTH (ten thousand brackets overflow json's recursion), no NUL
    or lone surrogate in a string (PostgreSQL refuses both)."""
    try:
        payload = json.loads(raw_body, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        return None
    pending: list[tuple[Any, int]] = [(payload, 1)]
    while pending:
        value, depth = pending.pop()
        if isinstance(value, dict):
            pending.extend((key, depth) for key in value)
            pending.extend((item, depth + 1) for item in value.values())
        elif isinstance(value, list):
            pending.extend((item, depth + 1) for item in value)
        elif isinstance(value, str) and not _storable_text(value):
            return None
        if depth > MAX_PAYLOAD_DEPTH:
            return None
    return payload


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


def _storable_text(text: str) -> bool:
    if "\x00" in text:
        return False
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _event_reference(found: dict[str, object]) -> str:
    for candidate in (found.get("reference"), found.get("transaction_reference")):
        if isinstance(candidate, str) and candidate:
            return candidate[:100]
    transaction = found.get("transaction")
    if isinstance(transaction, dict) and isinstance(transaction.get("reference"), str):
        return transaction["reference"][:100]
    return ""


async def _settle_from_webhook(
    reference: str, reported_success: bool, settings: PaymentSettings
) -> None:
    """The webhook's follow-up, in its own sessions, after the 200 went out."""
    sessionmaker = sessionmaker_for(current_app)
    state = await finalize_payment(
        sessionmaker, paystack_client_for(current_app), reference, settings
    )
    if state.status == PaymentStatus.PENDING:
        return
    if reported_success and state.status in (PaymentStatus.FAILED, PaymentStatus.ABANDONED):
        # Charged after the shop closed the payment: the money goes to the wallet, once.
        await credit_success_after_close(
            sessionmaker, paystack_client_for(current_app), reference, settings
        )
    now: datetime = utcnow()

    async def settle(write_session: AsyncSession) -> None:
        await mark_webhook_processed(write_session, "charge.success", reference, now)

    await run_in_new_session(sessionmaker, settle)
