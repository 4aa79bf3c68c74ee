"""Composing an email: the one address rule, and the subject and bodies rendered from
templates/emails/."""

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from email_validator import EmailNotValidError, validate_email
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from storefront.lib.money import format_minor
from storefront.models import STATE_ENUMS

EMAIL_TEMPLATE_FOLDER = Path(__file__).resolve().parents[3] / "templates" / "emails"
SUBJECT_MAX_LENGTH = 300
DEDUPE_KEY_MAX_LENGTH = 200

email_environment = Environment(
    loader=FileSystemLoader(str(EMAIL_TEMPLATE_FOLDER)),
    autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)
email_environment.filters["money"] = format_minor
email_environment.globals["shop_name"] = "CyberWorld Storefront"
email_environment.globals.update({enum.__name__: enum for enum in STATE_ENUMS})


class InvalidEmailAddress(ValueError):
    """The recipient address is not one we can send to; the message says why (with the address,
    for logs), `reason` says it to the person who typed it."""

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason or message


# MAIL_SMTPUTF8: the operator's mail server takes addresses with non-ASCII letters before the @.
# One setting per process, like the mail server; serve_outbox_sender sets it from the config.
_accepts_smtputf8 = False


def accept_smtputf8_addresses(accepted: bool) -> None:
    """Say whether addresses that need SMTPUTF8 can be delivered (MAIL_SMTPUTF8)."""
    global _accepts_smtputf8
    _accepts_smtputf8 = accepted


def render_email(template: str, context: Mapping[str, Any]) -> tuple[str, str, str]:
    """Render (subject, text body, html body) of templates/emails/<template>.*."""
    subject = email_environment.get_template(f"{template}.subject.txt").render(context)
    text_body = email_environment.get_template(f"{template}.txt").render(context)
    html_body = email_environment.get_template(f"{template}.html").render(context)
    # A subject is one header line: newlines would let content inject headers.
    subject = re.sub(r"\s+", " ", subject).strip()[:SUBJECT_MAX_LENGTH]
    return subject, text_body, html_body


def normalise_address(to: str) -> str:
    """The address as we store and send it; InvalidEmailAddress when it is malformed or the
    shop cannot deliver to it. Registration and compose_email both check addresses here.

    The rule: an internationalised domain is fine (it travels as punycode); a non-ASCII part
    before the @ needs SMTPUTF8 end to end, so it is accepted only when MAIL_SMTPUTF8 says the
    mail server offers it."""
    if not isinstance(to, str) or not to.strip():
        raise InvalidEmailAddress("An email address is required.")
    typed = to.strip()
    try:
        # test_environment: accept the reserved .test domain that staging and tests use; an
        # undeliverable address is refused by the mail server and goes dead, visible to admins.
        validated = validate_email(typed, check_deliverability=False, test_environment=True)
    except EmailNotValidError as error:
        raise InvalidEmailAddress(
            f"{typed!r} is not a valid email address: {error}",
            f"Enter a valid email address ({error}).",
        ) from None
    if validated.smtputf8 and not _accepts_smtputf8:
        letters = " ".join(sorted({char for char in validated.local_part if not char.isascii()}))
        raise InvalidEmailAddress(
            f"{typed!r} cannot be delivered: it needs SMTPUTF8 and MAIL_SMTPUTF8 is off",
            f"We cannot send email to an address with {letters} before the @ sign; "
            "please use another address.",
        )
    return validated.normalized


@dataclass(frozen=True)
class ComposedEmail:
    """An email rendered for a checked address, ready to queue."""

    to_address: str
    subject: str
    text_body: str
    html_body: str
    dedupe_key: str


def compose_email(
    to: str, template: str, context: Mapping[str, Any], dedupe_key: str
) -> ComposedEmail:
    """Check the address and key and render the email; InvalidEmailAddress names a bad address."""
    to_address = normalise_address(to)
    if not dedupe_key or len(dedupe_key) > DEDUPE_KEY_MAX_LENGTH:
        raise ValueError(f"dedupe_key must be 1 to {DEDUPE_KEY_MAX_LENGTH} characters")
    subject, text_body, html_body = render_email(template, context)
    return ComposedEmail(to_address, subject, text_body, html_body, dedupe_key)
