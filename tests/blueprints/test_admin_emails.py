"""Admin email pages: the outbox list with retry, the test email (GET shows, POST queues),
and the outbox backlog on /readyz."""

from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from storefront.background.outbox_sender import drain_outbox, send_due_batch
from storefront.db.engine import sessionmaker_for
from storefront.db.transactions import write_transaction
from storefront.lib.mail.transports import SmtpTransport
from storefront.models import OutboxEmail, utcnow
from storefront.services.outbox.queueing import queue_email
from tests.conftest import CSRF_TOKEN
from tests.fixtures_mail import smtp_config
from tests.live import free_port

T0 = datetime(2030, 1, 1, 12, 0, 0)
SENDER = "CyberWorld Test <shop@cyberworld.test>"
HTMX = {"HX-Request": "true"}


@pytest.fixture(name="app_overrides")
def _app_overrides(request, smtp_server) -> dict:
    overrides = smtp_config(smtp_server, OUTBOX_POLL_SECONDS=60)
    overrides["OUTBOX_SENDER_ENABLED"] = (
        request.node.get_closest_marker("sender_enabled") is not None
    )
    return overrides


@pytest.fixture(name="admin_client")
async def _admin_client(client, make_user, sign_in):
    admin = await make_user(email="boss@cyberworld.test", role="owner", name="Boss")
    sign_in(client, admin)
    return client


async def queue(app, to: str, key: str) -> int:
    async with sessionmaker_for(app)() as session, write_transaction(session):
        row = await queue_email(session, to, "test_email", {"sent_by": "tests"}, key)
    return row.id


async def rows(app) -> list[OutboxEmail]:
    async with sessionmaker_for(app)() as session:
        return list((await session.scalars(select(OutboxEmail).order_by(OutboxEmail.id))).all())


async def kill_with_failures(app, email_id: int) -> None:
    """Five failed attempts against a closed port, following the backoff schedule."""
    transport = SmtpTransport("127.0.0.1", free_port(), SENDER, timeout=2)
    now = T0
    for _ in range(5):
        await send_due_batch(sessionmaker_for(app), transport, now=now)
        [row] = [row for row in await rows(app) if row.id == email_id]
        now = row.next_attempt_at


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/admin/emails"),
        ("POST", "/admin/emails/1/retry"),
        ("POST", "/admin/emails/retry-dead"),
        ("GET", "/admin/test-email"),
        ("POST", "/admin/test-email"),
    ],
)
async def test_admins_only(client, make_user, sign_in, app, method, path):
    form = {"csrf_token": CSRF_TOKEN, "to": "x@example.com"}
    anonymous = await client.open(path, method=method, form=form if method == "POST" else None)
    assert anonymous.status_code == 303
    assert anonymous.headers["Location"].startswith("/login?next=")
    sign_in(client, await make_user())
    customer = await client.open(path, method=method, form=form if method == "POST" else None)
    assert customer.status_code == 403
    assert await rows(app) == []


async def test_outbox_page_lists_rows_with_counts_errors_and_attempts(app, admin_client):
    dead_id = await queue(app, "gone@example.com", "a")
    await kill_with_failures(app, dead_id)
    await queue(app, "waiting@example.com", "b")

    page = await admin_client.get("/admin/emails")
    html = await page.get_data(as_text=True)

    assert page.status_code == 200
    assert 'data-status="dead">1<' in html and 'data-status="pending">1<' in html
    assert "gone@example.com" in html and "waiting@example.com" in html
    assert "SMTP error" in html  # last error shown
    assert f'id="email-{dead_id}"' in html
    dead_row = html.split(f'id="email-{dead_id}"')[1].split("</tr>")[0]
    assert '<td class="num" data-label="Attempts">5</td>' in dead_row  # attempts
    assert f'action="/admin/emails/{dead_id}/retry"' in dead_row
    assert 'name="csrf_token"' in dead_row
    assert "Retry all 1 dead" in html

    dead_only = await (await admin_client.get("/admin/emails?status=dead")).get_data(as_text=True)
    assert "gone@example.com" in dead_only and "waiting@example.com" not in dead_only


@pytest.mark.parametrize("query", ["status=lost", "page=0", "page=abc", "page=-1"])
async def test_outbox_page_refuses_bad_filters(admin_client, query):
    response = await admin_client.get(f"/admin/emails?{query}")
    assert response.status_code == 400
    assert "<!doctype html>" in (await response.get_data(as_text=True)).lower()


async def test_five_failures_dead_then_admin_retry_delivers(app, admin_client, smtp_server):
    email_id = await queue(app, "ama@example.com", "order:7:customer")
    await kill_with_failures(app, email_id)
    [row] = await rows(app)
    assert (row.status, row.attempts) == ("dead", 5)

    response = await admin_client.post(
        f"/admin/emails/{email_id}/retry", form={"csrf_token": CSRF_TOKEN, "status": "dead"}
    )

    assert response.status_code == 303
    assert response.headers["Location"] == "/admin/emails?status=dead"
    [row] = await rows(app)
    assert (row.status, row.attempts) == ("pending", 0)
    follow = await (await admin_client.get("/admin/emails?status=dead")).get_data(as_text=True)
    assert f"Email #{email_id} is queued again." in follow

    result = await drain_outbox(
        sessionmaker_for(app), SmtpTransport("127.0.0.1", smtp_server.port, SENDER, timeout=5)
    )
    assert result.sent == 1
    [received] = await smtp_server.wait_for(1)
    assert received.rcpt_tos == ["ama@example.com"]
    [row] = await rows(app)
    assert (row.status, row.attempts) == ("sent", 1)


async def test_retry_with_htmx_returns_the_refreshed_list(app, admin_client):
    email_id = await queue(app, "gone@example.com", "h")
    await kill_with_failures(app, email_id)

    response = await admin_client.post(
        f"/admin/emails/{email_id}/retry", form={"csrf_token": CSRF_TOKEN}, headers=HTMX
    )

    html = await response.get_data(as_text=True)
    assert response.status_code == 200
    assert html.lstrip().startswith('<section id="outbox"')
    assert "<html" not in html
    assert f"Email #{email_id} is queued again." in html
    assert 'data-status="dead">0<' in html and 'data-status="pending">1<' in html


async def test_retry_all_dead(app, admin_client):
    ids = [await queue(app, f"gone{number}@example.com", f"all{number}") for number in range(2)]
    for email_id in ids:
        await kill_with_failures(app, email_id)
    await queue(app, "waiting@example.com", "alive")

    response = await admin_client.post(
        "/admin/emails/retry-dead", form={"csrf_token": CSRF_TOKEN}, headers=HTMX
    )

    assert response.status_code == 200
    assert "2 dead emails are queued again." in await response.get_data(as_text=True)
    assert [row.status for row in await rows(app)] == ["pending", "pending", "pending"]
    again = await admin_client.post("/admin/emails/retry-dead", form={"csrf_token": CSRF_TOKEN})
    assert again.status_code == 409
    assert "There are no dead emails." in await again.get_data(as_text=True)


async def test_retry_refuses_rows_that_are_not_dead(app, admin_client):
    email_id = await queue(app, "waiting@example.com", "alive")

    not_dead = await admin_client.post(
        f"/admin/emails/{email_id}/retry", form={"csrf_token": CSRF_TOKEN}, headers=HTMX
    )
    missing = await admin_client.post("/admin/emails/999/retry", form={"csrf_token": CSRF_TOKEN})

    assert not_dead.status_code == 409
    assert "is pending, not dead" in await not_dead.get_data(as_text=True)
    assert missing.status_code == 404
    assert "No email #999." in await missing.get_data(as_text=True)
    [row] = await rows(app)
    assert row.status == "pending"


async def test_retry_without_csrf_changes_nothing(app, admin_client):
    email_id = await queue(app, "gone@example.com", "csrf")
    await kill_with_failures(app, email_id)
    response = await admin_client.post(f"/admin/emails/{email_id}/retry", form={})
    assert response.status_code == 403
    [row] = await rows(app)
    assert row.status == "dead"


async def test_test_email_get_shows_the_form_and_never_sends(app, admin_client):
    response = await admin_client.get("/admin/test-email")
    html = await response.get_data(as_text=True)
    assert response.status_code == 200
    assert 'name="to" value="admin@shop.test"' in html  # ADMIN_EMAIL
    assert 'method="post" action="/admin/test-email"' in html
    assert 'name="csrf_token"' in html
    assert "SMTP 127.0.0.1" in html
    assert await rows(app) == []


async def test_test_email_post_queues_and_reports_then_it_arrives(app, admin_client, smtp_server):
    response = await admin_client.post(
        "/admin/test-email", form={"csrf_token": CSRF_TOKEN, "to": "owner@example.com"}
    )

    assert response.status_code == 303
    assert response.headers["Location"] == "/admin/test-email"
    [row] = await rows(app)
    assert (row.to_address, row.status) == ("owner@example.com", "pending")
    assert row.dedupe_key.startswith("test-email:")
    page = await (await admin_client.get("/admin/test-email")).get_data(as_text=True)
    assert f"Test email #{row.id} to owner@example.com is queued." in page
    assert "OUTBOX_SENDER_ENABLED is off" in page  # said plainly: this process won't send it

    await drain_outbox(
        sessionmaker_for(app), SmtpTransport("127.0.0.1", smtp_server.port, SENDER, timeout=5)
    )
    [received] = await smtp_server.wait_for(1)
    assert received.rcpt_tos == ["owner@example.com"]
    assert received.message["Subject"] == "Test email from CyberWorld Storefront"
    assert "boss@cyberworld.test" in received.text  # who asked for it


async def test_test_email_htmx_returns_the_form_fragment_with_the_report(app, admin_client):
    response = await admin_client.post(
        "/admin/test-email",
        form={"csrf_token": CSRF_TOKEN, "to": "owner@example.com"},
        headers=HTMX,
    )
    html = await response.get_data(as_text=True)
    assert response.status_code == 200
    assert html.lstrip().startswith('<div id="test-email">')
    assert "to owner@example.com is queued." in html
    assert len(await rows(app)) == 1


@pytest.mark.parametrize("to", ["", "not-an-address", "a@b", "<script>@x.com"])
async def test_test_email_refuses_a_bad_address(app, admin_client, to):
    response = await admin_client.post(
        "/admin/test-email", form={"csrf_token": CSRF_TOKEN, "to": to}, headers=HTMX
    )
    html = await response.get_data(as_text=True)
    assert response.status_code == 422
    assert 'class="error"' in html and "<script>" not in html
    assert await rows(app) == []


@pytest.mark.sender_enabled
async def test_test_email_is_sent_by_the_running_sender(app, admin_client, smtp_server):
    response = await admin_client.post(
        "/admin/test-email",
        form={"csrf_token": CSRF_TOKEN, "to": "owner@example.com"},
        headers=HTMX,
    )
    assert "sender in this worker was woken" in await response.get_data(as_text=True)
    [received] = await smtp_server.wait_for(1, within_seconds=5)
    assert received.rcpt_tos == ["owner@example.com"]


async def test_readyz_reports_backlog_and_oldest_pending_age(app, client, session):
    empty = await (await client.get("/readyz")).get_json()
    assert empty["checks"]["outbox"] == {
        "backlog": 0,
        "oldest_pending_age_seconds": None,
        "dead": 0,
    }
    await queue(app, "a@example.com", "r1")
    await queue(app, "b@example.com", "r2")
    async with write_transaction(session):
        await session.execute(
            OutboxEmail.__table__.update()
            .where(OutboxEmail.dedupe_key == "r1")
            .values(created_at=utcnow() - timedelta(minutes=10))
        )
    response = await client.get("/readyz")
    outbox = (await response.get_json())["checks"]["outbox"]
    assert response.status_code == 200
    assert outbox["backlog"] == 2 and outbox["dead"] == 0
    assert 600 <= outbox["oldest_pending_age_seconds"] < 660
