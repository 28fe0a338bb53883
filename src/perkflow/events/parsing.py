"""Turning untrusted JSON into events, with a precise error for each way an event can be malformed.

Hand-written rather than a Pydantic model per item: bulk ingestion parses a thousand events per
request and this is a hot path; the API still publishes the schema through its Pydantic models.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from perkflow.core.errors import InvalidInput
from perkflow.core.limits import MAX_AMOUNT
from perkflow.events.types import EVENT_NAME
from perkflow.members.fields import MEMBER_ID_RULE, FieldValueError, is_member_id, parse_datetime

EVENT_KEYS = frozenset({"customer", "action", "data", "id", "program", "occurred_at"})


@dataclass(slots=True)
class EventIn:
    customer: str
    action: str
    data: dict[str, Any] = field(default_factory=dict)
    id: str | None = None
    program: str | None = None
    occurred_at: datetime | None = None


def _fail(message: str, **details: Any) -> InvalidInput:
    return InvalidInput(message, code="invalid_event", details=details)


def parse_event(raw: Any) -> EventIn:
    if not isinstance(raw, dict):
        raise _fail("an event must be a JSON object")
    if not raw.keys() <= EVENT_KEYS:
        unknown = sorted(raw.keys() - EVENT_KEYS)
        raise _fail(
            f"unknown event properties: {', '.join(unknown)}", unknown=unknown, allowed=sorted(EVENT_KEYS)
        )
    customer = raw.get("customer")
    if not is_member_id(customer):
        raise _fail(f"customer must be a member id: {MEMBER_ID_RULE}", field="customer")
    action = raw.get("action")
    if not isinstance(action, str) or not EVENT_NAME.match(action):
        raise _fail("action must be an event name such as checkout or opt_in", field="action")
    data = raw.get("data", {})
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise _fail("data must be a JSON object", field="data")
    event_id = raw.get("id")
    if event_id is not None and (not isinstance(event_id, str) or not 1 <= len(event_id) <= 128):
        raise _fail("id must be a string of 1-128 characters", field="id")
    program = raw.get("program")
    if program is not None and (not isinstance(program, str) or not 1 <= len(program) <= 64):
        raise _fail("program must be a program id", field="program")
    occurred_at = raw.get("occurred_at")
    if occurred_at is not None:
        try:
            occurred_at = parse_datetime(occurred_at)
        except FieldValueError as exc:
            raise _fail(f"occurred_at: {exc}", field="occurred_at") from exc
    return EventIn(customer, action, data, event_id, program, occurred_at)


def require_str(data: dict[str, Any], key: str, *, max_length: int = 128) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not 1 <= len(value) <= max_length:
        raise InvalidInput(
            f"data.{key} is required: a string of 1-{max_length} characters",
            code="invalid_event_data",
            details={"field": key},
        )
    return value


def require_int(data: dict[str, Any], key: str, *, minimum: int = 0, maximum: int = MAX_AMOUNT) -> int:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise InvalidInput(
            f"data.{key} is required: an integer from {minimum} to {maximum}"
            + (" (money is in minor units, e.g. cents)" if key in ("total", "amount") else ""),
            code="invalid_event_data",
            details={"field": key},
        )
    return value


def optional_int(
    data: dict[str, Any], key: str, *, minimum: int = 0, maximum: int = MAX_AMOUNT
) -> int | None:
    if data.get(key) is None:
        return None
    return require_int(data, key, minimum=minimum, maximum=maximum)
