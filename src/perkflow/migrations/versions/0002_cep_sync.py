"""cep sync

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 04:47:24.168927
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import perkflow.core.schema

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "delivery_counters",
        sa.Column("integration_id", sa.String(length=64), nullable=False),
        sa.Column("requests", sa.BigInteger(), nullable=False),
        sa.Column("objects", sa.BigInteger(), nullable=False),
        sa.Column("attributes_sent", sa.BigInteger(), nullable=False),
        sa.Column("attributes_full", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("integration_id", name=op.f("pk_delivery_counters")),
    )
    op.create_table(
        "outbox",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("integration_id", sa.String(length=64), nullable=False),
        sa.Column("member_id", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("activity_seq", sa.BigInteger(), nullable=True),
        sa.Column(
            "payload",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("available_at", perkflow.core.schema.UTCDateTime(timezone=True), nullable=False),
        sa.Column("lease_until", perkflow.core.schema.UTCDateTime(timezone=True), nullable=True),
        sa.Column("claimed_by", sa.String(length=64), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", perkflow.core.schema.UTCDateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", perkflow.core.schema.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox")),
    )
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.create_index(
            "ix_outbox_integration_id_member_id_status",
            ["integration_id", "member_id", "status"],
            unique=False,
        )
        batch_op.create_index(
            "ix_outbox_integration_id_status_id", ["integration_id", "status", "id"], unique=False
        )
        batch_op.create_index(
            "uq_outbox_pending_profile",
            ["integration_id", "member_id"],
            unique=True,
            sqlite_where=sa.text("kind = 'profile' AND status = 'pending'"),
            postgresql_where=sa.text("kind = 'profile' AND status = 'pending'"),
        )

    op.create_table(
        "rate_buckets",
        sa.Column("integration_id", sa.String(length=64), nullable=False),
        sa.Column("tokens", sa.Float(), nullable=False),
        sa.Column("updated_epoch", sa.Float(), nullable=False),
        sa.Column("blocked_until_epoch", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("integration_id", name=op.f("pk_rate_buckets")),
    )
    op.create_table(
        "integrations",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("program_id", sa.String(length=64), nullable=True),
        sa.Column(
            "config",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("secrets", sa.Text(), nullable=False),
        sa.Column(
            "settings",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", perkflow.core.schema.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", perkflow.core.schema.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["program_id"],
            ["programs.id"],
            name=op.f("fk_integrations_program_id_programs"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_integrations")),
    )
    op.create_table(
        "field_mappings",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("integration_id", sa.String(length=64), nullable=False),
        sa.Column("loyalty_field", sa.String(length=100), nullable=False),
        sa.Column("remote_field", sa.String(length=255), nullable=False),
        sa.Column("created_at", perkflow.core.schema.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["integration_id"],
            ["integrations.id"],
            name=op.f("fk_field_mappings_integration_id_integrations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_field_mappings")),
        sa.UniqueConstraint(
            "integration_id", "remote_field", name=op.f("uq_field_mappings_integration_id_remote_field")
        ),
    )
    op.create_table(
        "sync_shadows",
        sa.Column("integration_id", sa.String(length=64), nullable=False),
        sa.Column("member_id", sa.String(length=128), nullable=False),
        sa.Column(
            "attributes",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("updated_at", perkflow.core.schema.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["integration_id"],
            ["integrations.id"],
            name=op.f("fk_sync_shadows_integration_id_integrations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("integration_id", "member_id", name=op.f("pk_sync_shadows")),
    )


def downgrade() -> None:
    op.drop_table("sync_shadows")
    op.drop_table("field_mappings")
    op.drop_table("integrations")
    op.drop_table("rate_buckets")
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_outbox_pending_profile",
            sqlite_where=sa.text("kind = 'profile' AND status = 'pending'"),
            postgresql_where=sa.text("kind = 'profile' AND status = 'pending'"),
        )
        batch_op.drop_index("ix_outbox_integration_id_status_id")
        batch_op.drop_index("ix_outbox_integration_id_member_id_status")

    op.drop_table("outbox")
    op.drop_table("delivery_counters")
