"""Promotion services: campaigns and code generation, publications, validation, redemption, rollback,
gift credits, loyalty cards on the points ledger, referral rewards and Voucherify-style rewards."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, bindparam, case, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from perkflow.activity.stream import Activity, ActivityLog
from perkflow.activity.tables import activities
from perkflow.codes.generator import CHARSETS, CodeConfig, CodeConfigError
from perkflow.codes.namespace import coupon_codes_among
from perkflow.core.clock import from_epoch, isoformat_z, to_epoch
from perkflow.core.context import AppContext
from perkflow.core.errors import Conflict, PerkflowError
from perkflow.core.ids import new_id
from perkflow.core.uow import UnitOfWork
from perkflow.ledger.accounts import Account, AccountRepository
from perkflow.ledger.domain import InsufficientPoints
from perkflow.ledger.service import allocations_json, record_earning, record_spend, settle_if_due
from perkflow.members.repository import Member, MemberRepository
from perkflow.programs.service import ProgramCatalog, create_program
from perkflow.promotions.domain import (
    CAMPAIGN_TYPES,
    MAX_AMOUNT,
    CodeState,
    Discount,
    Order,
    Rules,
    RuleViolation,
    check_rules,
    gift_credit,
    gift_debit,
    require_payable_order,
)
from perkflow.promotions.tables import (
    campaigns,
    code_generation_jobs,
    distributions,
    promotion_rewards,
    publications,
    redemption_rollbacks,
    redemptions,
    reward_assignments,
    vouchers,
)

# Campaigns up to this many codes are generated inside the creating request; larger ones in the background.
SYNC_GENERATION_LIMIT = 10_000
GENERATION_CHUNK = 50_000
MAX_CODES_PER_CAMPAIGN = 10_000_000
MEMBER_ID_MAX = 128


class PromotionError(PerkflowError):
    """A promotion rule or request problem, carrying the Voucherify error key as its code."""

    def __init__(
        self,
        key: str,
        message: str,
        *,
        status: int = 400,
        details: dict[str, Any] | None = None,
        resource_type: str | None = None,
        resource_id: str | None = None,
    ) -> None:
        super().__init__(message, code=key, details=details, status=status)
        self.resource_type = resource_type
        self.resource_id = resource_id

    @classmethod
    def from_violation(cls, violation: RuleViolation, **extra: Any) -> PromotionError:
        return cls(
            violation.key, violation.message, status=violation.status, details=violation.details, **extra
        )


def not_found(kind: str, ref: str) -> PromotionError:
    return PromotionError(
        "not_found",
        f"cannot find {kind} with id {ref}",
        status=404,
        details={"resource_type": kind, "resource_id": ref},
        resource_type=kind,
        resource_id=ref,
    )


# -- campaigns ----------------------------------------------------------------------------------------


@dataclass(slots=True)
class Campaign:
    pk: int
    id: str
    name: str
    description: str
    campaign_type: str
    voucher_type: str
    type: str
    discount: Discount | None
    gift_amount: int | None
    redemption_quantity: int | None
    code_config: CodeConfig
    rules_data: dict[str, Any]
    start_date: datetime | None
    expiration_date: datetime | None
    max_redemptions: int | None
    redemptions_count: int
    join_once: bool
    active: bool
    program_id: str | None
    referral: dict[str, Any] | None
    vouchers_count: int
    generation_status: str
    generated_count: int
    generation_error: str | None
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None = None

    @classmethod
    def from_row(cls, row: Any) -> Campaign:
        cfg = row.code_config or {}
        return cls(
            pk=row.pk,
            id=row.id,
            name=row.name,
            description=row.description,
            campaign_type=row.campaign_type,
            voucher_type=row.voucher_type,
            type=row.type,
            discount=Discount.parse(row.discount) if row.discount else None,
            gift_amount=row.gift_amount,
            redemption_quantity=row.redemption_quantity,
            code_config=CodeConfig(
                length=cfg.get("length", 8),
                charset=cfg.get("charset", CHARSETS["alphanumeric"]),
                prefix=cfg.get("prefix", ""),
                postfix=cfg.get("postfix", ""),
                pattern=cfg.get("pattern"),
            ),
            rules_data=row.rules or {},
            start_date=row.start_date,
            expiration_date=row.expiration_date,
            max_redemptions=row.max_redemptions,
            redemptions_count=row.redemptions_count,
            join_once=row.join_once,
            active=row.active,
            program_id=row.program_id,
            referral=row.referral,
            vouchers_count=row.vouchers_count,
            generation_status=row.generation_status,
            generated_count=row.generated_count,
            generation_error=row.generation_error,
            metadata=row.metadata or {},
            created_at=row.created_at,
            updated_at=row.updated_at,
            deleted_at=row.deleted_at,
        )

    @property
    def rules(self) -> Rules:
        return Rules(
            start_date=self.start_date,
            expiration_date=self.expiration_date,
            quantity=self.redemption_quantity,
            max_redemptions=self.max_redemptions,
            max_redemptions_per_customer=self.rules_data.get("max_redemptions_per_customer"),
            min_order_amount=self.rules_data.get("min_order_amount"),
            segment_id=self.rules_data.get("segment_id"),
        )

    def code_config_public(self) -> dict[str, Any]:
        cfg = self.code_config
        return {
            "length": cfg.length,
            "charset": cfg.charset,
            "prefix": cfg.prefix,
            "postfix": cfg.postfix,
            "pattern": cfg.pattern if cfg.pattern is not None else cfg.template,
        }

    def to_public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "campaign_type": self.campaign_type,
            "voucher_type": self.voucher_type,
            "type": self.type,
            "discount": self.discount.to_dict() if self.discount else None,
            "gift_amount": self.gift_amount,
            "redemption_quantity": self.redemption_quantity,
            "code_config": self.code_config_public(),
            "rules": {
                "start_date": isoformat_z(self.start_date) if self.start_date else None,
                "expiration_date": isoformat_z(self.expiration_date) if self.expiration_date else None,
                "max_redemptions": self.max_redemptions,
                "max_redemptions_per_customer": self.rules_data.get("max_redemptions_per_customer"),
                "min_order_amount": self.rules_data.get("min_order_amount"),
                "segment_id": self.rules_data.get("segment_id"),
            },
            "redemptions_count": self.redemptions_count,
            "join_once": self.join_once,
            "active": self.active,
            "program_id": self.program_id,
            "referral": self.referral,
            "generation": {
                "status": self.generation_status,
                "requested": self.vouchers_count,
                "generated": self.generated_count,
                "error": self.generation_error,
            },
            "metadata": self.metadata,
            "created_at": isoformat_z(self.created_at),
            "updated_at": isoformat_z(self.updated_at),
            "deleted_at": isoformat_z(self.deleted_at) if self.deleted_at else None,
        }


class CampaignCache:
    """Campaign configurations, re-read at most once a second per process (the publish hot path)."""

    ttl_s = 1.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: dict[str, tuple[float, Campaign]] = {}

    def get(self, uow: UnitOfWork, ref: str) -> Campaign:
        now = time.monotonic()
        with self._lock:
            hit = self._items.get(ref)
        if hit is not None and hit[0] > now:
            return hit[1]
        campaign = get_campaign(uow, ref)
        with self._lock:
            self._items[ref] = (now + self.ttl_s, campaign)
        return campaign

    def invalidate(self) -> None:
        with self._lock:
            self._items.clear()


def campaign_cache(ctx: AppContext) -> CampaignCache:
    found = ctx.caches.get("promotions.campaigns")
    if found is None:
        found = ctx.caches["promotions.campaigns"] = CampaignCache()
    return found


def get_campaign(uow: UnitOfWork, ref: str, *, lock: bool = False, include_deleted: bool = False) -> Campaign:
    """A live campaign by id or by name; `include_deleted` also finds a deleted one by its id (history)."""
    stmt = (
        select(campaigns)
        .where(or_(campaigns.c.id == ref, campaigns.c.name == ref), campaigns.c.deleted_at.is_(None))
        .limit(1)
    )
    if lock:
        stmt = uow.db.for_update(stmt)
    row = uow.conn.execute(stmt).first()
    if row is None and include_deleted:
        row = uow.conn.execute(select(campaigns).where(campaigns.c.id == ref)).first()
    if row is None:
        raise not_found("campaign", ref)
    return Campaign.from_row(row)


def list_campaigns(uow: UnitOfWork, *, limit: int = 100, after: str = "") -> list[Campaign]:
    stmt = (
        select(campaigns)
        .where(campaigns.c.id > after, campaigns.c.deleted_at.is_(None))
        .order_by(campaigns.c.id)
        .limit(limit)
    )
    return [Campaign.from_row(row) for row in uow.conn.execute(stmt)]


def build_code_config(raw: dict[str, Any] | None) -> CodeConfig:
    raw = raw or {}
    length = raw.get("length")
    if length is not None and (isinstance(length, bool) or not isinstance(length, int)):
        raise PromotionError("invalid_code_config", "code_config.length must be an integer")
    for key in ("charset", "prefix", "postfix", "pattern"):
        if raw.get(key) is not None and not isinstance(raw[key], str):
            raise PromotionError("invalid_campaign", f"code_config.{key} must be a string")
    try:
        return CodeConfig.build(
            length=length,
            charset=raw.get("charset"),
            prefix=raw.get("prefix"),
            postfix=raw.get("postfix"),
            pattern=raw.get("pattern"),
        )
    except CodeConfigError as exc:
        raise PromotionError("invalid_code_config", str(exc)) from exc


# Dates a campaign or a lot may carry: wide enough for any real use, far enough from datetime's
# limits that converting to UTC or adding a policy's days cannot overflow.
EARLIEST_DATE = datetime(1900, 1, 1, tzinfo=UTC)
LATEST_DATE = datetime(9000, 1, 1, tzinfo=UTC)


def checked_date(moment: Any, name: str) -> datetime:
    """An aware datetime in UTC within EARLIEST_DATE..LATEST_DATE, or a clear invalid_payload."""
    if not isinstance(moment, datetime) or moment.tzinfo is None or moment.utcoffset() is None:
        raise PromotionError("invalid_payload", f"{name} must be an ISO-8601 date-time with a time zone")
    try:
        utc = moment.astimezone(UTC)
    except (OverflowError, ValueError):
        utc = None
    if utc is None or not EARLIEST_DATE <= utc < LATEST_DATE:
        raise PromotionError(
            "invalid_payload",
            f"{name} must be between {EARLIEST_DATE.year} and {LATEST_DATE.year}",
            details={name: moment.isoformat()},
        )
    return utc


def _optional_int(spec: dict[str, Any], key: str, *, minimum: int = 0) -> int | None:
    value = spec.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= MAX_AMOUNT:
        raise PromotionError("invalid_campaign", f"{key} must be an integer from {minimum} to {MAX_AMOUNT}")
    return value


def create_campaign(uow: UnitOfWork, spec: dict[str, Any]) -> Campaign:
    """Create a campaign from a normalised spec (see schemas.CampaignCreate); generate small ones at once.

    Larger campaigns are left IN_PROGRESS: the caller starts `generate_codes` after commit.
    """
    name = spec.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > 200:
        raise PromotionError("invalid_campaign", "name is required (at most 200 characters)")
    campaign_type = spec.get("campaign_type") or "DISCOUNT_COUPONS"
    if not isinstance(campaign_type, str) or campaign_type not in CAMPAIGN_TYPES:
        raise PromotionError(
            "invalid_campaign", f"campaign_type must be one of {', '.join(sorted(CAMPAIGN_TYPES))}"
        )
    voucher_type = CAMPAIGN_TYPES[campaign_type]
    requested_type = spec.get("voucher_type")
    if requested_type is not None and requested_type != voucher_type:
        raise PromotionError(
            "invalid_campaign", f"a {campaign_type} campaign holds {voucher_type} codes, not {requested_type}"
        )
    kind = spec.get("type") or "AUTO_UPDATE"
    if kind not in ("AUTO_UPDATE", "STATIC"):
        raise PromotionError("invalid_campaign", "type must be AUTO_UPDATE or STATIC")
    discount = None
    gift_amount = None
    if voucher_type == "DISCOUNT_VOUCHER":
        try:
            discount = Discount.parse(spec.get("discount"))
        except RuleViolation as exc:
            raise PromotionError("invalid_campaign", exc.message) from exc
    elif voucher_type == "GIFT_VOUCHER":
        gift_amount = _optional_int(spec, "gift_amount", minimum=1)
        if gift_amount is None:
            raise PromotionError("invalid_campaign", "a gift card campaign needs gift.amount (minor units)")
    config = build_code_config(spec.get("code_config"))
    count = _optional_int(spec, "vouchers_count") or 0
    if count > MAX_CODES_PER_CAMPAIGN:
        raise PromotionError("invalid_campaign", f"vouchers_count may not exceed {MAX_CODES_PER_CAMPAIGN}")
    try:
        config.check_capacity(count)
    except CodeConfigError as exc:
        raise PromotionError(
            "invalid_code_config",
            f"{exc}: use a longer code, a larger charset or fewer codes",
            details={"capacity": config.capacity(), "requested": count},
        ) from exc
    rules = {
        "max_redemptions_per_customer": _optional_int(spec, "max_redemptions_per_customer", minimum=1),
        "min_order_amount": _optional_int(spec, "min_order_amount"),
        "segment_id": spec.get("segment_id"),
    }
    start, expiry = spec.get("start_date"), spec.get("expiration_date")
    start = checked_date(start, "start_date") if start is not None else None
    expiry = checked_date(expiry, "expiration_date") if expiry is not None else None
    if start is not None and expiry is not None and expiry <= start:
        raise PromotionError("invalid_campaign", "expiration_date must be after start_date")
    program_id = None
    join_once = bool(spec.get("join_once"))
    currency = spec.get("currency")
    if currency is not None and (not isinstance(currency, str) or not re.fullmatch(r"[A-Z]{3}", currency)):
        raise PromotionError("invalid_campaign", "currency must be an ISO 4217 code such as EUR")
    if voucher_type == "LOYALTY_CARD":
        join_once = True  # a member has one card per program
        program_id = spec.get("program_id")
        catalog = uow.component(ProgramCatalog)
        if program_id is not None:
            if not isinstance(program_id, str):
                raise PromotionError("invalid_campaign", "program_id must be a program id")
            catalog.get(program_id)
        else:
            program = create_program(
                uow,
                {
                    "name": name,
                    "currency": currency or "EUR",
                    "description": f"Loyalty program of campaign {name}",
                },
            )
            program_id = program.id
            catalog.reload()
    referral = None
    if campaign_type == "REFERRAL_PROGRAM":
        referral = _referral_config(uow, spec.get("referral") if spec.get("referral") is not None else {})
    if rules["segment_id"] is not None:
        require_segment(uow, rules["segment_id"])
    campaign_id = new_id("camp")
    background = count > SYNC_GENERATION_LIMIT
    try:
        uow.conn.execute(
            insert(campaigns).values(
                id=campaign_id,
                name=name,
                description=spec.get("description") or "",
                campaign_type=campaign_type,
                voucher_type=voucher_type,
                type=kind,
                discount=discount.to_dict() if discount else None,
                gift_amount=gift_amount,
                redemption_quantity=_optional_int(spec, "redemption_quantity", minimum=1),
                code_config={
                    "length": config.length,
                    "charset": config.charset,
                    "prefix": config.prefix,
                    "postfix": config.postfix,
                    "pattern": config.pattern,
                },
                rules={k: v for k, v in rules.items() if v is not None},
                start_date=start,
                expiration_date=expiry,
                max_redemptions=_optional_int(spec, "max_redemptions", minimum=1),
                redemptions_count=0,
                join_once=join_once,
                active=spec.get("active", True) is not False,
                program_id=program_id,
                referral=referral,
                vouchers_count=count,
                generation_status="IN_PROGRESS" if background else "DONE",
                generated_count=0,
                metadata=spec.get("metadata") or {},
                created_at=uow.now,
                updated_at=uow.now,
            )
        )
    except IntegrityError as exc:
        raise PromotionError(
            "duplicate_found", f"a campaign named {name!r} already exists", status=409
        ) from exc
    campaign = get_campaign(uow, campaign_id)
    if count and not background:
        made = add_codes(uow, campaign, count)
        uow.conn.execute(update(campaigns).where(campaigns.c.id == campaign_id).values(generated_count=made))
        campaign.generated_count = made
    elif background:
        _queue_generation(uow, campaign_id, count)
    uow.after_commit(campaign_cache(uow.ctx).invalidate)
    return campaign


def require_segment(uow: UnitOfWork, segment_id: Any) -> str:
    """A campaign's segment rule must name a segment that exists, or every validation would fail."""
    from perkflow.segments.tables import segments

    if not isinstance(segment_id, str) or not segment_id or len(segment_id) > 64:
        raise PromotionError("invalid_campaign", "segment_id must be a segment id (1 to 64 characters)")
    if uow.conn.execute(select(segments.c.id).where(segments.c.id == segment_id)).first() is None:
        raise not_found("segment", segment_id)
    return segment_id


def _referral_config(uow: UnitOfWork, raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise PromotionError(
            "invalid_campaign", "referral must be an object with points, program_id and/or campaign_id"
        )
    points = raw.get("points")
    if points is not None and (isinstance(points, bool) or not isinstance(points, int) or points <= 0):
        raise PromotionError("invalid_campaign", "referral.points must be a positive integer")
    if points is not None and points > 10**9:
        raise PromotionError("invalid_campaign", "referral.points may not exceed 10^9")
    program_id = raw.get("program_id")
    if program_id is not None and not isinstance(program_id, str):
        raise PromotionError("invalid_campaign", "referral.program_id must be a program id")
    if points is not None:
        program_id = uow.component(ProgramCatalog).resolve(program_id).id
    reward_campaign = raw.get("campaign_id")
    if reward_campaign is not None:
        if not isinstance(reward_campaign, str):
            raise PromotionError("invalid_campaign", "referral.campaign_id must be a campaign id")
        reward_campaign = get_campaign(uow, reward_campaign).id
    if points is None and reward_campaign is None:
        raise PromotionError(
            "invalid_campaign", "a referral program needs referral.points and/or referral.campaign_id"
        )
    return {"points": points, "program_id": program_id, "campaign_id": reward_campaign}


def update_campaign(uow: UnitOfWork, ref: str, changes: dict[str, Any]) -> Campaign:
    campaign = get_campaign(uow, ref, lock=True)
    values: dict[str, Any] = {}
    for key in ("active", "description"):
        if changes.get(key) is not None:
            values[key] = changes[key]
    if "max_redemptions" in changes:
        values["max_redemptions"] = changes["max_redemptions"]
    for key in ("start_date", "expiration_date"):
        if key in changes:
            values[key] = checked_date(changes[key], key) if changes[key] is not None else None
    start = values.get("start_date", campaign.start_date)
    expiry = values.get("expiration_date", campaign.expiration_date)
    if start is not None and expiry is not None and expiry <= start:
        raise PromotionError("invalid_campaign", "expiration_date must be after start_date")
    rules = dict(campaign.rules_data)
    for key in ("max_redemptions_per_customer", "min_order_amount", "segment_id"):
        if key in changes:
            rules[key] = changes[key]
    if "segment_id" in changes and changes["segment_id"] is not None:
        require_segment(uow, changes["segment_id"])
    values["rules"] = {k: v for k, v in rules.items() if v is not None}
    values["updated_at"] = uow.now
    uow.conn.execute(update(campaigns).where(campaigns.c.id == campaign.id).values(**values))
    uow.after_commit(campaign_cache(uow.ctx).invalidate)
    return get_campaign(uow, campaign.id)


def delete_campaign(uow: UnitOfWork, ref: str) -> Campaign:
    """Delete a campaign the way Voucherify's bin does, without losing anything.

    The campaign and its codes are kept with a deleted_at: they leave lists and lookups, cannot be
    published, validated or redeemed, and their name can be used again, but redemptions still show
    them and can still be rolled back (a gift card's balance is kept). Each holder of a code gets a
    `voucher_deleted` activity. Refused while another live campaign hands out this campaign's codes.
    """
    from perkflow.promotions.distribution import distribution_cache

    campaign = get_campaign(uow, ref, lock=True)
    _refuse_if_rewarded_elsewhere(uow, campaign)
    running = unfinished_generation(uow, campaign.id)
    if running is not None:
        # Its generator stops at its next chunk: the job is no longer RUNNING.
        _end_generation(uow, running, GENERATION_FAILED, "the campaign was deleted", owner=None)
    held = [
        Voucher.from_row(row)
        for row in uow.conn.execute(
            select(*VOUCHER_COLUMNS)
            .where(
                vouchers.c.campaign_pk == campaign.pk,
                vouchers.c.holder_id.is_not(None),
                vouchers.c.deleted_at.is_(None),
            )
            .order_by(vouchers.c.id)
        )
    ]
    members = uow.component(MemberRepository).load_many({v.holder_id for v in held if v.holder_id}, lock=True)
    log = uow.component(ActivityLog)
    for voucher in held:
        member = members.get(voucher.holder_id or "")
        if member is None:
            continue
        log.record(
            type="voucher_deleted",
            member_id=member.id,
            program_id=None,
            chain=member,
            data={"reason": "campaign_deleted", **_code_data(uow, campaign, voucher)},
        )
    uow.conn.execute(
        update(vouchers)
        .where(vouchers.c.campaign_pk == campaign.pk, vouchers.c.deleted_at.is_(None))
        .values(deleted_at=uow.now)
    )
    uow.conn.execute(
        update(campaigns).where(campaigns.c.id == campaign.id).values(deleted_at=uow.now, updated_at=uow.now)
    )
    stopped = uow.conn.execute(
        update(distributions)
        .where(distributions.c.campaign_id == campaign.id, distributions.c.active.is_(True))
        .values(active=False, updated_at=uow.now)
    )
    if stopped.rowcount:
        uow.after_commit(distribution_cache(uow.ctx).invalidate)
    uow.after_commit(campaign_cache(uow.ctx).invalidate)
    campaign.deleted_at = uow.now
    return campaign


def _refuse_if_rewarded_elsewhere(uow: UnitOfWork, campaign: Campaign) -> None:
    """A referral program or a loyalty reward that gives codes of this campaign would start failing."""
    users = [
        row.name
        for row in uow.conn.execute(
            select(campaigns.c.name, campaigns.c.referral).where(
                campaigns.c.campaign_type == "REFERRAL_PROGRAM", campaigns.c.deleted_at.is_(None)
            )
        )
        if (row.referral or {}).get("campaign_id") == campaign.id
    ]
    rows = uow.conn.execute(
        select(campaigns.c.name, promotion_rewards.c.parameters)
        .join(reward_assignments, reward_assignments.c.reward_id == promotion_rewards.c.id)
        .join(campaigns, campaigns.c.id == reward_assignments.c.campaign_id)
        .where(promotion_rewards.c.type == "CAMPAIGN", campaigns.c.deleted_at.is_(None))
    )
    users += [
        row.name for row in rows if ((row.parameters or {}).get("campaign") or {}).get("id") == campaign.id
    ]
    if users:
        raise PromotionError(
            "campaign_in_use",
            f"campaign {campaign.name} gives the rewards of {', '.join(sorted(set(users)))}; "
            "change or delete those first",
            status=409,
            details={"used_by": sorted(set(users))},
        )


# -- code generation ----------------------------------------------------------------------------------


def insert_codes(uow: UnitOfWork, campaign: Campaign, codes: list[str]) -> int:
    """Insert codes, skipping any that exist anywhere in the project; returns how many were new.

    Only the campaign and the code are written (the other columns have defaults), which keeps each
    row narrow: that, not the generator, bounds the speed of bulk generation.
    """
    if not codes:
        return 0
    # Codes share one namespace with reward coupons (perkflow.codes.namespace); a drawn code that
    # is a coupon is skipped like any other duplicate.
    coupon_codes = coupon_codes_among(uow, codes)
    if coupon_codes:
        codes = [code for code in codes if code not in coupon_codes]
    db = uow.db
    if campaign.gift_amount is not None:
        gift = campaign.gift_amount
        columns: tuple[str, ...] = ("campaign_pk", "code", "gift_balance", "gift_amount")
        rows: list[tuple[Any, ...]] = [(campaign.pk, code, gift, gift) for code in codes]
    else:
        columns = ("campaign_pk", "code")
        rows = [(campaign.pk, code) for code in codes]
    before = _inserted_so_far(uow, campaign)
    db.bulk_insert(uow.conn, vouchers, columns, rows, on_conflict_do_nothing=True)
    return _inserted_so_far(uow, campaign) - before


def _inserted_so_far(uow: UnitOfWork, campaign: Campaign) -> int:
    """A counter that grows by one per inserted row: SQLite's total_changes() for this connection, or on
    PostgreSQL (whose executemany reports no total) the number of the campaign's codes."""
    if uow.db.is_sqlite:
        return int(uow.conn.exec_driver_sql("SELECT total_changes()").scalar_one())
    stmt = select(func.count()).select_from(vouchers).where(vouchers.c.campaign_pk == campaign.pk)
    return int(uow.conn.execute(stmt).scalar_one())


def add_codes(uow: UnitOfWork, campaign: Campaign, count: int, *, max_rounds: int = 50) -> int:
    """Generate `count` new codes into the campaign in this unit of work, topping up duplicates."""
    stream = campaign.code_config.generator()
    made = 0
    barren = 0
    while made < count:
        want = count - made
        if want >= 10_000:
            # Repeats inside a large batch are rare and the database skips them like any duplicate.
            batch = list(itertools.islice(stream, want))
        else:
            # Small top-ups (and nearly full patterns): draw extra and keep only codes not yet taken.
            drawn = list(dict.fromkeys(itertools.islice(stream, max(want * 4, 1024))))
            taken = set(
                uow.conn.execute(
                    select(vouchers.c.code).where(uow.db.in_list(vouchers.c.code, "codes")),
                    {"codes": uow.db.list_param(drawn)},
                ).scalars()
            )
            batch = [code for code in drawn if code not in taken][:want]
        added = insert_codes(uow, campaign, batch)
        made += added
        barren = barren + 1 if added == 0 else 0
        if barren >= max_rounds:
            raise PromotionError(
                "invalid_code_config",
                "the code pattern is exhausted: no new code could be drawn; use a longer pattern",
                details={"generated": made, "requested": count},
            )
    return made


# -- background generation jobs -----------------------------------------------------------------------

GENERATION_RUNNING, GENERATION_DONE, GENERATION_FAILED = "RUNNING", "DONE", "FAILED"
# A job claimed this many times without finishing (its processes kept dying) is failed with the reason.
GENERATION_MAX_ATTEMPTS = 5


@dataclass(slots=True)
class GenerationJob:
    id: str
    campaign_id: str
    requested: int
    generated: int
    status: str
    lease_owner: str | None
    lease_until: datetime | None
    attempts: int
    error: str | None

    @classmethod
    def from_row(cls, row: Any) -> GenerationJob:
        return cls(
            id=row.id,
            campaign_id=row.campaign_id,
            requested=row.requested,
            generated=row.generated,
            status=row.status,
            lease_owner=row.lease_owner,
            lease_until=row.lease_until,
            attempts=row.attempts,
            error=row.error,
        )

    @property
    def remaining(self) -> int:
        return max(0, self.requested - self.generated)


class _LeaseLost(Exception):
    """The job was taken over, finished or failed by someone else: this process stops working on it."""


def generation_owner() -> str:
    """Who holds a lease: host, process and thread, so a log line says where a job ran."""
    return f"{socket.gethostname()[:100]}:{os.getpid()}:{threading.get_ident()}:{os.urandom(3).hex()}"


def unfinished_generation(uow: UnitOfWork, campaign_id: str) -> GenerationJob | None:
    row = uow.conn.execute(
        select(code_generation_jobs).where(
            code_generation_jobs.c.campaign_id == campaign_id,
            code_generation_jobs.c.status == GENERATION_RUNNING,
        )
    ).first()
    return GenerationJob.from_row(row) if row is not None else None


def _queue_generation(uow: UnitOfWork, campaign_id: str, count: int, *, owner: str | None = None) -> str:
    """A new job, free for any process to claim, or (`owner`) already held by the caller."""
    job_id = new_id("gen")
    lease = timedelta(seconds=uow.ctx.settings.generation_lease_s)
    uow.conn.execute(
        insert(code_generation_jobs).values(
            id=job_id,
            campaign_id=campaign_id,
            requested=count,
            generated=0,
            status=GENERATION_RUNNING,
            lease_owner=owner,
            lease_until=uow.now + lease if owner is not None else None,
            attempts=1 if owner is not None else 0,
            created_at=uow.now,
            updated_at=uow.now,
        )
    )
    return job_id


def _end_generation(
    uow: UnitOfWork, job: GenerationJob, status: str, error: str | None, *, owner: str | None
) -> bool:
    """Finish a job and show the outcome on its campaign; with `owner`, only while that owner holds it."""
    stmt = update(code_generation_jobs).where(
        code_generation_jobs.c.id == job.id, code_generation_jobs.c.status == GENERATION_RUNNING
    )
    if owner is not None:
        stmt = stmt.where(code_generation_jobs.c.lease_owner == owner)
    ended = uow.conn.execute(
        stmt.values(status=status, error=error, lease_owner=None, lease_until=None, updated_at=uow.now)
    )
    if ended.rowcount == 0:
        return False
    uow.conn.execute(
        update(campaigns)
        .where(campaigns.c.id == job.campaign_id)
        .values(generation_status=status, generation_error=error, updated_at=uow.now)
    )
    return True


def claim_generation_jobs(
    ctx: AppContext, owner: str, *, campaign_id: str | None = None, limit: int = 10
) -> list[GenerationJob]:
    """Take the unfinished jobs nobody holds: new ones, and those whose holder's lease ran out.

    A job that keeps losing its holders (GENERATION_MAX_ATTEMPTS claims) is failed with the reason
    instead of being claimed again, so a campaign never stays IN_PROGRESS for ever.
    """
    from perkflow.core import transactions

    lease = timedelta(seconds=ctx.settings.generation_lease_s)

    def work(uow: UnitOfWork) -> list[GenerationJob]:
        jobs = code_generation_jobs.c
        stmt = select(code_generation_jobs).where(
            jobs.status == GENERATION_RUNNING, or_(jobs.lease_until.is_(None), jobs.lease_until <= uow.now)
        )
        if campaign_id is not None:
            stmt = stmt.where(jobs.campaign_id == campaign_id)
        stmt = uow.db.for_update(stmt.order_by(jobs.created_at, jobs.id).limit(limit), skip_locked=True)
        claimed = []
        for job in [GenerationJob.from_row(row) for row in uow.conn.execute(stmt)]:
            if job.attempts >= GENERATION_MAX_ATTEMPTS:
                reason = (
                    f"code generation was interrupted {job.attempts} times ({job.generated} of "
                    f"{job.requested} codes made); request the missing codes again"
                )
                _end_generation(uow, job, GENERATION_FAILED, reason, owner=None)
                continue
            job.lease_owner, job.lease_until, job.attempts = owner, uow.now + lease, job.attempts + 1
            uow.conn.execute(
                update(code_generation_jobs)
                .where(jobs.id == job.id)
                .values(
                    lease_owner=owner, lease_until=job.lease_until, attempts=job.attempts, updated_at=uow.now
                )
            )
            claimed.append(job)
        return claimed

    return transactions.run(ctx, work)


def run_generation_job(
    ctx: AppContext,
    job: GenerationJob,
    owner: str,
    *,
    progress: Callable[[int], None] | None = None,
    chunk: int = GENERATION_CHUNK,
    stop: threading.Event | None = None,
) -> int:
    """Generate what a claimed job still lacks, a chunk per transaction; returns the codes made here.

    Each chunk commits its codes, the job's progress and a renewed lease together, and only while
    `owner` still holds the job, so after any crash the job's count is exact and resuming neither
    loses nor repeats a chunk. A failure marks the job and campaign FAILED with the reason (a new
    request can retry); an interruption (Ctrl-C, shutdown via `stop`) releases the job for resumption.
    """
    from perkflow.core import transactions

    lease = timedelta(seconds=ctx.settings.generation_lease_s)
    jobs = code_generation_jobs.c
    made = 0
    remaining = job.remaining
    try:
        while remaining > 0:
            if stop is not None and stop.is_set():
                release_generation(ctx, job, owner)
                return made
            size = min(chunk, remaining)

            def work(uow: UnitOfWork, size: int = size) -> int:
                mine = (jobs.id == job.id, jobs.lease_owner == owner, jobs.status == GENERATION_RUNNING)
                renewed = uow.conn.execute(
                    update(code_generation_jobs)
                    .where(*mine)
                    .values(lease_until=uow.now + lease, updated_at=uow.now)
                )
                if renewed.rowcount == 0:
                    raise _LeaseLost(job.id)
                campaign = get_campaign(uow, job.campaign_id)
                added = add_codes(uow, campaign, size)
                uow.conn.execute(
                    update(code_generation_jobs).where(*mine).values(generated=jobs.generated + added)
                )
                uow.conn.execute(
                    update(campaigns)
                    .where(campaigns.c.id == job.campaign_id)
                    .values(generated_count=campaigns.c.generated_count + added)
                )
                return added

            added = transactions.run(ctx, work, bulk=True)
            made += added
            remaining -= added
            if progress is not None:
                progress(added)
    except _LeaseLost:
        return made
    except Exception as exc:
        message = exc.message if isinstance(exc, PerkflowError) else f"code generation failed: {exc!r}"[:500]
        transactions.run(ctx, lambda uow: _end_generation(uow, job, GENERATION_FAILED, message, owner=owner))
        raise
    except BaseException:
        # Ctrl-C or interpreter exit: what committed stays, the rest is left for whoever resumes.
        release_generation(ctx, job, owner)
        raise
    transactions.run(ctx, lambda uow: _end_generation(uow, job, GENERATION_DONE, None, owner=owner))
    return made


def release_generation(ctx: AppContext, job: GenerationJob, owner: str) -> None:
    """Hand a job back at once (an orderly stop is not a failed attempt), for any process to resume."""
    from perkflow.core import transactions

    jobs = code_generation_jobs.c
    transactions.run(
        ctx,
        lambda uow: uow.conn.execute(
            update(code_generation_jobs)
            .where(jobs.id == job.id, jobs.lease_owner == owner, jobs.status == GENERATION_RUNNING)
            .values(
                lease_owner=None,
                lease_until=None,
                attempts=case((jobs.attempts > 0, jobs.attempts - 1), else_=0),
                updated_at=uow.now,
            )
        ),
    )


def finish_generation(
    ctx: AppContext,
    campaign_id: str | None = None,
    *,
    progress: Callable[[GenerationJob, int], None] | None = None,
    chunk: int = GENERATION_CHUNK,
    stop: threading.Event | None = None,
) -> list[GenerationJob]:
    """Claim the unfinished jobs nobody holds (of one campaign, or all) and run them here to the end."""
    owner = generation_owner()
    claimed = claim_generation_jobs(ctx, owner, campaign_id=campaign_id)
    for job in claimed:
        report = (lambda n, job=job: progress(job, n)) if progress is not None else None
        run_generation_job(ctx, job, owner, progress=report, chunk=chunk, stop=stop)
    return claimed


def generate_codes(
    ctx: AppContext,
    campaign_ref: str,
    count: int,
    *,
    progress: Callable[[int], None] | None = None,
    chunk: int = GENERATION_CHUNK,
) -> int:
    """Request `count` codes and generate them in this process (the benchmark)."""
    owner = generation_owner()
    _campaign, job = hold_new_generation(ctx, campaign_ref, count, owner)
    return run_generation_job(ctx, job, owner, progress=progress, chunk=chunk)


def hold_new_generation(
    ctx: AppContext, campaign_ref: str, count: int, owner: str
) -> tuple[Campaign, GenerationJob]:
    """Request codes as a job this process holds from the start (`perkflow codes generate`), so that
    the background jobs of a running server do not take it over while this process works on it."""
    from perkflow.core import transactions

    def work(uow: UnitOfWork) -> tuple[Campaign, GenerationJob]:
        campaign = request_codes(uow, campaign_ref, count, owner=owner)
        job = unfinished_generation(uow, campaign.id)
        assert job is not None
        return campaign, job

    return transactions.run(ctx, work)


def request_codes(uow: UnitOfWork, ref: str, count: int, *, owner: str | None = None) -> Campaign:
    """Ask for `count` more codes: checked against the pattern's capacity, queued as a generation job
    (held by `owner` when given, else for the first process that claims it)."""
    campaign = get_campaign(uow, ref, lock=True)
    running = unfinished_generation(uow, campaign.id)
    if running is not None:
        waiting = running.lease_until is None or running.lease_until <= uow.now
        raise PromotionError(
            "multiple_requests",
            "codes are already being generated for this campaign"
            + (
                "; the generation was interrupted and resumes in `perkflow serve` or `perkflow worker` "
                "(or run `perkflow codes resume`)"
                if waiting
                else ""
            ),
            details={
                "job_id": running.id,
                "requested": running.requested,
                "generated": running.generated,
                "lease_until": isoformat_z(running.lease_until) if running.lease_until else None,
            },
        )
    if count < 1 or count > MAX_CODES_PER_CAMPAIGN:
        raise PromotionError("invalid_payload", f"count must be between 1 and {MAX_CODES_PER_CAMPAIGN}")
    existing = uow.conn.execute(
        select(func.count()).select_from(vouchers).where(vouchers.c.campaign_pk == campaign.pk)
    ).scalar_one()
    if int(existing) + count > MAX_CODES_PER_CAMPAIGN:
        raise PromotionError(
            "invalid_payload",
            f"a campaign holds at most {MAX_CODES_PER_CAMPAIGN} codes",
            details={"existing": int(existing), "requested": count},
        )
    try:
        campaign.code_config.check_capacity(count, already_used=int(existing))
    except CodeConfigError as exc:
        raise PromotionError(
            "invalid_code_config",
            f"{exc}: use a longer code, a larger charset or fewer codes",
            details={"capacity": campaign.code_config.capacity(), "existing": int(existing)},
        ) from exc
    uow.conn.execute(
        update(campaigns)
        .where(campaigns.c.id == campaign.id)
        .values(
            generation_status="IN_PROGRESS",
            generation_error=None,
            vouchers_count=campaigns.c.vouchers_count + count,
            updated_at=uow.now,
        )
    )
    _queue_generation(uow, campaign.id, count, owner=owner)
    return get_campaign(uow, campaign.id)


def start_background_generation(ctx: AppContext, campaign_id: str) -> None:
    """Run the campaign's queued job in a thread of this process. Should the process stop first, the
    job is resumed by BackgroundJobs (`perkflow serve` or `perkflow worker`) once its lease is free."""

    def run() -> None:
        # A failure is recorded on the job and the campaign as FAILED by run_generation_job.
        with contextlib.suppress(Exception):
            finish_generation(ctx, campaign_id)

    threading.Thread(target=run, name=f"generate-{campaign_id}", daemon=True).start()


def resume_generation(ctx: AppContext, *, stop: threading.Event | None = None) -> int:
    """BackgroundJobs' periodic task: claim the jobs nobody holds and run each in a thread of its own
    (a large campaign takes minutes; the other periodic tasks must not wait for it)."""
    owner = generation_owner()
    claimed = claim_generation_jobs(ctx, owner, limit=4)
    for job in claimed:

        def run(job: GenerationJob = job) -> None:
            with contextlib.suppress(Exception):
                run_generation_job(ctx, job, owner, stop=stop)

        threading.Thread(target=run, name=f"generate-{job.campaign_id}", daemon=True).start()
    return len(claimed)


def export_codes(ctx: AppContext, ref: str, *, unpublished: bool, chunk: int = 10_000) -> Iterator[str]:
    """A campaign's codes, one per line with no header (a Braze promotion-code list), streamed in chunks.

    Each chunk is read in its own short transaction by keyset on the id, so memory stays flat however
    large the campaign is.
    """
    with ctx.uow(write=False) as uow:
        campaign_pk = get_campaign(uow, ref).pk
    after = 0
    while True:
        with ctx.uow(write=False) as uow:
            stmt = select(vouchers.c.id, vouchers.c.code).where(
                vouchers.c.campaign_pk == campaign_pk, vouchers.c.id > after
            )
            if unpublished:
                stmt = stmt.where(vouchers.c.holder_id.is_(None))
            rows = uow.conn.execute(stmt.order_by(vouchers.c.id).limit(chunk)).all()
        if not rows:
            return
        after = rows[-1][0]
        yield csv_lines([row[1] for row in rows])


def csv_lines(codes: list[str]) -> str:
    """One code per line; a code that needs it is quoted as CSV would (generated codes never do, but
    codes imported or made before their characters were checked might)."""
    text = "\n".join(codes) + "\n"
    if text.count("\n") == len(codes) and not any(char in text for char in ',"\r'):
        return text
    return "".join(
        '"' + code.replace('"', '""') + '"\n' if any(char in code for char in ',"\r\n') else code + "\n"
        for code in codes
    )


# -- vouchers -----------------------------------------------------------------------------------------


@dataclass(slots=True)
class Voucher:
    pk: int
    campaign_pk: int
    code: str
    holder_id: str | None
    published_at: datetime | None
    redeemed_quantity: int
    gift_balance: int | None
    gift_amount: int | None
    active: bool
    created_at: datetime | None

    @property
    def id(self) -> str:
        return f"v_{self.pk}"

    @classmethod
    def from_row(cls, row: Any) -> Voucher:
        return cls(
            pk=row.id,
            campaign_pk=row.campaign_pk,
            code=row.code,
            holder_id=row.holder_id,
            published_at=row.published_at,
            redeemed_quantity=row.redeemed_quantity,
            gift_balance=row.gift_balance,
            gift_amount=row.gift_amount,
            active=bool(row.active),
            created_at=row.created_at,
        )


VOUCHER_COLUMNS = [
    vouchers.c.id,
    vouchers.c.campaign_pk,
    vouchers.c.code,
    vouchers.c.holder_id,
    vouchers.c.published_at,
    vouchers.c.redeemed_quantity,
    vouchers.c.gift_balance,
    vouchers.c.gift_amount,
    vouchers.c.active,
    vouchers.c.created_at,
]


def get_voucher(uow: UnitOfWork, code: str, *, lock: bool = False, include_deleted: bool = False) -> Voucher:
    """A code of a live campaign; `include_deleted` also finds codes of deleted campaigns (history)."""
    stmt = select(*VOUCHER_COLUMNS).where(vouchers.c.code == code)
    if not include_deleted:
        stmt = stmt.where(vouchers.c.deleted_at.is_(None))
    if lock:
        stmt = uow.db.for_update(stmt)
    row = uow.conn.execute(stmt).first()
    if row is None:
        raise not_found("voucher", code)
    return Voucher.from_row(row)


def find_voucher(uow: UnitOfWork, ref: str) -> Voucher:
    """A voucher by code, or by its public id `v_<n>`."""
    if ref.startswith("v_") and ref[2:].isdigit() and int(ref[2:]) < 2**63:
        row = uow.conn.execute(
            select(*VOUCHER_COLUMNS).where(vouchers.c.id == int(ref[2:]), vouchers.c.deleted_at.is_(None))
        ).first()
        if row is not None:
            return Voucher.from_row(row)
    return get_voucher(uow, ref)


def list_vouchers(
    uow: UnitOfWork,
    *,
    customer: str | None = None,
    campaign: str | None = None,
    limit: int = 10,
    offset: int = 0,
) -> tuple[list[Voucher], int]:
    conditions: list[Any] = [vouchers.c.deleted_at.is_(None)]
    if customer is not None:
        conditions.append(vouchers.c.holder_id == customer)
    if campaign is not None:
        conditions.append(vouchers.c.campaign_pk == get_campaign(uow, campaign).pk)
    where = and_(*conditions)
    stmt = select(*VOUCHER_COLUMNS).where(where).order_by(vouchers.c.id).limit(limit).offset(offset)
    count_stmt = select(func.count()).select_from(vouchers).where(where)
    found = [Voucher.from_row(row) for row in uow.conn.execute(stmt)]
    return found, int(uow.conn.execute(count_stmt).scalar_one())


def campaign_of(uow: UnitOfWork, voucher: Voucher) -> Campaign:
    row = uow.conn.execute(select(campaigns).where(campaigns.c.pk == voucher.campaign_pk)).first()
    if row is None:
        raise not_found("campaign", str(voucher.campaign_pk))
    return Campaign.from_row(row)


def campaigns_by_pk(uow: UnitOfWork, pks: set[int]) -> dict[int, Campaign]:
    if not pks:
        return {}
    rows = uow.conn.execute(select(campaigns).where(campaigns.c.pk.in_(sorted(pks))))
    return {row.pk: Campaign.from_row(row) for row in rows}


def campaigns_by_id(uow: UnitOfWork, ids: set[str]) -> dict[str, Campaign]:
    if not ids:
        return {}
    rows = uow.conn.execute(select(campaigns).where(campaigns.c.id.in_(sorted(ids))))
    return {row.id: Campaign.from_row(row) for row in rows}


def loyalty_account(uow: UnitOfWork, campaign: Campaign, member_id: str | None) -> Account | None:
    if campaign.program_id is None or member_id is None:
        return None
    return uow.component(AccountRepository).get(member_id, campaign.program_id)


def voucher_value(uow: UnitOfWork, campaign: Campaign, voucher: Voucher) -> int | float:
    """What the code is worth now: the discount, the gift balance, or the loyalty points balance."""
    if campaign.voucher_type == "GIFT_VOUCHER":
        return voucher.gift_balance or 0
    if campaign.voucher_type == "LOYALTY_CARD":
        account = loyalty_account(uow, campaign, voucher.holder_id)
        return account.points.spendable(to_epoch(uow.now)) if account else 0
    return campaign.discount.value() if campaign.discount else 0


def voucher_to_public(uow: UnitOfWork, campaign: Campaign, voucher: Voucher) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": voucher.id,
        "code": voucher.code,
        "campaign_id": campaign.id,
        "campaign": campaign.name,
        "type": campaign.voucher_type,
        "holder_id": voucher.holder_id,
        "published_at": isoformat_z(voucher.published_at) if voucher.published_at else None,
        "redeemed_quantity": voucher.redeemed_quantity,
        "redemption_quantity": campaign.redemption_quantity,
        "active": voucher.active and campaign.active,
        "value": voucher_value(uow, campaign, voucher),
        "expiration_date": isoformat_z(campaign.expiration_date) if campaign.expiration_date else None,
    }
    if campaign.voucher_type == "GIFT_VOUCHER":
        out["gift"] = {"amount": voucher.gift_amount, "balance": voucher.gift_balance}
    if campaign.discount is not None:
        out["discount"] = campaign.discount.to_dict()
    return out


# -- customers ----------------------------------------------------------------------------------------


def customer_id_from(raw: Any, *, required: bool = True) -> str | None:
    """The member id a Voucherify customer refers to: a plain string, or an object's source_id or id."""
    if raw is None or raw == "":
        if required:
            raise PromotionError("invalid_payload", "customer is required (a source_id or {source_id})")
        return None
    value = (raw.get("source_id") or raw.get("id")) if isinstance(raw, dict) else raw
    if not isinstance(value, str) or not value.strip() or len(value) > MEMBER_ID_MAX or "\x00" in value:
        raise PromotionError(
            "invalid_payload", f"customer must be a non-empty string of at most {MEMBER_ID_MAX} characters"
        )
    return value


def ensure_member(uow: UnitOfWork, member_id: str) -> Member:
    """The member, locked; created (active, in no program) when it does not exist yet."""
    from perkflow.members.service import create_member

    repo = uow.component(MemberRepository)
    member = repo.get_for_update(member_id)
    if member is not None:
        return member
    try:
        return create_member(uow, {"id": member_id})
    except Conflict as exc:
        # A concurrent request created it first: let transactions.run retry, which then finds it.
        if isinstance(exc.__cause__, IntegrityError):
            raise exc.__cause__ from None
        raise


def ensure_opted_in(uow: UnitOfWork, member_id: str, program_id: str) -> Account:
    """The member's account in the program, opting them in (through the events API's handler) if needed."""
    from perkflow.events.service import ingest

    repo = uow.component(AccountRepository)
    account = repo.get(member_id, program_id)
    if account is not None and account.opted_in:
        return account
    ensure_member(uow, member_id)
    outcome = ingest(uow, [{"customer": member_id, "action": "opt_in", "program": program_id, "data": {}}])[0]
    if outcome.error is not None and outcome.error.code != "already_opted_in":
        raise outcome.error
    account = repo.get(member_id, program_id)
    assert account is not None
    return account


# -- publications -------------------------------------------------------------------------------------


@dataclass(slots=True)
class Publication:
    id: str
    source_id: str | None
    campaign_id: str
    voucher_pk: int
    code: str
    customer_id: str
    channel: str
    metadata: dict[str, Any]
    created_at: datetime

    @classmethod
    def from_row(cls, row: Any) -> Publication:
        return cls(
            id=row.id,
            source_id=row.source_id,
            campaign_id=row.campaign_id,
            voucher_pk=row.voucher_id,
            code=row.code,
            customer_id=row.customer_id,
            channel=row.channel,
            metadata=row.metadata or {},
            created_at=row.created_at,
        )


@dataclass(slots=True)
class Published:
    publication: Publication
    voucher: Voucher
    campaign: Campaign
    replay: bool = False


def _publication_by_source(uow: UnitOfWork, source_id: str) -> Publication | None:
    # The publish hot path: one cheap existence probe (compiled once), the full row only on a replay.
    found = uow.db.fetch_tuples(
        uow.conn,
        "promotions.source_probe",
        lambda: select(publications.c.id).where(publications.c.source_id == bindparam("source_id")),
        {"source_id": source_id},
    )
    if not found:
        return None
    row = uow.conn.execute(select(publications).where(publications.c.id == found[0][0])).first()
    return Publication.from_row(row) if row is not None else None


def get_publication(uow: UnitOfWork, *, source_id: str) -> Published:
    found = _publication_by_source(uow, source_id)
    if found is None:
        raise not_found("publication", source_id)
    campaign = get_campaign(uow, found.campaign_id)
    return Published(found, get_voucher(uow, found.code), campaign, replay=True)


def _take_free_code(uow: UnitOfWork, campaign: Campaign, member_id: str) -> Voucher | None:
    """Assign the campaign's first free code to the member with one UPDATE ... RETURNING.

    On PostgreSQL concurrent publishers skip each other's locked candidate rows, so they never wait
    on or share a code; on SQLite the single writer makes the update atomic.
    """
    db = uow.db

    def build() -> Any:
        candidate = db.pick_first(
            vouchers.c.id, vouchers.c.campaign_pk == bindparam("campaign"), vouchers.c.holder_id.is_(None)
        )
        return (
            update(vouchers)
            .where(vouchers.c.id == candidate.scalar_subquery(), vouchers.c.holder_id.is_(None))
            .values(holder_id=bindparam("holder"), published_at=bindparam("at"))
            .returning(
                vouchers.c.id,
                vouchers.c.code,
                vouchers.c.redeemed_quantity,
                vouchers.c.gift_balance,
                vouchers.c.gift_amount,
            )
        )

    rows = db.fetch_tuples(
        uow.conn,
        "promotions.take_free_code",
        build,
        {"campaign": campaign.pk, "holder": member_id, "at": db.param_datetime(uow.now)},
    )
    if not rows:
        return None
    pk, code, redeemed, gift_balance, gift_amount = rows[0]
    return Voucher(
        pk=pk,
        campaign_pk=campaign.pk,
        code=code,
        holder_id=member_id,
        published_at=uow.now,
        redeemed_quantity=redeemed,
        gift_balance=gift_balance,
        gift_amount=gift_amount,
        active=True,
        created_at=None,
    )


def _new_code_for(uow: UnitOfWork, campaign: Campaign, member_id: str) -> Voucher | None:
    """AUTO_UPDATE campaigns: create a code on demand, already assigned to the member."""
    stream = campaign.code_config.generator()
    for _ in range(10):
        code = next(stream)
        stmt = uow.db.insert_ignore(
            vouchers,
            {
                "campaign_pk": campaign.pk,
                "code": code,
                "holder_id": member_id,
                "published_at": uow.now,
                "redeemed_quantity": 0,
                "gift_balance": campaign.gift_amount,
                "gift_amount": campaign.gift_amount,
                "active": True,
                "created_at": uow.now,
            },
            conflict_columns=("code",),
        ).returning(*VOUCHER_COLUMNS)
        row = uow.conn.execute(stmt).first()
        if row is not None:
            uow.conn.execute(
                update(campaigns)
                .where(campaigns.c.id == campaign.id)
                .values(generated_count=campaigns.c.generated_count + 1)
            )
            return Voucher.from_row(row)
    return None


# One statement object for every publication: `insert().values(...)` per call rebuilt the statement
# and its cache key, a quarter of a publication's cost.
_INSERT_PUBLICATION = insert(publications)


def publish(
    uow: UnitOfWork,
    *,
    campaign_ref: str | None,
    customer_id: str,
    source_id: str | None = None,
    code: str | None = None,
    channel: str = "API",
    metadata: dict[str, Any] | None = None,
    join_once: bool = False,
) -> Published:
    """Assign a code to a customer. The same source_id answers with the original publication; the same
    source_id for another customer or campaign is refused with duplicate_source_id."""
    if source_id is not None and (not source_id or len(source_id) > 300):
        raise PromotionError("invalid_payload", "source_id must be 1 to 300 characters")
    if campaign_ref is None and code is None:
        raise PromotionError("invalid_payload", "campaign or voucher is required")
    cached = campaign_cache(uow.ctx)
    campaign = cached.get(uow, campaign_ref) if campaign_ref is not None else None
    member = ensure_member(uow, customer_id)
    if source_id is not None:
        seen = _publication_by_source(uow, source_id)
        if seen is not None:
            same_campaign = campaign is None or seen.campaign_id == campaign.id
            same_code = code is None or seen.code == code
            if seen.customer_id != member.id or not same_campaign or not same_code:
                raise PromotionError(
                    "duplicate_source_id",
                    f"publication with source_id {source_id} already exists for another customer or campaign",
                    details={"publication_id": seen.id},
                )
            original_campaign = campaign or get_campaign(uow, seen.campaign_id)
            return Published(seen, get_voucher(uow, seen.code), original_campaign, replay=True)
    if code is not None:
        voucher = get_voucher(uow, code, lock=True)
        if campaign is not None and voucher.campaign_pk != campaign.pk:
            raise PromotionError("invalid_payload", f"code {code} is not in campaign {campaign.name}")
        campaign = campaign_of(uow, voucher)
        if voucher.holder_id is not None and voucher.holder_id != member.id:
            raise PromotionError("voucher_already_published", f"code {code} is published to another customer")
        uow.conn.execute(
            update(vouchers)
            .where(vouchers.c.id == voucher.pk)
            .values(holder_id=member.id, published_at=voucher.published_at or uow.now)
        )
        voucher.holder_id, voucher.published_at = member.id, voucher.published_at or uow.now
    else:
        assert campaign is not None
        if not campaign.active:
            raise PromotionError("voucher_disabled", f"campaign {campaign.name} is not active")
        if campaign.expiration_date is not None and uow.now >= campaign.expiration_date:
            raise PromotionError("voucher_expired", f"campaign {campaign.name} has expired")
        if join_once or campaign.join_once:
            row = uow.conn.execute(
                select(publications)
                .where(publications.c.campaign_id == campaign.id, publications.c.customer_id == member.id)
                .order_by(publications.c.created_at)
                .limit(1)
            ).first()
            if row is not None:
                earlier = Publication.from_row(row)
                return Published(earlier, get_voucher(uow, earlier.code), campaign, replay=True)
        found = _take_free_code(uow, campaign, member.id)
        if found is None and campaign.type == "AUTO_UPDATE":
            found = _new_code_for(uow, campaign, member.id)
        if found is None:
            raise PromotionError(
                "no_voucher_suitable_for_publication",
                f"campaign {campaign.name} has no free code left to publish",
                details={"campaign_id": campaign.id},
            )
        voucher = found
    publication = Publication(
        id=new_id("pub"),
        source_id=source_id,
        campaign_id=campaign.id,
        voucher_pk=voucher.pk,
        code=voucher.code,
        customer_id=member.id,
        channel=(channel or "API")[:64],
        metadata=metadata or {},
        created_at=uow.now,
    )
    uow.conn.execute(
        _INSERT_PUBLICATION,
        {
            "id": publication.id,
            "source_id": source_id,
            "campaign_id": campaign.id,
            "voucher_id": voucher.pk,
            "code": voucher.code,
            "customer_id": member.id,
            "channel": publication.channel,
            "metadata": publication.metadata,
            "created_at": uow.now,
        },
    )
    uow.component(ActivityLog).record(
        type="voucher_published",
        member_id=member.id,
        program_id=None,
        chain=member,
        data={
            "publication_id": publication.id,
            "source_id": source_id,
            "channel": publication.channel,
            **_code_data(uow, campaign, voucher),
        },
    )
    return Published(publication, voucher, campaign)


def _code_data(uow: UnitOfWork, campaign: Campaign, voucher: Voucher) -> dict[str, Any]:
    """What a CEP message about a code needs: the code, its campaign, value, balance and expiry."""
    data: dict[str, Any] = {
        "code": voucher.code,
        "campaign_id": campaign.id,
        "campaign": campaign.name,
        "voucher_type": campaign.voucher_type,
        "value": voucher_value(uow, campaign, voucher),
        "expiration_date": isoformat_z(campaign.expiration_date) if campaign.expiration_date else None,
    }
    if campaign.voucher_type == "GIFT_VOUCHER":
        data["balance"] = voucher.gift_balance
    if campaign.discount is not None:
        data["discount_type"] = campaign.discount.type
    return data


# -- validation and redemption -----------------------------------------------------------------------


@dataclass(slots=True)
class Redeemable:
    code: str
    gift_credits: int | None = None
    reward_id: str | None = None


@dataclass(slots=True)
class Applied:
    """The outcome for one redeemable: applicable with its effect, or the rule it broke."""

    redeemable: Redeemable
    voucher: Voucher | None = None
    campaign: Campaign | None = None
    discount: int = 0
    gift_amount: int = 0
    loyalty_points: int = 0
    assignment: dict[str, Any] | None = None
    error: PromotionError | None = None


@dataclass(slots=True)
class Evaluation:
    order: Order
    customer_id: str | None
    applied: list[Applied] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return bool(self.applied) and all(a.error is None for a in self.applied)

    @property
    def total_discount(self) -> int:
        return sum(a.discount for a in self.applied if a.error is None)


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def parse_redeemables(raw: Any) -> list[Redeemable]:
    if not isinstance(raw, list) or not raw:
        raise PromotionError("invalid_payload", "redeemables must be a non-empty list")
    if len(raw) > 30:
        raise PromotionError("invalid_payload", "at most 30 redeemables per request")
    found = []
    for index, item in enumerate(raw):
        if not isinstance(item, dict) or not isinstance(item.get("id"), str) or not item["id"]:
            raise PromotionError("invalid_payload", f"redeemables[{index}].id must be a code")
        if item.get("object", "voucher") != "voucher":
            raise PromotionError("invalid_payload", f"redeemables[{index}]: only vouchers are supported")
        if len(item["id"]) > 100:
            raise PromotionError("invalid_payload", f"redeemables[{index}].id is too long")
        gift = _obj(item.get("gift"))
        credits = gift.get("credits")
        if credits is not None and (isinstance(credits, bool) or not isinstance(credits, int)):
            raise PromotionError("invalid_payload", f"redeemables[{index}].gift.credits must be an integer")
        reward = _obj(item.get("reward"))
        reward_id = reward.get("id")
        found.append(Redeemable(item["id"], credits, reward_id if isinstance(reward_id, str) else None))
    codes = [r.code for r in found]
    if len(set(codes)) != len(codes):
        raise PromotionError("duplicated_redeemables", "the same code appears twice in redeemables")
    return found


def evaluate(
    uow: UnitOfWork, redeemables: list[Redeemable], order: Order, customer_id: str | None, *, lock: bool
) -> Evaluation:
    """Check every code against its rules and compute its effect on what is left of the order."""
    evaluation = Evaluation(order, customer_id)
    remaining = order.amount
    campaign_uses: dict[str, int] = {}
    loaded = _load_vouchers(uow, [r.code for r in redeemables], lock=lock)
    campaign_rows = campaigns_by_pk(uow, {v.campaign_pk for v in loaded.values()})
    for redeemable in redeemables:
        applied = Applied(redeemable)
        evaluation.applied.append(applied)
        voucher = loaded.get(redeemable.code)
        if voucher is None:
            applied.error = not_found("voucher", redeemable.code)
            continue
        campaign = campaign_rows[voucher.campaign_pk]
        applied.voucher, applied.campaign = voucher, campaign
        try:
            _check(uow, applied, campaign, voucher, order, customer_id, campaign_uses, remaining)
        except PromotionError as exc:
            applied.error = exc
            continue
        remaining -= applied.discount
        campaign_uses[campaign.id] = campaign_uses.get(campaign.id, 0) + 1
    return evaluation


def _load_vouchers(uow: UnitOfWork, codes: list[str], *, lock: bool) -> dict[str, Voucher]:
    stmt = (
        select(*VOUCHER_COLUMNS)
        .where(vouchers.c.code.in_(codes), vouchers.c.deleted_at.is_(None))
        .order_by(vouchers.c.id)
    )
    if lock:
        stmt = uow.db.for_update(stmt)
    return {row.code: Voucher.from_row(row) for row in uow.conn.execute(stmt)}


def _check(
    uow: UnitOfWork,
    applied: Applied,
    campaign: Campaign,
    voucher: Voucher,
    order: Order,
    customer_id: str | None,
    campaign_uses: dict[str, int],
    remaining: int,
) -> None:
    rules = campaign.rules
    customer_uses = 0
    if rules.max_redemptions_per_customer is not None and customer_id is not None:
        customer_uses = _customer_redemptions(uow, campaign.id, customer_id) + campaign_uses.get(
            campaign.id, 0
        )
    in_segment = None
    if rules.segment_id is not None:
        from perkflow.segments.membership import is_member

        in_segment = customer_id is not None and is_member(uow, rules.segment_id, customer_id)
    state = CodeState(
        active=voucher.active,
        campaign_active=campaign.active,
        redeemed_quantity=voucher.redeemed_quantity,
        campaign_redemptions=campaign.redemptions_count + campaign_uses.get(campaign.id, 0),
        customer_redemptions=customer_uses,
        in_segment=in_segment,
        customer_known=customer_id is not None,
    )
    try:
        check_rules(rules, state, order, uow.now)
        if campaign.voucher_type == "GIFT_VOUCHER":
            applied.gift_amount = gift_debit(
                voucher.gift_balance or 0, remaining, applied.redeemable.gift_credits
            )
            require_payable_order(order, remaining)
            applied.discount = applied.gift_amount
        elif campaign.voucher_type == "LOYALTY_CARD":
            _check_loyalty(uow, applied, campaign, voucher, customer_id)
        else:
            assert campaign.discount is not None
            applied.discount = campaign.discount.amount_for(remaining)
        referral = campaign.campaign_type == "REFERRAL_PROGRAM"
        if referral and customer_id is not None and customer_id == voucher.holder_id:
            raise RuleViolation("customer_rules_violated", "a referrer cannot redeem their own referral code")
    except RuleViolation as violation:
        raise PromotionError.from_violation(
            violation, resource_type="voucher", resource_id=voucher.code
        ) from violation


def _customer_redemptions(uow: UnitOfWork, campaign_id: str, customer_id: str) -> int:
    return int(
        uow.conn.execute(
            select(func.count())
            .select_from(redemptions)
            .where(
                redemptions.c.campaign_id == campaign_id,
                redemptions.c.customer_id == customer_id,
                redemptions.c.status == "SUCCEEDED",
            )
        ).scalar_one()
    )


def _check_loyalty(
    uow: UnitOfWork, applied: Applied, campaign: Campaign, voucher: Voucher, customer_id: str | None
) -> None:
    if voucher.holder_id is None:
        raise RuleViolation("voucher_not_active", "the loyalty card is not assigned to a member")
    if customer_id is not None and customer_id != voucher.holder_id:
        raise RuleViolation("customer_rules_violated", "the loyalty card belongs to another customer")
    if applied.redeemable.reward_id is None:
        raise RuleViolation("missing_reward", "a loyalty card is redeemed for a reward: give reward.id")
    assignment = find_assignment(uow, campaign.id, applied.redeemable.reward_id)
    account = loyalty_account(uow, campaign, voucher.holder_id)
    balance = account.points.spendable(to_epoch(uow.now)) if account else 0
    if assignment["points"] > balance:
        raise RuleViolation(
            "loyalty_card_points_exceeded",
            f"the reward costs {assignment['points']} points and the card holds {balance}",
            details={"points": assignment["points"], "balance": balance},
        )
    applied.assignment = assignment
    applied.loyalty_points = assignment["points"]


def validate(
    uow: UnitOfWork, redeemables: list[Redeemable], order: Order, customer_id: str | None
) -> Evaluation:
    if customer_id is None:
        customer_id = holder_of(uow, redeemables)
    return evaluate(uow, redeemables, order, customer_id, lock=False)


def holder_of(uow: UnitOfWork, redeemables: list[Redeemable]) -> str | None:
    """Who is redeeming when the request names no customer: the one member all the codes are
    published to. Rules about the customer (per-customer limit, segment, a referrer's own code) are
    checked against that member, so leaving `customer` out does not skip them."""
    holders = set(
        uow.conn.execute(
            select(vouchers.c.holder_id).where(
                vouchers.c.code.in_([r.code for r in redeemables]), vouchers.c.deleted_at.is_(None)
            )
        ).scalars()
    )
    if len(holders) == 1 and None not in holders:
        return holders.pop()
    return None


@dataclass(slots=True)
class RedemptionRecord:
    id: str
    parent_id: str | None
    voucher_pk: int | None
    campaign_id: str | None
    code: str | None
    customer_id: str
    tracking_id: str | None
    status: str
    amount: int
    gift_amount: int | None
    loyalty_points: int | None
    order: dict[str, Any]
    effects: dict[str, Any]
    metadata: dict[str, Any]
    created_at: datetime

    @classmethod
    def from_row(cls, row: Any) -> RedemptionRecord:
        return cls(
            id=row.id,
            parent_id=row.parent_id,
            voucher_pk=row.voucher_id,
            campaign_id=row.campaign_id,
            code=row.code,
            customer_id=row.customer_id,
            tracking_id=row.tracking_id,
            status=row.status,
            amount=row.amount,
            gift_amount=row.gift_amount,
            loyalty_points=row.loyalty_points,
            order=row.order_data or {},
            effects=row.effects or {},
            metadata=row.metadata or {},
            created_at=row.created_at,
        )


@dataclass(slots=True)
class Redeemed:
    evaluation: Evaluation
    records: list[RedemptionRecord]
    parent: RedemptionRecord | None
    vouchers: dict[str, Voucher]  # code -> state after redemption
    campaigns: dict[str, Campaign]


def redeem(
    uow: UnitOfWork,
    redeemables: list[Redeemable],
    order: Order,
    customer_id: str | None,
    *,
    tracking_id: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> Redeemed:
    """Redeem every code or none (stacking mode ALL): the first failure is raised with its key."""
    implied = customer_id is None
    if customer_id is None:
        # Read without locks so that the member is still locked before the codes; a published code
        # never changes holder, which the check after evaluation confirms.
        customer_id = holder_of(uow, redeemables)
    if customer_id is not None:
        ensure_member(uow, customer_id)
    evaluation = evaluate(uow, redeemables, order, customer_id, lock=True)
    for applied in evaluation.applied:
        if applied.error is not None:
            raise applied.error
    holders = {a.voucher.holder_id for a in evaluation.applied if a.voucher is not None}
    if customer_id is None or (implied and holders != {customer_id}):
        raise PromotionError("invalid_payload", "customer is required to redeem an unassigned code")
    member = ensure_member(uow, customer_id)
    records: list[RedemptionRecord] = []
    after: dict[str, Voucher] = {}
    campaigns_seen: dict[str, Campaign] = {}
    parent_id = new_id("r") if len(evaluation.applied) > 1 else None
    for applied in evaluation.applied:
        voucher, campaign = applied.voucher, applied.campaign
        assert voucher is not None and campaign is not None
        campaigns_seen[campaign.id] = campaign
        if campaign.max_redemptions is not None:
            bumped = uow.conn.execute(
                update(campaigns)
                .where(
                    campaigns.c.id == campaign.id, campaigns.c.redemptions_count < campaign.max_redemptions
                )
                .values(redemptions_count=campaigns.c.redemptions_count + 1)
            )
            if bumped.rowcount == 0:
                raise PromotionError(
                    "redemption_rules_violated",
                    f"the campaign's limit of {campaign.max_redemptions} redemptions is reached",
                )
        else:
            uow.conn.execute(
                update(campaigns)
                .where(campaigns.c.id == campaign.id)
                .values(redemptions_count=campaigns.c.redemptions_count + 1)
            )
        voucher.redeemed_quantity += 1
        values: dict[str, Any] = {"redeemed_quantity": voucher.redeemed_quantity}
        if applied.gift_amount:
            voucher.gift_balance = (voucher.gift_balance or 0) - applied.gift_amount
            values["gift_balance"] = voucher.gift_balance
        uow.conn.execute(update(vouchers).where(vouchers.c.id == voucher.pk).values(**values))
        record = RedemptionRecord(
            id=new_id("r"),
            parent_id=parent_id,
            voucher_pk=voucher.pk,
            campaign_id=campaign.id,
            code=voucher.code,
            customer_id=customer_id,
            tracking_id=tracking_id or customer_id,
            status="SUCCEEDED",
            amount=applied.discount,
            gift_amount=applied.gift_amount or None,
            loyalty_points=applied.loyalty_points or None,
            order=order.to_dict(),
            effects={},
            metadata=metadata or {},
            created_at=uow.now,
        )
        if applied.assignment is not None:
            record.effects.update(_redeem_reward(uow, campaign, voucher, applied.assignment, record.id))
        if campaign.campaign_type == "REFERRAL_PROGRAM" and voucher.holder_id is not None:
            record.effects["referral"] = _reward_referrer(uow, campaign, voucher, customer_id, record.id)
        data = {
            "redemption_id": record.id,
            "parent_redemption_id": parent_id,
            "tracking_id": record.tracking_id,
            "amount": record.amount,
            "order_amount": order.amount,
            "gift_amount": record.gift_amount,
            "loyalty_points": record.loyalty_points,
            "reward_id": applied.assignment["reward_id"] if applied.assignment else None,
            **_code_data(uow, campaign, voucher),
        }
        activity = uow.component(ActivityLog).record(
            type="voucher_redeemed", member_id=member.id, program_id=None, chain=member, data=data
        )
        record.effects["activity_seq"] = activity.seq
        records.append(record)
        after[voucher.code] = voucher
    parent = None
    if parent_id is not None:
        parent = RedemptionRecord(
            id=parent_id,
            parent_id=None,
            voucher_pk=None,
            campaign_id=None,
            code=None,
            customer_id=customer_id,
            tracking_id=tracking_id or customer_id,
            status="SUCCEEDED",
            amount=evaluation.total_discount,
            gift_amount=None,
            loyalty_points=None,
            order=order.to_dict(),
            effects={"children": [r.id for r in records]},
            metadata=metadata or {},
            created_at=uow.now,
        )
    _insert_records(uow, ([parent] if parent else []) + records)
    return Redeemed(evaluation, records, parent, after, campaigns_seen)


def _insert_records(uow: UnitOfWork, records: list[RedemptionRecord]) -> None:
    uow.conn.execute(
        insert(redemptions),
        [
            {
                "id": r.id,
                "parent_id": r.parent_id,
                "voucher_id": r.voucher_pk,
                "campaign_id": r.campaign_id,
                "code": r.code,
                "customer_id": r.customer_id,
                "tracking_id": r.tracking_id,
                "status": r.status,
                "amount": r.amount,
                "gift_amount": r.gift_amount,
                "loyalty_points": r.loyalty_points,
                "order_data": r.order,
                "effects": r.effects,
                "metadata": r.metadata,
                "activity_seq": r.effects.get("activity_seq"),
                "created_at": r.created_at,
            }
            for r in records
        ],
    )


def _redeem_reward(
    uow: UnitOfWork, campaign: Campaign, voucher: Voucher, assignment: dict[str, Any], redemption_id: str
) -> dict[str, Any]:
    """Spend the card's points on the reward through the rewards service (the ledger is the balance)."""
    from perkflow.rewards.service import claim_reward

    assert voucher.holder_id is not None
    ensure_opted_in(uow, voucher.holder_id, campaign.program_id or "")
    try:
        activity = claim_reward(
            uow,
            member_id=voucher.holder_id,
            reward_id=assignment["perkflow_reward_id"],
            idempotency_key=f"redemption:{redemption_id}",
            source="api",
        )
    except InsufficientPoints as exc:
        raise PromotionError("loyalty_card_points_exceeded", exc.message, details=exc.details) from exc
    effects: dict[str, Any] = {
        "reward_id": assignment["reward_id"],
        "assignment_id": assignment["id"],
        "reward_activity_seq": activity.seq,
        "lots": activity.effects.get("lots", []),
    }
    uow.conn.execute(
        update(promotion_rewards)
        .where(promotion_rewards.c.id == assignment["reward_id"])
        .values(redeemed=promotion_rewards.c.redeemed + 1)
    )
    reward_campaign = (assignment.get("parameters") or {}).get("campaign", {}).get("id")
    if assignment.get("type") == "CAMPAIGN" and reward_campaign:
        given = publish(
            uow,
            campaign_ref=reward_campaign,
            customer_id=voucher.holder_id,
            source_id=f"reward:{redemption_id}",
            channel="reward",
        )
        effects["reward_code"] = given.voucher.code
    return effects


def _reward_referrer(
    uow: UnitOfWork, campaign: Campaign, voucher: Voucher, referee: str, redemption_id: str
) -> dict[str, Any]:
    """The referrer (the code's holder) earns the campaign's referral reward, in this transaction."""
    referrer = voucher.holder_id
    assert referrer is not None
    config = campaign.referral or {}
    given: dict[str, Any] = {"referrer_id": referrer, "referee_id": referee}
    if config.get("points"):
        program = uow.component(ProgramCatalog).get(config["program_id"])
        account = ensure_opted_in(uow, referrer, program.id)
        settle_if_due(uow, account, program)
        activity = record_earning(
            uow,
            account,
            program,
            type="referral_reward",
            points=int(config["points"]),
            occurred_at=uow.now,
            data={
                "code": voucher.code,
                "campaign_id": campaign.id,
                "campaign": campaign.name,
                "referee_id": referee,
                "redemption_id": redemption_id,
            },
            source="system",
            dedup_key=f"referral:{redemption_id}",
        )
        given["points"] = int(config["points"])
        given["activity_seq"] = activity.seq
    if config.get("campaign_id"):
        published = publish(
            uow,
            campaign_ref=config["campaign_id"],
            customer_id=referrer,
            source_id=f"referral:{redemption_id}",
            channel="referral",
        )
        given["code"] = published.voucher.code
    return given


def get_redemption(uow: UnitOfWork, redemption_id: str, *, lock: bool = False) -> RedemptionRecord:
    stmt = select(redemptions).where(redemptions.c.id == redemption_id)
    if lock:
        stmt = uow.db.for_update(stmt)
    row = uow.conn.execute(stmt).first()
    if row is None:
        raise not_found("redemption", redemption_id)
    return RedemptionRecord.from_row(row)


@dataclass(slots=True)
class RolledBack:
    id: str
    redemption: RedemptionRecord
    reason: str | None
    tracking_id: str | None
    created_at: datetime
    voucher: Voucher | None
    campaign: Campaign | None
    children: list[RolledBack] = field(default_factory=list)


def rollback(
    uow: UnitOfWork,
    redemption_id: str,
    *,
    reason: str | None = None,
    tracking_id: str | None = None,
    stacked: bool = False,
) -> RolledBack:
    """Undo a redemption exactly: one use back, gift credits back, loyalty points back (same expiry).

    A stacked redemption is rolled back as a whole through its parent (`stacked=True`); a child alone
    cannot be, and a redemption is rolled back at most once (a unique key makes sure under races).
    """
    record = get_redemption(uow, redemption_id, lock=True)
    if record.parent_id is not None:
        raise PromotionError(
            "invalid_redemption_parent",
            f"redemption {redemption_id} is part of stacked redemption {record.parent_id}; roll that back",
        )
    is_parent = record.voucher_pk is None
    if is_parent and not stacked:
        raise PromotionError(
            "invalid_redemption",
            f"redemption {redemption_id} is stacked: use /redemptions/{redemption_id}/rollbacks",
        )
    if not is_parent and stacked:
        raise PromotionError("invalid_redemption", f"redemption {redemption_id} is not a stacked redemption")
    if record.status == "ROLLED_BACK":
        raise PromotionError(
            "already_rolled_back", f"redemption {redemption_id} has already been rolled back"
        )
    ensure_member(uow, record.customer_id)
    if is_parent:
        children = [
            RedemptionRecord.from_row(row)
            for row in uow.conn.execute(
                uow.db.for_update(
                    select(redemptions).where(redemptions.c.parent_id == record.id).order_by(redemptions.c.id)
                )
            )
        ]
        done = RolledBack(new_id("rr"), record, reason, tracking_id, uow.now, None, None)
        done.children = [_rollback_one(uow, child, reason, tracking_id) for child in children]
        _mark_rolled_back(uow, done, activity_seq=None)
        return done
    return _rollback_one(uow, record, reason, tracking_id)


def _mark_rolled_back(uow: UnitOfWork, done: RolledBack, *, activity_seq: int | None) -> None:
    uow.conn.execute(
        update(redemptions).where(redemptions.c.id == done.redemption.id).values(status="ROLLED_BACK")
    )
    uow.conn.execute(
        insert(redemption_rollbacks).values(
            id=done.id,
            redemption_id=done.redemption.id,
            reason=done.reason,
            tracking_id=done.tracking_id,
            activity_seq=activity_seq,
            created_at=uow.now,
        )
    )
    done.redemption.status = "ROLLED_BACK"


def _rollback_one(
    uow: UnitOfWork, record: RedemptionRecord, reason: str | None, tracking_id: str | None
) -> RolledBack:
    voucher_row = uow.conn.execute(
        uow.db.for_update(select(*VOUCHER_COLUMNS).where(vouchers.c.id == record.voucher_pk))
    ).first()
    if voucher_row is None:
        raise PromotionError("invalid_redemption", "the redeemed code no longer exists")
    voucher = Voucher.from_row(voucher_row)
    campaign = campaign_of(uow, voucher)
    voucher.redeemed_quantity = max(0, voucher.redeemed_quantity - 1)
    values: dict[str, Any] = {"redeemed_quantity": voucher.redeemed_quantity}
    if record.gift_amount:
        voucher.gift_balance = (voucher.gift_balance or 0) + record.gift_amount
        values["gift_balance"] = voucher.gift_balance
    uow.conn.execute(update(vouchers).where(vouchers.c.id == voucher.pk).values(**values))
    uow.conn.execute(
        update(campaigns)
        .where(campaigns.c.id == campaign.id, campaigns.c.redemptions_count > 0)
        .values(redemptions_count=campaigns.c.redemptions_count - 1)
    )
    done = RolledBack(new_id("rr"), record, reason, tracking_id, uow.now, voucher, campaign)
    data = {
        "rollback_id": done.id,
        "redemption_id": record.id,
        "reason": reason,
        "amount": record.amount,
        "gift_amount": record.gift_amount,
        "loyalty_points": record.loyalty_points,
        **_code_data(uow, campaign, voucher),
    }
    if record.loyalty_points:
        activity = _restore_points(uow, campaign, voucher, record, data)
    else:
        member = ensure_member(uow, record.customer_id)
        activity = uow.component(ActivityLog).record(
            type="redemption_rolled_back", member_id=member.id, program_id=None, chain=member, data=data
        )
    if record.effects.get("reward_code"):
        _revoke_code(uow, record.effects["reward_code"])
    if record.effects.get("reward_id") and record.effects.get("assignment_id"):
        uow.conn.execute(
            update(promotion_rewards)
            .where(promotion_rewards.c.id == record.effects["reward_id"], promotion_rewards.c.redeemed > 0)
            .values(redeemed=promotion_rewards.c.redeemed - 1)
        )
    referral = record.effects.get("referral")
    if isinstance(referral, dict):
        _revoke_referral(uow, record, referral)
    _mark_rolled_back(uow, done, activity_seq=activity.seq)
    return done


def _revoke_code(uow: UnitOfWork, code: str) -> dict[str, Any]:
    """Take back a code a redemption handed out (a referral or reward code): disabled while unused,
    kept as it is once its holder has redeemed it."""
    try:
        voucher = get_voucher(uow, code, lock=True, include_deleted=True)
    except PromotionError:
        return {"code": code, "revoked": False, "reason": "the code no longer exists"}
    if voucher.redeemed_quantity > 0:
        return {"code": code, "revoked": False, "reason": "the code has already been redeemed"}
    uow.conn.execute(update(vouchers).where(vouchers.c.id == voucher.pk).values(active=False))
    return {"code": code, "revoked": True}


def _revoke_referral(uow: UnitOfWork, record: RedemptionRecord, given: dict[str, Any]) -> None:
    """Undo the referrer's reward for a rolled-back referee redemption: the points are clawed back
    through the ledger (their own lot first, never below zero; what was already spent is reported
    as unrecovered) and a reward code still unused is disabled."""
    referrer = given.get("referrer_id")
    if not isinstance(referrer, str):
        return
    data: dict[str, Any] = {
        "redemption_id": record.id,
        "referee_id": given.get("referee_id"),
        "code": record.code,
        "campaign_id": record.campaign_id,
    }
    if given.get("code"):
        data["reward_code"] = _revoke_code(uow, given["code"])
    earned = None
    if given.get("points") and given.get("activity_seq"):
        earned = uow.conn.execute(
            select(activities.c.program_id, activities.c.occurred_at, activities.c.payload).where(
                activities.c.seq == int(given["activity_seq"])
            )
        ).first()
    log = uow.component(ActivityLog)
    if earned is None or earned.program_id is None:
        member = ensure_member(uow, referrer)
        log.record(
            type="referral_reward_revoked",
            member_id=member.id,
            program_id=None,
            chain=member,
            data=data,
            source="system",
        )
        return
    program = uow.component(ProgramCatalog).get(earned.program_id)
    account = uow.component(AccountRepository).get(referrer, program.id)
    if account is None:
        return
    settle_if_due(uow, account, program)
    lot = ((earned.payload or {}).get("effects") or {}).get("lot", int(given["activity_seq"]))
    clawed = account.points.claw_back(
        int(given["points"]),
        to_epoch(uow.now),
        prefer_lot_id=int(lot),
        earned_day=to_epoch(earned.occurred_at) // 86400,
        window_days=program.tier_window_days,
    )
    account.mark_dirty()
    log.record(
        type="referral_reward_revoked",
        member_id=referrer,
        program_id=program.id,
        chain=account,
        data=data,
        effects={
            "points": -clawed.taken,
            "pending_cancelled": clawed.from_pending,
            "points_unrecovered": clawed.shortfall,
            "lots": allocations_json(clawed.allocations),
        },
        source="system",
        points_delta=-clawed.taken,
        pending_delta=-clawed.from_pending,
        dedup_key=f"referral_revoked:{record.id}",
    )
    from perkflow.tiers.service import evaluate_tier

    evaluate_tier(uow, account, program)


def _restore_points(
    uow: UnitOfWork, campaign: Campaign, voucher: Voucher, record: RedemptionRecord, data: dict[str, Any]
) -> Activity:
    """Give back the points a loyalty redemption spent, into lots with the expiry they were taken from."""
    assert voucher.holder_id is not None and campaign.program_id is not None
    program = uow.component(ProgramCatalog).get(campaign.program_id)
    account = uow.component(AccountRepository).get(voucher.holder_id, program.id)
    if account is None:
        raise PromotionError("invalid_redemption", "the loyalty card's account no longer exists")
    lots = [(int(lot_id), int(amount)) for lot_id, amount in record.effects.get("lots", [])]
    expiries = _lot_expiries(uow, [lot_id for lot_id, _ in lots])
    by_expiry: dict[datetime | None, int] = {}
    for lot_id, amount in lots:
        moment = expiries.get(lot_id)
        by_expiry[moment] = by_expiry.get(moment, 0) + amount
    restored = sum(by_expiry.values())
    if restored < (record.loyalty_points or 0):
        by_expiry[None] = by_expiry.get(None, 0) + (record.loyalty_points or 0) - restored
    first: Activity | None = None
    for moment, amount in by_expiry.items():
        activity = record_earning(
            uow,
            account,
            program,
            type="redemption_rolled_back",
            points=amount,
            occurred_at=uow.now,
            data=data,
            expires_at=moment,
            source="api",
        )
        first = first or activity
    assert first is not None
    return first


def _lot_expiries(uow: UnitOfWork, lot_ids: list[int]) -> dict[int, datetime | None]:
    """When each lot expires, from the earning activity that opened it (a lot's id is that activity's seq)."""
    if not lot_ids:
        return {}
    rows = uow.conn.execute(
        select(activities.c.seq, activities.c.payload).where(activities.c.seq.in_(lot_ids))
    )
    found: dict[int, datetime | None] = {}
    for seq, payload in rows:
        expires = ((payload or {}).get("effects") or {}).get("expires_at")
        found[seq] = datetime.fromisoformat(expires.replace("Z", "+00:00")) if expires else None
    return found


# -- gift cards and loyalty cards ---------------------------------------------------------------------


def balance_dedup_key(kind: str, code: str, source_id: str) -> str:
    """The idempotency key of a balance change: the card and the caller's source_id (hashed when the
    two would not fit the 300 characters of the activities' dedup_key)."""
    key = f"{kind}:{code}:{source_id}"
    if len(key) <= 300:
        return key
    return f"{kind}:{code}:sha256:{hashlib.sha256(source_id.encode()).hexdigest()}"


def add_gift_credits(uow: UnitOfWork, code: str, amount: int, *, source_id: str | None = None) -> Voucher:
    """Add credits to a gift card; the balance change is recorded as gift_credits_added.

    `source_id` is an idempotency key, as for loyalty card balances: the same source_id again answers
    with the card as it is, without adding twice (and is refused for a different amount).
    """
    from perkflow.activity.queries import find_by_dedup_keys

    voucher = get_voucher(uow, code, lock=True)
    campaign = campaign_of(uow, voucher)
    if campaign.voucher_type != "GIFT_VOUCHER":
        raise PromotionError("invalid_voucher", f"code {code} is not a gift card", details={"code": code})
    if voucher.holder_id is None:
        raise PromotionError(
            "voucher_not_published", "publish the gift card to a customer before adding credits"
        )
    dedup = balance_dedup_key("gift", voucher.code, source_id) if source_id else None
    if dedup is not None:
        seen = find_by_dedup_keys(uow.conn, [dedup]).get(dedup)
        if seen is not None:
            if seen.data.get("amount") != amount:
                raise PromotionError(
                    "duplicate_source_id",
                    f"credits with source_id {source_id} were already added to {voucher.code} "
                    f"with amount {seen.data.get('amount')}",
                    details={"activity_id": seen.id, "amount": seen.data.get("amount")},
                )
            return voucher
    member = ensure_member(uow, voucher.holder_id)
    try:
        voucher.gift_balance = gift_credit(voucher.gift_balance or 0, amount)
    except RuleViolation as exc:
        raise PromotionError.from_violation(exc) from exc
    voucher.gift_amount = (voucher.gift_amount or 0) + amount
    uow.conn.execute(
        update(vouchers)
        .where(vouchers.c.id == voucher.pk)
        .values(gift_balance=voucher.gift_balance, gift_amount=voucher.gift_amount)
    )
    uow.component(ActivityLog).record(
        type="gift_credits_added",
        member_id=member.id,
        program_id=None,
        chain=member,
        data={"amount": amount, "source_id": source_id, **_code_data(uow, campaign, voucher)},
        dedup_key=dedup,
    )
    return voucher


@dataclass(slots=True)
class CardBalance:
    voucher: Voucher
    campaign: Campaign
    points: int
    balance: int
    activity: Activity | None


def loyalty_card(uow: UnitOfWork, ref: str, *, campaign_ref: str | None = None) -> tuple[Voucher, Campaign]:
    """A loyalty card by code or id; with `campaign_ref`, only a card of that loyalty campaign."""
    expected = get_campaign(uow, campaign_ref) if campaign_ref is not None else None
    voucher = find_voucher(uow, ref)
    campaign = campaign_of(uow, voucher)
    if campaign.voucher_type != "LOYALTY_CARD" or (expected is not None and expected.id != campaign.id):
        raise not_found("loyalty_card", ref)
    return voucher, campaign


def add_member(
    uow: UnitOfWork, campaign_ref: str, customer_id: str, *, code: str | None = None, channel: str = "API"
) -> Published:
    """Give a member the program's loyalty card (one per member) and opt them in to its program."""
    campaign = get_campaign(uow, campaign_ref)
    if campaign.voucher_type != "LOYALTY_CARD":
        raise PromotionError("invalid_payload", f"campaign {campaign.name} is not a loyalty program")
    ensure_member(uow, customer_id)
    assert campaign.program_id is not None
    ensure_opted_in(uow, customer_id, campaign.program_id)
    return publish(uow, campaign_ref=campaign.id, customer_id=customer_id, code=code, channel=channel)


def update_card_balance(
    uow: UnitOfWork,
    ref: str,
    points: int,
    *,
    reason: str | None = None,
    source_id: str | None = None,
    expires_at: datetime | None = None,
    campaign_ref: str | None = None,
) -> CardBalance:
    """Add (or, negative, take) points on a loyalty card: a ledger activity in the card's program.

    Added points expire at `expires_at` when given (their own lot), else by the program's policy.
    """
    if isinstance(points, bool) or not isinstance(points, int) or points == 0 or abs(points) > 10**9:
        raise PromotionError("invalid_payload", "points must be a non-zero integer of at most 10^9")
    if expires_at is not None and points < 0:
        raise PromotionError("invalid_payload", "expiration_date applies to added points only")
    if expires_at is not None and expires_at <= uow.now:
        raise PromotionError(
            "invalid_payload",
            "expiration_date must be in the future",
            details={"expiration_date": isoformat_z(expires_at)},
        )
    voucher, campaign = loyalty_card(uow, ref, campaign_ref=campaign_ref)
    if voucher.holder_id is None or campaign.program_id is None:
        raise PromotionError("voucher_not_published", "the loyalty card is not assigned to a member")
    program = uow.component(ProgramCatalog).get(campaign.program_id)
    ensure_member(uow, voucher.holder_id)
    account = ensure_opted_in(uow, voucher.holder_id, program.id)
    settle_if_due(uow, account, program)
    data = {"code": voucher.code, "campaign_id": campaign.id, "campaign": campaign.name, "reason": reason}
    dedup = balance_dedup_key("card", voucher.code, source_id) if source_id else None
    if dedup:
        from perkflow.activity.queries import find_by_dedup_keys

        seen = find_by_dedup_keys(uow.conn, [dedup]).get(dedup)
        if seen is not None:
            balance = account.points.spendable(to_epoch(uow.now))
            return CardBalance(voucher, campaign, seen.points_delta, balance, seen)
    if points > 0:
        activity = record_earning(
            uow,
            account,
            program,
            type="loyalty_points_added",
            points=points,
            occurred_at=uow.now,
            data=data,
            expires_at=expires_at,
            dedup_key=dedup,
        )
    else:
        try:
            activity = record_spend(
                uow,
                account,
                type="point_subtract",
                points=-points,
                occurred_at=uow.now,
                data=data,
                dedup_key=dedup,
            )
        except InsufficientPoints as exc:
            raise PromotionError("loyalty_card_points_exceeded", exc.message, details=exc.details) from exc
    balance = account.points.spendable(to_epoch(uow.now))
    activity.effects["balance"] = balance
    return CardBalance(voucher, campaign, points, balance, activity)


# -- Voucherify-style rewards -------------------------------------------------------------------------


def create_promotion_reward(uow: UnitOfWork, spec: dict[str, Any]) -> dict[str, Any]:
    name = spec.get("name")
    if not isinstance(name, str) or not name or len(name) > 200:
        raise PromotionError("invalid_payload", "name is required (at most 200 characters)")
    parameters = spec.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise PromotionError("invalid_payload", "parameters must be an object")
    if parameters.get("coin"):
        raise PromotionError("invalid_payload", "COIN (pay with points) rewards are not supported")
    kind = "MATERIAL"
    if isinstance(parameters.get("campaign"), dict):
        kind = "CAMPAIGN"
        parameters = {"campaign": {"id": get_campaign(uow, str(parameters["campaign"].get("id"))).id}}
    stock = spec.get("stock")
    if stock is not None and (
        isinstance(stock, bool) or not isinstance(stock, int) or not 0 <= stock <= 10**9
    ):
        raise PromotionError("invalid_payload", "stock must be an integer from 0 to 10^9")
    row = {
        "id": new_id("rew"),
        "name": name,
        "type": kind,
        "parameters": parameters,
        "stock": stock,
        "redeemed": 0,
        "metadata": spec.get("metadata") if isinstance(spec.get("metadata"), dict) else {},
        "created_at": uow.now,
    }
    uow.conn.execute(insert(promotion_rewards).values(**row))
    return row


def get_promotion_reward(uow: UnitOfWork, reward_id: str) -> dict[str, Any]:
    row = uow.conn.execute(select(promotion_rewards).where(promotion_rewards.c.id == reward_id)).first()
    if row is None:
        raise not_found("reward", reward_id)
    return dict(row._mapping)


def assign_reward(uow: UnitOfWork, campaign_ref: str, reward_id: str, points: int) -> dict[str, Any]:
    """Make a reward redeemable with a loyalty campaign's cards for `points`, backed by a Perkflow reward."""
    from perkflow.rewards.service import create_reward

    campaign = get_campaign(uow, campaign_ref)
    if campaign.voucher_type != "LOYALTY_CARD" or campaign.program_id is None:
        raise PromotionError("invalid_payload", f"campaign {campaign.name} is not a loyalty program")
    reward = get_promotion_reward(uow, reward_id)
    if isinstance(points, bool) or not isinstance(points, int) or points < 0 or points > 10**9:
        raise PromotionError("invalid_payload", "parameters.loyalty.points must be a non-negative integer")
    existing = uow.conn.execute(
        select(reward_assignments.c.id).where(
            reward_assignments.c.reward_id == reward_id, reward_assignments.c.campaign_id == campaign.id
        )
    ).first()
    if existing is not None:
        raise PromotionError(
            "duplicate_found",
            f"reward {reward_id} is already assigned to campaign {campaign.name}",
            status=409,
        )
    backing = create_reward(
        uow,
        {
            "program_id": campaign.program_id,
            "name": f"{reward['name']} ({campaign.name})"[:200],
            "description": f"Voucherify reward {reward_id}",
            "points_cost": points,
        },
    )
    row = {
        "id": new_id("rewa"),
        "reward_id": reward_id,
        "campaign_id": campaign.id,
        "points": points,
        "perkflow_reward_id": backing.id,
        "created_at": uow.now,
    }
    uow.conn.execute(insert(reward_assignments).values(**row))
    return row


def find_assignment(uow: UnitOfWork, campaign_id: str, ref: str) -> dict[str, Any]:
    """The assignment of a reward to the campaign, by reward id or assignment id."""
    row = uow.conn.execute(
        select(reward_assignments, promotion_rewards.c.type, promotion_rewards.c.parameters)
        .join(promotion_rewards, promotion_rewards.c.id == reward_assignments.c.reward_id)
        .where(
            reward_assignments.c.campaign_id == campaign_id,
            or_(reward_assignments.c.reward_id == ref, reward_assignments.c.id == ref),
        )
    ).first()
    if row is None:
        raise RuleViolation(
            "missing_reward", f"reward {ref} is not assigned to this loyalty campaign", status=400
        )
    return dict(row._mapping)


def rollback_of(uow: UnitOfWork, redemption_id: str) -> datetime | None:
    row = uow.conn.execute(
        select(redemption_rollbacks.c.created_at).where(redemption_rollbacks.c.redemption_id == redemption_id)
    ).first()
    return row.created_at if row else None


def points_expiry(epoch: int | None) -> datetime | None:
    return from_epoch(epoch) if epoch is not None else None
