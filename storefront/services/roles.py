"""Who may use the back office: staff and owners, and the owner's power to change roles."""

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from storefront.models import User
from storefront.models.user import BACK_OFFICE_ROLES, UserRole
from storefront.services.audit import record_change

SEARCH_LIMIT = 20


class RoleChangeRefused(Exception):
    """The change was not made; the message says why, fit for the owner."""


class UnknownUser(RoleChangeRefused):
    pass


async def select_back_office_users(session: AsyncSession) -> list[User]:
    """Owners first, then staff, each by email."""
    users = await session.scalars(
        select(User).where(User.role.in_(BACK_OFFICE_ROLES)).order_by(User.email)
    )
    return sorted(users, key=lambda user: (user.role != UserRole.OWNER, user.email))


async def search_users_by_email(session: AsyncSession, text: str) -> list[User]:
    """Accounts whose email contains `text` (case-insensitive; emails are stored lower-case)."""
    escaped = text.strip().lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    users = await session.scalars(
        select(User)
        .where(User.email.like(f"%{escaped}%", escape="\\"))
        .order_by(User.email)
        .limit(SEARCH_LIMIT)
    )
    return list(users)


async def change_role(
    session: AsyncSession, actor: User, user_id: int, role: UserRole
) -> tuple[User, str]:
    """Give the user `role` with an audit row; the user and their previous role. Refused when it
    would leave the shop without an active owner."""
    # Every active owner is locked first, always in id order, then the user: two owners
    # demoting each other at once on PostgreSQL wait in turn instead of both seeing the other.
    owner_ids = list(
        await session.scalars(
            select(User.id)
            .where(User.role == UserRole.OWNER, User.is_active.is_(True))
            .order_by(User.id)
            .with_for_update()
        )
    )
    if actor.id not in owner_ids:
        # Demoted (or deactivated) since the request began: the change is no longer theirs.
        raise RoleChangeRefused("Only an owner may change roles.")
    user = await session.scalar(
        select(User)
        .where(User.id == user_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if user is None:
        raise UnknownUser(f"There is no account #{user_id}.")
    previous = UserRole(user.role)
    if previous == role:
        return user, previous
    if user.id in owner_ids and owner_ids == [user.id]:
        raise RoleChangeRefused(
            f"{user.email} is the only owner: make someone else an owner first."
        )
    user.role = role
    await record_change(session, actor, "user.role", user, {"role": previous}, {"role": role})
    return user, previous
