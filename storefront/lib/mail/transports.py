"""Mail transports: SMTP (aiosmtplib), SendGrid's v3 API (httpx) and a console logger.

A transport opens a *batch* (one SMTP connection, one HTTP client) and sends messages through
it; a failure raises DeliveryError saying whether retrying could ever help.
"""

import logging
import ssl
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import replace
from typing import Any, Protocol

import aiosmtplib
import httpx

from storefront.lib.mail.message import (
    DeliveryError,
    OutgoingEmail,
    build_message,
    message_id,
    parse_sender,
    smtp_recipient,
)

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_SECONDS = 30.0


class MailBatch(Protocol):
    async def send(self, email: OutgoingEmail) -> str:
        """Deliver one message; return the name of the transport that took it."""
        ...


class Transport(Protocol):
    name: str

    def batch(self) -> AbstractAsyncContextManager[MailBatch]:
        """Open what a run of sends shares (a connection, a client)."""
        ...


def _smtp_error(error: Exception) -> DeliveryError:
    """Permanent only when the server refused this recipient or this message with a 5xx."""
    if isinstance(error, aiosmtplib.SMTPRecipientsRefused):
        codes = [refused.code for refused in error.recipients]
        details = "; ".join(f"{refused.code} {refused.message}" for refused in error.recipients)
        permanent = bool(codes) and all(500 <= code < 600 for code in codes)
        return DeliveryError(f"SMTP refused the recipient: {details}", permanent=permanent)
    if isinstance(error, aiosmtplib.SMTPRecipientRefused | aiosmtplib.SMTPDataError):
        return DeliveryError(
            f"SMTP refused the message: {error.code} {error.message}",
            permanent=500 <= error.code < 600,
        )
    # Sender refused, auth failure, 4xx, timeouts, connection errors: our side or passing.
    return DeliveryError(f"SMTP error: {type(error).__name__}: {error}")


class SmtpTransport:
    """SMTP over aiosmtplib: implicit TLS, STARTTLS or plain, optional login."""

    name = "smtp"

    def __init__(
        self,
        hostname: str,
        port: int,
        sender: str,
        *,
        use_ssl: bool = False,
        use_starttls: bool = False,
        username: str = "",
        password: str = "",
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        if use_ssl and use_starttls:
            raise ValueError("MAIL_USE_SSL and MAIL_USE_TLS are exclusive: pick one")
        self.hostname = hostname
        self.port = port or (465 if use_ssl else 587 if use_starttls else 25)
        self.sender = sender
        self.sender_address = parse_sender(sender)[1]
        self.use_ssl = use_ssl
        self.use_starttls = use_starttls
        self.username = username
        self.password = password
        self.timeout = timeout
        self.tls_context = tls_context

    def _client(self) -> aiosmtplib.SMTP:
        return aiosmtplib.SMTP(
            hostname=self.hostname,
            port=self.port,
            username=self.username or None,
            password=(self.password or None) if self.username else None,
            use_tls=self.use_ssl,
            start_tls=self.use_starttls,
            timeout=self.timeout,
            tls_context=self.tls_context,
            # socket.getfqdn() can stall on hosts without DNS; name ourselves after the sender.
            local_hostname=self.sender_address.rpartition("@")[2] or "localhost",
        )

    @asynccontextmanager
    async def batch(self) -> AsyncIterator["SmtpBatch"]:
        smtp_batch = SmtpBatch(self)
        try:
            yield smtp_batch
        finally:
            await smtp_batch.close()


class SmtpBatch:
    """One SMTP connection reused for a run of messages, reopened after a broken one."""

    def __init__(self, transport: SmtpTransport) -> None:
        self.transport = transport
        self.client: aiosmtplib.SMTP | None = None

    async def send(self, email: OutgoingEmail) -> str:
        try:
            if self.client is None or not self.client.is_connected:
                self.client = self.transport._client()
                await self.client.connect()
            recipient = await self._recipient(self.client, email.to_address)
            message = build_message(email, self.transport.sender, recipient)
            await self.client.sendmail(
                self.transport.sender_address,
                [recipient],
                message,
                mail_options=[] if recipient.isascii() else ["SMTPUTF8"],
            )
        except DeliveryError:
            raise
        except (aiosmtplib.SMTPRecipientsRefused, aiosmtplib.SMTPResponseException) as error:
            # aiosmtplib has reset the envelope; the connection stays usable.
            if not isinstance(error, aiosmtplib.SMTPRecipientsRefused | aiosmtplib.SMTPDataError):
                await self.close()
            raise _smtp_error(error) from error
        except Exception as error:
            # Broken connections, timeouts, and anything unforeseen: the session is in an
            # unknown state, so the next message starts a fresh one.
            await self.close()
            raise _smtp_error(error) from error
        return self.transport.name

    @staticmethod
    async def _recipient(client: aiosmtplib.SMTP, address: str) -> str:
        """The envelope form of `address`; asks the server (EHLO) only when it is not ASCII."""
        if address.isascii():
            return smtp_recipient(address, smtputf8=False)
        if client.is_ehlo_or_helo_needed:
            await client.ehlo()
        return smtp_recipient(address, smtputf8=client.supports_extension("smtputf8"))

    async def close(self) -> None:
        client, self.client = self.client, None
        if client is None or not client.is_connected:
            return
        try:
            await client.quit()
        except (aiosmtplib.SMTPException, OSError, TimeoutError):
            client.close()


class SendGridTransport:
    """SendGrid's v3 mail-send endpoint; the base URL is configurable so tests use a fake."""

    name = "sendgrid"

    def __init__(
        self,
        api_key: str,
        sender: str,
        *,
        base_url: str = "https://api.sendgrid.com",
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> None:
        self.api_key = api_key
        self.sender = sender
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def request_body(self, email: OutgoingEmail) -> dict[str, Any]:
        """The v3 /mail/send JSON: text/plain must come before text/html."""
        display_name, address = parse_sender(self.sender)
        sender: dict[str, str] = {"email": address}
        if display_name:
            sender["name"] = display_name
        content = [{"type": "text/plain", "value": email.text_body}]
        if email.html_body:
            content.append({"type": "text/html", "value": email.html_body})
        body: dict[str, Any] = {
            "personalizations": [{"to": [{"email": email.to_address}]}],
            "from": sender,
            "subject": email.subject,
            "content": content,
        }
        body["headers"] = {"Message-ID": message_id(email, self.sender)}
        if email.reference:
            body["custom_args"] = {"outbox_reference": email.reference}
        return body

    @asynccontextmanager
    async def batch(self) -> AsyncIterator["SendGridBatch"]:
        async with httpx.AsyncClient(
            base_url=self.base_url,
            timeout=self.timeout,
            headers={"Authorization": f"Bearer {self.api_key}"},
        ) as client:
            yield SendGridBatch(self, client)


class SendGridBatch:
    def __init__(self, transport: SendGridTransport, client: httpx.AsyncClient) -> None:
        self.transport = transport
        self.client = client

    async def send(self, email: OutgoingEmail) -> str:
        # The same address hygiene as SMTP; whether SendGrid takes a non-ASCII part before the @
        # is its own answer (a 400 makes the email dead, with SendGrid's reason).
        email = replace(email, to_address=smtp_recipient(email.to_address, smtputf8=True))
        try:
            response = await self.client.post(
                "/v3/mail/send", json=self.transport.request_body(email)
            )
        except httpx.HTTPError as error:
            raise DeliveryError(f"SendGrid unreachable: {type(error).__name__}: {error}") from error
        if response.status_code in (200, 202):
            return self.transport.name
        # 400/413: this message is malformed or refused; 401/403/429/5xx: ours or passing.
        permanent = response.status_code in (400, 413)
        raise DeliveryError(
            f"SendGrid answered {response.status_code}: {response.text}", permanent=permanent
        )


class ConsoleTransport:
    """Development: log each message instead of sending it."""

    name = "console"

    def __init__(self, sender: str) -> None:
        self.sender = sender

    @asynccontextmanager
    async def batch(self) -> AsyncIterator["ConsoleTransport"]:
        yield self

    async def send(self, email: OutgoingEmail) -> str:
        log.info(
            "email (console transport, not sent) to %s: %s\n%s",
            email.to_address,
            email.subject,
            email.text_body,
            extra={"ctx_to": email.to_address, "ctx_subject": email.subject},
        )
        return self.name


class FallbackTransport:
    """Try the primary transport; when it fails for a passing reason, try the fallback."""

    def __init__(self, primary: Transport, fallback: Transport) -> None:
        self.primary = primary
        self.fallback = fallback
        self.name = f"{primary.name}+{fallback.name}"

    @asynccontextmanager
    async def batch(self) -> AsyncIterator["FallbackBatch"]:
        async with self.primary.batch() as primary_batch, self.fallback.batch() as fallback_batch:
            yield FallbackBatch(primary_batch, fallback_batch)


class FallbackBatch:
    def __init__(self, primary: MailBatch, fallback: MailBatch) -> None:
        self.primary = primary
        self.fallback = fallback

    async def send(self, email: OutgoingEmail) -> str:
        try:
            return await self.primary.send(email)
        except DeliveryError as primary_error:
            if primary_error.permanent:
                raise
            log.warning("primary mail transport failed, trying fallback: %s", primary_error)
            try:
                return await self.fallback.send(email)
            except DeliveryError as fallback_error:
                raise DeliveryError(
                    f"{primary_error} | fallback: {fallback_error}",
                    permanent=fallback_error.permanent,
                ) from fallback_error


def choose_transport(
    sender: str,
    *,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
    smtp_server: str = "",
    smtp_port: int = 0,
    use_ssl: bool = False,
    use_starttls: bool = False,
    username: str = "",
    password: str = "",
    sendgrid_api_key: str = "",
    sendgrid_base_url: str = "https://api.sendgrid.com",
) -> Transport:
    """SMTP (with SendGrid fallback when keyed), else SendGrid alone, else the console."""
    sendgrid: Transport | None = None
    if sendgrid_api_key:
        sendgrid = SendGridTransport(
            sendgrid_api_key, sender, base_url=sendgrid_base_url, timeout=timeout
        )
    if smtp_server:
        smtp = SmtpTransport(
            smtp_server,
            smtp_port,
            sender,
            use_ssl=use_ssl,
            use_starttls=use_starttls,
            username=username,
            password=password,
            timeout=timeout,
        )
        return FallbackTransport(smtp, sendgrid) if sendgrid else smtp
    if sendgrid:
        return sendgrid
    return ConsoleTransport(sender)


def describe_transport(transport: Transport) -> str:
    """A line for admins: where mail goes (no secrets)."""
    if isinstance(transport, FallbackTransport):
        primary = describe_transport(transport.primary)
        return f"{primary}, falling back to {describe_transport(transport.fallback)}"
    if isinstance(transport, SmtpTransport):
        security = (
            "implicit TLS"
            if transport.use_ssl
            else "STARTTLS"
            if transport.use_starttls
            else "plain"
        )
        login = f", login {transport.username}" if transport.username else ""
        return f"SMTP {transport.hostname}:{transport.port} ({security}{login})"
    if isinstance(transport, SendGridTransport):
        return f"SendGrid API at {transport.base_url}"
    return "console (logged, not sent: no MAIL_SERVER or SENDGRID_API_KEY set)"
