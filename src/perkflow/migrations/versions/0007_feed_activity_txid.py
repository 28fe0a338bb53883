"""activity feed: the writing transaction's id on each activity, and the index of the feed's order

On PostgreSQL the column defaults to the writing transaction's id; rows written before get 0 (the
ADD COLUMN default, which PostgreSQL stores without rewriting the table), which orders them before
every later row and keeps their seq order among themselves. SQLite leaves it NULL: its seq order is
commit order, and the partial index stays empty there.

Revision ID: 0007_feed
Revises: 0007_robust
Create Date: 2026-12-01 11:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_feed"
down_revision: str | None = "0007_robust"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Kept here as written then, not imported: a migration must not change when the code does.
WRITER_TXID_DEFAULT = "pg_current_xact_id()::text::bigint"


def upgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    with op.batch_alter_table("activities", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "txid", sa.BigInteger(), nullable=True, server_default=sa.text("0") if postgresql else None
            )
        )
    if postgresql:
        op.execute(f"ALTER TABLE activities ALTER COLUMN txid SET DEFAULT {WRITER_TXID_DEFAULT}")
    op.create_index(
        "ix_activities_txid_seq",
        "activities",
        ["txid", "seq"],
        unique=False,
        sqlite_where=sa.text("txid IS NOT NULL"),
        postgresql_where=sa.text("txid IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index(
        "ix_activities_txid_seq",
        table_name="activities",
        sqlite_where=sa.text("txid IS NOT NULL"),
        postgresql_where=sa.text("txid IS NOT NULL"),
    )
    with op.batch_alter_table("activities", schema=None) as batch_op:
        batch_op.drop_column("txid")
