"""Tables for segments and their members."""

from sqlalchemy import Column, ForeignKey, Index, String, Table, Text

from perkflow.core.schema import JsonDocument, UTCDateTime, metadata

segments = Table(
    "segments",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("description", Text, nullable=False, server_default=""),
    Column("kind", String(16), nullable=False),  # rule | static
    # For rule segments: {"match": "all"|"any", "conditions": [...]} over member and standing fields.
    Column("rules", JsonDocument, nullable=True),
    Column("program_id", String(64), ForeignKey("programs.id", ondelete="SET NULL"), nullable=True),
    # Key for HMAC-signed inbound membership webhooks (Braze webhook campaigns), sealed like credentials.
    Column("webhook_secret", Text, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

segment_members = Table(
    "segment_members",
    metadata,
    Column("segment_id", String(64), ForeignKey("segments.id", ondelete="CASCADE"), primary_key=True),
    Column("member_id", String(128), ForeignKey("members.id", ondelete="CASCADE"), primary_key=True),
    Column("source", String(16), nullable=False),  # rules | api | webhook
    Column("added_at", UTCDateTime, nullable=False),
    Index("ix_segment_members_member_id", "member_id"),
)
