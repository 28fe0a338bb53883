"""Table for API keys; only a hash of each secret is stored."""

from sqlalchemy import Column, String, Table

from perkflow.core.schema import JsonDocument, UTCDateTime, metadata

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("secret_hash", String(128), nullable=False),
    Column("scopes", JsonDocument, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime, nullable=True),
)
