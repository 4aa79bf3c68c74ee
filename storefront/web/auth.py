"""The signed-in customer, resolved from the login token in quart-auth's cookie, and the access
decorators."""

from collections.abc import Awaitable, Callable
from functools import wraps
from typing import ParamSpec, TypeVar
from urllib.parse import quote

from quart import abort, g, request
from quart_auth import current_user

from storefront.db.engine import get_session
from storefront.models import User
from storefront.models.user import BACK_OFFICE_ROLES, UserRole
from storefront.services.users import select_user_for_login
from storefront.web.htmx import navigate

P = ParamSpec("P")
T = TypeVar("T")


async def current_customer() -> User | None:
    """The active user whose live login is in the cookie, loaded once per request."""
    if "customer" not in g:
        login_token = current_user.auth_id
        customer = None
        if login_token:
            customer = await select_user_for_login(get_session(), login_token)
        g.customer = customer
    return g.customer


def login_url() -> str:
    next_path = request.full_path if request.method == "GET" else request.path
    return "/login?next=" + quote(next_path.rstrip("?"), safe="/")


def login_required(view: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Anonymous shoppers go to the login page (HX-Redirect for htmx), then come back."""

    @wraps(view)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        if await current_customer() is None:
            return await navigate(login_url())  # type: ignore[return-value]
        return await view(*args, **kwargs)

    wrapper.requires = "login"  # type: ignore[attr-defined]
    return wrapper


def _role_required(
    view: Callable[P, Awaitable[T]], role: UserRole, allowed: frozenset[UserRole], refusal: str
) -> Callable[P, Awaitable[T]]:
    @wraps(view)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        customer = await current_customer()
        if customer is None:
            return await navigate(login_url())  # type: ignore[return-value]
        if customer.role not in allowed:
            abort(403, refusal)
        return await view(*args, **kwargs)

    # The least role the view admits; the policy tests read it from every /admin route.
    wrapper.requires = role  # type: ignore[attr-defined]
    return wrapper


def staff_required(view: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Staff or owner: anonymous → login page, a customer → 403."""
    return _role_required(
        view, UserRole.STAFF, BACK_OFFICE_ROLES, "This page is for the shop's staff."
    )


def owner_required(view: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """The owner only: anonymous → login page, a customer or staff member → 403."""
    return _role_required(
        view, UserRole.OWNER, frozenset({UserRole.OWNER}), "Only the shop's owner may do this."
    )
