"""Users and the wallet every user owns; sign-up rules and password reset tokens."""

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from itsdangerous import BadSignature, SignatureExpired, TimestampSigner, URLSafeTimedSerializer
from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from werkzeug.security import check_password_hash, generate_password_hash

from storefront.models import Login, User, Wallet
from storefront.models.user import UserRole
from storefront.services.outbox.composing import InvalidEmailAddress, normalise_address

PASSWORD_METHOD = "scrypt"
# Verified against when the email is unknown, so both answers take the same time.
DUMMY_PASSWORD_HASH = generate_password_hash("not-a-real-password", method=PASSWORD_METHOD)


def hash_password(password: str) -> str:
    return generate_password_hash(password, method=PASSWORD_METHOD)


def password_matches(password_hash: str | None, password: str) -> bool:
    """Constant work whether or not the account exists."""
    if password_hash is None:
        check_password_hash(DUMMY_PASSWORD_HASH, password)
        return False
    return check_password_hash(password_hash, password)


PASSWORD_MIN_LENGTH = 10
# scrypt cost does not grow with length, but a cap keeps form posts and logs sane.
PASSWORD_MAX_LENGTH = 256
NAME_MAX_LENGTH = 120
EMAIL_MAX_LENGTH = 254
RESET_TOKEN_MAX_AGE_SECONDS = 60 * 60
RESET_TOKEN_SALT = "storefront.password-reset"


def login_token_hash(login_token: str) -> str:
    """What the logins table keeps: a leaked table cannot be replayed as cookies."""
    return hashlib.sha256(login_token.encode()).hexdigest()


async def insert_login(session: AsyncSession, user_id: int, expired_before: datetime) -> str:
    """Start a login for the user (dropping their logins older than `expired_before`, whose
    cookies quart-auth no longer accepts); the token for the login cookie."""
    await session.execute(
        delete(Login).where(Login.user_id == user_id, Login.created_at < expired_before)
    )
    login_token = secrets.token_urlsafe(32)
    await session.execute(
        insert(Login).values(user_id=user_id, token_hash=login_token_hash(login_token))
    )
    return login_token


async def delete_login(session: AsyncSession, login_token: str) -> None:
    """End one login, wherever its cookie was copied."""
    await session.execute(delete(Login).where(Login.token_hash == login_token_hash(login_token)))


async def delete_logins_of_user(session: AsyncSession, user_id: int) -> None:
    """End every login of the user, on every device."""
    await session.execute(delete(Login).where(Login.user_id == user_id))


async def select_user_for_login(session: AsyncSession, login_token: str) -> User | None:
    """The active user a live login token belongs to: one indexed join."""
    return await session.scalar(
        select(User)
        .join(Login, Login.user_id == User.id)
        .where(Login.token_hash == login_token_hash(login_token), User.is_active.is_(True))
    )


def normalise_email(email: str) -> str:
    return email.strip().lower()


async def select_user_by_email(session: AsyncSession, email: str) -> User | None:
    return await session.scalar(select(User).where(User.email == normalise_email(email)))


async def insert_user(
    session: AsyncSession,
    email: str,
    password_hash: str,
    name: str = "",
    role: str = UserRole.CUSTOMER,
    phone: str = "",
) -> User:
    """Create a user and their empty wallet in the caller's transaction."""
    user = User(
        email=normalise_email(email),
        password_hash=password_hash,
        name=name,
        role=role,
        phone=phone,
    )
    session.add(user)
    await session.flush()
    session.add(Wallet(user_id=user.id, balance_minor=0))
    await session.flush()
    return user


@dataclass
class FormErrors:
    """Field name → message for a form shown again with 422; empty when the input is good."""

    messages: dict[str, str] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.messages)

    def add(self, field_name: str, message: str) -> None:
        self.messages.setdefault(field_name, message)


def check_email_address(email: str) -> tuple[str, str | None]:
    """The lower-cased address, or the original text and a message saying what is wrong."""
    typed = email.strip()
    if not typed:
        return typed, "Enter your email address."
    if len(typed) > EMAIL_MAX_LENGTH:
        return typed, "That email address is too long."
    try:
        # The one address rule (outbox.composing.normalise_address): registration refuses what
        # the shop could not deliver to.
        return normalise_address(typed).lower(), None
    except InvalidEmailAddress as error:
        return typed, error.reason


def password_problem(password: str, email: str) -> str | None:
    """The one password rule (sign-up, reset, `storefront create-admin`): what is wrong, or None."""
    if len(password) < PASSWORD_MIN_LENGTH:
        return f"Use at least {PASSWORD_MIN_LENGTH} characters."
    if len(password) > PASSWORD_MAX_LENGTH:
        return f"Use at most {PASSWORD_MAX_LENGTH} characters."
    if email and password.strip().lower() == email.strip().lower():
        return "Your password cannot be your email address."
    return None


def check_new_password(
    password: str, password_confirm: str | None, email: str, errors: FormErrors
) -> None:
    """The password rule and (when the form asks twice) both entries equal."""
    problem = password_problem(password, email)
    if problem is not None:
        errors.add("password", problem)
    if password_confirm is not None and password_confirm != password:
        errors.add("password_confirm", "The two passwords do not match.")


def check_registration(
    name: str, email: str, password: str, password_confirm: str | None
) -> tuple[str, str, FormErrors]:
    """Validate a sign-up form: (clean name, lower-cased email, errors)."""
    errors = FormErrors()
    clean_name = " ".join(name.split())
    if not clean_name:
        errors.add("name", "Enter your name.")
    elif len(clean_name) > NAME_MAX_LENGTH:
        errors.add("name", f"Use at most {NAME_MAX_LENGTH} characters.")
    clean_email, email_error = check_email_address(email)
    if email_error:
        errors.add("email", email_error)
    check_new_password(password, password_confirm, clean_email, errors)
    return clean_name, clean_email, errors


async def email_is_taken(session: AsyncSession, email: str) -> bool:
    found = await session.scalar(select(User.id).where(User.email == normalise_email(email)))
    return found is not None


async def select_user_by_id(session: AsyncSession, user_id: int) -> User | None:
    return await session.scalar(select(User).where(User.id == user_id))


class ResetTokenError(Exception):
    """A reset link that cannot be used: `status` for HTTP, the message for the shopper."""

    status = 400


class ResetTokenInvalid(ResetTokenError):
    status = 400

    def __init__(self) -> None:
        super().__init__(
            "This password reset link is not valid. Check that you copied the whole link, "
            "or ask for a new one."
        )


class ResetTokenExpired(ResetTokenError):
    status = 410

    def __init__(self) -> None:
        super().__init__("This password reset link has expired. Ask for a new one below.")


class ResetTokenUsed(ResetTokenError):
    status = 410

    def __init__(self) -> None:
        super().__init__(
            "This password reset link has already been used (or the password changed since). "
            "Ask for a new one if you still need it."
        )


class _ClockSigner(TimestampSigner):
    """A timestamp signer whose clock is the `now` the caller passes, so expiry is testable."""

    def __init__(self, *args: Any, now: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.now = now

    def get_timestamp(self) -> int:
        return self.now


def _reset_serializer(secret_key: str, now: int) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(
        secret_key, salt=RESET_TOKEN_SALT, signer=_ClockSigner, signer_kwargs={"now": now}
    )


def password_fingerprint(user: User) -> str:
    """Changes whenever the password does (a new salt each time), which kills every older
    reset link."""
    material = f"{user.id}:{user.password_hash}".encode()
    return hashlib.sha256(material).hexdigest()[:32]


def make_password_reset_token(secret_key: str, user: User, now: int) -> str:
    """A signed link token naming the user and their current password fingerprint."""
    return _reset_serializer(secret_key, now).dumps([user.id, password_fingerprint(user)])


async def select_user_for_reset_token(
    session: AsyncSession, secret_key: str, token: str, now: int
) -> User:
    """The user a live reset token belongs to; raise ResetTokenInvalid/Expired/Used."""
    try:
        payload = _reset_serializer(secret_key, now).loads(
            token, max_age=RESET_TOKEN_MAX_AGE_SECONDS
        )
    except SignatureExpired:
        raise ResetTokenExpired() from None
    except BadSignature:
        raise ResetTokenInvalid() from None
    if (
        not isinstance(payload, list)
        or len(payload) != 2
        or not isinstance(payload[0], int)
        or not isinstance(payload[1], str)
    ):
        raise ResetTokenInvalid()
    user = await select_user_by_id(session, payload[0])
    if user is None or not user.is_active:
        raise ResetTokenInvalid()
    if not hmac.compare_digest(password_fingerprint(user), payload[1]):
        raise ResetTokenUsed()
    return user


async def update_password(session: AsyncSession, user: User, new_password_hash: str) -> bool:
    """Set a new password and end every login of the user, only if the password is still the
    one the caller read; False when someone changed it first."""
    updated_id = await session.scalar(
        update(User)
        .where(User.id == user.id, User.password_hash == user.password_hash)
        .values(password_hash=new_password_hash)
        .returning(User.id)
    )
    if updated_id is None:
        return False
    await delete_logins_of_user(session, user.id)
    return True
