"""Custom attributes as Braze treats them: JSON values parsed into operations, type rules, and application."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import orjson

from perkflow.sandbox.braze.config import BrazeSandboxConfig
from perkflow.sandbox.braze.times import OutOfRangeYear, format_time, parse_time

Scalar = str | int | float | bool
NESTED_TYPES = frozenset({"object", "array_of_objects"})


class AttributeRejected(Exception):
    """One attribute value that Braze would not apply; the rest of its object still is."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidNestedValue(Exception):
    """A bad value inside a nested attribute: Braze then drops every nested update of the request."""

    def __init__(self, attribute: str, path: str, reason: str) -> None:
        super().__init__(f"{attribute}: {path}: {reason}")
        self.message = (
            f"Custom attribute '{attribute}' has an invalid nested value at '{path}' ({reason}); "
            "all nested attribute updates in this request were dropped"
        )


@dataclass(frozen=True)
class SetScalar:
    value: Scalar


@dataclass(frozen=True)
class Unset:
    pass


@dataclass(frozen=True)
class Increment:
    amount: int


@dataclass(frozen=True)
class SetArray:
    values: list[Scalar]


@dataclass(frozen=True)
class EditArray:
    add: list[Scalar]
    remove: list[Scalar]


@dataclass(frozen=True)
class SetObject:
    value: dict[str, Any]
    merge: bool


@dataclass(frozen=True)
class SetObjectArray:
    items: list[dict[str, Any]]


@dataclass(frozen=True)
class ObjectMatch:
    key: str
    value: Any

    def matches(self, item: dict[str, Any]) -> bool:
        return self.key in item and same_value(item[self.key], self.value)


@dataclass(frozen=True)
class EditObjectArray:
    add: list[dict[str, Any]] = field(default_factory=list)
    remove: list[ObjectMatch] = field(default_factory=list)
    update: list[tuple[ObjectMatch, dict[str, Any]]] = field(default_factory=list)
    merge: bool = False


Operation = (
    SetScalar | Unset | Increment | SetArray | EditArray | SetObject | SetObjectArray | EditObjectArray
)


def is_nested(operation: Operation) -> bool:
    """Whether the operation is a nested-attribute update (the kind a bad nested value cancels)."""
    return isinstance(operation, SetObject | SetObjectArray | EditObjectArray)


def same_value(left: Any, right: Any) -> bool:
    """JSON equality that keeps true apart from 1 and 1 apart from 1.0, as JSON types do."""
    return type(left) is type(right) and left == right


def _identity(value: Scalar) -> tuple[str, Scalar]:
    return (type(value).__name__, value)


def leaf_count(value: Any) -> int:
    """Keys carrying a value in a nested object: what writing it costs (§7: a 7-key object = 7)."""
    if isinstance(value, dict):
        return sum(leaf_count(child) for child in value.values())
    return 1


def operation_data_points(operation: Operation) -> int:
    """Data points one applied operation costs; the rule is spelled out in `BrazeSandbox.stats`."""
    match operation:
        case EditArray(add=add, remove=remove):
            return len(add) + len(remove)
        case SetObject(value=value):
            return max(1, leaf_count(value))
        case SetObjectArray(items=items):
            return max(1, sum(leaf_count(item) for item in items))
        case EditObjectArray(add=add, remove=remove, update=update):
            return (
                len(remove)
                + sum(max(1, leaf_count(new)) for _, new in update)
                + sum(max(1, leaf_count(item)) for item in add)
            )
        case _:
            return 1


def key_problem(key: str, config: BrazeSandboxConfig) -> str | None:
    if not key:
        return "Custom attribute keys must not be empty"
    if key.startswith("$"):
        return f"Custom attribute key '{key[:40]}' is invalid: keys may not start with '$'"
    if len(key) > config.key_max_chars:
        return f"Custom attribute key '{key[:40]}…' is longer than {config.key_max_chars} characters"
    return None


def parse_operation(key: str, value: Any, *, merge: bool, config: BrazeSandboxConfig) -> Operation:
    """Read one attribute value as the operation Braze performs for it.

    Raises AttributeRejected for a malformed value and InvalidNestedValue for a bad value inside a nested
    object (which cancels the request's nested updates). Type rules that depend on stored data are
    checked later, by `apply_operation`.
    """
    if value is None:
        return Unset()
    if isinstance(value, bool | int | float | str):
        _check_string(key, value, config)
        return SetScalar(value)
    if isinstance(value, list):
        return _parse_list(key, value, config)
    if isinstance(value, dict):
        return _parse_object(key, value, merge=merge, config=config)
    raise AttributeRejected(f"Custom attribute '{key}' has an unsupported value")


def _check_string(key: str, value: Any, config: BrazeSandboxConfig) -> None:
    if isinstance(value, str) and len(value) > config.string_max_chars:
        raise AttributeRejected(
            f"Custom attribute '{key}' must be {config.string_max_chars} characters or fewer"
        )


def _scalars(key: str, values: list[Any], config: BrazeSandboxConfig) -> list[Scalar]:
    for item in values:
        if item is None or isinstance(item, list | dict):
            raise AttributeRejected(
                f"Custom attribute '{key}' arrays may only hold strings, numbers or booleans"
            )
        _check_string(key, item, config)
    return list(values)


def _parse_list(key: str, values: list[Any], config: BrazeSandboxConfig) -> Operation:
    if values and all(isinstance(item, dict) for item in values):
        items = [_normalize_nested(key, f"[{i}]", item, config) for i, item in enumerate(values)]
        _check_size(key, values, config.array_of_objects_max_bytes)
        return SetObjectArray(items)
    return SetArray(_scalars(key, values, config))


def _parse_object(key: str, value: dict[str, Any], *, merge: bool, config: BrazeSandboxConfig) -> Operation:
    keys = set(value)
    if keys == {"inc"}:
        amount = value["inc"]
        if isinstance(amount, bool) or not isinstance(amount, int):
            raise AttributeRejected(f"Custom attribute '{key}' can only be incremented by an integer")
        return Increment(amount)
    if keys and keys <= {"add", "remove"}:
        if not all(isinstance(v, list) for v in value.values()):
            raise AttributeRejected(f"Custom attribute '{key}' 'add' and 'remove' must be arrays")
        return EditArray(
            add=_scalars(key, value.get("add", []), config),
            remove=_scalars(key, value.get("remove", []), config),
        )
    if keys and keys <= {"$add", "$remove", "$update"}:
        return _parse_object_array_edit(key, value, merge=merge, config=config)
    if keys == {"$time"}:
        # A top-level time wrapped like a nested one: the plain string is what Braze expects here.
        raw = value["$time"]
        if not isinstance(raw, str):
            raise AttributeRejected(f"Custom attribute '{key}' has an invalid '$time'")
        return SetScalar(raw)
    normalized = _normalize_nested(key, "", value, config)
    _check_size(key, value, config.nested_object_max_bytes)
    return SetObject(normalized, merge)


def _parse_object_array_edit(
    key: str, value: dict[str, Any], *, merge: bool, config: BrazeSandboxConfig
) -> EditObjectArray:
    def entries(op: str) -> list[dict[str, Any]]:
        found = value.get(op, [])
        if not isinstance(found, list) or not all(isinstance(item, dict) for item in found):
            raise AttributeRejected(f"Custom attribute '{key}' '{op}' must be an array of objects")
        return found

    def match(entry: dict[str, Any], op: str) -> ObjectMatch:
        identifier_key = entry.get("$identifier_key")
        if not isinstance(identifier_key, str) or "$identifier_value" not in entry:
            raise AttributeRejected(
                f"Custom attribute '{key}' '{op}' entries need '$identifier_key' and '$identifier_value'"
            )
        return ObjectMatch(identifier_key, entry["$identifier_value"])

    add = [_normalize_nested(key, f"$add[{i}]", item, config) for i, item in enumerate(entries("$add"))]
    remove = [match(entry, "$remove") for entry in entries("$remove")]
    update = []
    for i, entry in enumerate(entries("$update")):
        new_object = entry.get("$new_object")
        if not isinstance(new_object, dict):
            raise AttributeRejected(f"Custom attribute '{key}' '$update' entries need a '$new_object' object")
        update.append((match(entry, "$update"), _normalize_nested(key, f"$update[{i}]", new_object, config)))
    return EditObjectArray(add=add, remove=remove, update=update, merge=merge)


def _check_size(key: str, value: Any, limit: int) -> None:
    if len(orjson.dumps(value)) > limit:
        raise AttributeRejected(f"Custom attribute '{key}' is larger than {limit // 1024} KB")


def _normalize_nested(attribute: str, path: str, value: Any, config: BrazeSandboxConfig) -> Any:
    """A nested value as stored (`{"$time": …}` becomes an ISO string), or InvalidNestedValue."""
    where = path or "."
    if value is None:
        raise InvalidNestedValue(attribute, where, "null is not allowed inside objects")
    if isinstance(value, dict):
        if set(value) == {"$time"}:
            return _nested_time(attribute, f"{path}.$time", value["$time"])
        normalized = {}
        for child_key, child in value.items():
            child_path = f"{path}.{child_key}" if path else child_key
            if not child_key or child_key.startswith("$") or " " in child_key:
                raise InvalidNestedValue(
                    attribute, child_path, "keys must be non-empty, without spaces or '$'"
                )
            if len(child_key) > config.key_max_chars:
                raise InvalidNestedValue(
                    attribute, child_path, f"keys must be ≤ {config.key_max_chars} chars"
                )
            normalized[child_key] = _normalize_nested(attribute, child_path, child, config)
        return normalized
    if isinstance(value, list):
        return [_normalize_nested(attribute, f"{path}[{i}]", item, config) for i, item in enumerate(value)]
    if isinstance(value, str) and len(value) > config.string_max_chars:
        raise InvalidNestedValue(attribute, where, f"strings must be ≤ {config.string_max_chars} chars")
    return value


def _nested_time(attribute: str, path: str, raw: Any) -> str:
    if not isinstance(raw, str):
        raise InvalidNestedValue(attribute, path, "'$time' must be a date string")
    try:
        moment = parse_time(raw)
    except OutOfRangeYear:
        moment = None
    if moment is None:
        raise InvalidNestedValue(attribute, path, f"'{raw[:40]}' is not a valid date")
    return format_time(moment)


class AttributeTypes:
    """Workspace-wide custom attribute types: the first value received decides, unless a type is forced."""

    def __init__(self, forced: dict[str, str] | None = None) -> None:
        self._forced = dict(forced or {})
        self._inferred: dict[str, str] = {}

    def declared(self, key: str) -> str | None:
        return self._forced.get(key) or self._inferred.get(key)

    def is_forced(self, key: str) -> bool:
        return key in self._forced

    def establish(self, key: str, attribute_type: str) -> None:
        if key not in self._forced:
            self._inferred.setdefault(key, attribute_type)

    def snapshot(self) -> dict[str, str]:
        return {**self._inferred, **self._forced}


def _conflict(key: str, declared: str, received: str) -> AttributeRejected:
    return AttributeRejected(
        f"Custom attribute '{key}' is of type {declared}, so the {received} value was not applied"
    )


def _scalar_type(value: Scalar) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    return "string"


def _as_time(text: str) -> str | None:
    try:
        moment = parse_time(text)
    except OutOfRangeYear:
        return None  # Braze keeps out-of-range dates as plain strings at the top level.
    return format_time(moment) if moment is not None else None


_TRUE_STRINGS = frozenset({"1", "true", "t"})
_FALSE_STRINGS = frozenset({"0", "false", "f"})


def _coerce(value: Scalar, forced: str) -> Scalar | None:
    """The documented coercions into a forced type; None when the value cannot be coerced."""
    if forced == "boolean" and isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in _TRUE_STRINGS:
            return True
        if lowered in _FALSE_STRINGS:
            return False
        return None
    if forced in ("integer", "float") and isinstance(value, str):
        try:
            return int(value.strip()) if forced == "integer" else float(value.strip())
        except ValueError:
            return None
    if forced == "float" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return None


def _resolve_scalar(key: str, value: Scalar, types: AttributeTypes) -> tuple[Scalar, str]:
    """The stored value and its type for a scalar, after date inference and forced-type coercion."""
    declared = types.declared(key)
    received = _scalar_type(value)
    if isinstance(value, str) and declared in (None, "time"):
        as_time = _as_time(value)
        if as_time is not None:
            return as_time, "time"
    if declared is None or declared == received:
        return value, received
    if types.is_forced(key):
        coerced = _coerce(value, declared)
        if coerced is not None:
            return coerced, declared
    raise _conflict(key, declared, received)


def _require_type(key: str, types: AttributeTypes, *allowed: str, received: str) -> None:
    declared = types.declared(key)
    if declared is not None and declared not in allowed:
        raise _conflict(key, declared, received)


def _deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def apply_operation(
    custom: dict[str, Any], key: str, operation: Operation, types: AttributeTypes, config: BrazeSandboxConfig
) -> None:
    """Apply one operation to a profile's custom attributes, or raise AttributeRejected and change nothing."""
    current = custom.get(key)
    match operation:
        case Unset():
            custom.pop(key, None)
        case SetScalar(value=value):
            stored, stored_type = _resolve_scalar(key, value, types)
            custom[key] = stored
            types.establish(key, stored_type)
        case Increment(amount=amount):
            _require_type(key, types, "integer", received="increment")
            base = current if isinstance(current, int) and not isinstance(current, bool) else 0
            custom[key] = base + amount
            types.establish(key, "integer")
        case SetArray(values=values):
            if values:
                _require_type(key, types, "array", received="array")
            else:
                _require_type(key, types, "array", "array_of_objects", received="array")
            custom[key] = _capped(_distinct(values), config.array_max_items)
            if values:
                types.establish(key, "array")
        case EditArray(add=add, remove=remove):
            _require_type(key, types, "array", received="array")
            custom[key] = _edited_array(current if isinstance(current, list) else [], add, remove, config)
            types.establish(key, "array")
        case SetObject(value=value, merge=merge):
            _require_type(key, types, "object", received="object")
            custom[key] = _deep_merge(current, value) if merge and isinstance(current, dict) else value
            types.establish(key, "object")
        case SetObjectArray(items=items):
            _require_type(key, types, "array_of_objects", received="array of objects")
            custom[key] = copy.deepcopy(items)
            types.establish(key, "array_of_objects")
        case EditObjectArray():
            _require_type(key, types, "array_of_objects", received="array of objects")
            edited = _edited_object_array(current if isinstance(current, list) else [], operation)
            _check_size(key, edited, config.array_of_objects_max_bytes)
            custom[key] = edited
            types.establish(key, "array_of_objects")


def _distinct(values: list[Scalar]) -> list[Scalar]:
    seen: set[tuple[str, Scalar]] = set()
    distinct = []
    for value in values:
        if _identity(value) not in seen:
            seen.add(_identity(value))
            distinct.append(value)
    return distinct


def _capped(values: list[Scalar], max_items: int) -> list[Scalar]:
    """Braze drops the oldest elements once an array exceeds its maximum length."""
    return values[-max_items:] if len(values) > max_items else values


def _edited_array(
    current: list[Scalar], add: list[Scalar], remove: list[Scalar], config: BrazeSandboxConfig
) -> list[Scalar]:
    # Removals first, then additions: {"add":["c"],"remove":["a"]} swaps a for c, and re-adding an
    # element moves it to the end, where it is the newest and the last to be dropped by the cap.
    removed = {_identity(value) for value in remove}
    edited = [value for value in current if _identity(value) not in removed]
    for value in add:
        edited = [existing for existing in edited if not same_value(existing, value)]
        edited.append(value)
    return _capped(edited, config.array_max_items)


def _edited_object_array(current: list[Any], edit: EditObjectArray) -> list[Any]:
    edited = [copy.deepcopy(item) for item in current if not _matches_any(item, edit.remove)]
    for match, new_object in edit.update:
        for position, item in enumerate(edited):
            if isinstance(item, dict) and match.matches(item):
                edited[position] = _deep_merge(item, new_object) if edit.merge else copy.deepcopy(new_object)
    edited.extend(copy.deepcopy(item) for item in edit.add)
    return edited


def _matches_any(item: Any, matches: list[ObjectMatch]) -> bool:
    return isinstance(item, dict) and any(match.matches(item) for match in matches)
