"""Tables for integrations, their field mappings, the outbox and what each platform last acknowledged."""

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

from perkflow.core.schema import JsonDocument, UTCDateTime, metadata

BigId = BigInteger().with_variant(Integer, "sqlite")

integrations = Table(
    "integrations",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("kind", String(16), nullable=False),  # braze | bloomreach | webhook
    Column("name", String(200), nullable=False),
    Column("status", String(16), nullable=False),  # connected | paused | disconnected
    # The program whose standing (tier, points) the profile fields come from; None = the default program.
    Column("program_id", String(64), ForeignKey("programs.id", ondelete="SET NULL"), nullable=True),
    Column("config", JsonDocument, nullable=False),  # connection settings that are not secret
    Column("secrets", Text, nullable=False),  # credentials, encrypted with the instance key
    Column("settings", JsonDocument, nullable=False),  # sync mode, event selection, batching, retries
    Column("last_error", Text, nullable=True),  # why delivery is paused, if it is
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

field_mappings = Table(
    "field_mappings",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("integration_id", String(64), ForeignKey("integrations.id", ondelete="CASCADE"), nullable=False),
    Column("loyalty_field", String(100), nullable=False),
    Column("remote_field", String(255), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("integration_id", "remote_field"),
)

# One row per unit of sync work, written in the transaction of the change that caused it.
outbox = Table(
    "outbox",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("integration_id", String(64), nullable=False),
    Column("member_id", String(128), nullable=False),
    Column("kind", String(16), nullable=False),  # profile | event | attributes
    Column("activity_seq", BigInteger, nullable=True),
    Column("payload", JsonDocument, nullable=False),
    Column("status", String(16), nullable=False),  # pending | in_flight | delivered | dead
    Column("attempts", Integer, nullable=False),
    Column("available_at", UTCDateTime, nullable=False),  # not to be tried before
    Column("lease_until", UTCDateTime, nullable=True),  # an in-flight item whose lease passed is claimable
    Column("claimed_by", String(64), nullable=True),
    Column("last_error", Text, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("delivered_at", UTCDateTime, nullable=True),
    Index("ix_outbox_integration_id_status_id", "integration_id", "status", "id"),
    Index("ix_outbox_integration_id_member_id_status", "integration_id", "member_id", "status"),
    # A member needs at most one waiting profile item: the worker reads the values when it sends, so a
    # second one would carry nothing new. Enqueueing skips members who already have one.
    Index(
        "uq_outbox_pending_profile",
        "integration_id",
        "member_id",
        unique=True,
        sqlite_where=text("kind = 'profile' AND status = 'pending'"),
        postgresql_where=text("kind = 'profile' AND status = 'pending'"),
    ),
)

# What each platform last acknowledged for a member: delta mode sends only what differs from this.
sync_shadows = Table(
    "sync_shadows",
    metadata,
    Column("integration_id", String(64), ForeignKey("integrations.id", ondelete="CASCADE"), primary_key=True),
    Column("member_id", String(128), primary_key=True),
    Column("attributes", JsonDocument, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

# Running totals per destination, kept by every worker process (Prometheus counters are per process).
delivery_counters = Table(
    "delivery_counters",
    metadata,
    Column("integration_id", String(64), primary_key=True),
    Column("requests", BigInteger, nullable=False),
    Column("objects", BigInteger, nullable=False),  # attribute objects and events the platform accepted
    Column("attributes_sent", BigInteger, nullable=False),  # attribute values it acknowledged
    Column("attributes_full", BigInteger, nullable=False),  # what full mode would have sent instead
)

# A token bucket per destination, shared by every worker process.
rate_buckets = Table(
    "rate_buckets",
    metadata,
    Column("integration_id", String(64), primary_key=True),
    Column("tokens", Float, nullable=False),
    Column("updated_epoch", Float, nullable=False),
    Column("blocked_until_epoch", Float, nullable=False),
)
