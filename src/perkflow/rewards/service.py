"""The reward catalogue, coupon pools and claiming: points spent and a coupon assigned together."""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from perkflow.activity.queries import find_by_dedup_keys
from perkflow.activity.stream import Activity, ActivityLog
from perkflow.codes.generator import CodeConfig, CodeConfigError
from perkflow.codes.namespace import voucher_codes_among
from perkflow.core.clock import isoformat_z, to_epoch
from perkflow.core.errors import Conflict, InvalidInput, NotFound
from perkflow.core.ids import new_id
from perkflow.core.uow import UnitOfWork
from perkflow.ledger.accounts import AccountRepository
from perkflow.ledger.domain import InsufficientPoints
from perkflow.ledger.service import record_spend, settle_if_due
from perkflow.members.repository import MemberRepository
from perkflow.programs.service import ProgramCatalog
from perkflow.rewards.schemas import MAX_CODE_LENGTH, is_code
from perkflow.rewards.tables import coupons, rewards

GENERATE_MAX_BARREN_ROUNDS = 20


@dataclass(slots=True)
class Reward:
    id: str
    program_id: str
    name: str
    description: str
    points_cost: int
    uses_coupons: bool
    active: bool
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: Any) -> Reward:
        return cls(
            id=row.id,
            program_id=row.program_id,
            name=row.name,
            description=row.description,
            points_cost=row.points_cost,
            uses_coupons=row.uses_coupons,
            active=row.active,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )

    def to_public(self, stock: dict[str, int] | None = None) -> dict[str, Any]:
        out = {
            "id": self.id,
            "program_id": self.program_id,
            "name": self.name,
            "description": self.description,
            "points_cost": self.points_cost,
            "uses_coupons": self.uses_coupons,
            "active": self.active,
            "created_at": isoformat_z(self.created_at),
            "updated_at": isoformat_z(self.updated_at),
        }
        if stock is not None:
            out["coupons"] = stock
        return out


class RewardOutOfStock(Conflict):
    code = "reward_out_of_stock"


def get_reward(uow: UnitOfWork, reward_id: str) -> Reward:
    row = uow.conn.execute(select(rewards).where(rewards.c.id == reward_id)).first()
    if row is None:
        raise NotFound(f"reward {reward_id!r} does not exist", code="reward_not_found")
    return Reward.from_row(row)


def list_rewards(uow: UnitOfWork, program_id: str | None = None) -> list[Reward]:
    stmt = select(rewards).order_by(rewards.c.created_at, rewards.c.id)
    if program_id:
        stmt = stmt.where(rewards.c.program_id == program_id)
    return [Reward.from_row(row) for row in uow.conn.execute(stmt)]


def coupon_stock(uow: UnitOfWork, reward_ids: list[str]) -> dict[str, dict[str, int]]:
    stock = {rid: {"available": 0, "assigned": 0} for rid in reward_ids}
    if not reward_ids:
        return stock
    stmt = (
        select(coupons.c.reward_id, coupons.c.status, func.count())
        .where(coupons.c.reward_id.in_(reward_ids))
        .group_by(coupons.c.reward_id, coupons.c.status)
    )
    for reward_id, status, count in uow.conn.execute(stmt):
        stock[reward_id][status] = count
    return stock


def create_reward(uow: UnitOfWork, spec: dict[str, Any]) -> Reward:
    program = uow.component(ProgramCatalog).resolve(spec.get("program_id"))
    reward_id = spec.get("id") or new_id("rew")
    try:
        uow.conn.execute(
            insert(rewards).values(
                id=reward_id,
                program_id=program.id,
                name=spec["name"],
                description=spec.get("description") or "",
                points_cost=spec["points_cost"],
                uses_coupons=bool(spec.get("uses_coupons")),
                active=spec.get("active", True),
                created_at=uow.now,
                updated_at=uow.now,
            )
        )
    except IntegrityError as exc:
        raise Conflict(f"reward {reward_id!r} already exists", code="reward_exists") from exc
    return get_reward(uow, reward_id)


def update_reward(uow: UnitOfWork, reward_id: str, changes: dict[str, Any]) -> Reward:
    get_reward(uow, reward_id)
    values = {
        k: v
        for k, v in changes.items()
        if k in ("name", "description", "points_cost", "active", "uses_coupons")
    }
    if values:
        values["updated_at"] = uow.now
        uow.conn.execute(update(rewards).where(rewards.c.id == reward_id).values(**values))
    return get_reward(uow, reward_id)


def add_coupons(
    uow: UnitOfWork,
    reward_id: str,
    items: list[dict[str, Any]],
) -> int:
    """Upload codes into a reward's pool; a code already used anywhere is refused with its name."""
    reward = get_reward(uow, reward_id)
    program = uow.component(ProgramCatalog).get(reward.program_id)
    codes = [item["code"] for item in items]
    bad = [c for c in codes if not is_code(c)]
    if bad:
        raise InvalidInput(
            f"coupon codes are 1-{MAX_CODE_LENGTH} characters without control characters or surrounding "
            "spaces",
            code="invalid_codes",
            details={"codes": bad[:20], "count": len(bad)},
        )
    repeated = sorted(code for code, times in Counter(codes).items() if times > 1)
    if repeated:
        raise InvalidInput(
            "the upload repeats codes",
            code="duplicate_codes",
            details={"codes": repeated[:20], "count": len(repeated)},
        )
    as_coupons = sorted(_taken(uow, codes))
    as_vouchers = sorted(voucher_codes_among(uow, codes))
    if as_coupons or as_vouchers:
        raise Conflict(
            f"{len(as_coupons) + len(as_vouchers)} of the codes already exist",
            code="codes_taken",
            details={
                "codes": (as_coupons + as_vouchers)[:20],
                "coupon_codes": as_coupons[:20],
                "voucher_codes": as_vouchers[:20],
            },
        )
    rows = [
        {
            "reward_id": reward_id,
            "code": item["code"],
            "value": item.get("value"),
            "currency": program.currency if item.get("value") is not None else None,
            "expires_at": item.get("expires_at"),
            "status": "available",
            "created_at": uow.now,
        }
        for item in items
    ]
    if rows:
        uow.conn.execute(insert(coupons), rows)
    if not reward.uses_coupons:
        uow.conn.execute(update(rewards).where(rewards.c.id == reward_id).values(uses_coupons=True))
    return len(rows)


def _taken(uow: UnitOfWork, codes: list[str]) -> set[str]:
    """Which of these codes are coupons already (one list parameter: uploads hold up to 100,000)."""
    if not codes:
        return set()
    stmt = select(coupons.c.code).where(uow.db.in_list(coupons.c.code, "codes"))
    return set(uow.conn.execute(stmt, {"codes": uow.db.list_param(codes)}).scalars())


def generate_coupons(
    uow: UnitOfWork,
    reward_id: str,
    *,
    count: int,
    config: CodeConfig,
    value: int | None,
    expires_at: datetime | None,
) -> int:
    """Generate `count` new codes; the pattern must be able to produce them."""
    try:
        config.check_capacity(count)
    except CodeConfigError as exc:
        raise InvalidInput(str(exc), code="pattern_too_small") from exc
    reward = get_reward(uow, reward_id)
    program = uow.component(ProgramCatalog).get(reward.program_id)
    made = 0
    barren = 0
    stream = config.generator()
    while made < count:
        drawn = list(dict.fromkeys(itertools.islice(stream, min(2000, (count - made) * 2))))
        existing = _taken(uow, drawn) | voucher_codes_among(uow, drawn)
        fresh = [c for c in drawn if c not in existing][: count - made]
        if not fresh:
            # The pattern's capacity counts codes already used elsewhere; a nearly full pattern
            # would otherwise draw forever.
            barren += 1
            if barren >= GENERATE_MAX_BARREN_ROUNDS:
                raise Conflict(
                    "the code pattern is exhausted: no unused code could be drawn; use a longer pattern",
                    code="pattern_exhausted",
                    details={"generated": made, "requested": count},
                )
            continue
        barren = 0
        uow.conn.execute(
            insert(coupons),
            [
                {
                    "reward_id": reward_id,
                    "code": code,
                    "value": value,
                    "currency": program.currency if value is not None else None,
                    "expires_at": expires_at,
                    "status": "available",
                    "created_at": uow.now,
                }
                for code in fresh
            ],
        )
        made += len(fresh)
    if not reward.uses_coupons:
        uow.conn.execute(update(rewards).where(rewards.c.id == reward_id).values(uses_coupons=True))
    return made


def take_coupon(uow: UnitOfWork, reward_id: str, member_id: str) -> Any | None:
    """Assign the pool's oldest usable coupon to the member, atomically; None when the pool is empty.

    On PostgreSQL concurrent claimers skip each other's locked rows, so two claims never share a
    coupon and never wait on each other; on SQLite the single writer makes the update atomic.
    """
    now = uow.now
    candidate = (
        select(coupons.c.id)
        .where(
            coupons.c.reward_id == reward_id,
            coupons.c.status == "available",
            or_(coupons.c.expires_at.is_(None), coupons.c.expires_at > now),
        )
        .order_by(coupons.c.id)
        .limit(1)
    )
    candidate = uow.db.for_update(candidate, skip_locked=True)
    stmt = (
        update(coupons)
        .where(and_(coupons.c.id == candidate.scalar_subquery(), coupons.c.status == "available"))
        .values(status="assigned", member_id=member_id, assigned_at=now)
        .returning(coupons.c.id, coupons.c.code, coupons.c.value, coupons.c.currency, coupons.c.expires_at)
    )
    return uow.conn.execute(stmt).first()


def claim_reward(
    uow: UnitOfWork,
    *,
    member_id: str,
    reward_id: str,
    free: bool = False,
    idempotency_key: str | None = None,
    source: str = "api",
    event_id: str | None = None,
    occurred_at: datetime | None = None,
) -> Activity:
    """Spend the reward's points and hand out one coupon in the same transaction.

    With an idempotency key a repeated claim returns the first claim instead of claiming again.
    """
    dedup_key = f"claim:{idempotency_key}" if idempotency_key else None
    if dedup_key:
        seen = find_by_dedup_keys(uow.conn, [dedup_key]).get(dedup_key)
        if seen is not None:
            if seen.member_id != member_id or seen.data.get("reward_id") != reward_id:
                raise Conflict(
                    "this idempotency key was used for another claim",
                    code="idempotency_key_reused",
                    details={"activity_id": seen.id},
                )
            return seen
    reward = get_reward(uow, reward_id)
    program = uow.component(ProgramCatalog).get(reward.program_id)
    member = uow.component(MemberRepository).get(member_id)
    if member is None:
        raise NotFound(f"member {member_id!r} does not exist", code="member_not_found")
    if not member.active:
        raise Conflict(f"member {member_id!r} is {member.status}", code="member_not_active")
    account = uow.component(AccountRepository).get(member_id, program.id)
    if account is None or not account.opted_in:
        raise Conflict(
            f"member {member_id!r} has not opted in to program {program.id!r}", code="not_opted_in"
        )
    if not reward.active:
        raise Conflict(f"reward {reward_id!r} is not active", code="reward_inactive")
    settle_if_due(uow, account, program)
    cost = 0 if free else reward.points_cost
    spendable = account.points.spendable(to_epoch(uow.now))
    if cost > spendable:
        raise InsufficientPoints(
            f"the reward costs {cost} points and the member has {spendable}",
            details={"available": spendable, "required": cost},
        )
    coupon = None
    if reward.uses_coupons:
        coupon = take_coupon(uow, reward.id, member_id)
        if coupon is None:
            raise RewardOutOfStock(
                f"reward {reward_id!r} has no coupons left", details={"reward_id": reward_id}
            )
    data = {
        "reward_id": reward.id,
        "reward_name": reward.name,
        "reward_description": reward.description,
        "points_cost": reward.points_cost,
        "free": free,
        "coupon_code": coupon.code if coupon else None,
        "coupon_value": coupon.value if coupon else None,
        "coupon_currency": coupon.currency if coupon else None,
        "coupon_expires_at": isoformat_z(coupon.expires_at) if coupon and coupon.expires_at else None,
    }
    moment = occurred_at or uow.now
    if cost > 0:
        activity = record_spend(
            uow,
            account,
            type="reward_claim",
            points=cost,
            occurred_at=moment,
            data=data,
            source=source,
            event_id=event_id,
            dedup_key=dedup_key,
        )
    else:
        activity = uow.component(ActivityLog).record(
            type="reward_claim",
            member_id=member_id,
            program_id=program.id,
            chain=account,
            data=data,
            effects={"points": 0},
            occurred_at=moment,
            source=source,
            event_id=event_id,
            dedup_key=dedup_key,
        )
    activity.effects["balance"] = account.points.spendable(to_epoch(uow.now))
    if coupon is not None:
        uow.conn.execute(update(coupons).where(coupons.c.id == coupon.id).values(activity_seq=activity.seq))
    return activity
