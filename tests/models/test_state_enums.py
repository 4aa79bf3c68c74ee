"""Every state set is one StrEnum in storefront/models: the CHECK constraints are built from
them and no status literal is written anywhere else in storefront/ or templates/."""

import ast
import re
from enum import StrEnum
from pathlib import Path

import pytest
from sqlalchemy import CheckConstraint

from storefront.models import (
    STATE_ENUMS,
    Base,
    CouponKind,
    DeliveryMethod,
    GatewayStatus,
    OrderStatus,
    OutboxStatus,
    PaymentLookup,
    PaymentMethod,
    PaymentPurpose,
    PaymentStatus,
    StockMovementKind,
    UserRole,
    WalletEntryKind,
)

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "storefront"
MODELS = PACKAGE / "models"
TEMPLATES = ROOT / "templates"

# (table, column) of each `column IN (...)` CHECK constraint → the enum that names its values.
CHECKED_COLUMNS: dict[tuple[str, str], type[StrEnum]] = {
    ("orders", "status"): OrderStatus,
    ("orders", "payment_method"): PaymentMethod,
    ("orders", "delivery"): DeliveryMethod,
    ("payments", "purpose"): PaymentPurpose,
    ("payments", "status"): PaymentStatus,
    ("outbox_emails", "status"): OutboxStatus,
    ("users", "role"): UserRole,
    ("wallet_entries", "kind"): WalletEntryKind,
    ("coupons", "kind"): CouponKind,
    ("stock_movements", "kind"): StockMovementKind,
}
IN_CHECK = re.compile(r"(\w+) IN \((.*)\)")
SQL_STRING = re.compile(r"'([^']*)'")


def _in_checks() -> dict[tuple[str, str], list[str]]:
    found = {}
    for table in Base.metadata.sorted_tables:
        for constraint in table.constraints:
            if not isinstance(constraint, CheckConstraint):
                continue
            match = IN_CHECK.fullmatch(str(constraint.sqltext))
            if match:
                found[table.name, match.group(1)] = SQL_STRING.findall(match.group(2))
    return found


def test_each_check_constraint_allows_exactly_its_enums_values():
    checks = _in_checks()
    assert set(checks) == set(CHECKED_COLUMNS)
    for column, values in checks.items():
        assert values == [member.value for member in CHECKED_COLUMNS[column]], column


def test_every_state_enum_is_listed_and_checked_by_the_database():
    # GatewayStatus is what Paystack reports and PaymentLookup what a reference of no payment
    # shows: compared with, never stored in a checked column.
    assert set(STATE_ENUMS) == {*CHECKED_COLUMNS.values(), GatewayStatus, PaymentLookup}


def test_percent_coupons_are_capped_by_name():
    (cap,) = (
        constraint
        for constraint in Base.metadata.tables["coupons"].constraints
        if constraint.name == "ck_coupons_percent_at_most_100"
    )
    assert isinstance(cap, CheckConstraint)
    assert str(cap.sqltext) == "kind <> 'percent' OR value <= 10000"


STATE_VALUES = {member.value for enum in STATE_ENUMS for member in enum}

# The allow-list: string constants that equal a state value but name something else. Keys
# (of a dict display, a subscript, `.get`/`.pop`, the left of `in`) name template variables,
# form fields, JSON fields and `g` attributes ("customer", "address", "order", "dead").
# Besides keys, only these calls take a name that happens to spell a state:
NAMING_ARGUMENTS = {
    ("Blueprint", 0),  # blueprint names "admin" and "paystack"
    ("render_page_or_block", 1),  # the HTML id of the block htmx swaps: "order", "payment"
}
NAMING_KEYWORDS = {"actor"}  # who wrote a ledger entry: a user's email or "paystack"


def _call_name(call: ast.Call) -> str:
    return call.func.id if isinstance(call.func, ast.Name) else getattr(call.func, "attr", "")


def _names_not_states(tree: ast.AST) -> set[int]:
    """ids of the string constants that are keys or names, not states."""
    allowed: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            allowed.update(id(key) for key in node.keys if key is not None)
        elif isinstance(node, ast.Subscript):
            allowed.add(id(node.slice))
        elif isinstance(node, ast.Compare) and isinstance(node.ops[0], ast.In | ast.NotIn):
            allowed.add(id(node.left))
        elif isinstance(node, ast.Call):
            name = _call_name(node)
            if name in ("get", "pop") and node.args:
                allowed.add(id(node.args[0]))
            for position, argument in enumerate(node.args):
                if (name, position) in NAMING_ARGUMENTS:
                    allowed.add(id(argument))
            allowed.update(id(k.value) for k in node.keywords if k.arg in NAMING_KEYWORDS)
    return allowed


def _python_literals(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    allowed = _names_not_states(tree)
    return [
        f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and node.value in STATE_VALUES
        and id(node) not in allowed
    ]


# Inside Jinja tags only: HTML attributes outside them (id="order", name="address") name
# elements and form fields, not states.
JINJA_TAG = re.compile(r"\{\{.*?\}\}|\{%.*?%\}", re.DOTALL)
QUOTED = re.compile(r"""(["'])([a-z_]+)\1""")


def _template_literals(path: Path) -> list[str]:
    text = path.read_text()
    return [
        f"{path.relative_to(ROOT)}:{text.count(chr(10), 0, tag.start()) + 1}: {quoted.group(0)}"
        for tag in JINJA_TAG.finditer(text)
        for quoted in QUOTED.finditer(tag.group(0))
        if quoted.group(2) in STATE_VALUES
    ]


def test_no_status_literal_outside_the_models():
    sources = [path for path in PACKAGE.rglob("*.py") if MODELS not in path.parents]
    found = [line for path in sorted(sources) for line in _python_literals(path)]
    assert found == [], "use the StrEnum from storefront.models:\n" + "\n".join(found)


def test_no_status_literal_in_templates():
    found = [
        line
        for path in sorted(TEMPLATES.rglob("*"))
        if path.suffix in (".html", ".txt")
        for line in _template_literals(path)
    ]
    assert found == [], "compare with the enum's Jinja global:\n" + "\n".join(found)


@pytest.mark.parametrize(
    "source",
    [
        'if order.status == "paid": pass',
        'x = {"status": "pending"}',
        'form.get("delivery", "address")',
        'status in ("failed", "abandoned")',
        'debit(kind="payment")',
        'return PaymentState(reference=reference, status="unknown")',
        'if state.status == "unknown": abort(404)',
    ],
)
def test_the_python_check_sees_a_state_literal(source):
    tree = ast.parse(source)
    allowed = _names_not_states(tree)
    states = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and node.value in STATE_VALUES and id(node) not in allowed
    ]
    assert states


def test_the_template_check_sees_a_state_literal_but_not_an_attribute(tmp_path):
    template = tmp_path / "page.html"
    template.write_text(
        '<section id="order"><input name="address">\n{% if order.status == "paid" %}x{% endif %}'
    )
    (found,) = QUOTED.finditer(" ".join(JINJA_TAG.findall(template.read_text())))
    assert found.group(2) == "paid"
