"""Accounts: sign-up, login and logout, password reset by email, and the account page."""

import asyncio
import time
from datetime import timedelta
from typing import Any

from quart import Blueprint, Response, current_app, flash, g, request, session
from quart_auth import AuthUser, current_user, login_user, logout_user
from quart_rate_limiter import rate_limit
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from storefront.db.engine import get_session
from storefront.db.transactions import end_read, write_transaction
from storefront.models import User, utcnow
from storefront.services.cart import count_cart_items
from storefront.services.cart_changes import merge_guest_cart
from storefront.services.outbox.queueing import queue_email
from storefront.services.users import (
    RESET_TOKEN_MAX_AGE_SECONDS,
    FormErrors,
    ResetTokenError,
    ResetTokenUsed,
    check_email_address,
    check_new_password,
    check_registration,
    delete_login,
    delete_logins_of_user,
    email_is_taken,
    hash_password,
    insert_login,
    insert_user,
    make_password_reset_token,
    password_fingerprint,
    password_matches,
    select_user_by_email,
    select_user_for_reset_token,
    update_password,
)
from storefront.services.wallet import select_wallet
from storefront.web.auth import current_customer, login_required
from storefront.web.cart_badge import show_badge_count
from storefront.web.csrf import rotate_csrf_token
from storefront.web.htmx import navigate, render_page_or_block, safe_next_path
from storefront.web.public_url import public_base_url
from storefront.web.security import per_minute

blueprint = Blueprint("account", __name__)

LOGIN_FAILED = "That email and password do not match an account. Check both and try again."
EMAIL_TAKEN = (
    "We could not create an account with this email. If it is yours, log in or reset your password."
)
# One reset email per account per five minutes, however often the form is sent.
RESET_EMAIL_WINDOW_SECONDS = 300


class EmailTaken(Exception):
    """The address already belongs to an account."""


async def _render_form(template: str, status: int = 200, **context: Any) -> Response:
    context.setdefault("errors", {})
    return await render_page_or_block(template, "form", status, **context)


async def _carry_cart_over(db_session: AsyncSession, user_id: int) -> tuple[str | None, int]:
    """Merge the guest cart into the customer's (caller's transaction): (cart token, item count)."""
    cart = await merge_guest_cart(db_session, session.get("cart_token"), user_id)
    if cart is None:
        return None, 0
    return cart.token, await count_cart_items(db_session, cart.id)


async def _insert_login(db_session: AsyncSession, user_id: int) -> str:
    """A new login for the user (caller's transaction): the token for the login cookie."""
    cookie_lifetime = timedelta(seconds=current_app.config["QUART_AUTH_DURATION"])
    return await insert_login(db_session, user_id, utcnow() - cookie_lifetime)


def _start_session(login_token: str, cart_token: str | None, cart_count: int) -> None:
    """Log in with the login's token, point the session at the cart, rotate the CSRF token."""
    login_user(AuthUser(login_token), remember=True)
    g.pop("customer", None)
    if cart_token:
        session["cart_token"] = cart_token
    else:
        session.pop("cart_token", None)
    show_badge_count(cart_count if cart_token else 0)
    rotate_csrf_token()


@blueprint.get("/register")
async def register_form() -> Response:
    """The sign-up form."""
    next_path = safe_next_path(request.args.get("next"))
    if await current_customer() is not None:
        return await navigate(next_path or "/account")
    return await _render_form("account/register.html", values={}, next_path=next_path)


@blueprint.post("/register")
@rate_limit(limits=per_minute(5))
async def register() -> Response:
    """Create the account and its wallet, then log in."""
    form = await request.form
    password = form.get("password", "")
    next_path = safe_next_path(form.get("next"))
    name, email, errors = check_registration(
        form.get("name", ""), form.get("email", ""), password, form.get("password_confirm")
    )
    values = {"name": form.get("name", ""), "email": form.get("email", "")}
    if errors:
        return await _render_form(
            "account/register.html", 422, errors=errors.messages, values=values, next_path=next_path
        )
    password_hash = await asyncio.to_thread(hash_password, password)
    db_session = get_session()
    try:
        async with write_transaction(db_session):
            if await email_is_taken(db_session, email):
                raise EmailTaken()
            user = await insert_user(db_session, email, password_hash, name=name)
            login_token = await _insert_login(db_session, user.id)
            cart_token, cart_count = await _carry_cart_over(db_session, user.id)
    except (EmailTaken, IntegrityError):
        return await _render_form(
            "account/register.html",
            422,
            errors={"email": EMAIL_TAKEN},
            values=values,
            next_path=next_path,
        )
    _start_session(login_token, cart_token, cart_count)
    await flash(f"Welcome, {user.name}. Your account is ready.", "ok")
    return await navigate(next_path or "/account")


@blueprint.get("/login")
async def login_form() -> Response:
    """The login form; a signed-in visitor goes straight on."""
    next_path = safe_next_path(request.args.get("next"))
    if await current_customer() is not None:
        return await navigate(next_path or "/account")
    return await _render_form("account/login.html", email="", next_path=next_path)


@blueprint.post("/login")
@rate_limit(limits=per_minute(10))
async def login() -> Response:
    """Log in; an unknown email and a wrong password get the same answer in the same time."""
    form = await request.form
    email = form.get("email", "")
    next_path = safe_next_path(form.get("next"))
    db_session = get_session()
    user = await select_user_by_email(db_session, email) if len(email) <= 254 else None
    await end_read(db_session)  # the ~0.1 s scrypt compare holds no connection
    account: User | None = user if user is not None and user.is_active else None
    password_hash = account.password_hash if account is not None else None
    matches = await asyncio.to_thread(password_matches, password_hash, form.get("password", ""))
    if account is None or not matches:
        return await _render_form(
            "account/login.html",
            422,
            errors={"form": LOGIN_FAILED},
            email=email,
            next_path=next_path,
        )
    async with write_transaction(db_session):
        login_token = await _insert_login(db_session, account.id)
        cart_token, cart_count = await _carry_cart_over(db_session, account.id)
    _start_session(login_token, cart_token, cart_count)
    return await navigate(next_path or "/account")


def _end_session() -> None:
    """Forget the login in this browser: auth cookie, cart pointer and CSRF token all go."""
    logout_user()
    g.pop("customer", None)
    session.clear()
    show_badge_count(0)
    rotate_csrf_token()


@blueprint.post("/logout")
async def logout() -> Response:
    """End this login, in this browser and wherever its cookie was copied."""
    login_token = current_user.auth_id
    if login_token:
        db_session = get_session()
        async with write_transaction(db_session):
            await delete_login(db_session, login_token)
    _end_session()
    await flash("You have logged out.", "ok")
    return await navigate("/")


@blueprint.post("/account/logout-everywhere")
@login_required
async def logout_everywhere() -> Response:
    """End every login of this account, on every device, this one included."""
    customer = await current_customer()
    assert customer is not None
    db_session = get_session()
    async with write_transaction(db_session):
        await delete_logins_of_user(db_session, customer.id)
    _end_session()
    await flash("You have logged out on every device.", "ok")
    return await navigate("/login")


def _secret_key() -> str:
    return str(current_app.config["SECRET_KEY"])


@blueprint.get("/password/forgot")
async def forgot_password_form() -> Response:
    """Ask for a reset link."""
    return await _render_form("account/forgot.html", email="", sent=False)


@blueprint.post("/password/forgot")
@rate_limit(limits=per_minute(5))
async def forgot_password() -> Response:
    """Answer at once, the same for every address; a reset link is queued afterwards when the
    account exists, so the response time does not tell which addresses have accounts."""
    form = await request.form
    email, email_error = check_email_address(form.get("email", ""))
    if email_error:
        return await _render_form(
            "account/forgot.html", 422, errors={"email": email_error}, email=email, sent=False
        )
    current_app.add_background_task(queue_password_reset_email, email, public_base_url())
    return await _render_form("account/forgot.html", email=email, sent=True)


async def queue_password_reset_email(email: str, reset_url_base: str) -> None:
    """Queue a reset link for an active account (a background task: its own session)."""
    db_session = get_session()
    async with write_transaction(db_session):
        user = await select_user_by_email(db_session, email)
        if user is None or not user.is_active:
            return
        now = int(time.time())
        token = make_password_reset_token(_secret_key(), user, now)
        window = now // RESET_EMAIL_WINDOW_SECONDS
        await queue_email(
            db_session,
            user.email,
            "password_reset",
            {
                "user": user,
                "reset_url": f"{reset_url_base}/password/reset/{token}",
                "expires_minutes": RESET_TOKEN_MAX_AGE_SECONDS // 60,
            },
            dedupe_key=f"password_reset:{user.id}:{password_fingerprint(user)[:16]}:{window}",
        )


async def _render_reset_problem(problem: ResetTokenError) -> Response:
    return await render_page_or_block(
        "account/reset_problem.html", "content", problem.status, message=str(problem)
    )


@blueprint.get("/password/reset/<token>")
async def reset_password_form(token: str) -> Response:
    """Choose a new password, when the link is still good."""
    try:
        await select_user_for_reset_token(get_session(), _secret_key(), token, int(time.time()))
    except ResetTokenError as problem:
        return await _render_reset_problem(problem)
    return await _render_form("account/reset.html", token=token)


@blueprint.post("/password/reset/<token>")
@rate_limit(limits=per_minute(10))
async def reset_password(token: str) -> Response:
    """Set the new password, end every other session, and log in."""
    db_session = get_session()
    try:
        user = await select_user_for_reset_token(db_session, _secret_key(), token, int(time.time()))
    except ResetTokenError as problem:
        return await _render_reset_problem(problem)
    await end_read(db_session)  # the scrypt hash below holds no connection
    form = await request.form
    password = form.get("password", "")
    errors = FormErrors()
    check_new_password(password, form.get("password_confirm", ""), user.email, errors)
    if errors:
        return await _render_form("account/reset.html", 422, errors=errors.messages, token=token)
    password_hash = await asyncio.to_thread(hash_password, password)
    login_token, cart_token, cart_count = None, None, 0
    async with write_transaction(db_session):
        if await update_password(db_session, user, password_hash):
            login_token = await _insert_login(db_session, user.id)
            cart_token, cart_count = await _carry_cart_over(db_session, user.id)
    if login_token is None:
        return await _render_reset_problem(ResetTokenUsed())
    _start_session(login_token, cart_token, cart_count)
    await flash("Your password has been changed. Other devices have been logged out.", "ok")
    return await navigate("/account")


@blueprint.get("/account")
@login_required
async def account_page() -> Response:
    """Name, email, wallet balance, and the ways to orders and the wallet."""
    customer = await current_customer()
    assert customer is not None
    wallet = await select_wallet(get_session(), customer.id)
    return await render_page_or_block(
        "account/index.html",
        "content",
        balance_minor=wallet.balance_minor if wallet is not None else 0,
    )
