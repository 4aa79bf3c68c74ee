"""back office: roles staff and owner (admin becomes owner), audit_log, stock_movements,
product_images, products.low_stock_threshold, categories.is_active, sliders' upload fields

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-10 10:00:00

Every product with stock gets one `restock` movement of that stock ("opening stock"), so that
stock = the sum of its movements from this revision on.
"""

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ROLES_BEFORE = "role IN ('customer', 'admin')"
ROLES_AFTER = "role IN ('customer', 'staff', 'owner')"
STOCK_MOVEMENT_KINDS = "kind IN ('sale', 'cancel', 'release', 'adjustment', 'restock')"
OPENING_STOCK_REASON = "Opening stock: the stock held when the ledger began"

users = sa.table("users", sa.column("role", sa.String()))


def _set_role(old: str, new: str) -> None:
    op.execute(users.update().where(users.c.role == old).values(role=new))


def _replace_role_check(old_role: str, new_role: str, new_check: str) -> None:
    # Two steps: between them no CHECK holds, so the rows can move to the new value.
    with op.batch_alter_table("users") as batch_op:
        batch_op.drop_constraint(op.f("ck_users_role"), type_="check")
    _set_role(old_role, new_role)
    with op.batch_alter_table("users") as batch_op:
        batch_op.create_check_constraint(op.f("ck_users_role"), new_check)


def upgrade() -> None:
    _replace_role_check("admin", "owner", ROLES_AFTER)

    with op.batch_alter_table("categories") as batch_op:
        batch_op.add_column(
            sa.Column("is_active", sa.Boolean(), server_default=sa.true(), nullable=False)
        )
    with op.batch_alter_table("products") as batch_op:
        batch_op.add_column(
            sa.Column("low_stock_threshold", sa.Integer(), server_default="5", nullable=False)
        )
        batch_op.create_check_constraint(
            op.f("ck_products_low_stock_threshold_not_negative"), "low_stock_threshold >= 0"
        )
    with op.batch_alter_table("sliders") as batch_op:
        batch_op.add_column(
            sa.Column("image_small", sa.String(length=255), server_default="", nullable=False)
        )
        batch_op.add_column(sa.Column("image_width", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("image_height", sa.Integer(), nullable=True))

    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("actor_id", sa.Integer(), nullable=True),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("record_type", sa.String(length=40), nullable=False),
        sa.Column("record_id", sa.String(length=64), nullable=False),
        sa.Column("before", sa.JSON(), nullable=True),
        sa.Column("after", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["actor_id"],
            ["users.id"],
            name=op.f("fk_audit_log_actor_id_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    op.create_index("ix_audit_log_actor_id_id", "audit_log", ["actor_id", "id"], unique=False)
    op.create_index(
        "ix_audit_log_record_type_record_id_id",
        "audit_log",
        ["record_type", "record_id", "id"],
        unique=False,
    )

    op.create_table(
        "product_images",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("product_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("card_filename", sa.String(length=100), nullable=False),
        sa.Column("page_filename", sa.String(length=100), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint("position >= 0", name=op.f("ck_product_images_position_not_negative")),
        sa.CheckConstraint(
            "width > 0 AND height > 0", name=op.f("ck_product_images_size_positive")
        ),
        sa.ForeignKeyConstraint(
            ["product_id"],
            ["products.id"],
            name=op.f("fk_product_images_product_id_products"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_product_images")),
    )
    op.create_index(
        "ix_product_images_product_id_position",
        "product_images",
        ["product_id", "position"],
        unique=False,
    )

    op.create_table(
        "stock_movements",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("product_id", sa.Integer(), nullable=False),
        sa.Column("change", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("actor_id", sa.Integer(), nullable=True),
        sa.Column("order_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint("change <> 0", name=op.f("ck_stock_movements_change_not_zero")),
        sa.CheckConstraint(STOCK_MOVEMENT_KINDS, name=op.f("ck_stock_movements_kind")),
        sa.ForeignKeyConstraint(
            ["actor_id"],
            ["users.id"],
            name=op.f("fk_stock_movements_actor_id_users"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["order_id"],
            ["orders.id"],
            name=op.f("fk_stock_movements_order_id_orders"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["product_id"],
            ["products.id"],
            name=op.f("fk_stock_movements_product_id_products"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stock_movements")),
    )
    op.create_index(
        op.f("ix_stock_movements_order_id"), "stock_movements", ["order_id"], unique=False
    )
    op.create_index(
        "ix_stock_movements_product_id_id", "stock_movements", ["product_id", "id"], unique=False
    )
    _insert_opening_stock()


def _insert_opening_stock() -> None:
    products = sa.table("products", sa.column("id", sa.Integer()), sa.column("stock", sa.Integer()))
    movements = sa.table(
        "stock_movements",
        sa.column("product_id", sa.Integer()),
        sa.column("change", sa.Integer()),
        sa.column("kind", sa.String()),
        sa.column("reason", sa.Text()),
        sa.column("created_at", sa.DateTime()),
    )
    now = datetime.now(UTC).replace(tzinfo=None)
    op.execute(
        movements.insert().from_select(
            ["product_id", "change", "kind", "reason", "created_at"],
            sa.select(
                products.c.id,
                products.c.stock,
                sa.literal("restock", sa.String()),
                sa.literal(OPENING_STOCK_REASON, sa.Text()),
                sa.literal(now, sa.DateTime()),
            )
            .where(products.c.stock > 0)
            .order_by(products.c.id),
        )
    )


def downgrade() -> None:
    op.drop_index("ix_stock_movements_product_id_id", table_name="stock_movements")
    op.drop_index(op.f("ix_stock_movements_order_id"), table_name="stock_movements")
    op.drop_table("stock_movements")
    op.drop_index("ix_product_images_product_id_position", table_name="product_images")
    op.drop_table("product_images")
    op.drop_index("ix_audit_log_record_type_record_id_id", table_name="audit_log")
    op.drop_index("ix_audit_log_actor_id_id", table_name="audit_log")
    op.drop_table("audit_log")

    with op.batch_alter_table("sliders") as batch_op:
        batch_op.drop_column("image_height")
        batch_op.drop_column("image_width")
        batch_op.drop_column("image_small")
    with op.batch_alter_table("products") as batch_op:
        batch_op.drop_constraint(
            op.f("ck_products_low_stock_threshold_not_negative"), type_="check"
        )
        batch_op.drop_column("low_stock_threshold")
    with op.batch_alter_table("categories") as batch_op:
        batch_op.drop_column("is_active")

    # Staff had no back-office access before this revision: they go back to being customers.
    _set_role("staff", "customer")
    _replace_role_check("owner", "admin", ROLES_BEFORE)
