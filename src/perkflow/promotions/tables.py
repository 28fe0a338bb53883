"""Tables for promotion campaigns, their codes (vouchers), publications, redemptions and distributions."""

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

from perkflow.core.schema import JsonDocument, UTCDateTime, WideInteger, metadata

BigId = BigInteger().with_variant(Integer, "sqlite")

campaigns = Table(
    "campaigns",
    metadata,
    # Surrogate key: codes point at their campaign with this integer, which keeps the code rows (and
    # their indexes) narrow enough for bulk generation at >100,000 codes per second on SQLite.
    Column("pk", BigId, primary_key=True, autoincrement=True),
    Column("id", String(64), nullable=False, unique=True),
    # Unique among live campaigns (uq_campaigns_live_name): a deleted campaign's name can be used again.
    Column("name", String(200), nullable=False),
    Column("description", Text, nullable=False, server_default=""),
    # DISCOUNT_COUPONS | GIFT_VOUCHERS | LOYALTY_PROGRAM | REFERRAL_PROGRAM (Voucherify's names)
    Column("campaign_type", String(32), nullable=False),
    Column("voucher_type", String(32), nullable=False),  # DISCOUNT_VOUCHER | GIFT_VOUCHER | LOYALTY_CARD
    # STATIC: a fixed set of codes; AUTO_UPDATE: a publication that finds no free code creates one.
    Column("type", String(16), nullable=False),
    # {type: AMOUNT|PERCENT|FIXED, amount_off, percent_off, amount_limit, fixed_amount} in minor units.
    Column("discount", JsonDocument, nullable=True),
    Column("gift_amount", WideInteger, nullable=True),  # initial balance of each gift card, minor units
    Column("redemption_quantity", WideInteger, nullable=True),  # uses per code; None = unlimited
    Column("code_config", JsonDocument, nullable=False),
    # Validation rules with no column of their own: per-customer limit, minimum order, segment.
    Column("rules", JsonDocument, nullable=False),
    Column("start_date", UTCDateTime, nullable=True),
    Column("expiration_date", UTCDateTime, nullable=True),
    Column("max_redemptions", WideInteger, nullable=True),  # successful redemptions across the campaign
    Column("redemptions_count", WideInteger, nullable=False, server_default="0"),
    Column("join_once", Boolean, nullable=False, server_default="0"),
    Column("active", Boolean, nullable=False, server_default="1"),
    # Loyalty campaigns: the program whose ledger holds the card's points.
    Column("program_id", String(64), ForeignKey("programs.id", ondelete="SET NULL"), nullable=True),
    # Referral campaigns: {points, program_id, campaign_id} given to the referrer per referee redemption.
    Column("referral", JsonDocument, nullable=True),
    Column("vouchers_count", Integer, nullable=False, server_default="0"),  # codes requested
    Column("generation_status", String(16), nullable=False),  # DONE | IN_PROGRESS | FAILED
    Column("generated_count", Integer, nullable=False, server_default="0"),
    Column("generation_error", Text, nullable=True),
    Column("metadata", JsonDocument, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    # Deleted campaigns are kept (with their codes) so that redemptions can still be shown and rolled
    # back; they are hidden from lists and can no longer be published, validated or redeemed.
    Column("deleted_at", UTCDateTime, nullable=True),
    Index(
        "uq_campaigns_live_name",
        "name",
        unique=True,
        sqlite_where=text("deleted_at IS NULL"),
        postgresql_where=text("deleted_at IS NULL"),
    ),
)

vouchers = Table(
    "vouchers",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    # No foreign key on purpose: SQLite would check it for every generated code (a quarter of the bulk
    # generation time); codes are only created and deleted through their campaign (service.py).
    Column("campaign_pk", BigInteger, nullable=False),
    # Unique across the project: the database, not the generator, guarantees it.
    Column("code", String(100), nullable=False, unique=True),
    Column("holder_id", String(128), nullable=True),  # the member it is published to
    Column("published_at", UTCDateTime, nullable=True),
    Column("redeemed_quantity", WideInteger, nullable=False, server_default="0"),
    Column("gift_balance", WideInteger, nullable=True),  # gift cards: what is left, minor units
    Column("gift_amount", WideInteger, nullable=True),  # gift cards: everything ever credited
    Column("active", Boolean, nullable=False, server_default="1"),
    # Set for codes created on demand; bulk-generated codes were created with their campaign.
    Column("created_at", UTCDateTime, nullable=True),
    # Set with its campaign's deleted_at; the code stays taken (codes are unique across the project).
    Column("deleted_at", UTCDateTime, nullable=True),
    # Free codes in creation order: publishing takes the first, export streams them. Partial, so a
    # published code leaves the index and bulk generation appends to its end.
    Index(
        "ix_vouchers_free",
        "campaign_pk",
        "id",
        sqlite_where=text("holder_id IS NULL"),
        postgresql_where=text("holder_id IS NULL"),
    ),
    Index(
        "ix_vouchers_holder",
        "holder_id",
        sqlite_where=text("holder_id IS NOT NULL"),
        postgresql_where=text("holder_id IS NOT NULL"),
    ),
)

publications = Table(
    "publications",
    metadata,
    Column("id", String(64), primary_key=True),
    # The caller's idempotency key: the same source_id always answers with the same publication.
    Column("source_id", String(300), nullable=True),
    Column("campaign_id", String(64), ForeignKey("campaigns.id", ondelete="CASCADE"), nullable=False),
    Column("voucher_id", BigInteger, nullable=False),
    Column("code", String(100), nullable=False),
    Column("customer_id", String(128), nullable=False),
    Column("channel", String(64), nullable=False),  # what the caller said (Braze, API, distribution)
    Column("metadata", JsonDocument, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Index(
        "uq_publications_source_id",
        "source_id",
        unique=True,
        sqlite_where=text("source_id IS NOT NULL"),
        postgresql_where=text("source_id IS NOT NULL"),
    ),
    Index("ix_publications_campaign_id_customer_id", "campaign_id", "customer_id"),
)

redemptions = Table(
    "redemptions",
    metadata,
    Column("id", String(64), primary_key=True),
    # A stacked redemption is a parent row (no voucher) with one child per code.
    Column("parent_id", String(64), nullable=True, index=True),
    Column("voucher_id", BigInteger, nullable=True),
    Column("campaign_id", String(64), nullable=True),
    Column("code", String(100), nullable=True),
    Column("customer_id", String(128), nullable=False),
    Column("tracking_id", String(200), nullable=True),
    Column("status", String(16), nullable=False),  # SUCCEEDED | ROLLED_BACK
    Column("amount", WideInteger, nullable=False),  # discount given, minor units
    Column("gift_amount", WideInteger, nullable=True),  # taken from a gift card's balance
    Column("loyalty_points", Integer, nullable=True),  # spent from a loyalty card
    Column("order_data", JsonDocument, nullable=False),
    # What the redemption did beyond the code: reward claimed, referrer rewarded, spent lots.
    Column("effects", JsonDocument, nullable=False),
    Column("metadata", JsonDocument, nullable=False),
    Column("activity_seq", BigInteger, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Index("ix_redemptions_campaign_id_customer_id", "campaign_id", "customer_id"),
)

redemption_rollbacks = Table(
    "redemption_rollbacks",
    metadata,
    Column("id", String(64), primary_key=True),
    # One rollback per redemption, enforced by the database under concurrent requests.
    Column("redemption_id", String(64), nullable=False, unique=True),
    Column("reason", Text, nullable=True),
    Column("tracking_id", String(200), nullable=True),
    Column("activity_seq", BigInteger, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
)

# Voucherify-style rewards and their assignment to loyalty campaigns (each assignment is backed by a
# Perkflow reward in the campaign's program, whose points cost is the assignment's).
promotion_rewards = Table(
    "promotion_rewards",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("type", String(16), nullable=False),  # CAMPAIGN | MATERIAL
    Column("parameters", JsonDocument, nullable=False),
    Column("stock", Integer, nullable=True),
    Column("redeemed", Integer, nullable=False, server_default="0"),
    Column("metadata", JsonDocument, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

reward_assignments = Table(
    "reward_assignments",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("reward_id", String(64), ForeignKey("promotion_rewards.id", ondelete="CASCADE"), nullable=False),
    Column("campaign_id", String(64), ForeignKey("campaigns.id", ondelete="CASCADE"), nullable=False),
    Column("points", Integer, nullable=False),
    Column("perkflow_reward_id", String(64), ForeignKey("rewards.id", ondelete="CASCADE"), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("reward_id", "campaign_id"),
)

distributions = Table(
    "distributions",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("integration_id", String(64), ForeignKey("integrations.id", ondelete="CASCADE"), nullable=False),
    Column("campaign_id", String(64), ForeignKey("campaigns.id", ondelete="CASCADE"), nullable=False),
    # "manual", or the activity type that triggers it (voucher_published, voucher_redeemed, ...).
    Column("trigger", String(64), nullable=False),
    # The audience: a manual run's members; for segment_entered/left, the segment that triggers.
    Column("segment_id", String(64), nullable=True),
    # Remote attribute names: {code, value, expiry, wallet_url}; a missing name is not written.
    Column("attributes", JsonDocument, nullable=False),
    Column("active", Boolean, nullable=False, server_default="1"),
    Column("last_run", JsonDocument, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

# Background code generation as durable jobs: a job survives the process that started it. A worker
# holds a job through a lease it renews with every committed chunk; a job whose lease ran out (its
# process died or was interrupted) is claimed again by BackgroundJobs or `perkflow codes resume`.
code_generation_jobs = Table(
    "code_generation_jobs",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("campaign_id", String(64), ForeignKey("campaigns.id", ondelete="CASCADE"), nullable=False),
    Column("requested", Integer, nullable=False),
    # Codes committed by this job; moves in the same transaction as the codes, so it is exact after a crash.
    Column("generated", Integer, nullable=False, server_default="0"),
    Column("status", String(16), nullable=False),  # RUNNING | DONE | FAILED
    Column("lease_owner", String(200), nullable=True),
    Column("lease_until", UTCDateTime, nullable=True),
    Column("attempts", Integer, nullable=False, server_default="0"),  # claims so far
    Column("error", Text, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    # At most one unfinished job per campaign.
    Index(
        "uq_code_generation_jobs_running",
        "campaign_id",
        unique=True,
        sqlite_where=text("status = 'RUNNING'"),
        postgresql_where=text("status = 'RUNNING'"),
    ),
)
