"""Tables for programs and their earning rules."""

from sqlalchemy import Boolean, Column, ForeignKey, Integer, String, Table, Text

from perkflow.core.schema import JsonDocument, UTCDateTime, WideInteger, metadata

programs = Table(
    "programs",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("description", Text, nullable=False, server_default=""),
    Column("currency", String(3), nullable=False),
    Column("status", String(16), nullable=False),  # active | archived
    Column("expiry_policy", JsonDocument, nullable=False),
    # None = tiers qualify on lifetime earnings; N = on earnings of the last N days.
    Column("tier_window_days", Integer, nullable=True),
    Column("is_default", Boolean, nullable=False, server_default="0"),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

earning_rules = Table(
    "earning_rules",
    metadata,
    Column("id", String(64), primary_key=True),
    Column(
        "program_id", String(64), ForeignKey("programs.id", ondelete="CASCADE"), nullable=False, index=True
    ),
    Column("name", String(200), nullable=False),
    Column("event", String(64), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("points", Integer, nullable=False),
    Column("amount_unit", WideInteger, nullable=True),
    Column("amount_field", String(64), nullable=False, server_default="total"),
    Column("min_amount", WideInteger, nullable=True),
    Column("pending_days", Integer, nullable=False, server_default="0"),
    Column("conditions", JsonDocument, nullable=False),
    Column("once_per", String(16), nullable=True),
    Column("active", Boolean, nullable=False, server_default="1"),
    Column("created_at", UTCDateTime, nullable=False),
)
