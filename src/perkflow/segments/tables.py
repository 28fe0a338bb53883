"""Tables for segments and their members."""

from sqlalchemy import Column, ForeignKey, Index, Integer, String, Table, Text

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
    # Bumped by every change of the definition: evaluation runs restart when the rules they work for
    # changed, and caches of the rule segments reload when the sum of versions moves.
    Column("version", Integer, nullable=False, server_default="1"),
    # Rule segments: the run computing membership over all members, with its progress (see runs.py).
    Column("evaluation", JsonDocument, nullable=True),
    # When a full evaluation last finished; periodic re-evaluation is scheduled from it.
    Column("swept_at", UTCDateTime, nullable=True),
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
