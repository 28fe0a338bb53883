"""Table for the activity stream, which is also the points ledger."""

from sqlalchemy import DDL, BigInteger, Column, Index, Integer, Sequence, String, Table, event, text

from perkflow.core.db import WRITER_TXID_DEFAULT
from perkflow.core.schema import JsonDocument, UTCDateTime, WideInteger, metadata

BigId = BigInteger().with_variant(Integer, "sqlite")

# PostgreSQL hands out activity sequence numbers from this; SQLite uses max()+1 under its write lock.
activity_seq = Sequence("activity_seq", metadata=metadata)

activities = Table(
    "activities",
    metadata,
    # Monotonically increasing position in the stream, allocated before insert (core.db.SequenceBlock).
    Column("seq", BigId, primary_key=True, autoincrement=False),
    Column("type", String(64), nullable=False),
    Column("member_id", String(128), nullable=False),
    Column("program_id", String(64), nullable=True),
    Column("occurred_at", UTCDateTime, nullable=False),
    Column("recorded_at", UTCDateTime, nullable=False),
    Column("source", String(16), nullable=False),  # api | system | workflow | admin | import
    # The caller's event id; a second event with the same id returns the first one's result.
    Column("event_id", String(128), nullable=True),
    # A natural key that must not repeat, e.g. checkout:<program>:<transaction_id>.
    Column("dedup_key", String(300), nullable=True),
    # Ledger columns: signed changes to the account's available and pending points.
    Column("points_delta", WideInteger, nullable=False),
    Column("pending_delta", WideInteger, nullable=False),
    Column("payload", JsonDocument, nullable=False),
    # Previous activity in the same member or account chain (see perkflow.activity.stream).
    Column("prev_seq", BigInteger, nullable=True),
    # PostgreSQL: the writing transaction's id, filled by a server default, so the feed can serve
    # activities in an order no later commit can break (core.db.Database.stream_after). NULL on
    # SQLite, whose seq order is commit order already; 0 for rows written before it existed.
    Column("txid", BigInteger, nullable=True),
    Index(
        "uq_activities_event_id",
        "event_id",
        unique=True,
        sqlite_where=text("event_id IS NOT NULL"),
        postgresql_where=text("event_id IS NOT NULL"),
    ),
    Index(
        "uq_activities_dedup_key",
        "dedup_key",
        unique=True,
        sqlite_where=text("dedup_key IS NOT NULL"),
        postgresql_where=text("dedup_key IS NOT NULL"),
    ),
    # The feed's order on PostgreSQL. Partial, so on SQLite (txid always NULL) it stays empty and
    # costs an insert nothing but the test of its condition.
    Index(
        "ix_activities_txid_seq",
        "txid",
        "seq",
        sqlite_where=text("txid IS NOT NULL"),
        postgresql_where=text("txid IS NOT NULL"),
    ),
)

event.listen(
    activities,
    "after_create",
    DDL(f"ALTER TABLE activities ALTER COLUMN txid SET DEFAULT {WRITER_TXID_DEFAULT}").execute_if(
        dialect="postgresql"
    ),
)
