"""loyalty core: 64-bit points on accounts and activities, tier thresholds and earning-rule amounts

Revision ID: 0007_robust
Revises: 0006_wf
Create Date: 2026-12-01 11:55:00

Balances summed from many events, and money amounts (minor units up to 10**12), outgrow int4.
Written by hand like 0006_fix5: the columns become BIGINT on PostgreSQL only, because SQLite's
INTEGER already holds 64 bits (perkflow.core.schema.WideInteger) and altering a column there would
rebuild the accounts and activities tables for nothing.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_robust"
down_revision: str | None = "0006_wf"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WIDENED = {
    "activities": [("points_delta", False, None), ("pending_delta", False, None)],
    "accounts": [
        ("points_balance", False, None),
        ("points_pending", False, None),
        ("points_earned", False, None),
        ("points_spent", False, None),
        ("points_expired", False, None),
    ],
    "tiers": [("threshold", False, None)],
    "earning_rules": [("amount_unit", True, None), ("min_amount", True, None)],
}


def _change(to_type: sa.types.TypeEngine[int], from_type: sa.types.TypeEngine[int]) -> None:
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
    _change(sa.BigInteger(), sa.Integer())


def downgrade() -> None:
    _change(sa.Integer(), sa.BigInteger())
