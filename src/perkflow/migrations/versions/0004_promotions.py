"""promotions

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22 05:40:21.838746
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import perkflow.core.schema

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "promotion_rewards",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column(
            "parameters",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("stock", sa.Integer(), nullable=True),
        sa.Column("redeemed", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "metadata",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("created_at", perkflow.core.schema.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_promotion_rewards")),
    )
    op.create_table(
        "redemption_rollbacks",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("redemption_id", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("tracking_id", sa.String(length=200), nullable=True),
        sa.Column("activity_seq", sa.BigInteger(), nullable=True),
        sa.Column("created_at", perkflow.core.schema.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_redemption_rollbacks")),
        sa.UniqueConstraint("redemption_id", name=op.f("uq_redemption_rollbacks_redemption_id")),
    )
    op.create_table(
        "redemptions",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("parent_id", sa.String(length=64), nullable=True),
        sa.Column("voucher_id", sa.BigInteger(), nullable=True),
        sa.Column("campaign_id", sa.String(length=64), nullable=True),
        sa.Column("code", sa.String(length=100), nullable=True),
        sa.Column("customer_id", sa.String(length=128), nullable=False),
        sa.Column("tracking_id", sa.String(length=200), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("amount", sa.Integer(), nullable=False),
        sa.Column("gift_amount", sa.Integer(), nullable=True),
        sa.Column("loyalty_points", sa.Integer(), nullable=True),
        sa.Column(
            "order_data",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "effects",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "metadata",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("activity_seq", sa.BigInteger(), nullable=True),
        sa.Column("created_at", perkflow.core.schema.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_redemptions")),
    )
    with op.batch_alter_table("redemptions", schema=None) as batch_op:
        batch_op.create_index(
            "ix_redemptions_campaign_id_customer_id", ["campaign_id", "customer_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_redemptions_parent_id"), ["parent_id"], unique=False)

    op.create_table(
        "vouchers",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("campaign_pk", sa.BigInteger(), nullable=False),
        sa.Column("code", sa.String(length=100), nullable=False),
        sa.Column("holder_id", sa.String(length=128), nullable=True),
        sa.Column("published_at", perkflow.core.schema.UTCDateTime(timezone=True), nullable=True),
        sa.Column("redeemed_quantity", sa.Integer(), server_default="0", nullable=False),
        sa.Column("gift_balance", sa.Integer(), nullable=True),
        sa.Column("gift_amount", sa.Integer(), nullable=True),
        sa.Column("active", sa.Boolean(), server_default="1", nullable=False),
        sa.Column("created_at", perkflow.core.schema.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_vouchers")),
        sa.UniqueConstraint("code", name=op.f("uq_vouchers_code")),
    )
    with op.batch_alter_table("vouchers", schema=None) as batch_op:
        batch_op.create_index(
            "ix_vouchers_free",
            ["campaign_pk", "id"],
            unique=False,
            sqlite_where=sa.text("holder_id IS NULL"),
            postgresql_where=sa.text("holder_id IS NULL"),
        )
        batch_op.create_index(
            "ix_vouchers_holder",
            ["holder_id"],
            unique=False,
            sqlite_where=sa.text("holder_id IS NOT NULL"),
            postgresql_where=sa.text("holder_id IS NOT NULL"),
        )

    op.create_table(
        "campaigns",
        sa.Column(
            "pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), server_default="", nullable=False),
        sa.Column("campaign_type", sa.String(length=32), nullable=False),
        sa.Column("voucher_type", sa.String(length=32), nullable=False),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column(
            "discount",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("gift_amount", sa.Integer(), nullable=True),
        sa.Column("redemption_quantity", sa.Integer(), nullable=True),
        sa.Column(
            "code_config",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "rules",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("start_date", perkflow.core.schema.UTCDateTime(timezone=True), nullable=True),
        sa.Column("expiration_date", perkflow.core.schema.UTCDateTime(timezone=True), nullable=True),
        sa.Column("max_redemptions", sa.Integer(), nullable=True),
        sa.Column("redemptions_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("join_once", sa.Boolean(), server_default="0", nullable=False),
        sa.Column("active", sa.Boolean(), server_default="1", nullable=False),
        sa.Column("program_id", sa.String(length=64), nullable=True),
        sa.Column(
            "referral",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("vouchers_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("generation_status", sa.String(length=16), nullable=False),
        sa.Column("generated_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("generation_error", sa.Text(), nullable=True),
        sa.Column(
            "metadata",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("created_at", perkflow.core.schema.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", perkflow.core.schema.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["program_id"],
            ["programs.id"],
            name=op.f("fk_campaigns_program_id_programs"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_campaigns")),
        sa.UniqueConstraint("id", name=op.f("uq_campaigns_id")),
        sa.UniqueConstraint("name", name=op.f("uq_campaigns_name")),
    )
    op.create_table(
        "distributions",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("integration_id", sa.String(length=64), nullable=False),
        sa.Column("campaign_id", sa.String(length=64), nullable=False),
        sa.Column("trigger", sa.String(length=64), nullable=False),
        sa.Column("segment_id", sa.String(length=64), nullable=True),
        sa.Column(
            "attributes",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("active", sa.Boolean(), server_default="1", nullable=False),
        sa.Column(
            "last_run",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("created_at", perkflow.core.schema.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", perkflow.core.schema.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaigns.id"],
            name=op.f("fk_distributions_campaign_id_campaigns"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["integration_id"],
            ["integrations.id"],
            name=op.f("fk_distributions_integration_id_integrations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_distributions")),
    )
    op.create_table(
        "publications",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("source_id", sa.String(length=300), nullable=True),
        sa.Column("campaign_id", sa.String(length=64), nullable=False),
        sa.Column("voucher_id", sa.BigInteger(), nullable=False),
        sa.Column("code", sa.String(length=100), nullable=False),
        sa.Column("customer_id", sa.String(length=128), nullable=False),
        sa.Column("channel", sa.String(length=64), nullable=False),
        sa.Column(
            "metadata",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("created_at", perkflow.core.schema.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaigns.id"],
            name=op.f("fk_publications_campaign_id_campaigns"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_publications")),
    )
    with op.batch_alter_table("publications", schema=None) as batch_op:
        batch_op.create_index(
            "ix_publications_campaign_id_customer_id", ["campaign_id", "customer_id"], unique=False
        )
        batch_op.create_index(
            "uq_publications_source_id",
            ["source_id"],
            unique=True,
            sqlite_where=sa.text("source_id IS NOT NULL"),
            postgresql_where=sa.text("source_id IS NOT NULL"),
        )

    op.create_table(
        "reward_assignments",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("reward_id", sa.String(length=64), nullable=False),
        sa.Column("campaign_id", sa.String(length=64), nullable=False),
        sa.Column("points", sa.Integer(), nullable=False),
        sa.Column("perkflow_reward_id", sa.String(length=64), nullable=False),
        sa.Column("created_at", perkflow.core.schema.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaigns.id"],
            name=op.f("fk_reward_assignments_campaign_id_campaigns"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["perkflow_reward_id"],
            ["rewards.id"],
            name=op.f("fk_reward_assignments_perkflow_reward_id_rewards"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["reward_id"],
            ["promotion_rewards.id"],
            name=op.f("fk_reward_assignments_reward_id_promotion_rewards"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reward_assignments")),
        sa.UniqueConstraint(
            "reward_id", "campaign_id", name=op.f("uq_reward_assignments_reward_id_campaign_id")
        ),
    )


def downgrade() -> None:
    op.drop_table("reward_assignments")
    with op.batch_alter_table("publications", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_publications_source_id",
            sqlite_where=sa.text("source_id IS NOT NULL"),
            postgresql_where=sa.text("source_id IS NOT NULL"),
        )
        batch_op.drop_index("ix_publications_campaign_id_customer_id")

    op.drop_table("publications")
    op.drop_table("distributions")
    op.drop_table("campaigns")
    with op.batch_alter_table("vouchers", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_vouchers_holder",
            sqlite_where=sa.text("holder_id IS NOT NULL"),
            postgresql_where=sa.text("holder_id IS NOT NULL"),
        )
        batch_op.drop_index(
            "ix_vouchers_free",
            sqlite_where=sa.text("holder_id IS NULL"),
            postgresql_where=sa.text("holder_id IS NULL"),
        )

    op.drop_table("vouchers")
    with op.batch_alter_table("redemptions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_redemptions_parent_id"))
        batch_op.drop_index("ix_redemptions_campaign_id_customer_id")

    op.drop_table("redemptions")
    op.drop_table("redemption_rollbacks")
    op.drop_table("promotion_rewards")
