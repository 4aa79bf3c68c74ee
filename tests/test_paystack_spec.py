"""Every request the shop sends Paystack is valid against Paystack's published OpenAPI spec.

The spec lives outside the project (<repo>/../shared/paystack/openapi.yaml); without it these
tests skip with the reason, and the fake keeps checking the same rules on its own.
"""

import json
from datetime import timedelta

import pytest

from storefront.background.paystack_serving import paystack_client_for
from storefront.config import app_settings
from storefront.db.engine import sessionmaker_for
from storefront.lib.paystack import PaystackClient, make_http_client
from storefront.models import utcnow
from storefront.services.payments.reconciliation import reconcile_once
from storefront.services.payments.settings import payment_settings
from tests.conftest import CSRF_TOKEN
from tests.fake_paystack import (
    FakePaystack,
    PaystackSpec,
    load_spec,
    own_request_errors,
    spec_missing_reason,
)
from tests.fixtures_paystack import (
    PAYSTACK_SECRET_KEY,
    drain_background_tasks,
    paystack_overrides,
)

AUTH = {"authorization": "Bearer sk_test_x", "content-type": "application/json"}
GOOD_INITIALIZE = {
    "email": "ama@example.com",
    "amount": 3650,
    "currency": "GHS",
    "reference": "CW-000001.a1b2=",
    "callback_url": "http://shop.test/paystack/callback",
    "metadata": {"order_number": "CW-000001", "purpose": "order"},
}


@pytest.fixture(name="spec")
def _spec() -> PaystackSpec:
    reason = spec_missing_reason()
    if reason:
        pytest.skip(reason)
    spec = load_spec()
    assert spec is not None
    return spec


def _initialize_errors(spec: PaystackSpec, body: object, headers: dict[str, str] = AUTH):
    return spec.request_errors(
        "POST", "/transaction/initialize", headers, json.dumps(body).encode()
    )


def test_a_good_initialize_request_passes(spec):
    assert _initialize_errors(spec, GOOD_INITIALIZE) == []
    assert spec.request_errors("GET", "/transaction/verify/CW-000001.a1b2=", AUTH, b"") == []
    refund = json.dumps({"transaction": "CW-000001.a1b2=", "amount": 100}).encode()
    assert spec.request_errors("POST", "/refund", AUTH, refund) == []


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        ({"amount": 36.5}, "is not of type 'integer'"),
        ({"amount": 3650.0}, "is not of type 'integer'"),
        ({"amount": "3650"}, "is not of type 'integer'"),
        ({"amount": None}, "is not of type 'integer'"),
        ({"email": None}, "is not of type 'string'"),
        ({"currency": "GHC"}, "is not one of"),
        ({"metadata": "order 1"}, "is not of type 'object'"),
        ({"channels": ["mobile_money", "cash"]}, "is not one of"),
        ({"reference": "has space"}, "outside [A-Za-z0-9.=-]"),
        ({"reference": "under_score"}, "outside [A-Za-z0-9.=-]"),
    ],
)
def test_the_spec_rejects_bad_initialize_bodies(spec, change, complaint):
    errors = _initialize_errors(spec, {**GOOD_INITIALIZE, **change})
    assert errors and complaint in " ".join(errors)


@pytest.mark.parametrize("missing", ["email", "amount"])
def test_the_spec_requires_email_and_amount(spec, missing):
    body = {key: value for key, value in GOOD_INITIALIZE.items() if key != missing}
    assert f"'{missing}' is a required property" in " ".join(_initialize_errors(spec, body))


@pytest.mark.parametrize(
    "headers",
    [
        {"content-type": "application/json"},
        {"authorization": "sk_test_x", "content-type": "application/json"},
        {"authorization": "Bearer ", "content-type": "application/json"},
        {"authorization": "Basic abc", "content-type": "application/json"},
    ],
)
def test_the_spec_requires_a_bearer_key(spec, headers):
    assert "Authorization must be 'Bearer" in " ".join(
        _initialize_errors(spec, GOOD_INITIALIZE, headers)
    )


def test_the_spec_rejects_unknown_operations_and_refunds_without_transaction(spec):
    assert spec.request_errors("DELETE", "/transaction/initialize", AUTH, b"")
    assert spec.request_errors("POST", "/transaction/initialise", AUTH, b"{}")
    assert "'transaction' is a required property" in " ".join(
        spec.request_errors("POST", "/refund", AUTH, b'{"amount": 100}')
    )


def test_the_fakes_own_checks_cover_the_same_rules_without_the_spec():
    def errors(body: object, headers: dict[str, str] = AUTH) -> list[str]:
        return own_request_errors(
            "POST", "/transaction/initialize", headers, json.dumps(body).encode()
        )

    assert errors(GOOD_INITIALIZE) == []
    assert errors({**GOOD_INITIALIZE, "amount": 36.5})
    assert errors({**GOOD_INITIALIZE, "reference": "a b"})
    assert errors({"amount": 100})
    assert errors(GOOD_INITIALIZE, {"content-type": "application/json"})


async def test_every_request_the_client_sends_is_valid_and_fake_answers_match_the_spec(
    spec, fake_paystack: FakePaystack
):
    async with make_http_client(fake_paystack.base_url, PAYSTACK_SECRET_KEY, 2.0) as http:
        paystack = PaystackClient(http)
        await paystack.initialize(
            email="ama@example.com",
            amount_minor=3650,
            currency="GHS",
            reference="CW-000001.a1b2=",
            callback_url="http://shop.test/paystack/callback",
            metadata={"order_number": "CW-000001", "purpose": "order"},
        )
        await paystack.verify("CW-000001.a1b2=")
        fake_paystack.mark_paid("CW-000001.a1b2=")
        await paystack.verify("CW-000001.a1b2=")
        await paystack.refund("CW-000001.a1b2=", amount_minor=1000, currency="GHS")

        for recorded in fake_paystack.requests:
            assert (
                spec.request_errors(recorded.method, recorded.path, recorded.headers, recorded.body)
                == []
            )
        assert [r.path for r in fake_paystack.requests] == [
            "/transaction/initialize",
            "/transaction/verify/CW-000001.a1b2=",
            "/transaction/verify/CW-000001.a1b2=",
            "/refund",
        ]
        assert fake_paystack.spec_violations == []

        raw = await http.post(
            "/transaction/initialize", json={**GOOD_INITIALIZE, "reference": "x2"}
        )
        assert spec.response_errors("POST", "/transaction/initialize", 200, raw.json()) == []
        raw = await http.get("/transaction/verify/CW-000001.a1b2=")
        assert spec.response_errors("GET", "/transaction/verify/{reference}", 200, raw.json()) == []
        raw = await http.post(
            "/transaction/initialize", json={**GOOD_INITIALIZE, "reference": "x2"}
        )
        assert raw.status_code == 400
        assert spec.response_errors("POST", "/transaction/initialize", 400, raw.json()) == []


async def test_a_request_the_spec_rejects_is_recorded_and_refused(spec, fake_paystack):
    async with make_http_client(fake_paystack.base_url, PAYSTACK_SECRET_KEY, 2.0) as http:
        raw = await http.post("/transaction/initialize", json={**GOOD_INITIALIZE, "amount": 36.5})
    assert raw.status_code == 400
    assert "is not of type 'integer'" in raw.json()["message"]
    assert len(fake_paystack.spec_violations) == 1
    fake_paystack.spec_violations.clear()  # this test sent it on purpose


@pytest.fixture(name="app_overrides")
def _app_overrides(fake_paystack: FakePaystack) -> dict[str, object]:
    return paystack_overrides(fake_paystack, RATELIMIT_ENABLED=False)


async def test_every_request_the_shop_sends_paystack_is_valid_against_the_spec(
    spec, app, fake_paystack, start_order_payment, shopper_client, make_user
):
    paid = await start_order_payment()
    fake_paystack.mark_paid(paid.reference)
    await paid.client.get(f"/paystack/callback?reference={paid.reference}")
    fake_paystack.fail_next("timeout", "/transaction/initialize")
    retried = await start_order_payment(with_coupon=False)
    await retried.client.post(
        f"/paystack/orders/{retried.order_number}/pay", form={"csrf_token": CSRF_TOKEN}
    )
    topup_client = await shopper_client(await make_user())
    await topup_client.post(
        "/account/wallet/topup", form={"csrf_token": CSRF_TOKEN, "amount": "75.50"}
    )
    topup_reference = fake_paystack.api_requests("/transaction/initialize")[-1].json()["reference"]
    fake_paystack.mark_paid(topup_reference)
    await fake_paystack.deliver_webhook(app.test_client(), topup_reference)
    await drain_background_tasks(app)
    await reconcile_once(
        sessionmaker_for(app),
        paystack_client_for(app),
        payment_settings(app_settings(app)),
        now=utcnow() + timedelta(minutes=45),
    )

    kinds = {recorded.path.split("/")[2] for recorded in fake_paystack.requests}
    assert kinds == {"initialize", "verify"}
    assert len(fake_paystack.requests) >= 8
    for recorded in fake_paystack.requests:
        assert (
            spec.request_errors(recorded.method, recorded.path, recorded.headers, recorded.body)
            == []
        ), recorded
    assert fake_paystack.spec_violations == []
    amounts = [r.json()["amount"] for r in fake_paystack.api_requests("/transaction/initialize")]
    assert amounts == [18_000, 20_000, 20_000, 7_550]


async def test_without_the_shared_folder_the_fake_still_works_on_its_own_checks(
    monkeypatch, tmp_path
):
    import tests.fake_paystack as fake_module

    monkeypatch.setattr(fake_module, "SPEC_PATH", tmp_path / "openapi.yaml")
    monkeypatch.setattr(fake_module, "SAMPLES_DIR", tmp_path / "samples")
    fake_module.load_spec.cache_clear()
    try:
        assert "spec validation skipped" in (fake_module.spec_missing_reason() or "")
        fake = FakePaystack(secret_key=PAYSTACK_SECRET_KEY)
        assert fake.spec is None
        await fake.start()
        try:
            async with make_http_client(fake.base_url, PAYSTACK_SECRET_KEY, 2.0) as http:
                paystack = PaystackClient(http)
                await paystack.initialize(
                    email="ama@example.com",
                    amount_minor=3650,
                    currency="GHS",
                    reference="CW-000001.x",
                    callback_url="http://shop.test/paystack/callback",
                )
                fake.mark_paid("CW-000001.x")
                verified = await paystack.verify("CW-000001.x")
                assert (verified.status, verified.amount_minor) == ("success", 3650)
                refused = await http.post(
                    "/transaction/initialize", json={**GOOD_INITIALIZE, "amount": 36.5}
                )
        finally:
            await fake.stop()
        assert refused.status_code == 400
        assert fake.spec_violations == [
            "POST /transaction/initialize: amount must be an integer, got 36.5"
        ]
    finally:
        fake_module.load_spec.cache_clear()
