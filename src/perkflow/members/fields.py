"""The loyalty field types and how a value is checked and normalised for each, with no I/O."""

from __future__ import annotations

import math
import re
from datetime import date, datetime
from typing import Any, TypeGuard

from perkflow.core.clock import isoformat_z
from perkflow.core.limits import INT64_MAX, INT64_MIN, fits_int64, storable_date, storable_utc

FIELD_TYPES = (
    "string",
    "integer",
    "float",
    "boolean",
    "date",
    "datetime",
    "array",
    "object",
    "array_of_objects",
)

FIELD_KEY = re.compile(r"^[a-z][a-z0-9_]{0,63}$")

# The one rule for loyalty member ids, wherever one arrives (member create, events' `customer`,
# URL paths, the importer, members created by promotions). The pattern is for pydantic and OpenAPI,
# whose `$` is the end of the text; Python's `$` would also match before a final newline, hence
# fullmatch below.
MEMBER_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@+\-]{0,127}$"
MEMBER_ID_RULE = "1-128 letters, digits or ._:@+- starting with a letter or digit"
_MEMBER_ID = re.compile(MEMBER_ID_PATTERN.removeprefix("^").removesuffix("$"))


def is_member_id(value: Any) -> TypeGuard[str]:
    return isinstance(value, str) and _MEMBER_ID.fullmatch(value) is not None


MAX_STRING = 10_000
MAX_ITEMS = 1_000

# Member attributes with their own columns; custom fields may not reuse these names.
BUILTIN_FIELDS = {"id", "email", "first_name", "last_name", "birth_date", "status"}


class FieldValueError(ValueError):
    pass


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def normalize_value(field_type: str, value: Any) -> Any:
    """Return the stored form of `value` for `field_type`, or raise FieldValueError saying why."""
    if value is None:
        return None
    if field_type == "string":
        if not isinstance(value, str):
            raise FieldValueError("expected a string")
        if len(value) > MAX_STRING:
            raise FieldValueError(f"longer than {MAX_STRING} characters")
        return value
    if field_type == "integer":
        if isinstance(value, bool) or not isinstance(value, int):
            raise FieldValueError("expected an integer")
        if not fits_int64(value):
            raise FieldValueError(f"expected an integer from {INT64_MIN} to {INT64_MAX}")
        return value
    if field_type == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise FieldValueError("expected a number")
        if not math.isfinite(value):
            raise FieldValueError("expected a finite number")
        return float(value)
    if field_type == "boolean":
        if not isinstance(value, bool):
            raise FieldValueError("expected true or false")
        return value
    if field_type == "date":
        if not isinstance(value, str):
            raise FieldValueError("expected a date as YYYY-MM-DD")
        try:
            day = date.fromisoformat(value)
        except ValueError as exc:
            raise FieldValueError("expected a date as YYYY-MM-DD") from exc
        try:
            return storable_date(day).isoformat()
        except ValueError as exc:
            raise FieldValueError(str(exc)) from exc
    if field_type == "datetime":
        return isoformat_z(parse_datetime(value))
    if field_type == "array":
        if not isinstance(value, list) or not all(_scalar(v) and v is not None for v in value):
            raise FieldValueError("expected an array of strings, numbers or booleans")
        if len(value) > MAX_ITEMS:
            raise FieldValueError(f"more than {MAX_ITEMS} items")
        return value
    if field_type == "object":
        if not isinstance(value, dict):
            raise FieldValueError("expected an object")
        return value
    if field_type == "array_of_objects":
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise FieldValueError("expected an array of objects")
        if len(value) > MAX_ITEMS:
            raise FieldValueError(f"more than {MAX_ITEMS} items")
        return value
    raise FieldValueError(f"unknown field type {field_type!r}")


def parse_datetime(value: Any) -> datetime:
    """An ISO-8601 datetime with a UTC offset (or Z), as an aware UTC datetime."""
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError as exc:
            raise FieldValueError("expected an ISO-8601 datetime such as 2026-03-14T09:30:00Z") from exc
    else:
        raise FieldValueError("expected an ISO-8601 datetime such as 2026-03-14T09:30:00Z")
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise FieldValueError("the datetime needs a UTC offset or Z")
    try:
        return storable_utc(parsed)
    except ValueError as exc:
        raise FieldValueError(str(exc)) from exc


def infer_type(value: Any) -> str | None:
    """The field type a JSON value would be stored as (used to describe custom event attributes)."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array_of_objects" if value and all(isinstance(v, dict) for v in value) else "array"
    return None
