"""The loyalty fields a mapping can sync, their types, and how their values are read for a member."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from perkflow.core.clock import from_epoch, to_epoch
from perkflow.ledger.accounts import Account
from perkflow.ledger.domain import Lot
from perkflow.members.repository import Member

# Built-in loyalty fields: name -> (type, description). Custom fields come from the field catalogue.
MEMBER_FIELDS: dict[str, tuple[str, str]] = {
    "member_id": ("string", "the loyalty member id (always sent as Braze external_id)"),
    "email": ("string", "email address, lower-cased"),
    "first_name": ("string", "first name"),
    "last_name": ("string", "last name"),
    "birth_date": ("date", "birth date"),
    "status": ("string", "active or blocked"),
}
STANDING_FIELDS: dict[str, tuple[str, str]] = {
    "opted_in": ("boolean", "member of the program"),
    "opted_in_at": ("datetime", "when the member opted in"),
    "opted_out_at": ("datetime", "when the member opted out"),
    "tier": ("string", "tier name"),
    "tier_since": ("datetime", "when the member reached the tier"),
    "points_balance": ("integer", "spendable points"),
    "points_pending": ("integer", "points not yet spendable"),
    "points_earned": ("integer", "lifetime points earned (what tiers qualify on)"),
    "points_spent": ("integer", "lifetime points spent"),
    "points_expired": ("integer", "lifetime points expired"),
    "next_expiry_points": ("integer", "points expiring next"),
    "next_expiry_at": ("datetime", "when those points expire"),
}
POINTS_FIELDS = frozenset(
    {
        "points_balance",
        "points_pending",
        "points_earned",
        "points_spent",
        "points_expired",
        "next_expiry_points",
        "next_expiry_at",
    }
)
MEMBERSHIP_FIELDS = frozenset({"opted_in", "opted_in_at", "opted_out_at"})
TIER_FIELDS = frozenset({"tier", "tier_since"})


@dataclass(frozen=True, slots=True)
class LoyaltyField:
    name: str
    type: str
    description: str
    scope: str  # member | program


def catalogue(custom: dict[str, dict[str, Any]]) -> dict[str, LoyaltyField]:
    fields = {name: LoyaltyField(name, t, d, "member") for name, (t, d) in MEMBER_FIELDS.items()}
    fields.update({name: LoyaltyField(name, t, d, "program") for name, (t, d) in STANDING_FIELDS.items()})
    for key, spec in custom.items():
        fields[key] = LoyaltyField(key, spec["type"], spec.get("label") or key, "member")
    return fields


def fields_changed_by(
    activity_type: str, data: dict[str, Any], points_delta: int, pending_delta: int
) -> set[str]:
    """Which loyalty fields an activity may have changed (a superset is fine, delta mode filters)."""
    changed: set[str] = set()
    if points_delta or pending_delta or activity_type in ("points_expired", "points_released"):
        changed |= POINTS_FIELDS
    if activity_type in ("tier_up", "tier_down"):
        changed |= TIER_FIELDS
    if activity_type in ("opt_in", "opt_out"):
        changed |= MEMBERSHIP_FIELDS | TIER_FIELDS
    if activity_type == "profile":
        changed |= set(data) | {"member_id"}
    return changed


def read_values(
    member: Member | None, account: Account | None, tier_name: str | None, now: datetime, wanted: set[str]
) -> dict[str, Any]:
    """Typed values of the wanted loyalty fields (dates as date/datetime; None when unknown)."""
    values: dict[str, Any] = {}
    if member is not None:
        profile = {
            "member_id": member.id,
            "email": member.email,
            "first_name": member.first_name,
            "last_name": member.last_name,
            "birth_date": member.birth_date,
            "status": member.status,
        }
        for name in wanted:
            if name in profile:
                values[name] = profile[name]
            elif name in member.fields:
                values[name] = member.fields[name]
    if account is not None and wanted & STANDING_FIELDS.keys():
        epoch = to_epoch(now)
        points = account.points
        expiring = sorted(
            (
                lot
                for lot in points.lots
                if lot.expires_at is not None and not lot.pending and lot.expires_at > epoch
            ),
            key=Lot.spend_key,
        )
        first = expiring[0].expires_at if expiring else None
        standing = {
            "opted_in": account.opted_in,
            "opted_in_at": account.opted_in_at,
            "opted_out_at": account.opted_out_at,
            "tier": tier_name,
            "tier_since": account.tier_since,
            "points_balance": points.spendable(epoch),
            "points_pending": points.pending,
            "points_earned": points.earned,
            "points_spent": points.spent,
            "points_expired": points.expired,
            "next_expiry_points": sum(lot.remaining for lot in expiring if lot.expires_at == first)
            if first
            else 0,
            "next_expiry_at": from_epoch(first) if first else None,
        }
        for name in wanted & standing.keys():
            values[name] = standing[name]
    return values


def is_date_like(value: Any) -> bool:
    return isinstance(value, date | datetime)
