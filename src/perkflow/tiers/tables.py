"""Table for each program's tier ladder."""

from sqlalchemy import Column, ForeignKey, String, Table, UniqueConstraint

from perkflow.core.schema import UTCDateTime, WideInteger, metadata

tiers = Table(
    "tiers",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("program_id", String(64), ForeignKey("programs.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(100), nullable=False),
    Column("threshold", WideInteger, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("program_id", "name"),
    UniqueConstraint("program_id", "threshold"),
)
