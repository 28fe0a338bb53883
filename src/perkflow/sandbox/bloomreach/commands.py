"""Validation of Tracking API command bodies into typed commands under Bloomreach's id, time, size rules."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from perkflow.sandbox.bloomreach.config import BloomreachSandboxConfig, Permissions

COMMAND_NAMES = ("customers", "customers/events", "system/time")

# Documented messages (contract §4, §6, §2); the rest are the fake's own wording for undocumented cases.
MSG_INVALID_ID = "At least one valid id should be specified"
MSG_EVENT_DENIED = "Not authorized to add event of specified type"
MSG_PROPERTIES_DENIED = "not authorized to update specified customer properties"
MSG_NO_EVENT_TYPE = "Event type must be specified"
MSG_BAD_PROPERTIES = "Properties must be an object"
MSG_BAD_TIMESTAMP = "Invalid timestamp"
MSG_BAD_UPDATE_TIMESTAMP = "Invalid update_timestamp"
MSG_MESSAGE_TOO_LARGE = "Message is too large"
MSG_UNKNOWN_COMMAND = "Unknown command name"
MSG_BAD_COMMAND = "Invalid command"
MSG_BAD_DATA = "Command data must be an object"

_INVALID_ID_VALUES = {"null", "undefined"}


class CommandError(Exception):
    """A command Bloomreach refuses; the message is what the API answers in `errors`."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class CustomerUpdate:
    ids: dict[str, str]
    properties: dict[str, Any]
    update_timestamp: float | None


@dataclass(frozen=True)
class EventTrack:
    ids: dict[str, str]
    event_type: str
    timestamp: float
    properties: dict[str, Any]


@dataclass(frozen=True)
class SystemTime:
    pass


Command = CustomerUpdate | EventTrack | SystemTime


def is_valid_id_value(value: str) -> bool:
    return any(ch.isalnum() for ch in value) and value.strip().lower() not in _INVALID_ID_VALUES


def valid_ids(raw: Any, id_types: dict[str, str]) -> dict[str, str]:
    """The usable ids of `customer_ids`, in configured order; unknown names and bad values are ignored."""
    if not isinstance(raw, dict):
        return {}
    ids: dict[str, str] = {}
    for name in id_types:
        value = raw.get(name)
        # Integer ids are common in shops' exports; Bloomreach stores every id as a string.
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if isinstance(value, str) and is_valid_id_value(value):
            ids[name] = value
    return ids


def parse_time(raw: Any, *, now: float, message: str) -> float:
    """Unix seconds from a number or an ISO-8601 string; null means "now" (the server's receive time)."""
    if raw is None:
        return now
    if isinstance(raw, bool):
        raise CommandError(message)
    if isinstance(raw, int | float):
        if not math.isfinite(raw):
            raise CommandError(message)
        return float(raw)
    if isinstance(raw, str):
        try:
            parsed = datetime.fromisoformat(raw.strip())
        except ValueError:
            raise CommandError(message) from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.timestamp()
    raise CommandError(message)


def value_size(value: Any) -> int:
    if isinstance(value, str):
        return len(value.encode())
    try:
        return len(orjson.dumps(value))
    except TypeError:
        return 0


def _properties(raw: Any, max_value_bytes: int) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise CommandError(MSG_BAD_PROPERTIES)
    for name, value in raw.items():
        if value_size(value) >= max_value_bytes:
            raise CommandError(f"Value of property '{name}' is too large")
    return dict(raw)


def message_size(data: Any) -> int:
    return len(orjson.dumps(data))


def parse_command(name: Any, data: Any, config: BloomreachSandboxConfig, *, now: float) -> Command:
    """One command (a single route's body or a batch entry's `data`), checked but not yet applied."""
    if name not in COMMAND_NAMES:
        raise CommandError(MSG_UNKNOWN_COMMAND)
    if name == "system/time":
        return SystemTime()
    if not isinstance(data, dict):
        raise CommandError(MSG_BAD_DATA)
    if message_size(data) >= config.max_message_bytes:
        raise CommandError(MSG_MESSAGE_TOO_LARGE)
    ids = valid_ids(data.get("customer_ids"), config.id_types)
    if not ids:
        raise CommandError(MSG_INVALID_ID)
    properties = _properties(data.get("properties"), config.max_value_bytes)
    if name == "customers":
        raw_update = data.get("update_timestamp")
        update = (
            None if raw_update is None else parse_time(raw_update, now=now, message=MSG_BAD_UPDATE_TIMESTAMP)
        )
        check_properties_allowed(config.permissions, properties)
        return CustomerUpdate(ids=ids, properties=properties, update_timestamp=update)
    event_type = data.get("event_type")
    if not isinstance(event_type, str) or not event_type.strip():
        raise CommandError(MSG_NO_EVENT_TYPE)
    timestamp = parse_time(data.get("timestamp"), now=now, message=MSG_BAD_TIMESTAMP)
    if config.permissions is not None and not config.permissions.event_allowed(event_type):
        raise CommandError(MSG_EVENT_DENIED)
    return EventTrack(ids=ids, event_type=event_type, timestamp=timestamp, properties=properties)


def check_properties_allowed(permissions: Permissions | None, properties: dict[str, Any]) -> None:
    # One refused name fails the whole command: Bloomreach reports it per command, not per property.
    if permissions is not None and not all(permissions.property_allowed(name) for name in properties):
        raise CommandError(MSG_PROPERTIES_DENIED)
