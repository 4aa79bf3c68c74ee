"""logins: one row per signed-in browser; users.auth_token is no longer a login credential

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04 15:50:00

Every login cookie issued before this revision named users.auth_token; those cookies stop
working and their owners log in again.
"""

import secrets
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "logins",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_logins_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_logins")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_logins_token_hash")),
    )
    op.create_index(op.f("ix_logins_user_id"), "logins", ["user_id"], unique=False)
    with op.batch_alter_table("users") as batch_op:
        batch_op.drop_constraint("uq_users_auth_token", type_="unique")
        batch_op.drop_column("auth_token")


def downgrade() -> None:
    with op.batch_alter_table("users") as batch_op:
        batch_op.add_column(sa.Column("auth_token", sa.String(length=64), nullable=True))
    users = sa.table("users", sa.column("id", sa.Integer()), sa.column("auth_token", sa.String()))
    connection = op.get_bind()
    for user_id in connection.scalars(sa.select(users.c.id)).all():
        connection.execute(
            users.update().where(users.c.id == user_id).values(auth_token=secrets.token_urlsafe(32))
        )
    with op.batch_alter_table("users") as batch_op:
        batch_op.alter_column("auth_token", existing_type=sa.String(length=64), nullable=False)
        batch_op.create_unique_constraint("uq_users_auth_token", ["auth_token"])
    op.drop_index(op.f("ix_logins_user_id"), table_name="logins")
    op.drop_table("logins")
