"""The audit log page: every change made in the back office, newest first, filtered by who
made it and by record."""

import re
from dataclasses import dataclass
from typing import Any

from quart import Blueprint, Response, request
from werkzeug.datastructures import MultiDict

from storefront.db.engine import get_session
from storefront.services.audit import select_audit_actors, select_audit_rows
from storefront.web.auth import owner_required
from storefront.web.back_office import render_back_office

blueprint = Blueprint("admin_audit", __name__)

PAGE_SIZE = 50
# "product" (every product) or "product:12" (one); the id as record_change wrote it.
RECORD_FILTER = re.compile(r"([a-z][a-z_]{0,39})(?::([A-Za-z0-9_.:@-]{1,64}))?")
MAX_ID = 2**31 - 1


class InvalidFilter(ValueError):
    pass


@dataclass(frozen=True)
class AuditFilters:
    actor_id: int | None = None
    record_type: str | None = None
    record_id: str | None = None
    before_id: int | None = None


def _whole_number(raw: str, name: str) -> int:
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_ID:
        raise InvalidFilter(f"{name} must be a whole number from 1.")
    return int(raw)


def parse_filters(args: MultiDict[str, str]) -> AuditFilters:
    """The page's query: `actor` (a user id), `record` ("product" or "product:12"), `before`."""
    actor = (args.get("actor") or "").strip()
    record = (args.get("record") or "").strip()
    before = (args.get("before") or "").strip()
    record_type = record_id = None
    if record:
        match = RECORD_FILTER.fullmatch(record)
        if match is None:
            raise InvalidFilter('Write the record as a type and maybe an id, e.g. "product:12".')
        record_type, record_id = match.group(1), match.group(2)
    return AuditFilters(
        actor_id=_whole_number(actor, "The actor") if actor else None,
        record_type=record_type,
        record_id=record_id,
        before_id=_whole_number(before, "The page marker") if before else None,
    )


@blueprint.get("/admin/audit")
@owner_required
async def audit_log() -> Response:
    """Every change made in the back office: who, what, which record, before and after."""
    session = get_session()
    context: dict[str, Any] = {
        "actor": (request.args.get("actor") or "").strip(),
        "record": (request.args.get("record") or "").strip(),
        "actors": await select_audit_actors(session),
    }
    try:
        filters = parse_filters(request.args)
    except InvalidFilter as error:
        return await render_back_office(
            "admin/audit.html", "audit", 400, error=str(error), rows=[], older_than=None, **context
        )
    rows = await select_audit_rows(
        session,
        actor_id=filters.actor_id,
        record_type=filters.record_type,
        record_id=filters.record_id,
        before_id=filters.before_id,
        limit=PAGE_SIZE + 1,
    )
    older_than = rows[PAGE_SIZE - 1].entry.id if len(rows) > PAGE_SIZE else None
    return await render_back_office(
        "admin/audit.html",
        "audit",
        rows=rows[:PAGE_SIZE],
        older_than=older_than,
        paged=filters.before_id is not None,
        **context,
    )
