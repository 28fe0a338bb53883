"""Table for custom event types registered by the brand."""

from sqlalchemy import Column, String, Table, Text

from perkflow.core.schema import JsonDocument, UTCDateTime, metadata

event_types = Table(
    "event_types",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("description", Text, nullable=False, server_default=""),
    # {attribute name: field type}, using the same type names as the field catalogue.
    Column("attributes", JsonDocument, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)
