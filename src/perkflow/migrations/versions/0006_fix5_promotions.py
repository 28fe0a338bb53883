"""promotions: durable code generation jobs, soft-deleted campaigns and codes, 64-bit amounts

Revision ID: 0006_fix5
Revises: 0005
Create Date: 2026-12-01 08:23:09.845556

Generated with autogenerate against SQLite and PostgreSQL databases at 0005 and merged by hand: the
widened columns are BIGINT on PostgreSQL only, because SQLite's INTEGER already holds 64 bits
(perkflow.core.schema.WideInteger) and widening there would rebuild the vouchers table for nothing.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import perkflow.core.schema

revision: str = "0006_fix5"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WIDENED = {
    "campaigns": [
        ("gift_amount", True, None),
        ("redemption_quantity", True, None),
        ("max_redemptions", True, None),
        ("redemptions_count", False, sa.text("0")),
    ],
    "vouchers": [
        ("redeemed_quantity", False, sa.text("0")),
        ("gift_balance", True, None),
        ("gift_amount", True, None),
    ],
    "redemptions": [("amount", False, None), ("gift_amount", True, None)],
    "coupons": [("value", True, None)],
}


def _widen(to_type: sa.types.TypeEngine[int], from_type: sa.types.TypeEngine[int]) -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, columns in WIDENED.items():
        for name, nullable, default in columns:
            op.alter_column(
                table,
                name,
                existing_type=from_type,
                type_=to_type,
                existing_nullable=nullable,
                existing_server_default=default,
            )


def upgrade() -> None:
    op.create_table(
        "code_generation_jobs",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("campaign_id", sa.String(length=64), nullable=False),
        sa.Column("requested", sa.Integer(), nullable=False),
        sa.Column("generated", sa.Integer(), server_default="0", nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("lease_owner", sa.String(length=200), nullable=True),
        sa.Column("lease_until", perkflow.core.schema.UTCDateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", perkflow.core.schema.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", perkflow.core.schema.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaigns.id"],
            name=op.f("fk_code_generation_jobs_campaign_id_campaigns"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_code_generation_jobs")),
    )
    op.create_index(
        "uq_code_generation_jobs_running",
        "code_generation_jobs",
        ["campaign_id"],
        unique=True,
        sqlite_where=sa.text("status = 'RUNNING'"),
        postgresql_where=sa.text("status = 'RUNNING'"),
    )

    with op.batch_alter_table("campaigns", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("deleted_at", perkflow.core.schema.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.drop_constraint(batch_op.f("uq_campaigns_name"), type_="unique")
        batch_op.create_index(
            "uq_campaigns_live_name",
            ["name"],
            unique=True,
            sqlite_where=sa.text("deleted_at IS NULL"),
            postgresql_where=sa.text("deleted_at IS NULL"),
        )

    with op.batch_alter_table("vouchers", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("deleted_at", perkflow.core.schema.UTCDateTime(timezone=True), nullable=True)
        )

    _widen(sa.BigInteger(), sa.INTEGER())


def downgrade() -> None:
    _widen(sa.INTEGER(), sa.BigInteger())

    with op.batch_alter_table("vouchers", schema=None) as batch_op:
        batch_op.drop_column("deleted_at")

    with op.batch_alter_table("campaigns", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_campaigns_live_name",
            sqlite_where=sa.text("deleted_at IS NULL"),
            postgresql_where=sa.text("deleted_at IS NULL"),
        )
        batch_op.create_unique_constraint(batch_op.f("uq_campaigns_name"), ["name"])
        batch_op.drop_column("deleted_at")

    op.drop_index(
        "uq_code_generation_jobs_running",
        table_name="code_generation_jobs",
        sqlite_where=sa.text("status = 'RUNNING'"),
        postgresql_where=sa.text("status = 'RUNNING'"),
    )
    op.drop_table("code_generation_jobs")
