"""Table for points accounts: a member's standing in one program, stored as one row.

The open lots and the rolling-window earnings live in the row itself. An earning is then one row
update next to the activity insert, which is what lets bulk ingestion run near the store's limit;
the lots stay small because spent and expired lots leave the row, and the activities keep history.
"""

from sqlalchemy import BigInteger, Column, ForeignKey, Index, Integer, String, Table, UniqueConstraint

from perkflow.core.schema import JsonDocument, UTCDateTime, WideInteger, metadata

BigId = BigInteger().with_variant(Integer, "sqlite")

accounts = Table(
    "accounts",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("member_id", String(128), ForeignKey("members.id", ondelete="CASCADE"), nullable=False),
    Column("program_id", String(64), ForeignKey("programs.id", ondelete="CASCADE"), nullable=False),
    Column("status", String(16), nullable=False),  # opted_in | opted_out
    Column("opted_in_at", UTCDateTime, nullable=True),
    Column("opted_out_at", UTCDateTime, nullable=True),
    Column("tier_id", String(64), nullable=True),
    Column("tier_since", UTCDateTime, nullable=True),
    Column("points_balance", WideInteger, nullable=False),
    Column("points_pending", WideInteger, nullable=False),
    Column("points_earned", WideInteger, nullable=False),
    Column("points_spent", WideInteger, nullable=False),
    Column("points_expired", WideInteger, nullable=False),
    Column("lots", JsonDocument, nullable=False),
    Column("earned_by_day", JsonDocument, nullable=False),
    # When the settlement job must look at this account next (a lot expires, a pending lot releases),
    # in UTC epoch seconds like the lots themselves: internal scheduling state, never shown to users.
    Column("next_due_epoch", BigInteger, nullable=True),
    # Head of the chain of this account's activities.
    Column("last_activity_seq", BigInteger, nullable=True),
    # Per activity type: [count, last occurred_at epoch]; what segment rules on activity read.
    Column("activity_stats", JsonDocument, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    UniqueConstraint("member_id", "program_id"),
    Index("ix_accounts_program_id_tier_id", "program_id", "tier_id"),
    Index("ix_accounts_next_due_epoch", "next_due_epoch"),
)
