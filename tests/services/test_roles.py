"""Changing roles: an audit row per change, and never a shop without an active owner, even
when two owners demote each other at the same moment."""

import asyncio

import pytest
from sqlalchemy import select

from storefront.db.engine import sessionmaker_for
from storefront.models import AuditEntry, User, UserRole
from storefront.services.audit import audited_write
from storefront.services.roles import (
    RoleChangeRefused,
    UnknownUser,
    change_role,
    search_users_by_email,
    select_back_office_users,
)

pytestmark = pytest.mark.both_databases


async def roles(app) -> dict[str, str]:
    async with sessionmaker_for(app)() as session:
        return {user.email: user.role for user in await session.scalars(select(User))}


async def audit_rows(app) -> list[tuple]:
    async with sessionmaker_for(app)() as session:
        found = await session.scalars(select(AuditEntry).order_by(AuditEntry.id))
        return [(entry.actor_id, entry.record_id, entry.before, entry.after) for entry in found]


async def change(app, actor: User, user_id: int, role: UserRole) -> tuple[User, str]:
    async with sessionmaker_for(app)() as session, audited_write(session):
        return await change_role(session, actor, user_id, role)


async def test_an_owner_makes_a_customer_staff_with_an_audit_row(app, make_user):
    owner = await make_user(role=UserRole.OWNER, email="boss@shop.test")
    ama = await make_user(email="ama@shop.test")
    user, previous = await change(app, owner, ama.id, UserRole.STAFF)
    assert (user.role, previous) == (UserRole.STAFF, UserRole.CUSTOMER)
    assert (await roles(app))["ama@shop.test"] == "staff"
    assert await audit_rows(app) == [
        (owner.id, str(ama.id), {"role": "customer"}, {"role": "staff"})
    ]
    # Giving the role someone already has changes nothing and writes nothing.
    _, previous = await change(app, owner, ama.id, UserRole.STAFF)
    assert previous == UserRole.STAFF
    assert len(await audit_rows(app)) == 1


async def test_the_last_active_owner_cannot_be_demoted(app, make_user):
    owner = await make_user(role=UserRole.OWNER, email="boss@shop.test")
    inactive = await make_user(role=UserRole.OWNER, email="gone@shop.test")
    async with sessionmaker_for(app)() as session, audited_write(session):
        row = await session.get(User, inactive.id)
        assert row is not None
        row.is_active = False  # an owner who cannot sign in does not count
        session.add(AuditEntry(action="test", record_type="user", record_id=str(row.id)))
    for role in (UserRole.STAFF, UserRole.CUSTOMER):
        with pytest.raises(RoleChangeRefused, match="only owner"):
            await change(app, owner, owner.id, role)
    assert (await roles(app))["boss@shop.test"] == "owner"
    with pytest.raises(UnknownUser):
        await change(app, owner, 424242, UserRole.STAFF)
    assert [row[1] for row in await audit_rows(app)] == [str(inactive.id)]


async def test_two_owners_demoting_each_other_at_once_leave_one_owner(app, make_user):
    for _ in range(3):
        first = await make_user(role=UserRole.OWNER)
        second = await make_user(role=UserRole.OWNER)
        outcomes = await asyncio.gather(
            change(app, first, second.id, UserRole.STAFF),
            change(app, second, first.id, UserRole.STAFF),
            return_exceptions=True,
        )
        refused = [outcome for outcome in outcomes if isinstance(outcome, RoleChangeRefused)]
        assert len(refused) == 1, outcomes
        current = await roles(app)
        assert sorted([current[first.email], current[second.email]]) == ["owner", "staff"]
        # Reset for the next round: the survivor is the only owner of the pair.
        async with sessionmaker_for(app)() as session, audited_write(session):
            for user in await session.scalars(select(User).where(User.role == UserRole.OWNER)):
                user.role = UserRole.CUSTOMER
            session.add(AuditEntry(action="test reset", record_type="user", record_id="*"))


async def test_lists_and_search(app, make_user):
    await make_user(role=UserRole.STAFF, email="zed@shop.test")
    await make_user(role=UserRole.OWNER, email="yaa@shop.test")
    await make_user(email="ama_100%@shop.test")
    await make_user(email="ama@other.test")
    async with sessionmaker_for(app)() as session:
        members = await select_back_office_users(session)
        assert [user.email for user in members] == ["yaa@shop.test", "zed@shop.test"]
        assert [user.email for user in await search_users_by_email(session, "AMA")] == [
            "ama@other.test",
            "ama_100%@shop.test",
        ]
        # % and _ are searched for as themselves, not as wildcards.
        assert [user.email for user in await search_users_by_email(session, "_100%")] == [
            "ama_100%@shop.test"
        ]
        assert await search_users_by_email(session, "a_a") == []


async def test_an_owner_demoted_since_the_request_began_changes_nothing(app, make_user):
    boss = await make_user(role=UserRole.OWNER)
    was_owner = await make_user(role=UserRole.OWNER)
    ama = await make_user()
    await change(app, boss, was_owner.id, UserRole.STAFF)
    # `was_owner` still holds the User loaded when their request passed owner_required.
    with pytest.raises(RoleChangeRefused, match="Only an owner"):
        await change(app, was_owner, ama.id, UserRole.OWNER)
    assert (await roles(app))[ama.email] == "customer"
