"""One email as a transport needs it, and as it goes over the wire: headers, MIME parts, the
envelope form of its recipient; DeliveryError for a send that failed."""

import quopri
import re
import secrets
from dataclasses import dataclass
from email.header import Header
from email.utils import formataddr, formatdate, make_msgid, parseaddr

from email_validator import EmailNotValidError, validate_email

ERROR_TEXT_LIMIT = 500
CRLF = b"\r\n"
_QP_HEADER = b"Content-Transfer-Encoding: quoted-printable\r\n"
# What a checked address never holds and a header or an SMTP command must never carry.
_UNSAFE_IN_ADDRESS = re.compile(r'[\x00-\x20\x7f"(),:;<>\[\\\]]')


@dataclass(frozen=True)
class OutgoingEmail:
    """One message as a transport needs it; `reference` (unique per outbox row) becomes the
    Message-ID's left part, so receivers can spot a resend."""

    to_address: str
    subject: str
    text_body: str
    html_body: str
    reference: str = ""


class DeliveryError(Exception):
    """A send failed; `permanent` means the receiving side refused this message for good."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message[:ERROR_TEXT_LIMIT])
        self.permanent = permanent


def parse_sender(sender: str) -> tuple[str, str]:
    """'Shop <shop@example.com>' → ('Shop', 'shop@example.com')."""
    display_name, address = parseaddr(sender)
    return display_name, address or sender


def message_id(email: OutgoingEmail, sender: str) -> str:
    """Stable for one outbox row (a retry reuses it), random for a message without a reference."""
    domain = parse_sender(sender)[1].rpartition("@")[2] or "localhost"
    if email.reference:
        return f"<{email.reference}@{domain}>"
    return make_msgid(domain=domain)


def smtp_recipient(address: str, *, smtputf8: bool) -> str:
    """`address` as an SMTP session can carry it: an internationalised domain in IDNA (punycode,
    which every server takes); a non-ASCII part before the @ as it is, which needs a server that
    offers SMTPUTF8. DeliveryError when it cannot be sent: permanent for an address no server
    could take, passing when only SMTPUTF8 is missing."""
    if address.count("@") != 1 or _UNSAFE_IN_ADDRESS.search(address):
        raise DeliveryError(f"the address {address!r} cannot be sent", permanent=True)
    if address.isascii():
        return address
    try:
        validated = validate_email(address, check_deliverability=False, test_environment=True)
    except EmailNotValidError as error:
        message = f"the address {address!r} cannot be sent: {error}"
        raise DeliveryError(message, permanent=True) from error
    if validated.ascii_email is not None:
        return validated.ascii_email
    if not smtputf8:
        raise DeliveryError(
            f"the mail server does not offer SMTPUTF8, which {address!r} needs "
            "(its part before the @ is not ASCII)"
        )
    return address


def _quoted_printable(body: str) -> bytes:
    # QP escapes every "=", so the "=_" in the boundary can never occur inside a part.
    return quopri.encodestring(body.replace("\r\n", "\n").encode("utf-8")).replace(b"\n", CRLF)


def _encoded_header(name: str, value: str) -> str:
    if value.isascii():
        return f"{name}: {value}"
    encoded = Header(value, "utf-8", header_name=name).encode(linesep="\r\n")
    return f"{name}: {encoded}"


def build_message(email: OutgoingEmail, sender: str, to_address: str | None = None) -> bytes:
    """The message as sent: multipart/alternative (text first, HTML preferred), UTF-8 parts in
    quoted-printable, so the raw source stays readable. `to_address` is the recipient as the
    envelope carries it (smtp_recipient); a non-ASCII one is written as UTF-8 (RFC 6532), which
    only an SMTPUTF8 session may send.

    Assembled directly rather than through email.generator: its header refolding and per-message
    boundary regex cost ~4x the CPU, paid on the web worker's event loop while it drains."""
    display_name, address = parse_sender(sender)
    to_address = to_address or smtp_recipient(email.to_address, smtputf8=False)
    headers = [
        f"From: {formataddr((display_name, address), charset='utf-8')}",
        f"To: {to_address}",
        _encoded_header("Subject", email.subject),
        f"Date: {formatdate(localtime=False, usegmt=True)}",
        f"Message-ID: {message_id(email, sender)}",
        "MIME-Version: 1.0",
    ]
    text_headers = b'Content-Type: text/plain; charset="utf-8"\r\n' + _QP_HEADER
    if not email.html_body:
        head = "\r\n".join(headers).encode("utf-8") + CRLF + text_headers
        return head + CRLF + _quoted_printable(email.text_body)
    boundary = f"=_outbox_{secrets.token_hex(12)}".encode("ascii")
    headers.append(f'Content-Type: multipart/alternative;\r\n boundary="{boundary.decode()}"')
    return b"".join(
        [
            "\r\n".join(headers).encode("utf-8"),
            CRLF + CRLF + b"--" + boundary + CRLF,
            text_headers + CRLF,
            _quoted_printable(email.text_body),
            CRLF + b"--" + boundary + CRLF,
            b'Content-Type: text/html; charset="utf-8"\r\n' + _QP_HEADER + CRLF,
            _quoted_printable(email.html_body),
            CRLF + b"--" + boundary + b"--" + CRLF,
        ]
    )
