"""workflows and segments

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 05:16:11.638135
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import perkflow.core.schema

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "workflow_runs",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("workflow_id", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("member_id", sa.String(length=128), nullable=False),
        sa.Column(
            "trigger",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column(
            "path",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "results",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "context",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("resume_at", perkflow.core.schema.UTCDateTime(timezone=True), nullable=True),
        sa.Column("resume_node", sa.String(length=64), nullable=True),
        sa.Column("claimed_by", sa.String(length=64), nullable=True),
        sa.Column("started_at", perkflow.core.schema.UTCDateTime(timezone=True), nullable=False),
        sa.Column("finished_at", perkflow.core.schema.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workflow_runs")),
    )
    with op.batch_alter_table("workflow_runs", schema=None) as batch_op:
        batch_op.create_index("ix_workflow_runs_member_id_id", ["member_id", "id"], unique=False)
        batch_op.create_index("ix_workflow_runs_status_resume_at", ["status", "resume_at"], unique=False)
        batch_op.create_index("ix_workflow_runs_workflow_id_id", ["workflow_id", "id"], unique=False)

    op.create_table(
        "segments",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), server_default="", nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column(
            "rules",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("program_id", sa.String(length=64), nullable=True),
        sa.Column("webhook_secret", sa.Text(), nullable=True),
        sa.Column("created_at", perkflow.core.schema.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", perkflow.core.schema.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["program_id"], ["programs.id"], name=op.f("fk_segments_program_id_programs"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_segments")),
        sa.UniqueConstraint("name", name=op.f("uq_segments_name")),
    )
    op.create_table(
        "workflows",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), server_default="", nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("program_id", sa.String(length=64), nullable=True),
        sa.Column("latest_version", sa.Integer(), nullable=False),
        sa.Column("active_version", sa.Integer(), nullable=True),
        sa.Column("starts_at", perkflow.core.schema.UTCDateTime(timezone=True), nullable=True),
        sa.Column("ends_at", perkflow.core.schema.UTCDateTime(timezone=True), nullable=True),
        sa.Column("bonus_cap", sa.Integer(), nullable=True),
        sa.Column("template", sa.String(length=64), nullable=True),
        sa.Column("created_at", perkflow.core.schema.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", perkflow.core.schema.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["program_id"],
            ["programs.id"],
            name=op.f("fk_workflows_program_id_programs"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workflows")),
    )
    op.create_table(
        "campaign_budgets",
        sa.Column("workflow_id", sa.String(length=64), nullable=False),
        sa.Column("member_id", sa.String(length=128), nullable=False),
        sa.Column("bonus_points", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["workflow_id"],
            ["workflows.id"],
            name=op.f("fk_campaign_budgets_workflow_id_workflows"),
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint(
            "workflow_id", "member_id", name=op.f("uq_campaign_budgets_workflow_id_member_id")
        ),
    )
    op.create_table(
        "segment_members",
        sa.Column("segment_id", sa.String(length=64), nullable=False),
        sa.Column("member_id", sa.String(length=128), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("added_at", perkflow.core.schema.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["member_id"],
            ["members.id"],
            name=op.f("fk_segment_members_member_id_members"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["segment_id"],
            ["segments.id"],
            name=op.f("fk_segment_members_segment_id_segments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("segment_id", "member_id", name=op.f("pk_segment_members")),
    )
    with op.batch_alter_table("segment_members", schema=None) as batch_op:
        batch_op.create_index("ix_segment_members_member_id", ["member_id"], unique=False)

    op.create_table(
        "workflow_occurrences",
        sa.Column("workflow_id", sa.String(length=64), nullable=False),
        sa.Column("occurs_at", perkflow.core.schema.UTCDateTime(timezone=True), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("members_done", sa.Integer(), nullable=False),
        sa.Column("last_member", sa.String(length=128), nullable=True),
        sa.Column("claimed_by", sa.String(length=64), nullable=True),
        sa.Column("lease_until", perkflow.core.schema.UTCDateTime(timezone=True), nullable=True),
        sa.Column("started_at", perkflow.core.schema.UTCDateTime(timezone=True), nullable=False),
        sa.Column("finished_at", perkflow.core.schema.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["workflow_id"],
            ["workflows.id"],
            name=op.f("fk_workflow_occurrences_workflow_id_workflows"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("workflow_id", "occurs_at", name=op.f("pk_workflow_occurrences")),
    )
    op.create_table(
        "workflow_versions",
        sa.Column("workflow_id", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column(
            "graph",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("trigger_type", sa.String(length=32), nullable=False),
        sa.Column("trigger_key", sa.String(length=255), nullable=True),
        sa.Column("created_at", perkflow.core.schema.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["workflow_id"],
            ["workflows.id"],
            name=op.f("fk_workflow_versions_workflow_id_workflows"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("workflow_id", "version", name=op.f("pk_workflow_versions")),
    )


def downgrade() -> None:
    op.drop_table("workflow_versions")
    op.drop_table("workflow_occurrences")
    with op.batch_alter_table("segment_members", schema=None) as batch_op:
        batch_op.drop_index("ix_segment_members_member_id")

    op.drop_table("segment_members")
    op.drop_table("campaign_budgets")
    op.drop_table("workflows")
    op.drop_table("segments")
    with op.batch_alter_table("workflow_runs", schema=None) as batch_op:
        batch_op.drop_index("ix_workflow_runs_workflow_id_id")
        batch_op.drop_index("ix_workflow_runs_status_resume_at")
        batch_op.drop_index("ix_workflow_runs_member_id_id")

    op.drop_table("workflow_runs")
