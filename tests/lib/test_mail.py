"""Mail transports against a real aiosmtpd server (plain, implicit TLS, STARTTLS with login)
and a fake SendGrid over real HTTP."""

import logging
import ssl
from typing import Any

import pytest

from storefront.lib.mail.message import DeliveryError, OutgoingEmail
from storefront.lib.mail.transports import (
    ConsoleTransport,
    FallbackTransport,
    SendGridTransport,
    SmtpTransport,
    choose_transport,
    describe_transport,
)
from tests.fixtures_mail import SMTP_PASSWORD, SMTP_USERNAME
from tests.live import free_port

SENDER = "CyberWorld Test <shop@cyberworld.test>"


def outgoing(to: str = "ama@example.com", reference: str = "outbox.1.abc") -> OutgoingEmail:
    return OutgoingEmail(
        to_address=to,
        subject="Your order CW-000001",
        text_body="Thank you for your order.\nTotal: GH₵ 180.00\n",
        html_body="<p>Thank you for your order.</p><p>Total: <b>GH₵ 180.00</b></p>",
        reference=reference,
    )


async def test_smtp_delivers_text_and_html_parts(smtp_server):
    transport = SmtpTransport("127.0.0.1", smtp_server.port, SENDER, timeout=5)
    async with transport.batch() as batch:
        assert await batch.send(outgoing()) == "smtp"
    [received] = await smtp_server.wait_for(1)
    assert received.rcpt_tos == ["ama@example.com"]
    assert received.mail_from == "shop@cyberworld.test"
    assert received.message["To"] == "ama@example.com"
    assert received.message["From"] == "CyberWorld Test <shop@cyberworld.test>"
    assert received.message["Subject"] == "Your order CW-000001"
    assert received.message["Message-ID"] == "<outbox.1.abc@cyberworld.test>"
    assert received.message.get_content_type() == "multipart/alternative"
    assert "Total: GH₵ 180.00" in received.text
    assert "<b>GH₵ 180.00</b>" in received.html


async def test_one_connection_is_reused_across_a_batch(smtp_server):
    transport = SmtpTransport("127.0.0.1", smtp_server.port, SENDER, timeout=5)
    async with transport.batch() as batch:
        for number in range(5):
            await batch.send(outgoing(reference=f"outbox.{number}.x"))
    received = await smtp_server.wait_for(5)
    assert len({item.peer for item in received}) == 1


async def test_refused_recipient_is_permanent_and_the_connection_carries_on(smtp_server):
    smtp_server.handler.refused_recipients["gone@example.com"] = "550 5.1.1 No such user"
    transport = SmtpTransport("127.0.0.1", smtp_server.port, SENDER, timeout=5)
    async with transport.batch() as batch:
        with pytest.raises(DeliveryError) as refused:
            await batch.send(outgoing(to="gone@example.com"))
        await batch.send(outgoing(to="ama@example.com"))
    assert refused.value.permanent
    assert "550" in str(refused.value)
    [received] = await smtp_server.wait_for(1)
    assert received.rcpt_tos == ["ama@example.com"]


async def test_temporary_refusals_are_not_permanent(smtp_server):
    smtp_server.handler.refused_recipients["full@example.com"] = "452 4.2.2 Mailbox full"
    smtp_server.handler.transient_failures = 1
    transport = SmtpTransport("127.0.0.1", smtp_server.port, SENDER, timeout=5)
    async with transport.batch() as batch:
        with pytest.raises(DeliveryError) as mailbox_full:
            await batch.send(outgoing(to="full@example.com"))
        with pytest.raises(DeliveryError) as try_later:
            await batch.send(outgoing(to="ama@example.com"))
    assert not mailbox_full.value.permanent
    assert not try_later.value.permanent and "451" in str(try_later.value)


async def test_server_down_is_a_transient_failure():
    transport = SmtpTransport("127.0.0.1", free_port(), SENDER, timeout=2)
    async with transport.batch() as batch:
        with pytest.raises(DeliveryError) as down:
            await batch.send(outgoing())
    assert not down.value.permanent


async def test_implicit_tls(smtps_server, tls_files):
    transport = SmtpTransport(
        "127.0.0.1",
        smtps_server.port,
        SENDER,
        use_ssl=True,
        timeout=5,
        tls_context=tls_files.client_context(),
    )
    async with transport.batch() as batch:
        await batch.send(outgoing())
    [received] = await smtps_server.wait_for(1)
    assert received.message["Subject"] == "Your order CW-000001"


async def test_implicit_tls_checks_the_certificate(smtps_server):
    transport = SmtpTransport(
        "127.0.0.1",
        smtps_server.port,
        SENDER,
        use_ssl=True,
        timeout=5,
        tls_context=ssl.create_default_context(),  # does not trust the throwaway certificate
    )
    async with transport.batch() as batch:
        with pytest.raises(DeliveryError) as untrusted:
            await batch.send(outgoing())
    assert not untrusted.value.permanent
    assert smtps_server.received == []


async def test_starttls_with_login(starttls_server, tls_files):
    transport = SmtpTransport(
        "127.0.0.1",
        starttls_server.port,
        SENDER,
        use_starttls=True,
        username=SMTP_USERNAME,
        password=SMTP_PASSWORD,
        timeout=5,
        tls_context=tls_files.client_context(),
    )
    async with transport.batch() as batch:
        await batch.send(outgoing())
        await batch.send(outgoing(reference="outbox.2.abc"))
    received = await starttls_server.wait_for(2)
    assert {item.message["Message-ID"] for item in received} == {
        "<outbox.1.abc@cyberworld.test>",
        "<outbox.2.abc@cyberworld.test>",
    }


async def test_starttls_wrong_password_is_transient(starttls_server, tls_files):
    transport = SmtpTransport(
        "127.0.0.1",
        starttls_server.port,
        SENDER,
        use_starttls=True,
        username=SMTP_USERNAME,
        password="wrong",
        timeout=5,
        tls_context=tls_files.client_context(),
    )
    async with transport.batch() as batch:
        with pytest.raises(DeliveryError) as refused:
            await batch.send(outgoing())
    assert not refused.value.permanent  # our configuration, not the recipient: retry/fallback
    assert "535" in str(refused.value)
    assert starttls_server.received == []


async def test_plain_client_is_refused_by_a_starttls_only_server(starttls_server):
    transport = SmtpTransport("127.0.0.1", starttls_server.port, SENDER, timeout=5)
    async with transport.batch() as batch:
        with pytest.raises(DeliveryError):
            await batch.send(outgoing())
    assert starttls_server.received == []


async def test_sendgrid_request_body(fake_sendgrid):
    transport = SendGridTransport("SG.test-key", SENDER, base_url=fake_sendgrid.base_url)
    async with transport.batch() as batch:
        assert await batch.send(outgoing()) == "sendgrid"
    [request] = fake_sendgrid.requests
    assert request.path == "/v3/mail/send"
    assert request.headers["Authorization"] == "Bearer SG.test-key"
    assert request.body == {
        "personalizations": [{"to": [{"email": "ama@example.com"}]}],
        "from": {"email": "shop@cyberworld.test", "name": "CyberWorld Test"},
        "subject": "Your order CW-000001",
        "content": [
            {"type": "text/plain", "value": "Thank you for your order.\nTotal: GH₵ 180.00\n"},
            {
                "type": "text/html",
                "value": "<p>Thank you for your order.</p><p>Total: <b>GH₵ 180.00</b></p>",
            },
        ],
        "headers": {"Message-ID": "<outbox.1.abc@cyberworld.test>"},
        "custom_args": {"outbox_reference": "outbox.1.abc"},
    }


async def test_sendgrid_gets_an_idn_domain_as_punycode_and_never_an_unsafe_address(
    fake_sendgrid,
):
    transport = SendGridTransport("SG.test-key", SENDER, base_url=fake_sendgrid.base_url)
    async with transport.batch() as batch:
        await batch.send(outgoing(to="ama@exämple.com"))
        await batch.send(outgoing(to="rénée@example.com"))
        with pytest.raises(DeliveryError) as failed:
            await batch.send(outgoing(to="ama@example.com\r\nBcc: victim@example.com"))
    assert failed.value.permanent
    recipients = [request.body["personalizations"][0]["to"] for request in fake_sendgrid.requests]
    assert recipients == [[{"email": "ama@xn--exmple-cua.com"}], [{"email": "rénée@example.com"}]]


@pytest.mark.parametrize(("status", "permanent"), [(400, True), (401, False), (503, False)])
async def test_sendgrid_errors_are_classified(fake_sendgrid, status, permanent):
    fake_sendgrid.status = status
    transport = SendGridTransport("SG.test-key", SENDER, base_url=fake_sendgrid.base_url)
    async with transport.batch() as batch:
        with pytest.raises(DeliveryError) as failed:
            await batch.send(outgoing())
    assert failed.value.permanent is permanent
    assert str(status) in str(failed.value)


async def test_sendgrid_unreachable_is_transient():
    transport = SendGridTransport(
        "SG.test-key", SENDER, base_url=f"http://127.0.0.1:{free_port()}", timeout=2
    )
    async with transport.batch() as batch:
        with pytest.raises(DeliveryError) as failed:
            await batch.send(outgoing())
    assert not failed.value.permanent


async def test_fallback_goes_to_sendgrid_when_smtp_is_down(fake_sendgrid):
    transport = FallbackTransport(
        SmtpTransport("127.0.0.1", free_port(), SENDER, timeout=2),
        SendGridTransport("SG.test-key", SENDER, base_url=fake_sendgrid.base_url),
    )
    async with transport.batch() as batch:
        assert await batch.send(outgoing()) == "sendgrid"
    assert fake_sendgrid.requests[0].body["subject"] == "Your order CW-000001"


async def test_fallback_is_not_used_for_a_permanent_refusal(smtp_server, fake_sendgrid):
    smtp_server.handler.refused_recipients["gone@example.com"] = "550 5.1.1 No such user"
    transport = FallbackTransport(
        SmtpTransport("127.0.0.1", smtp_server.port, SENDER, timeout=5),
        SendGridTransport("SG.test-key", SENDER, base_url=fake_sendgrid.base_url),
    )
    async with transport.batch() as batch:
        with pytest.raises(DeliveryError) as refused:
            await batch.send(outgoing(to="gone@example.com"))
        assert await batch.send(outgoing()) == "smtp"
    assert refused.value.permanent
    assert fake_sendgrid.requests == []


async def test_both_transports_failing_reports_both(fake_sendgrid):
    fake_sendgrid.status = 503
    transport = FallbackTransport(
        SmtpTransport("127.0.0.1", free_port(), SENDER, timeout=2),
        SendGridTransport("SG.test-key", SENDER, base_url=fake_sendgrid.base_url),
    )
    async with transport.batch() as batch:
        with pytest.raises(DeliveryError) as failed:
            await batch.send(outgoing())
    assert not failed.value.permanent
    assert "SMTP error" in str(failed.value) and "SendGrid answered 503" in str(failed.value)


async def test_console_transport_logs_instead_of_sending(caplog):
    caplog.set_level(logging.INFO, logger="storefront.lib.mail.transports")
    logging.getLogger("storefront").propagate = True
    try:
        async with ConsoleTransport(SENDER).batch() as batch:
            assert await batch.send(outgoing()) == "console"
    finally:
        logging.getLogger("storefront").propagate = False
    assert "ama@example.com" in caplog.text and "Your order CW-000001" in caplog.text


def test_choose_transport_picks_by_settings():
    base: dict[str, Any] = {"sender": SENDER, "sendgrid_base_url": "http://sendgrid.test"}
    assert isinstance(choose_transport(**base), ConsoleTransport)
    sendgrid_only = choose_transport(**base, sendgrid_api_key="SG.k")
    assert isinstance(sendgrid_only, SendGridTransport)
    assert sendgrid_only.base_url == "http://sendgrid.test"
    smtp = choose_transport(**base, smtp_server="smtp.gmail.com", use_ssl=True, username="u")
    assert isinstance(smtp, SmtpTransport)
    assert (smtp.port, smtp.use_ssl, smtp.use_starttls) == (465, True, False)
    starttls = choose_transport(**base, smtp_server="smtp.test", use_starttls=True)
    assert isinstance(starttls, SmtpTransport) and starttls.port == 587
    both = choose_transport(**base, smtp_server="smtp.test", sendgrid_api_key="k")
    assert isinstance(both, FallbackTransport)
    assert "SendGrid" in describe_transport(both) and "smtp.test" in describe_transport(both)
    with pytest.raises(ValueError, match="exclusive"):
        choose_transport(**base, smtp_server="smtp.test", use_starttls=True, use_ssl=True)


async def test_text_only_and_non_ascii_headers(smtp_server):
    transport = SmtpTransport("127.0.0.1", smtp_server.port, "Shop Ɔdɔ <shop@cyberworld.test>")
    subject = "Wallet top-up of GH₵ 1,250.00 received for Ɔdɔ Mensah — thank you for shopping"
    email = OutgoingEmail("ama@example.com", subject, "Akwaaba ₵\n", "")
    async with transport.batch() as batch:
        await batch.send(email)
    [received] = await smtp_server.wait_for(1)
    assert received.message["Subject"] == subject  # folded over lines, decoded intact
    assert received.message["From"] == "Shop Ɔdɔ <shop@cyberworld.test>"
    assert received.message.get_content_type() == "text/plain"
    assert received.text.splitlines() == ["Akwaaba ₵"]
    assert received.html == ""


def test_built_message_is_well_formed_mime():
    import email as email_package
    import email.policy

    from storefront.lib.mail.message import build_message

    tricky_text = ".leading dot\r\n--=_outbox_0000 looks like a boundary\n" + "x" * 300 + " ₵\n"
    raw = build_message(
        OutgoingEmail("ama@example.com", "Ɔdɔ's receipt", tricky_text, "<p>₵ =_outbox</p>", "r.1"),
        SENDER,
    )
    assert raw.isascii()
    assert max(len(line) for line in raw.split(b"\r\n")) <= 78
    assert b"\n" not in raw.replace(b"\r\n", b"")  # CRLF line ends only
    message = email_package.message_from_bytes(raw, policy=email.policy.default)
    assert message.defects == []
    assert message.get_content_type() == "multipart/alternative"
    text_part, html_part = message.iter_parts()
    assert text_part.defects == [] and html_part.defects == []
    assert text_part.get_content().replace("\r\n", "\n") == tricky_text.replace("\r\n", "\n")
    assert html_part.get_content().rstrip("\r\n") == "<p>₵ =_outbox</p>"
    assert message["Subject"] == "Ɔdɔ's receipt"
    assert message["Message-ID"] == "<r.1@cyberworld.test>"


async def test_smtputf8_server_receives_the_internationalised_address(smtp_server):
    transport = SmtpTransport("127.0.0.1", smtp_server.port, SENDER)
    async with transport.batch() as batch:
        await batch.send(outgoing(to="rénée@exämple.com"))
        await batch.send(outgoing(to="ama@example.com", reference="outbox.2.abc"))
    first, second = await smtp_server.wait_for(2)
    assert first.rcpt_tos == ["rénée@exämple.com"]
    assert first.message["To"] == "rénée@exämple.com"
    assert first.text.startswith("Thank you for your order.")
    assert second.rcpt_tos == ["ama@example.com"]  # the same connection carries on
    async with transport.batch() as batch:
        await batch.send(outgoing(to="ama@exämple.com"))
    [*_, third] = await smtp_server.wait_for(3)
    assert third.rcpt_tos == ["ama@xn--exmple-cua.com"]  # no SMTPUTF8 needed: punycode


async def test_idn_domain_goes_as_punycode_to_a_server_without_smtputf8(ascii_smtp_server):
    transport = SmtpTransport("127.0.0.1", ascii_smtp_server.port, SENDER)
    async with transport.batch() as batch:
        await batch.send(outgoing(to="ama@exämple.com"))
    [received] = await ascii_smtp_server.wait_for(1)
    assert received.rcpt_tos == ["ama@xn--exmple-cua.com"]
    assert received.message["To"] == "ama@xn--exmple-cua.com"


async def test_non_ascii_local_part_without_smtputf8_fails_alone(ascii_smtp_server):
    transport = SmtpTransport("127.0.0.1", ascii_smtp_server.port, SENDER)
    async with transport.batch() as batch:
        with pytest.raises(DeliveryError) as failed:
            await batch.send(outgoing(to="rénée@example.com"))
        await batch.send(outgoing(to="ama@example.com"))
    assert not failed.value.permanent  # the operator may move to a server that offers it
    assert "SMTPUTF8" in str(failed.value)
    [received] = await ascii_smtp_server.wait_for(1)
    assert received.rcpt_tos == ["ama@example.com"]


@pytest.mark.parametrize(
    "address", ["ama@example.com\r\nBcc: victim@example.com", "a@b@example.com", "a <b@c.com>"]
)
async def test_an_address_no_server_could_take_is_refused_for_good(smtp_server, address):
    transport = SmtpTransport("127.0.0.1", smtp_server.port, SENDER)
    async with transport.batch() as batch:
        with pytest.raises(DeliveryError) as failed:
            await batch.send(outgoing(to=address))
    assert failed.value.permanent
    assert smtp_server.handler.attempts == 0
