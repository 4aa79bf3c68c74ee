"""Fixtures for the mail tests: a real aiosmtpd server (plain, implicit TLS, STARTTLS with
login), a fake SendGrid served over real HTTP, and helpers to wait for what arrived."""

import asyncio
import email
import email.policy
import json
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

from tests.live import free_port

SMTP_USERNAME = "mailer"
SMTP_PASSWORD = "mailer-password"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "sender_enabled: the app fixture runs the outbox sender task (mail tests)"
    )


@dataclass
class ReceivedEmail:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    peer: Any = None  # the client's (host, port): one value per SMTP connection

    @property
    def text(self) -> str:
        part = self.message.get_body(preferencelist=("plain",))
        return part.get_content() if part is not None else ""

    @property
    def html(self) -> str:
        part = self.message.get_body(preferencelist=("html",))
        return part.get_content() if part is not None else ""


@dataclass
class RecordingHandler:
    """aiosmtpd handler: records what arrives; can refuse recipients or fail transiently."""

    received: list[ReceivedEmail] = field(default_factory=list)
    refused_recipients: dict[str, str] = field(default_factory=dict)
    transient_failures: int = 0
    data_delay_seconds: float = 0.0
    attempts: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_RCPT(
        self, server: SMTPServer, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        if address.lower() in self.refused_recipients:
            return self.refused_recipients[address.lower()]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        with self.lock:
            self.attempts += 1
            if self.transient_failures > 0:
                self.transient_failures -= 1
                return "451 4.3.0 Temporary failure, try again later"
        if self.data_delay_seconds:
            await asyncio.sleep(self.data_delay_seconds)
        content = envelope.original_content or envelope.content
        assert isinstance(content, bytes)
        message = email.message_from_bytes(content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        with self.lock:
            self.received.append(
                ReceivedEmail(
                    str(envelope.mail_from), list(envelope.rcpt_tos), message, session.peer
                )
            )
        return "250 Message accepted for delivery"

    def message_ids(self) -> list[str]:
        with self.lock:
            return [str(item.message["Message-ID"]) for item in self.received]


class SmtpServer:
    """A real aiosmtpd SMTP server on 127.0.0.1 that tests can stop and start again."""

    def __init__(self, handler: RecordingHandler, **controller_kwargs: Any) -> None:
        self.handler = handler
        self.port = free_port()
        self.controller_kwargs = controller_kwargs
        self.controller: Controller | None = None

    def start(self) -> None:
        self.controller = Controller(
            self.handler, hostname="127.0.0.1", port=self.port, **self.controller_kwargs
        )
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    @property
    def received(self) -> list[ReceivedEmail]:
        return self.handler.received

    async def wait_for(self, count: int, within_seconds: float = 10.0) -> list[ReceivedEmail]:
        """Wait until `count` messages have arrived (fails the test on timeout)."""
        deadline = asyncio.get_running_loop().time() + within_seconds
        while len(self.handler.received) < count:
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(
                    f"expected {count} emails, got {len(self.handler.received)} "
                    f"in {within_seconds}s"
                )
            await asyncio.sleep(0.02)
        return list(self.handler.received)


@dataclass(frozen=True)
class TlsFiles:
    certificate: Path
    private_key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.certificate, self.private_key)
        return context

    def client_context(self) -> ssl.SSLContext:
        """Trusts exactly the throwaway certificate (hostname checks stay on)."""
        return ssl.create_default_context(cafile=str(self.certificate))


@pytest.fixture(name="tls_files", scope="session")
def _tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """A throwaway self-signed certificate for 127.0.0.1, made with openssl."""
    folder = tmp_path_factory.mktemp("tls")
    certificate, private_key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-keyout", str(private_key), "-out", str(certificate),
            "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return TlsFiles(certificate, private_key)


@pytest.fixture(name="smtp_server")
def _smtp_server() -> Iterator[SmtpServer]:
    """A plain SMTP server (like a local relay) recording every message; offers SMTPUTF8."""
    server = SmtpServer(RecordingHandler(), enable_SMTPUTF8=True)
    server.start()
    yield server
    server.stop()


@pytest.fixture(name="ascii_smtp_server")
def _ascii_smtp_server() -> Iterator[SmtpServer]:
    """A plain SMTP server that does not offer SMTPUTF8 (ASCII addresses only)."""
    server = SmtpServer(RecordingHandler(), enable_SMTPUTF8=False)
    server.start()
    yield server
    server.stop()


@pytest.fixture(name="smtps_server")
def _smtps_server(tls_files: TlsFiles) -> Iterator[SmtpServer]:
    """Implicit TLS from the first byte (port 465 style, MAIL_USE_SSL)."""
    server = SmtpServer(RecordingHandler(), ssl_context=tls_files.server_context())
    server.start()
    yield server
    server.stop()


def _authenticate(
    server: SMTPServer, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
) -> AuthResult:
    valid = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login == SMTP_USERNAME.encode()
        and auth_data.password == SMTP_PASSWORD.encode()
    )
    # handled=False: let aiosmtpd answer 535 itself (True would leave the client waiting).
    return AuthResult(success=valid, handled=False)


@pytest.fixture(name="starttls_server")
def _starttls_server(tls_files: TlsFiles) -> Iterator[SmtpServer]:
    """STARTTLS required before anything else, then login required (port 587 style)."""
    server = SmtpServer(
        RecordingHandler(),
        tls_context=tls_files.server_context(),
        require_starttls=True,
        auth_required=True,
        authenticator=_authenticate,
    )
    server.start()
    yield server
    server.stop()


@dataclass
class SendGridRequest:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


class FakeSendGrid:
    """SendGrid's v3 mail-send endpoint over real HTTP; answers `status` and records bodies."""

    def __init__(self) -> None:
        self.requests: list[SendGridRequest] = []
        self.status = 202
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                fake.requests.append(SendGridRequest(self.path, dict(self.headers), body))
                answer = b"" if fake.status == 202 else b'{"errors":[{"message":"refused"}]}'
                self.send_response(fake.status)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(name="fake_sendgrid")
def _fake_sendgrid() -> Iterator[FakeSendGrid]:
    fake = FakeSendGrid()
    fake.start()
    yield fake
    fake.stop()


def smtp_config(server: SmtpServer, **extra: Any) -> dict[str, Any]:
    """App overrides pointing the mailer at a test SMTP server."""
    return {
        "MAIL_SERVER": "127.0.0.1",
        "MAIL_PORT": server.port,
        "MAIL_USE_SSL": False,
        "MAIL_USE_TLS": False,
        "MAIL_DEFAULT_SENDER": "CyberWorld Test <shop@cyberworld.test>",
        "MAIL_TIMEOUT_SECONDS": 5,
        **extra,
    }


async def wait_until(
    predicate: Callable[[], Any], within_seconds: float = 10.0, interval: float = 0.02
) -> None:
    """Poll an async-or-sync predicate until it is truthy (fails the test on timeout)."""
    deadline = asyncio.get_running_loop().time() + within_seconds
    while True:
        outcome = predicate()
        if asyncio.iscoroutine(outcome):
            outcome = await outcome
        if outcome:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {within_seconds}s")
        await asyncio.sleep(interval)


@pytest.fixture(name="outbox_rows")
def _outbox_rows() -> Callable[..., Any]:
    """Read outbox rows fresh from the database (own session), ordered by id."""
    from sqlalchemy import select

    from storefront.models import OutboxEmail

    async def read(app: Any) -> list[OutboxEmail]:
        from storefront.db.engine import sessionmaker_for

        async with sessionmaker_for(app)() as session:
            return list((await session.scalars(select(OutboxEmail).order_by(OutboxEmail.id))).all())

    return read
