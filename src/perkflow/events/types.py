"""Custom event types: names the brand registers, with typed attributes their events must follow."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.exc import IntegrityError

from perkflow.core.errors import Conflict, InvalidInput, NotFound
from perkflow.core.uow import UnitOfWork
from perkflow.events.tables import event_types
from perkflow.members.fields import FIELD_TYPES, FieldValueError, normalize_value

EVENT_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")

# Built-in actions accepted by the events API.
BUILTIN_ACTIONS = (
    "opt_in",
    "opt_out",
    "profile",
    "checkout",
    "checkout_accept",
    "checkout_reject",
    "refund",
    "point_add",
    "point_subtract",
    "birthday",
    "reward_claim",
)
# Activity types Perkflow records by itself; no event may claim these names.
SYSTEM_ACTIVITY_TYPES = (
    "tier_up",
    "tier_down",
    "points_expired",
    "points_released",
    "segment_entered",
    "segment_left",
    "voucher_published",
    "voucher_redeemed",
    "redemption_rolled_back",
    "gift_credits_added",
    "loyalty_points_added",
    "member_created",
    "coupon_assigned",
    "voucher_deleted",
    "referral_reward",
    "referral_reward_revoked",
    "identity_added",
    "identity_removed",
)
RESERVED = set(BUILTIN_ACTIONS) | set(SYSTEM_ACTIVITY_TYPES)


class EventTypeCatalog:
    """Unit-of-work component: the registered custom event types, loaded on first use."""

    def __init__(self, uow: UnitOfWork) -> None:
        self.uow = uow
        self._types: dict[str, dict[str, Any]] | None = None

    @property
    def types(self) -> dict[str, dict[str, Any]]:
        if self._types is None:
            self._types = {
                row.name: {"name": row.name, "description": row.description, "attributes": row.attributes}
                for row in self.uow.conn.execute(select(event_types))
            }
        return self._types

    def get(self, name: str) -> dict[str, Any] | None:
        return self.types.get(name)

    def before_commit(self) -> bool:
        return False

    def flush(self) -> None:
        return None


def validate_attributes(declared: dict[str, str], data: dict[str, Any]) -> dict[str, Any]:
    """Check an event's data against its type's attributes; unknown attributes are refused."""
    problems: dict[str, str] = {}
    clean: dict[str, Any] = {}
    for key, value in data.items():
        field_type = declared.get(key)
        if field_type is None:
            problems[key] = "not an attribute of this event type"
            continue
        try:
            clean[key] = normalize_value(field_type, value)
        except FieldValueError as exc:
            problems[key] = str(exc)
    if problems:
        raise InvalidInput(
            "the event's data does not match its type", code="invalid_event_data", details=problems
        )
    return clean


def register_event_type(
    uow: UnitOfWork, name: str, attributes: dict[str, str], description: str = ""
) -> dict[str, Any]:
    if not EVENT_NAME.match(name):
        raise InvalidInput(
            "event type names are lower-case letters, digits and underscores, starting with a letter",
            code="invalid_event_type",
        )
    if name in RESERVED:
        raise Conflict(f"{name!r} is a built-in event or activity type", code="event_type_reserved")
    bad = {k: v for k, v in attributes.items() if v not in FIELD_TYPES}
    if bad:
        raise InvalidInput(
            "unknown attribute types",
            code="invalid_event_type",
            details={"attributes": bad, "allowed": FIELD_TYPES},
        )
    try:
        uow.conn.execute(
            insert(event_types).values(
                name=name, description=description, attributes=attributes, created_at=uow.now
            )
        )
    except IntegrityError as exc:
        raise Conflict(f"event type {name!r} already exists", code="event_type_exists") from exc
    return {"name": name, "description": description, "attributes": attributes}


def delete_event_type(uow: UnitOfWork, name: str) -> None:
    if uow.conn.execute(delete(event_types).where(event_types.c.name == name)).rowcount == 0:
        raise NotFound(f"event type {name!r} does not exist", code="event_type_not_found")
