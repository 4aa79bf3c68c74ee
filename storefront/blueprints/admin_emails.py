"""Back office for email: the outbox (counts, errors, retry dead rows) and the test email."""

import uuid
from typing import Any

from quart import Blueprint, Response, current_app, flash, request
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from werkzeug.exceptions import BadRequest

from storefront.background.outbox_sender import mail_transport
from storefront.db.engine import get_session
from storefront.lib.mail.transports import describe_transport
from storefront.models import OutboxEmail, OutboxStatus, User, utcnow
from storefront.services.audit import RecordRef, audited_write, record_change
from storefront.services.outbox.backlog import select_outbox_backlog, select_outbox_emails
from storefront.services.outbox.composing import InvalidEmailAddress, normalise_address
from storefront.services.outbox.delivery import retry_dead_emails
from storefront.services.outbox.queueing import queue_email
from storefront.web.auth import current_customer, staff_required
from storefront.web.back_office import render_back_office
from storefront.web.htmx import is_htmx, navigate
from storefront.web.settings import settings

blueprint = Blueprint("admin_emails", __name__)

PAGE_SIZE = 50
TEST_EMAIL_KEY_PREFIX = "test-email:"


def _status_filter(raw: str | None) -> str | None:
    if not raw:
        return None
    if raw not in tuple(OutboxStatus):
        raise BadRequest(f"Unknown status {raw!r}: use one of {', '.join(OutboxStatus)}.")
    return raw


def _page_number(raw: str | None) -> int:
    if not raw:
        return 1
    if not raw.isdigit() or not 1 <= int(raw) <= 100_000:
        raise BadRequest("The page must be a whole number from 1.")
    return int(raw)


def _list_url(status: str | None) -> str:
    return f"/admin/emails?status={status}" if status else "/admin/emails"


async def _render_outbox(
    status: str | None, page: int = 1, http_status: int = 200, **messages: Any
) -> Response:
    session = get_session()
    backlog = await select_outbox_backlog(session, utcnow(), count_sent=True)
    rows = await select_outbox_emails(
        session, status, limit=PAGE_SIZE + 1, offset=(page - 1) * PAGE_SIZE
    )
    return await render_back_office(
        "admin/emails.html",
        "outbox",
        http_status,
        backlog=backlog,
        rows=rows[:PAGE_SIZE],
        has_next=len(rows) > PAGE_SIZE,
        page=page,
        status_filter=status,
        statuses=tuple(OutboxStatus),
        **messages,
    )


async def _after_retry(status: str | None, message: str) -> Response:
    """htmx: the refreshed list with the message; without JS: flash and back to the list."""
    if is_htmx():
        return await _render_outbox(status, notice=message)
    await flash(message, "ok")
    return await navigate(_list_url(status))


async def _record_retries(session: AsyncSession, actor: User | None, email_ids: list[int]) -> None:
    for email_id in email_ids:
        await record_change(
            session,
            actor,
            "email.retry",
            RecordRef("outbox_email", email_id),
            {"status": OutboxStatus.DEAD},
            {"status": OutboxStatus.PENDING},
        )


@blueprint.get("/admin/emails")
@staff_required
async def emails() -> Response:
    """The email outbox: counts by status, recent emails, last errors; retry dead ones."""
    status = _status_filter(request.args.get("status"))
    return await _render_outbox(status, _page_number(request.args.get("page")))


@blueprint.post("/admin/emails/<int:email_id>/retry")
@staff_required
async def retry_email(email_id: int) -> Response:
    """Queue one dead email again with a fresh set of attempts."""
    status = _status_filter((await request.form).get("status"))
    actor = await current_customer()
    session = get_session()
    async with audited_write(session):
        retried = await retry_dead_emails(session, utcnow(), email_id=email_id)
        current_status = None
        if retried:
            await _record_retries(session, actor, [email_id])
        else:
            row = await session.get(OutboxEmail, email_id)
            current_status = row.status if row else None
    if retried:
        return await _after_retry(status, f"Email #{email_id} is queued again.")
    if current_status is None:
        return await _render_outbox(status, http_status=404, error=f"No email #{email_id}.")
    return await _render_outbox(
        status,
        http_status=409,
        error=f"Email #{email_id} is {current_status}, not dead: only dead emails are retried.",
    )


@blueprint.post("/admin/emails/retry-dead")
@staff_required
async def retry_all_dead() -> Response:
    """Queue every dead email again."""
    status = _status_filter((await request.form).get("status"))
    actor = await current_customer()
    session = get_session()
    async with audited_write(session):
        dead_ids = list(
            await session.scalars(
                select(OutboxEmail.id).where(OutboxEmail.status == OutboxStatus.DEAD)
            )
        )
        retried = await retry_dead_emails(session, utcnow())
        if retried:
            await _record_retries(session, actor, dead_ids)
    if not retried:
        return await _render_outbox(status, http_status=409, error="There are no dead emails.")
    plural = "email is" if retried == 1 else "emails are"
    return await _after_retry(status, f"{retried} dead {plural} queued again.")


async def _render_test_email(
    to: str, http_status: int = 200, to_error: str = "", report: str = ""
) -> Response:
    session = get_session()
    recent = await select_outbox_emails(session, key_prefix=TEST_EMAIL_KEY_PREFIX, limit=5)
    return await render_back_office(
        "admin/test_email.html",
        "form",
        http_status,
        notice=report,
        to=to,
        to_error=to_error,
        recent=recent,
        transport_description=describe_transport(mail_transport(settings())),
        sender_running="outbox_sender" in current_app.extensions,
    )


@blueprint.get("/admin/test-email")
@staff_required
async def test_email_form() -> Response:
    """Send a test email to check the mail settings (the form; only the POST sends)."""
    return await _render_test_email(settings().admin_email)


@blueprint.post("/admin/test-email")
@staff_required
async def send_test_email() -> Response:
    """Queue a test email to `to` and say where it will go."""
    to = ((await request.form).get("to") or "").strip()
    try:
        address = normalise_address(to)
    except InvalidEmailAddress as error:
        return await _render_test_email(to, http_status=422, to_error=str(error))
    admin = await current_customer()
    assert admin is not None  # staff_required
    session = get_session()
    async with audited_write(session):
        queued = await queue_email(
            session,
            address,
            "test_email",
            {"sent_by": admin.email},
            TEST_EMAIL_KEY_PREFIX + uuid.uuid4().hex,
        )
        assert queued is not None  # a fresh random key never collides
        await record_change(session, admin, "email.test", queued, None, {"to_address": address})
    transport = describe_transport(mail_transport(settings()))
    if "outbox_sender" in current_app.extensions:
        when = "The sender in this worker was woken and sends it within seconds"
    else:
        when = (
            "The outbox sender is not running in this process (OUTBOX_SENDER_ENABLED is off), "
            "so it waits in the outbox until a worker with the sender runs"
        )
    report = f"Test email #{queued.id} to {address} is queued. {when}, via {transport}."
    if is_htmx():
        return await _render_test_email(address, report=report)
    await flash(report, "ok")
    return await navigate("/admin/test-email")
