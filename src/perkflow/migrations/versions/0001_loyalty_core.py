"""loyalty core

Revision ID: 0001
Revises:
Create Date: 2026-11-22 03:30:58.442598
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import perkflow.core.schema

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        # Activity sequence numbers are allocated before insert (perkflow.core.db.SequenceBlock).
        op.execute(sa.schema.CreateSequence(sa.Sequence("activity_seq")))
    op.create_table(
        "activities",
        sa.Column(
            "seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=False, nullable=False
        ),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("member_id", sa.String(length=128), nullable=False),
        sa.Column("program_id", sa.String(length=64), nullable=True),
        sa.Column("occurred_at", perkflow.core.schema.UTCDateTime(timezone=True), nullable=False),
        sa.Column("recorded_at", perkflow.core.schema.UTCDateTime(timezone=True), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("event_id", sa.String(length=128), nullable=True),
        sa.Column("dedup_key", sa.String(length=300), nullable=True),
        sa.Column("points_delta", sa.Integer(), nullable=False),
        sa.Column("pending_delta", sa.Integer(), nullable=False),
        sa.Column(
            "payload",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("prev_seq", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_activities")),
    )
    with op.batch_alter_table("activities", schema=None) as batch_op:
        batch_op.create_index(
            "uq_activities_dedup_key",
            ["dedup_key"],
            unique=True,
            sqlite_where=sa.text("dedup_key IS NOT NULL"),
            postgresql_where=sa.text("dedup_key IS NOT NULL"),
        )
        batch_op.create_index(
            "uq_activities_event_id",
            ["event_id"],
            unique=True,
            sqlite_where=sa.text("event_id IS NOT NULL"),
            postgresql_where=sa.text("event_id IS NOT NULL"),
        )

    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("secret_hash", sa.String(length=128), nullable=False),
        sa.Column(
            "scopes",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("created_at", perkflow.core.schema.UTCDateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", perkflow.core.schema.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
    )
    op.create_table(
        "event_types",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("description", sa.Text(), server_default="", nullable=False),
        sa.Column(
            "attributes",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("created_at", perkflow.core.schema.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_event_types")),
    )
    op.create_table(
        "field_definitions",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("label", sa.String(length=200), nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("description", sa.Text(), server_default="", nullable=False),
        sa.Column("created_at", perkflow.core.schema.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_field_definitions")),
    )
    op.create_table(
        "members",
        sa.Column(
            "pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=True),
        sa.Column("first_name", sa.String(length=200), nullable=True),
        sa.Column("last_name", sa.String(length=200), nullable=True),
        sa.Column("birth_date", sa.Date(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column(
            "fields",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("last_activity_seq", sa.BigInteger(), nullable=True),
        sa.Column("created_at", perkflow.core.schema.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", perkflow.core.schema.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_members")),
        sa.UniqueConstraint("id", name=op.f("uq_members_id")),
    )
    with op.batch_alter_table("members", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_members_email"), ["email"], unique=False)

    op.create_table(
        "programs",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), server_default="", nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column(
            "expiry_policy",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("tier_window_days", sa.Integer(), nullable=True),
        sa.Column("is_default", sa.Boolean(), server_default="0", nullable=False),
        sa.Column("created_at", perkflow.core.schema.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", perkflow.core.schema.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_programs")),
        sa.UniqueConstraint("name", name=op.f("uq_programs_name")),
    )
    op.create_table(
        "accounts",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("member_id", sa.String(length=128), nullable=False),
        sa.Column("program_id", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("opted_in_at", perkflow.core.schema.UTCDateTime(timezone=True), nullable=True),
        sa.Column("opted_out_at", perkflow.core.schema.UTCDateTime(timezone=True), nullable=True),
        sa.Column("tier_id", sa.String(length=64), nullable=True),
        sa.Column("tier_since", perkflow.core.schema.UTCDateTime(timezone=True), nullable=True),
        sa.Column("points_balance", sa.Integer(), nullable=False),
        sa.Column("points_pending", sa.Integer(), nullable=False),
        sa.Column("points_earned", sa.Integer(), nullable=False),
        sa.Column("points_spent", sa.Integer(), nullable=False),
        sa.Column("points_expired", sa.Integer(), nullable=False),
        sa.Column(
            "lots",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "earned_by_day",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("next_due_epoch", sa.BigInteger(), nullable=True),
        sa.Column("last_activity_seq", sa.BigInteger(), nullable=True),
        sa.Column("created_at", perkflow.core.schema.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", perkflow.core.schema.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_accounts_member_id_members"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["program_id"], ["programs.id"], name=op.f("fk_accounts_program_id_programs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_accounts")),
        sa.UniqueConstraint("member_id", "program_id", name=op.f("uq_accounts_member_id_program_id")),
    )
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.create_index("ix_accounts_next_due_epoch", ["next_due_epoch"], unique=False)
        batch_op.create_index("ix_accounts_program_id_tier_id", ["program_id", "tier_id"], unique=False)

    op.create_table(
        "earning_rules",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("program_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("event", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("points", sa.Integer(), nullable=False),
        sa.Column("amount_unit", sa.Integer(), nullable=True),
        sa.Column("amount_field", sa.String(length=64), server_default="total", nullable=False),
        sa.Column("min_amount", sa.Integer(), nullable=True),
        sa.Column("pending_days", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "conditions",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("once_per", sa.String(length=16), nullable=True),
        sa.Column("active", sa.Boolean(), server_default="1", nullable=False),
        sa.Column("created_at", perkflow.core.schema.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["program_id"],
            ["programs.id"],
            name=op.f("fk_earning_rules_program_id_programs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_earning_rules")),
    )
    with op.batch_alter_table("earning_rules", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_earning_rules_program_id"), ["program_id"], unique=False)

    op.create_table(
        "member_identities",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("member_id", sa.String(length=128), nullable=False),
        sa.Column("external_source", sa.String(length=100), nullable=False),
        sa.Column("external_source_id", sa.String(length=255), nullable=False),
        sa.Column("created_at", perkflow.core.schema.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["member_id"],
            ["members.id"],
            name=op.f("fk_member_identities_member_id_members"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_member_identities")),
        sa.UniqueConstraint(
            "external_source",
            "external_source_id",
            name=op.f("uq_member_identities_external_source_external_source_id"),
        ),
    )
    with op.batch_alter_table("member_identities", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_member_identities_member_id"), ["member_id"], unique=False)

    op.create_table(
        "rewards",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("program_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), server_default="", nullable=False),
        sa.Column("points_cost", sa.Integer(), nullable=False),
        sa.Column("uses_coupons", sa.Boolean(), server_default="0", nullable=False),
        sa.Column("active", sa.Boolean(), server_default="1", nullable=False),
        sa.Column("created_at", perkflow.core.schema.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", perkflow.core.schema.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["program_id"], ["programs.id"], name=op.f("fk_rewards_program_id_programs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rewards")),
    )
    with op.batch_alter_table("rewards", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_rewards_program_id"), ["program_id"], unique=False)

    op.create_table(
        "tiers",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("program_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("threshold", sa.Integer(), nullable=False),
        sa.Column("created_at", perkflow.core.schema.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["program_id"], ["programs.id"], name=op.f("fk_tiers_program_id_programs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tiers")),
        sa.UniqueConstraint("program_id", "name", name=op.f("uq_tiers_program_id_name")),
        sa.UniqueConstraint("program_id", "threshold", name=op.f("uq_tiers_program_id_threshold")),
    )
    op.create_table(
        "coupons",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("reward_id", sa.String(length=64), nullable=False),
        sa.Column("code", sa.String(length=100), nullable=False),
        sa.Column("value", sa.Integer(), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=True),
        sa.Column("expires_at", perkflow.core.schema.UTCDateTime(timezone=True), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("member_id", sa.String(length=128), nullable=True),
        sa.Column("assigned_at", perkflow.core.schema.UTCDateTime(timezone=True), nullable=True),
        sa.Column("activity_seq", sa.BigInteger(), nullable=True),
        sa.Column("created_at", perkflow.core.schema.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["reward_id"], ["rewards.id"], name=op.f("fk_coupons_reward_id_rewards"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_coupons")),
        sa.UniqueConstraint("code", name=op.f("uq_coupons_code")),
    )
    with op.batch_alter_table("coupons", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_coupons_member_id"), ["member_id"], unique=False)
        batch_op.create_index("ix_coupons_reward_id_status_id", ["reward_id", "status", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("coupons", schema=None) as batch_op:
        batch_op.drop_index("ix_coupons_reward_id_status_id")
        batch_op.drop_index(batch_op.f("ix_coupons_member_id"))

    op.drop_table("coupons")
    op.drop_table("tiers")
    with op.batch_alter_table("rewards", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_rewards_program_id"))

    op.drop_table("rewards")
    with op.batch_alter_table("member_identities", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_member_identities_member_id"))

    op.drop_table("member_identities")
    with op.batch_alter_table("earning_rules", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_earning_rules_program_id"))

    op.drop_table("earning_rules")
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.drop_index("ix_accounts_program_id_tier_id")
        batch_op.drop_index("ix_accounts_next_due_epoch")

    op.drop_table("accounts")
    op.drop_table("programs")
    with op.batch_alter_table("members", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_members_email"))

    op.drop_table("members")
    op.drop_table("field_definitions")
    op.drop_table("event_types")
    op.drop_table("api_keys")
    with op.batch_alter_table("activities", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_activities_event_id",
            sqlite_where=sa.text("event_id IS NOT NULL"),
            postgresql_where=sa.text("event_id IS NOT NULL"),
        )
        batch_op.drop_index(
            "uq_activities_dedup_key",
            sqlite_where=sa.text("dedup_key IS NOT NULL"),
            postgresql_where=sa.text("dedup_key IS NOT NULL"),
        )

    op.drop_table("activities")
    if op.get_bind().dialect.name == "postgresql":
        op.execute(sa.schema.DropSequence(sa.Sequence("activity_seq")))
