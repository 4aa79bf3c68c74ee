"""The Paystack client against the fake over real HTTP: typed results, clear errors, int amounts."""

import json
from collections.abc import AsyncIterator

import httpx
import pytest

from storefront.lib.paystack import (
    InitializedTransaction,
    PaystackBadResponse,
    PaystackClient,
    PaystackRefused,
    PaystackTimeout,
    PaystackUnavailable,
    make_http_client,
    sign_webhook_body,
    webhook_signature_valid,
)
from tests.fake_paystack import FakePaystack
from tests.fixtures_paystack import PAYSTACK_SECRET_KEY


@pytest.fixture(name="paystack")
async def _paystack(fake_paystack: FakePaystack) -> AsyncIterator[PaystackClient]:
    async with make_http_client(fake_paystack.base_url, PAYSTACK_SECRET_KEY, 0.5) as http:
        yield PaystackClient(http)


async def _initialize(paystack: PaystackClient, reference: str = "CW-000001.abc", amount=3650):
    return await paystack.initialize(
        email="ama@example.com",
        amount_minor=amount,
        currency="GHS",
        reference=reference,
        callback_url="http://shop.test/paystack/callback",
        metadata={"order_number": "CW-000001", "purpose": "order"},
    )


async def test_initialize_sends_int_pesewas_with_bearer_key(paystack, fake_paystack):
    result = await _initialize(paystack)

    assert isinstance(result, InitializedTransaction)
    assert result.reference == "CW-000001.abc"
    assert result.authorization_url.startswith(fake_paystack.base_url + "/checkout/")
    [sent] = fake_paystack.api_requests("/transaction/initialize")
    assert sent.headers["authorization"] == f"Bearer {PAYSTACK_SECRET_KEY}"
    assert sent.headers["content-type"].startswith("application/json")
    body = sent.json()
    assert body["amount"] == 3650 and type(body["amount"]) is int
    assert b'"amount": 3650' in sent.body or b'"amount":3650' in sent.body
    assert body["currency"] == "GHS"
    assert body["callback_url"] == "http://shop.test/paystack/callback"
    assert body["metadata"] == {"order_number": "CW-000001", "purpose": "order"}


@pytest.mark.parametrize("amount", [36.5, 3650.0, True, "3650", 0, -5])
async def test_no_float_bool_string_or_non_positive_amount_reaches_the_wire(
    paystack, fake_paystack, amount
):
    with pytest.raises((TypeError, ValueError)):
        await _initialize(paystack, amount=amount)
    with pytest.raises((TypeError, ValueError)):
        await paystack.refund("CW-000001.abc", amount_minor=amount)
    assert fake_paystack.requests == []


@pytest.mark.parametrize("reference", ["has space", "under_score", "slash/es", "", "é"])
async def test_reference_with_characters_paystack_refuses_is_not_sent(
    paystack, fake_paystack, reference
):
    with pytest.raises(ValueError):
        await _initialize(paystack, reference=reference)
    assert fake_paystack.requests == []


async def test_verify_returns_typed_transaction(paystack, fake_paystack):
    await _initialize(paystack)
    fresh = await paystack.verify("CW-000001.abc")
    assert fresh.status == "abandoned"
    fake_paystack.mark_paid("CW-000001.abc")

    paid = await paystack.verify("CW-000001.abc")

    assert paid.status == "success"
    assert paid.reference == "CW-000001.abc"
    assert paid.amount_minor == 3650 and type(paid.amount_minor) is int
    assert paid.currency == "GHS"
    assert paid.customer_email == "ama@example.com"
    assert paid.metadata == {"order_number": "CW-000001", "purpose": "order"}
    assert paid.raw["reference"] == "CW-000001.abc"


async def test_verify_unknown_reference_is_refused_with_paystacks_message(paystack):
    with pytest.raises(PaystackRefused) as raised:
        await paystack.verify("nope")
    assert raised.value.status_code == 404
    assert raised.value.message == "Transaction reference not found"


@pytest.mark.parametrize(
    ("kind", "error_class", "status", "message"),
    [
        ("invalid_key", PaystackRefused, 401, "Invalid key"),
        ("duplicate_reference", PaystackRefused, 400, "Duplicate Transaction Reference"),
        ("currency_not_supported", PaystackRefused, 400, "Currency not supported by merchant"),
        ("server_error", PaystackUnavailable, 500, None),
        ("malformed", PaystackBadResponse, 200, None),
        ("timeout", PaystackTimeout, None, "Paystack did not answer in time."),
    ],
)
async def test_initialize_errors_are_typed(
    paystack, fake_paystack, kind, error_class, status, message
):
    fake_paystack.fail_next(kind)
    with pytest.raises(error_class) as raised:
        await _initialize(paystack)
    assert type(raised.value) is error_class
    assert raised.value.status_code == status
    if message:
        assert raised.value.message == message


async def test_wrong_secret_key_gets_invalid_key(fake_paystack):
    async with make_http_client(fake_paystack.base_url, "sk_test_wrong", 0.5) as http:
        with pytest.raises(PaystackRefused) as raised:
            await _initialize(PaystackClient(http))
    assert (raised.value.status_code, raised.value.message) == (401, "Invalid key")


async def test_unreachable_paystack_is_unavailable():
    async with make_http_client("http://127.0.0.1:9", PAYSTACK_SECRET_KEY, 0.5) as http:
        with pytest.raises(PaystackUnavailable):
            await PaystackClient(http).verify("abc")


async def test_refund_returns_pending_refund(paystack, fake_paystack):
    await _initialize(paystack)
    fake_paystack.mark_paid("CW-000001.abc")

    refund = await paystack.refund("CW-000001.abc", amount_minor=1000, currency="GHS")

    assert (refund.status, refund.amount_minor, refund.currency) == ("pending", 1000, "GHS")
    assert refund.transaction_reference == "CW-000001.abc"
    assert fake_paystack.refunds == [
        {"transaction": "CW-000001.abc", "amount": 1000, "currency": "GHS"}
    ]


def _client_answering(status: int, body: object) -> PaystackClient:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    transport = httpx.MockTransport(lambda _request: httpx.Response(status, content=content))
    return PaystackClient(httpx.AsyncClient(base_url="http://paystack.test", transport=transport))


@pytest.mark.parametrize(
    "body",
    [
        {"status": True, "message": "ok", "data": {"status": "success", "amount": "3650"}},
        {"status": True, "message": "ok", "data": {"status": "success", "amount": 36.5}},
        {"status": True, "message": "ok", "data": {"amount": 3650}},
        {"status": True, "message": "ok", "data": None},
        {"status": True, "message": "ok"},
        [1, 2, 3],
        b"not json",
    ],
)
async def test_malformed_verify_answers_are_bad_responses(body):
    with pytest.raises(PaystackBadResponse):
        await _client_answering(200, body).verify("abc")


async def test_status_false_with_200_is_a_refusal():
    with pytest.raises(PaystackRefused) as raised:
        await _client_answering(200, {"status": False, "message": "Nope"}).verify("abc")
    assert raised.value.message == "Nope"


async def test_4xx_without_json_still_gives_a_clear_message():
    with pytest.raises(PaystackRefused) as raised:
        await _client_answering(403, b"<html>forbidden</html>").verify("abc")
    assert raised.value.message == "Paystack refused the request (HTTP 403)."


def test_webhook_signature_checks_raw_bytes():
    body = b'{"event":"charge.success","data":{"reference":"abc","amount":3650}}'
    signature = sign_webhook_body("sk_test_x", body)

    assert webhook_signature_valid("sk_test_x", body, signature)
    assert webhook_signature_valid("sk_test_x", body, signature.upper())
    assert not webhook_signature_valid("sk_test_x", body, None)
    assert not webhook_signature_valid("sk_test_x", body, "")
    assert not webhook_signature_valid("sk_test_x", body, signature[:-2])
    assert not webhook_signature_valid("sk_test_x", body, signature + "00")
    assert not webhook_signature_valid("sk_test_other", body, signature)
    assert not webhook_signature_valid("", body, sign_webhook_body("", body))
    assert not webhook_signature_valid("sk_test_x", body.replace(b"3650", b"3651"), signature)
    reserialised = json.dumps(json.loads(body)).encode()
    assert reserialised != body
    assert not webhook_signature_valid("sk_test_x", reserialised, signature)
