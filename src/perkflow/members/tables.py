"""Tables for members, their external identities and the custom field catalogue."""

from sqlalchemy import BigInteger, Column, Date, ForeignKey, Integer, String, Table, Text, UniqueConstraint

from perkflow.core.schema import JsonDocument, UTCDateTime, metadata

BigId = BigInteger().with_variant(Integer, "sqlite")

members = Table(
    "members",
    metadata,
    # Surrogate key: gives list pagination a stable creation order.
    Column("pk", BigId, primary_key=True, autoincrement=True),
    # The loyalty member id, the one synced to Braze as external_id.
    Column("id", String(128), nullable=False, unique=True),
    Column("email", String(320), nullable=True, index=True),
    Column("first_name", String(200), nullable=True),
    Column("last_name", String(200), nullable=True),
    Column("birth_date", Date, nullable=True),
    Column("status", String(16), nullable=False),  # active | blocked
    Column("fields", JsonDocument, nullable=False),
    # Head of this member's chain of member-level activities (see perkflow.activity.stream).
    Column("last_activity_seq", BigInteger, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

member_identities = Table(
    "member_identities",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column(
        "member_id", String(128), ForeignKey("members.id", ondelete="CASCADE"), nullable=False, index=True
    ),
    Column("external_source", String(100), nullable=False),
    Column("external_source_id", String(255), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("external_source", "external_source_id"),
)

field_definitions = Table(
    "field_definitions",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("label", String(200), nullable=False),
    Column("type", String(32), nullable=False),
    Column("description", Text, nullable=False, server_default=""),
    Column("created_at", UTCDateTime, nullable=False),
)
