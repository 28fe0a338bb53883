"""Braze's encodings and limits for custom attributes and event properties, with no I/O.

Sources: ../shared/reference/braze-contract.md §3-§5. A value Braze would refuse raises FieldError
so that one bad field is reported and left out instead of failing the whole request.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, date, datetime
from typing import Any

import orjson

from perkflow.connectors.base import FieldError, field_datetime

STRING_MAX = 255
KEY_MAX = 255
OBJECT_MAX_BYTES = 50 * 1024
OBJECTS_ARRAY_MAX_BYTES = 100 * 1024
EVENT_PROPERTIES_MAX_BYTES = 50 * 1024
IDENTIFIER_KEYS = {"external_id", "user_alias", "braze_id", "email", "phone"}
CONTROL_KEYS = {"_update_existing_only", "_merge_objects", "app_id"}
RESERVED_EVENT_PROPERTIES = {"time", "event_name"}
ISO_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?$")
ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
MAX_YEAR = 3000  # later years are kept as strings at the top level and dropped inside objects


def as_utc(moment: datetime) -> datetime:
    """A naive datetime is UTC (as Braze reads a time without a zone), never the server's local time."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def braze_time(moment: datetime) -> str:
    """ISO-8601 in UTC with milliseconds, the form Braze parses as a time in every context."""
    utc = as_utc(moment)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def parse_datetime(value: Any, where: str) -> datetime:
    """A datetime from a datetime or an ISO-8601 string, checked against Braze's year range."""
    value = field_datetime(value, where)
    if value.year > MAX_YEAR:
        raise FieldError(f"{where}: Braze keeps times up to the year {MAX_YEAR}")
    return value


def parse_date(value: Any, where: str) -> date:
    if isinstance(value, datetime):
        return as_utc(value).date()
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise FieldError(f"{where}: {str(value)[:40]!r} is not an ISO-8601 date (YYYY-MM-DD)") from None


def _nested_time(text: str) -> str | None:
    """A string inside an object that denotes a date or time, as Braze's $time wants it; None if not one.

    Only strings that parse are wrapped: an invalid $time would make Braze drop every nested
    attribute of the request, a plain string only stays a string.
    """
    if ISO_DATE.match(text):
        try:
            day = date.fromisoformat(text)
        except ValueError:
            return None
        return day.isoformat() if day.year <= MAX_YEAR else None
    if ISO_DATETIME.match(text):
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return None
        return braze_time(moment) if moment.year <= MAX_YEAR else None
    return None


def check_key(key: str, *, what: str = "attribute") -> None:
    if not key:
        raise FieldError(f"a Braze {what} name cannot be empty")
    if len(key) > KEY_MAX:
        raise FieldError(f"Braze {what} names are at most {KEY_MAX} characters")
    if key.startswith("$"):
        raise FieldError(f"Braze {what} names cannot start with '$' (it marks operators such as $time)")


def check_remote_field(name: str) -> None:
    check_key(name)
    if name in IDENTIFIER_KEYS - {"email", "phone"} or name in CONTROL_KEYS:
        raise FieldError(f"{name!r} is a Braze identifier or control key, not an attribute")


def _string(value: str, where: str) -> str:
    if len(value) > STRING_MAX:
        raise FieldError(
            f"{where}: Braze keeps strings of at most {STRING_MAX} characters, this has {len(value)}"
        )
    return value


def _nested(value: Any, where: str) -> Any:
    """A value inside a nested object: dates become {"$time": ...}; null is refused (Braze would drop
    every nested attribute of the request)."""
    if value is None:
        raise FieldError(f"{where}: null is not allowed inside a Braze nested object")
    if isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise FieldError(f"{where}: not a finite number")
        return value
    if isinstance(value, str):
        moment = _nested_time(value)
        if moment is not None:
            return {"$time": moment}
        return _string(value, where)
    if isinstance(value, list):
        return [_nested(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        out = {}
        for key, inner in value.items():
            check_key(str(key), what="nested key")
            if " " in str(key):
                raise FieldError(f"{where}: Braze nested keys cannot contain spaces ({key!r})")
            out[key] = _nested(inner, f"{where}.{key}")
        return out
    if isinstance(value, datetime):
        return {"$time": braze_time(parse_datetime(value, where))}
    if isinstance(value, date):
        if value.year > MAX_YEAR:
            raise FieldError(f"{where}: Braze keeps dates up to the year {MAX_YEAR}")
        return {"$time": value.isoformat()}
    raise FieldError(f"{where}: unsupported value")


def _property(value: Any, where: str) -> Any:
    """A value inside an event property: Braze reads ISO-8601 strings as times there, and `$` keys
    are operators; nulls inside are left out."""
    if isinstance(value, dict):
        out = {}
        for key, inner in value.items():
            check_key(str(key), what="event property")
            if inner is not None:
                out[key] = _property(inner, f"{where}.{key}")
        return out
    if isinstance(value, list):
        return [_property(v, f"{where}[{i}]") for i, v in enumerate(value) if v is not None]
    if isinstance(value, str):
        return _string(value, where)
    if isinstance(value, float) and not math.isfinite(value):
        raise FieldError(f"{where}: not a finite number")
    if isinstance(value, datetime):
        return braze_time(value)
    if isinstance(value, date):
        return value.isoformat()
    return value


def encode_attribute(field_type: str, value: Any, *, array_max: int = 25, where: str = "value") -> Any:
    """A typed loyalty value as Braze expects it; None means "remove the attribute"."""
    if value is None:
        return None
    if field_type == "integer":
        if isinstance(value, bool) or not isinstance(value, int):
            raise FieldError(f"{where}: expected an integer")
        return value
    if field_type == "float":
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise FieldError(f"{where}: expected a number")
        return float(value)  # Braze infers float only from a number with a decimal point
    if field_type == "string":
        return _string(str(value), where)
    if field_type == "boolean":
        if not isinstance(value, bool):
            raise FieldError(f"{where}: expected true or false")
        return value
    if field_type == "date":
        day = parse_date(value, where)
        if day.year > MAX_YEAR:
            raise FieldError(f"{where}: Braze keeps dates up to the year {MAX_YEAR}")
        return day.isoformat()
    if field_type == "datetime":
        return braze_time(parse_datetime(value, where))
    if field_type == "array":
        if not isinstance(value, list):
            raise FieldError(f"{where}: expected an array")
        if len(value) > array_max:
            raise FieldError(f"{where}: Braze keeps at most {array_max} array items, this has {len(value)}")
        for i, v in enumerate(value):
            if v is None or isinstance(v, dict | list):
                raise FieldError(f"{where}[{i}]: Braze arrays hold strings, numbers or booleans")
            if isinstance(v, float) and not math.isfinite(v):
                raise FieldError(f"{where}[{i}]: not a finite number")
        return [_string(v, f"{where}[{i}]") if isinstance(v, str) else v for i, v in enumerate(value)]
    if field_type == "object":
        if not isinstance(value, dict):
            raise FieldError(f"{where}: expected an object")
        encoded = _nested(value, where)
        if len(orjson.dumps(encoded)) > OBJECT_MAX_BYTES:
            raise FieldError(f"{where}: Braze nested objects are at most 50 KB")
        return encoded
    if field_type == "array_of_objects":
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise FieldError(f"{where}: expected an array of objects")
        encoded = [_nested(v, f"{where}[{i}]") for i, v in enumerate(value)]
        if len(orjson.dumps(encoded)) > OBJECTS_ARRAY_MAX_BYTES:
            raise FieldError(f"{where}: Braze arrays of objects are at most 100 KB")
        return encoded
    raise FieldError(f"{where}: unknown field type {field_type!r}")


def infer_type(value: Any) -> str:
    """The loyalty type of a bare JSON value (for values a workflow computes)."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, datetime):
        return "datetime"
    if isinstance(value, date):
        return "date"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array_of_objects" if value and all(isinstance(v, dict) for v in value) else "array"
    if isinstance(value, str) and ISO_DATETIME.match(value):
        return "datetime"
    return "string"


def event_properties(properties: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Event properties Braze accepts, and why any were left out (one line each, naming the property).

    `time` and `event_name` are reserved property keys, so they travel as `time_` and `event_name_`.
    """
    clean: dict[str, Any] = {}
    dropped: list[str] = []
    for key, value in properties.items():
        if value is None:
            continue
        name = f"{key}_" if key in RESERVED_EVENT_PROPERTIES else key
        try:
            check_key(name, what="event property")
            clean[name] = _property(value, name)
        except FieldError as exc:
            dropped.append(str(exc))
    if len(orjson.dumps(clean)) > EVENT_PROPERTIES_MAX_BYTES:
        nested = sorted(k for k, v in clean.items() if isinstance(v, dict | list))
        dropped.append(f"{', '.join(nested)}: left out to keep the properties under 50 KB")
        clean = {k: v for k, v in clean.items() if not isinstance(v, dict | list)}
    return clean, dropped
