"""Bloomreach's encodings and limits for customer properties and event properties, with no I/O.

Sources: ../shared/reference/bloomreach-contract.md §5. Dates are Unix seconds; every value must
serialise under 16 KB.
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime
from typing import Any

import orjson

from perkflow.connectors.base import FieldError, field_datetime

VALUE_MAX_BYTES = 16 * 1024
MESSAGE_MAX_BYTES = 800 * 1024


def unix_seconds(moment: datetime) -> float:
    """Unix seconds; a naive datetime is UTC, never the server's local time."""
    utc = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return utc.timestamp()


def _whole_or_fraction(seconds: float) -> int | float:
    return int(seconds) if seconds == int(seconds) else seconds


def _size_checked(value: Any, where: str) -> Any:
    if len(orjson.dumps(value)) >= VALUE_MAX_BYTES:
        raise FieldError(f"{where}: Bloomreach values must be smaller than 16 KB")
    return value


def encode_property(field_type: str, value: Any, *, where: str = "value") -> Any:
    if value is None:
        return None
    if field_type == "integer":
        if isinstance(value, bool) or not isinstance(value, int):
            raise FieldError(f"{where}: expected an integer")
        return value
    if field_type == "float":
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise FieldError(f"{where}: expected a number")
        return float(value)
    if field_type == "boolean":
        if not isinstance(value, bool):
            raise FieldError(f"{where}: expected true or false")
        return value
    if field_type == "date":
        if isinstance(value, datetime):
            day = datetime.fromtimestamp(unix_seconds(value), UTC).date()
        elif isinstance(value, date):
            day = value
        else:
            try:
                day = date.fromisoformat(str(value))
            except ValueError:
                raise FieldError(f"{where}: {str(value)[:40]!r} is not an ISO-8601 date") from None
        return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())
    if field_type == "datetime":
        return _whole_or_fraction(unix_seconds(field_datetime(value, where)))
    if field_type == "string":
        return _size_checked(str(value), where)
    if field_type in ("array", "array_of_objects"):
        if not isinstance(value, list):
            raise FieldError(f"{where}: expected an array")
        return _size_checked(value, where)
    if field_type == "object":
        if not isinstance(value, dict):
            raise FieldError(f"{where}: expected an object")
        return _size_checked(value, where)
    raise FieldError(f"{where}: unknown field type {field_type!r}")


def check_property_name(name: str) -> None:
    if not name or len(name) > 255:
        raise FieldError("Bloomreach property names are 1-255 characters")
    if not name.isascii():
        raise FieldError("Bloomreach property names must be ASCII")


def event_properties(properties: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    clean: dict[str, Any] = {}
    dropped: list[str] = []
    for key, value in properties.items():
        if value is None:
            continue
        if isinstance(value, datetime):
            value = _whole_or_fraction(unix_seconds(value))
        try:
            check_property_name(key)
            clean[key] = _size_checked(value, key)
        except FieldError as exc:
            dropped.append(f"{key}: {exc}")
    return clean, dropped
