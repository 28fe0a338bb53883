"""Tables for rewards and their coupon pools."""

from sqlalchemy import BigInteger, Boolean, Column, ForeignKey, Index, Integer, String, Table, Text

from perkflow.core.schema import UTCDateTime, WideInteger, metadata

BigId = BigInteger().with_variant(Integer, "sqlite")

rewards = Table(
    "rewards",
    metadata,
    Column("id", String(64), primary_key=True),
    Column(
        "program_id", String(64), ForeignKey("programs.id", ondelete="CASCADE"), nullable=False, index=True
    ),
    Column("name", String(200), nullable=False),
    Column("description", Text, nullable=False, server_default=""),
    Column("points_cost", Integer, nullable=False),
    # A reward with a pool hands out one coupon per claim and is out of stock when the pool is empty.
    Column("uses_coupons", Boolean, nullable=False, server_default="0"),
    Column("active", Boolean, nullable=False, server_default="1"),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

coupons = Table(
    "coupons",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("reward_id", String(64), ForeignKey("rewards.id", ondelete="CASCADE"), nullable=False),
    Column("code", String(100), nullable=False, unique=True),
    Column("value", WideInteger, nullable=True),  # minor units of the program currency
    Column("currency", String(3), nullable=True),
    Column("expires_at", UTCDateTime, nullable=True),
    Column("status", String(16), nullable=False),  # available | assigned
    Column("member_id", String(128), nullable=True, index=True),
    Column("assigned_at", UTCDateTime, nullable=True),
    Column("activity_seq", BigInteger, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Index("ix_coupons_reward_id_status_id", "reward_id", "status", "id"),
)
