"""The back office's policy over every /admin route in the URL map: a role declared on each
view, login required, the role checked, CSRF on every unsafe method, and an audit row for every
change. Samples of valid changes live in tests/admin_samples.py, so a route added tomorrow is
walked here without editing this file (and fails here until it has a sample)."""

from typing import Any

import pytest
from quart import Quart
from quart.testing import QuartClient
from sqlalchemy import func, select
from werkzeug.routing import Rule

from storefront.db.engine import sessionmaker_for
from storefront.models import AuditEntry, Base, User
from storefront.models.user import UserRole
from tests.admin_samples import CHANGE_SAMPLES, ChangeSample, SampleContext
from tests.conftest import CSRF_TOKEN, sign_in
from tests.test_policy import UNSAFE_METHODS, rules, sample_url, view_of

pytestmark = pytest.mark.both_databases

HTMX = {"HX-Request": "true"}
BACK_OFFICE_ROLES = {UserRole.STAFF, UserRole.OWNER}


def admin_rules(app: Quart) -> list[Rule]:
    return [rule for rule in rules(app) if rule.rule.startswith("/admin")]


def required_role(app: Quart, rule: Rule) -> Any:
    return getattr(view_of(app, rule), "requires", None)


def methods_of(rule: Rule) -> list[str]:
    return sorted(set(rule.methods or ()) - {"HEAD", "OPTIONS"})


def unsafe_admin_routes(app: Quart) -> list[tuple[Rule, str]]:
    return [
        (rule, method)
        for rule in admin_rules(app)
        for method in methods_of(rule)
        if method in UNSAFE_METHODS
    ]


async def new_client(app: Quart, user: User | None) -> QuartClient:
    client = app.test_client()
    async with client.session_transaction() as session:
        session["csrf_token"] = CSRF_TOKEN
    if user is not None:
        sign_in(client, user)
    return client


async def database_rows(app: Quart) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, for "nothing changed" (a test database is small)."""
    async with sessionmaker_for(app)() as session:
        return {
            table.name: [
                tuple(row)
                for row in await session.execute(select(table).order_by(*table.primary_key.columns))
            ]
            for table in Base.metadata.sorted_tables
        }


async def audit_entries_after(app: Quart, last_id: int) -> list[AuditEntry]:
    async with sessionmaker_for(app)() as session:
        return list(await session.scalars(select(AuditEntry).where(AuditEntry.id > last_id)))


async def last_audit_id(app: Quart) -> int:
    async with sessionmaker_for(app)() as session:
        return await session.scalar(select(func.coalesce(func.max(AuditEntry.id), 0))) or 0


async def send(
    client: QuartClient,
    rule: Rule,
    method: str,
    sample: ChangeSample | None,
    csrf: bool = True,
    headers: dict[str, str] | None = None,
) -> Any:
    """The sample's change (or, for a page, a GET of a sample URL) as the client."""
    if sample is None:
        return await client.open(sample_url(rule), method=method, headers=headers or {})
    form = {**sample.form, **({"csrf_token": CSRF_TOKEN} if csrf else {})}
    return await client.open(
        rule.build(sample.path_values)[1],
        method=method,
        form=form,
        files=dict(sample.files) or None,
        headers=headers or {},
    )


@pytest.fixture(name="sample_context")
def _sample_context(app: Quart, request: pytest.FixtureRequest) -> SampleContext:
    return SampleContext(app, request)


def test_every_admin_route_declares_its_role(app):
    found = admin_rules(app)
    assert any(rule.rule == "/admin" for rule in found)
    undeclared = [rule.rule for rule in found if required_role(app, rule) not in BACK_OFFICE_ROLES]
    assert undeclared == [], f"/admin routes without staff_required or owner_required: {undeclared}"


def test_every_unsafe_admin_route_has_a_change_sample_and_no_sample_is_stale(app):
    endpoints = {rule.endpoint for rule, _ in unsafe_admin_routes(app)}
    missing = sorted(endpoints - set(CHANGE_SAMPLES))
    assert missing == [], f"add a sample for each to tests/admin_samples.py: {missing}"
    stale = sorted(set(CHANGE_SAMPLES) - endpoints)
    assert stale == [], f"samples for endpoints that are not unsafe /admin routes: {stale}"


async def test_a_refused_request_changes_nothing(app, make_user, sample_context):
    """Visitor → login; customer → 403; staff on an owner-only route → 403; a signed-in owner
    without the CSRF token → 403: with a valid sample each time, and no row changed."""
    customer = await make_user(role=UserRole.CUSTOMER)
    staff = await make_user(role=UserRole.STAFF)
    owner = await make_user(role=UserRole.OWNER)
    checked = []
    for rule in admin_rules(app):
        owner_only = required_role(app, rule) == UserRole.OWNER
        for method in methods_of(rule):
            unsafe = method in UNSAFE_METHODS
            sample = await CHANGE_SAMPLES[rule.endpoint](sample_context) if unsafe else None
            before = await database_rows(app)
            where = f"{method} {rule.rule}"

            anonymous = await new_client(app, None)
            response = await send(anonymous, rule, method, sample)
            assert response.status_code == 303, where
            assert response.headers["Location"].startswith("/login?next="), where
            response = await send(anonymous, rule, method, sample, headers=HTMX)
            assert response.status_code == 204, where
            assert response.headers["HX-Redirect"].startswith("/login?next="), where

            refused = [customer, staff] if owner_only else [customer]
            for user in refused:
                client = await new_client(app, user)
                for headers in (None, HTMX):
                    response = await send(client, rule, method, sample, headers=headers)
                    assert response.status_code == 403, (where, user.role, headers)

            if unsafe:
                client = await new_client(app, owner)
                response = await send(client, rule, method, sample, csrf=False)
                assert response.status_code == 403, (where, "no CSRF token")
                assert "did not come from this shop" in await response.get_data(as_text=True)

            assert await database_rows(app) == before, where
            checked.append(where)
    assert "GET /admin" in checked and "POST /admin/customers/<int:user_id>/role" in checked


async def test_every_change_leaves_an_audit_row_by_its_actor(app, make_user, sample_context):
    """Each unsafe /admin route, posted with its sample by the least role it admits, with
    JavaScript off and with htmx, answers without an error and writes audit rows naming that
    user, in the same transaction as the change."""
    actors = {
        UserRole.STAFF: await make_user(role=UserRole.STAFF),
        UserRole.OWNER: await make_user(role=UserRole.OWNER),
    }
    checked = []
    for rule, method in unsafe_admin_routes(app):
        actor = actors[required_role(app, rule)]
        client = await new_client(app, actor)
        for headers in (None, HTMX):
            sample = await CHANGE_SAMPLES[rule.endpoint](sample_context)
            last_id = await last_audit_id(app)
            response = await send(client, rule, method, sample, headers=headers)
            where = (method, rule.rule, "htmx" if headers else "no JS")
            assert response.status_code in (200, 204, 303), (where, response.status_code)
            entries = await audit_entries_after(app, last_id)
            assert entries, f"{where}: no audit row"
            assert {entry.actor_id for entry in entries} == {actor.id}, where
            checked.append(where)
    assert ("POST", "/admin/customers/<int:user_id>/role", "htmx") in checked
