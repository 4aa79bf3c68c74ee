"""Users and the wallet every user owns."""

import secrets

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from werkzeug.security import check_password_hash, generate_password_hash

from storefront.models import User, Wallet

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


def new_auth_token() -> str:
    return secrets.token_urlsafe(32)


def normalise_email(email: str) -> str:
    return email.strip().lower()


async def select_user_by_email(session: AsyncSession, email: str) -> User | None:
    return await session.scalar(select(User).where(User.email == normalise_email(email)))


async def insert_user(
    session: AsyncSession,
    email: str,
    password_hash: str,
    name: str = "",
    role: str = "customer",
    phone: str = "",
) -> User:
    """Create a user and their empty wallet in the caller's transaction."""
    user = User(
        email=normalise_email(email),
        password_hash=password_hash,
        name=name,
        role=role,
        phone=phone,
        auth_token=new_auth_token(),
    )
    session.add(user)
    await session.flush()
    session.add(Wallet(user_id=user.id, balance_minor=0))
    await session.flush()
    return user
