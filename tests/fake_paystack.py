"""A fake Paystack served over real HTTP for tests, checking every request against Paystack's spec.

`FakePaystack` runs a small Quart app with hypercorn on a free 127.0.0.1 port inside the test's
event loop. It keeps the transactions it initialized, lets a test decide how each one ends
(paid, failed, abandoned, underpaid, another currency), can fail the next request in the ways
Paystack does (401 invalid key, 400 duplicate reference, 400 currency not supported, 500,
a slow answer, a body that is not JSON), can answer every initialize slowly but successfully
(`initialize_delay_seconds`), and builds signed webhooks for the shop.

Every API request it receives is validated against Paystack's published OpenAPI document
(`<repo>/../shared/paystack/openapi.yaml`, found at run time, never copied into the project):
request body schema with $refs resolved, required fields, integer amounts, the reference
characters the spec's prose allows, and the bearer auth header. A violation is recorded in
`spec_violations` (the fixture fails the test) and answered 400. When the document is absent the
fake still does its own checks of the same rules, and the spec tests skip saying why.
"""

import asyncio
import copy
import functools
import json
import re
import secrets
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from hypercorn.asyncio import serve
from hypercorn.config import Config as HypercornConfig
from quart import Quart, Response, redirect, request

from storefront.lib.paystack import sign_webhook_body
from tests.live import free_port

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_PAYSTACK = REPO_ROOT.parent / "shared" / "paystack"
SPEC_PATH = SHARED_PAYSTACK / "openapi.yaml"
SAMPLES_DIR = SHARED_PAYSTACK / "samples"
SPEC_URI = "urn:paystack-openapi"
# The spec says this in the reference field's description rather than as a `pattern`.
REFERENCE_CHARACTERS = re.compile(r"[A-Za-z0-9.=-]+")
FAILURE_KINDS = (
    "invalid_key",
    "duplicate_reference",
    "currency_not_supported",
    "server_error",
    "timeout",
    "malformed",
)


def spec_missing_reason() -> str | None:
    """Why spec validation cannot run here, or None when the spec is available."""
    if not SPEC_PATH.is_file():
        return f"Paystack's OpenAPI spec is not at {SPEC_PATH}; spec validation skipped"
    try:
        import jsonschema  # noqa: F401
        import referencing  # noqa: F401
        import yaml  # noqa: F401
    except ImportError as error:
        return f"spec validation needs pyyaml and jsonschema ({error}); skipped"
    return None


def _openapi_to_jsonschema(node: Any) -> Any:
    """OpenAPI 3.0's `nullable: true` as JSON Schema: add "null" to the allowed types."""
    if isinstance(node, dict):
        converted = {key: _openapi_to_jsonschema(value) for key, value in node.items()}
        if converted.pop("nullable", False) is True:
            kind = converted.get("type")
            if isinstance(kind, str):
                converted["type"] = [kind, "null"]
            elif "type" not in converted and not any(
                key in converted for key in ("$ref", "anyOf", "oneOf", "allOf")
            ):
                pass  # no type means anything, null included
            else:
                converted = {"anyOf": [converted, {"type": "null"}]}
        return converted
    if isinstance(node, list):
        return [_openapi_to_jsonschema(item) for item in node]
    return node


class PaystackSpec:
    """Paystack's OpenAPI document, able to judge a request and a response body."""

    def __init__(self, path: Path = SPEC_PATH) -> None:
        import yaml
        from jsonschema import Draft7Validator, validators
        from referencing import Registry, Resource
        from referencing.jsonschema import DRAFT7

        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        with path.open(encoding="utf-8") as handle:
            self.document = _openapi_to_jsonschema(yaml.load(handle, Loader=loader))
        self.registry = Registry().with_resource(
            SPEC_URI, Resource(contents=self.document, specification=DRAFT7)
        )
        # Draft 7 counts 100.0 as an integer; Paystack (and we) do not.
        strict_types = Draft7Validator.TYPE_CHECKER.redefine(
            "integer",
            lambda _checker, value: isinstance(value, int) and not isinstance(value, bool),
        )
        self.validator_class = validators.extend(Draft7Validator, type_checker=strict_types)
        self._paths: list[tuple[re.Pattern[str], str]] = []
        for template in self.document["paths"]:
            pattern = re.escape(template)
            pattern = re.sub(r"\\\{([A-Za-z_]+)\\\}", r"(?P<\1>[^/]+)", pattern)
            self._paths.append((re.compile("^" + pattern + "$"), template))

    def find_operation(self, method: str, path: str) -> tuple[str, dict[str, Any], dict[str, str]]:
        for pattern, template in self._paths:
            match = pattern.match(path)
            if match and method.lower() in self.document["paths"][template]:
                return template, self.document["paths"][template][method.lower()], match.groupdict()
        raise LookupError(f"{method} {path} is not an operation in Paystack's spec")

    def schema_errors(self, pointer: list[str], instance: Any, where: str) -> list[str]:
        """Validate against the schema at `pointer` in the document, so its $refs resolve."""
        escaped = "/".join(part.replace("~", "~0").replace("/", "~1") for part in pointer)
        validator = self.validator_class({"$ref": f"{SPEC_URI}#/{escaped}"}, registry=self.registry)
        return [
            f"{where}: {'/'.join(str(p) for p in error.absolute_path) or '(body)'}: {error.message}"
            for error in validator.iter_errors(instance)
        ]

    def request_errors(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> list[str]:
        """Everything the spec (and the prose rules it states) says is wrong with a request."""
        try:
            template, operation, path_params = self.find_operation(method, path)
        except LookupError as error:
            return [str(error)]
        where = f"{method} {template}"
        errors: list[str] = []
        security = operation.get("security", self.document.get("security", []))
        if any("bearerAuth" in requirement for requirement in security):
            errors += _bearer_errors(headers, where)
        operation_pointer = ["paths", template, method.lower()]
        for index, parameter in enumerate(operation.get("parameters", [])):
            if parameter.get("in") == "path":
                value = path_params.get(parameter["name"], "")
                if parameter.get("required") and not value:
                    errors.append(f"{where}: path parameter {parameter['name']} is missing")
                if "schema" in parameter:
                    pointer = [*operation_pointer, "parameters", str(index), "schema"]
                    errors += self.schema_errors(pointer, value, where)
        request_body = operation.get("requestBody")
        if request_body is not None:
            content_type = headers.get("content-type", "").split(";")[0].strip()
            media = request_body.get("content", {}).get(content_type)
            if media is None:
                return errors + [f"{where}: content type {content_type!r} is not accepted"]
            if content_type != "application/json":
                return errors + [f"{where}: the shop must send JSON, sent {content_type}"]
            try:
                instance = json.loads(body)
            except ValueError:
                return errors + [f"{where}: body is not JSON"]
            pointer = [*operation_pointer, "requestBody", "content", content_type, "schema"]
            errors += self.schema_errors(pointer, instance, where)
            if template == "/transaction/initialize" and isinstance(instance, dict):
                errors += _reference_errors(instance.get("reference"), where)
        if template == "/transaction/verify/{reference}":
            errors += _reference_errors(path_params.get("reference"), where)
        return errors

    def response_errors(self, method: str, path: str, status: int, body: Any) -> list[str]:
        """What the spec says is wrong with a response body (to keep the fake honest)."""
        template, operation, _ = self.find_operation(method, path)
        response = operation.get("responses", {}).get(str(status))
        if response is None:
            return [f"{method} {template}: the spec documents no {status} response"]
        pointer = ["paths", template, method.lower(), "responses", str(status)]
        if "$ref" in response:
            pointer = response["$ref"].removeprefix("#/").split("/")
            response = self.document
            for part in pointer:
                response = response[part]
        if "schema" not in response.get("content", {}).get("application/json", {}):
            return []
        pointer = [*pointer, "content", "application/json", "schema"]
        return self.schema_errors(pointer, body, f"{method} {template} → {status}")


@functools.cache
def load_spec() -> PaystackSpec | None:
    """The spec, parsed once per test run (19,000 lines of YAML), or None when absent."""
    return None if spec_missing_reason() else PaystackSpec()


def _bearer_errors(headers: dict[str, str], where: str) -> list[str]:
    authorization = headers.get("authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme != "Bearer" or not token.strip():
        return [f"{where}: Authorization must be 'Bearer <secret key>', got {authorization!r}"]
    return []


def _reference_errors(reference: object, where: str) -> list[str]:
    if reference is None:
        return []
    if not isinstance(reference, str) or not REFERENCE_CHARACTERS.fullmatch(reference):
        return [f"{where}: reference {reference!r} has characters outside [A-Za-z0-9.=-]"]
    return []


def own_request_errors(method: str, path: str, headers: dict[str, str], body: bytes) -> list[str]:
    """The fake's own checks of the same rules, used when the spec document is absent."""
    where = f"{method} {path}"
    errors = _bearer_errors(headers, where)
    if method == "POST":
        try:
            instance = json.loads(body)
        except ValueError:
            return errors + [f"{where}: body is not JSON"]
        if not isinstance(instance, dict):
            return errors + [f"{where}: body is not an object"]
        amount = instance.get("amount")
        if amount is not None and (isinstance(amount, bool) or not isinstance(amount, int)):
            errors.append(f"{where}: amount must be an integer, got {amount!r}")
        if path == "/transaction/initialize":
            for name in ("email", "amount"):
                if name not in instance:
                    errors.append(f"{where}: {name} is required")
            errors += _reference_errors(instance.get("reference"), where)
        if path == "/refund" and "transaction" not in instance:
            errors.append(f"{where}: transaction is required")
    elif path.startswith("/transaction/verify/"):
        errors += _reference_errors(path.removeprefix("/transaction/verify/"), where)
    return errors


def load_sample(name: str) -> dict[str, Any] | None:
    """A Paystack sample body from the shared folder, or None when it is not there."""
    sample_path = SAMPLES_DIR / name
    if not sample_path.is_file():
        return None
    found = json.loads(sample_path.read_text(encoding="utf-8"))
    if "200" in found:
        found = found["200"]["data"]
    return found


MINIMAL_VERIFY_DATA: dict[str, Any] = {
    "id": 1,
    "domain": "test",
    "status": "abandoned",
    "reference": "",
    "receipt_number": None,
    "amount": 0,
    "message": None,
    "gateway_response": "",
    "paid_at": None,
    "created_at": "2024-01-01T00:00:00.000Z",
    "channel": "card",
    "currency": "GHS",
    "ip_address": "127.0.0.1",
    "metadata": "",
    "log": None,
    "fees": None,
    "customer": {"id": 1, "email": "", "customer_code": "CUS_fake"},
    "authorization": {},
    "plan": None,
}


@dataclass
class FakeTransaction:
    reference: str
    email: str
    amount_minor: int
    currency: str
    callback_url: str
    metadata: dict[str, Any]
    access_code: str
    id: int
    status: str = "abandoned"  # what Paystack says about a fresh, unpaid transaction
    charged_amount_minor: int | None = None
    charged_currency: str | None = None
    gateway_response: str = "The transaction was not completed"
    paid_at: str | None = None
    channel: str = "card"
    reported_reference: str | None = None  # verify may (wrongly) name another reference


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@dataclass
class PlannedFailure:
    kind: str
    path_prefix: str


class FakePaystack:
    """The fake: start() it in a fixture, drive it from tests, stop() it afterwards."""

    def __init__(
        self,
        secret_key: str = "sk_test_fake_secret",
        currencies: tuple[str, ...] = ("GHS",),
        slow_seconds: float = 3.0,
    ) -> None:
        self.secret_key = secret_key
        self.currencies = set(currencies)
        self.slow_seconds = slow_seconds
        # Every initialize answers after this long (a slow Paystack that still answers).
        self.initialize_delay_seconds = 0.0
        self.spec = load_spec()
        self.transactions: dict[str, FakeTransaction] = {}
        self.requests: list[RecordedRequest] = []
        self.spec_violations: list[str] = []
        self.planned_failures: deque[PlannedFailure] = deque()
        self.refunds: list[dict[str, Any]] = []
        self.port = 0
        self._next_id = 4_099_260_000
        self._shutdown = asyncio.Event()
        self._server: asyncio.Task[None] | None = None
        self.app = self._build_app()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.port = free_port()
        config = HypercornConfig()
        config.bind = [f"127.0.0.1:{self.port}"]
        config.graceful_timeout = 0.2
        config.accesslog = None
        config.errorlog = None
        self._server = asyncio.create_task(
            serve(self.app, config, shutdown_trigger=self._shutdown.wait)  # type: ignore[arg-type]
        )
        for _ in range(200):
            try:
                async with httpx.AsyncClient() as probe:
                    await probe.get(self.base_url + "/__alive")
                return
            except httpx.TransportError:
                await asyncio.sleep(0.01)
        raise RuntimeError("the fake Paystack did not start")

    async def stop(self) -> None:
        self._shutdown.set()
        if self._server is not None:
            try:
                await asyncio.wait_for(self._server, timeout=5)
            except TimeoutError:
                self._server.cancel()

    # Test controls -------------------------------------------------------------------------

    def fail_next(self, kind: str, path_prefix: str = "/") -> None:
        """Make the next request under `path_prefix` fail the way Paystack does."""
        if kind not in FAILURE_KINDS:
            raise ValueError(f"unknown failure {kind!r}; pick one of {FAILURE_KINDS}")
        self.planned_failures.append(PlannedFailure(kind, path_prefix))

    def transaction(self, reference: str) -> FakeTransaction:
        return self.transactions[reference]

    def only_transaction(self) -> FakeTransaction:
        assert len(self.transactions) == 1, list(self.transactions)
        return next(iter(self.transactions.values()))

    def mark_paid(
        self,
        reference: str,
        amount_minor: int | None = None,
        currency: str | None = None,
        channel: str = "mobile_money",
    ) -> FakeTransaction:
        """The shopper paid: in full, or `amount_minor` (underpaid) or in another currency."""
        transaction = self.transactions[reference]
        transaction.status = "success"
        transaction.charged_amount_minor = (
            transaction.amount_minor if amount_minor is None else amount_minor
        )
        transaction.charged_currency = currency or transaction.currency
        transaction.gateway_response = "Approved"
        transaction.paid_at = "2024-08-22T09:15:02.000Z"
        transaction.channel = channel
        return transaction

    def mark_status(self, reference: str, status: str, gateway_response: str = "") -> None:
        """Any other outcome: failed, abandoned, ongoing, pending, reversed, ..."""
        transaction = self.transactions[reference]
        transaction.status = status
        transaction.gateway_response = gateway_response or {
            "failed": "Declined",
            "abandoned": "The transaction was not completed",
        }.get(status, status.capitalize())

    def verify_data(self, transaction: FakeTransaction) -> dict[str, Any]:
        """The `data` object verify and charge.success carry, built on Paystack's sample."""
        sample = load_sample("verify-response.json")
        base = sample["data"] if sample else MINIMAL_VERIFY_DATA
        found = copy.deepcopy(base)
        charged = transaction.charged_amount_minor
        found.update(
            {
                "id": transaction.id,
                "status": transaction.status,
                "reference": transaction.reported_reference or transaction.reference,
                "amount": charged if charged is not None else transaction.amount_minor,
                "requested_amount": transaction.amount_minor,
                "currency": transaction.charged_currency or transaction.currency,
                "gateway_response": transaction.gateway_response,
                "paid_at": transaction.paid_at,
                "paidAt": transaction.paid_at,
                "channel": transaction.channel,
                "metadata": transaction.metadata if transaction.metadata else "",
            }
        )
        if isinstance(found.get("customer"), dict):
            found["customer"]["email"] = transaction.email
        return found

    def webhook_body(self, reference: str, event: str = "charge.success") -> bytes:
        """A webhook body as Paystack sends it (compact JSON bytes, signed as-is)."""
        return json.dumps(
            {"event": event, "data": self.verify_data(self.transactions[reference])},
            separators=(",", ":"),
        ).encode()

    def sign(self, body: bytes) -> str:
        return sign_webhook_body(self.secret_key, body)

    async def deliver_webhook(
        self, shop_client: Any, reference: str, event: str = "charge.success"
    ) -> Any:
        """POST a signed webhook about `reference` to the shop, as Paystack would."""
        body = self.webhook_body(reference, event)
        return await shop_client.post(
            "/paystack/webhook",
            data=body,
            headers={"Content-Type": "application/json", "x-paystack-signature": self.sign(body)},
        )

    def api_requests(self, path_prefix: str = "/") -> list[RecordedRequest]:
        return [recorded for recorded in self.requests if recorded.path.startswith(path_prefix)]

    # The HTTP side -------------------------------------------------------------------------

    def _build_app(self) -> Quart:
        app = Quart("fake_paystack")
        fake = self

        @app.get("/__alive")
        async def alive() -> str:
            return "ok"

        @app.get("/checkout/<access_code>")
        async def hosted_checkout(access_code: str) -> Response:
            """Paystack's payment page: `?outcome=` decides, then back to the callback."""
            found = [t for t in fake.transactions.values() if t.access_code == access_code]
            if not found:
                return Response("unknown checkout", 404)
            transaction = found[0]
            outcome = request.args.get("outcome", "success")
            if outcome == "success":
                fake.mark_paid(transaction.reference)
            elif outcome != "cancel":
                fake.mark_status(transaction.reference, outcome)
            separator = "&" if "?" in transaction.callback_url else "?"
            target = (
                f"{transaction.callback_url}{separator}"
                f"trxref={transaction.reference}&reference={transaction.reference}"
            )
            return redirect(target, 302)  # type: ignore[return-value]

        @app.before_request
        async def check_and_record() -> Response | None:
            if request.path in ("/__alive",) or request.path.startswith("/checkout/"):
                return None
            body = await request.get_data()
            headers = {key.lower(): value for key, value in request.headers.items()}
            fake.requests.append(RecordedRequest(request.method, request.path, headers, body))
            if fake.spec is not None:
                errors = fake.spec.request_errors(request.method, request.path, headers, body)
            else:
                errors = own_request_errors(request.method, request.path, headers, body)
            if errors:
                fake.spec_violations.extend(errors)
                return _error(400, "Spec violation: " + "; ".join(errors), "validation_error")
            if headers.get("authorization") != f"Bearer {fake.secret_key}":
                return _error(401, "Invalid key")
            for planned in list(fake.planned_failures):
                if request.path.startswith(planned.path_prefix):
                    fake.planned_failures.remove(planned)
                    return await fake._planned(planned.kind)
            return None

        @app.post("/transaction/initialize")
        async def initialize() -> Response:
            body = await request.get_json()
            if fake.initialize_delay_seconds:
                await asyncio.sleep(fake.initialize_delay_seconds)
            reference = body.get("reference") or secrets.token_hex(5)
            if reference in fake.transactions:
                return _error(
                    400,
                    "Duplicate Transaction Reference",
                    "validation_error",
                    "duplicate_reference",
                    "Try and create the Transaction or Charge with a new reference",
                )
            currency = body.get("currency", "NGN")
            if currency not in fake.currencies:
                return _error(400, "Currency not supported by merchant", "validation_error")
            fake._next_id += 1
            access_code = secrets.token_hex(8)
            fake.transactions[reference] = FakeTransaction(
                reference=reference,
                email=body["email"],
                amount_minor=body["amount"],
                currency=currency,
                callback_url=body.get("callback_url", ""),
                metadata=body.get("metadata") or {},
                access_code=access_code,
                id=fake._next_id,
            )
            sample = load_sample("initialize-response.json") or {
                "status": True,
                "message": "Authorization URL created",
                "data": {},
            }
            answer = copy.deepcopy(sample)
            answer["data"] = {
                "authorization_url": f"{fake.base_url}/checkout/{access_code}",
                "access_code": access_code,
                "reference": reference,
            }
            return _json(200, answer)

        @app.get("/transaction/verify/<reference>")
        async def verify(reference: str) -> Response:
            transaction = fake.transactions.get(reference)
            if transaction is None:
                return _error(404, "Transaction reference not found")
            return _json(
                200,
                {
                    "status": True,
                    "message": "Verification successful",
                    "data": fake.verify_data(transaction),
                },
            )

        @app.post("/refund")
        async def refund() -> Response:
            body = await request.get_json()
            transaction = fake.transactions.get(body["transaction"])
            if transaction is None or transaction.status != "success":
                return _error(400, "Transaction has not been completed or does not exist")
            amount = body.get("amount", transaction.charged_amount_minor)
            if amount > (transaction.charged_amount_minor or 0):
                return _error(400, "Refund amount cannot be more than the transaction amount")
            fake.refunds.append(body)
            sample = load_sample("refund-response.json")
            found = copy.deepcopy(sample["data"]) if sample else {"transaction": {}}
            found["transaction"].update(
                {"reference": transaction.reference, "amount": transaction.charged_amount_minor}
            )
            found.update({"amount": amount, "currency": transaction.currency, "status": "pending"})
            return _json(
                200,
                {"status": True, "message": "Refund has been queued for processing", "data": found},
            )

        return app

    async def _planned(self, kind: str) -> Response:
        if kind == "invalid_key":
            return _error(401, "Invalid key")
        if kind == "duplicate_reference":
            return _error(
                400, "Duplicate Transaction Reference", "validation_error", "duplicate_reference"
            )
        if kind == "currency_not_supported":
            return _error(400, "Currency not supported by merchant", "validation_error")
        if kind == "server_error":
            return _error(500, "Something went wrong", "api_error")
        if kind == "malformed":
            return Response("<html>gateway error</html>", 200, content_type="text/html")
        # "timeout": do the work, but answer after the client has given up.
        await asyncio.sleep(self.slow_seconds)
        return None  # type: ignore[return-value]


def _json(status: int, body: dict[str, Any]) -> Response:
    return Response(json.dumps(body), status, content_type="application/json")


def _error(
    status: int, message: str, kind: str = "", code: str = "", next_step: str = ""
) -> Response:
    body: dict[str, Any] = {"status": False, "message": message}
    if next_step:
        body["meta"] = {"nextStep": next_step}
    if kind:
        body["type"] = kind
    if code:
        body["code"] = code
    return _json(status, body)
