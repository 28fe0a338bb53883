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

from perkflow.connectors.base import FieldError

STRING_MAX = 255
KEY_MAX = 255
OBJECT_MAX_BYTES = 50 * 1024
OBJECTS_ARRAY_MAX_BYTES = 100 * 1024
EVENT_PROPERTIES_MAX_BYTES = 50 * 1024
IDENTIFIER_KEYS = {"external_id", "user_alias", "braze_id", "email", "phone"}
CONTROL_KEYS = {"_update_existing_only", "_merge_objects", "app_id"}
RESERVED_EVENT_PROPERTIES = {"time", "event_name"}
ISO_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})$")


def braze_time(moment: datetime) -> str:
    """ISO-8601 in UTC with milliseconds, the form Braze parses as a time in every context."""
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


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
        if ISO_DATETIME.match(value):
            return {"$time": value}
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
        return {"$time": braze_time(value)}
    if isinstance(value, date):
        return {"$time": value.isoformat()}
    raise FieldError(f"{where}: unsupported value")


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
        if isinstance(value, datetime):
            return value.astimezone(UTC).date().isoformat()
        if isinstance(value, date):
            return value.isoformat()
        return date.fromisoformat(str(value)).isoformat()
    if field_type == "datetime":
        if isinstance(value, str):
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        if not isinstance(value, datetime):
            raise FieldError(f"{where}: expected a datetime")
        return braze_time(value)
    if field_type == "array":
        if not isinstance(value, list):
            raise FieldError(f"{where}: expected an array")
        if len(value) > array_max:
            raise FieldError(f"{where}: Braze keeps at most {array_max} array items, this has {len(value)}")
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
    """Event properties Braze accepts, and the names of those left out with the reason."""
    clean: dict[str, Any] = {}
    dropped: list[str] = []
    for key, value in properties.items():
        if value is None:
            continue
        name = f"{key}_" if key in RESERVED_EVENT_PROPERTIES else key
        try:
            check_key(name, what="event property")
            if isinstance(value, str):
                clean[name] = _string(value, name)
            elif isinstance(value, dict | list):
                clean[name] = _nested(value, name)
            else:
                clean[name] = value
        except FieldError as exc:
            dropped.append(str(exc))
    if len(orjson.dumps(clean)) > EVENT_PROPERTIES_MAX_BYTES:
        dropped.append("properties over 50 KB were left out")
        clean = {k: v for k, v in clean.items() if not isinstance(v, dict | list)}
    return clean, dropped
