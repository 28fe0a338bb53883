"""workflows API: which runs a workflow stores

Revision ID: 0006_wf
Revises: 0005
Create Date: 2026-12-01 08:08:28.828400
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_wf"
down_revision: str | None = "0006_seg"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("workflows", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("run_log", sa.String(length=16), server_default="acted", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("workflows", schema=None) as batch_op:
        batch_op.drop_column("run_log")
