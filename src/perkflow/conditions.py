"""Conditions on attributes, shared by workflow filters and segment rules; no I/O.

A condition is `{"attribute": "tier", "operator": "eq", "value": "Gold"}`. A group combines conditions
with `match: all` (AND) or `match: any` (OR). Attributes are dotted paths into a view (a dict built
by the caller); dates may be given as ISO strings, and `before` / `after` also take moments relative
to the evaluation time (`now`, `now-30d`, `now+2h`, `today`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

OPERATORS = (
    "eq",
    "ne",
    "gt",
    "gte",
    "lt",
    "lte",
    "between",
    "contains",
    "not_contains",
    "in",
    "not_in",
    "exists",
    "before",
    "after",
    "in_date",
)
# The names people type (and Antavo's labels) for the operators.
ALIASES = {
    "equal": "eq",
    "equals": "eq",
    "==": "eq",
    "not_equal": "ne",
    "!=": "ne",
    ">": "gt",
    ">=": "gte",
    "<": "lt",
    "<=": "lte",
    "in_list": "in",
    "not_in_list": "not_in",
}
RELATIVE = re.compile(r"^(now|today)(?:\s*([+-])\s*(\d{1,6})\s*([mhdw]))?$")
UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
MISSING: Any = object()

Match = Literal["all", "any"]


class ConditionError(ValueError):
    """A malformed condition; `where` says which one (e.g. `conditions[2].value`)."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}")
        self.where = where
        self.message = message


@dataclass(frozen=True, slots=True)
class Condition:
    attribute: str
    operator: str
    value: Any
    path: tuple[str, ...]

    @property
    def root(self) -> str:
        return self.path[0]

    def to_dict(self) -> dict[str, Any]:
        return {"attribute": self.attribute, "operator": self.operator, "value": self.value}


@dataclass(frozen=True, slots=True)
class ConditionGroup:
    match: Match
    conditions: tuple[Condition, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"match": self.match, "conditions": [c.to_dict() for c in self.conditions]}

    def is_time_relative(self) -> bool:
        """Whether the outcome can change with time alone (so periodic re-evaluation is needed)."""
        return any(
            c.operator == "in_date"
            or (c.operator in ("before", "after") and isinstance(c.value, str) and RELATIVE.match(c.value))
            for c in self.conditions
        )


ATTRIBUTE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*$")


def parse_condition(raw: Any, where: str) -> Condition:
    if not isinstance(raw, Mapping):
        raise ConditionError(where, "a condition is an object with attribute, operator and value")
    unknown = set(raw) - {"attribute", "operator", "value"}
    if unknown:
        raise ConditionError(where, f"unknown keys {sorted(unknown)}")
    attribute = raw.get("attribute")
    if not isinstance(attribute, str) or not ATTRIBUTE.match(attribute):
        raise ConditionError(f"{where}.attribute", "expected a field name such as tier or points_balance")
    operator = raw.get("operator")
    operator = ALIASES.get(operator, operator) if isinstance(operator, str) else operator
    if operator not in OPERATORS:
        raise ConditionError(
            f"{where}.operator", f"unknown operator {raw.get('operator')!r}; use {OPERATORS}"
        )
    value = raw.get("value", MISSING)
    value = _check_value(operator, value, f"{where}.value")
    return Condition(attribute, operator, value, tuple(attribute.split(".")))


def _check_value(operator: str, value: Any, where: str) -> Any:
    if operator == "exists":
        if value is MISSING:
            return True
        if not isinstance(value, bool):
            raise ConditionError(where, "exists takes true or false")
        return value
    if operator == "in_date":
        if value is MISSING or value is None:
            return "today"
        if not isinstance(value, str) or not RELATIVE.match(value) or not value.startswith("today"):
            raise ConditionError(where, "in_date takes 'today', or 'today+7d' / 'today-1d'")
        return value
    if value is MISSING:
        raise ConditionError(where, f"the {operator} operator needs a value")
    if operator == "between":
        if not isinstance(value, list) or len(value) != 2:
            raise ConditionError(where, "between takes [low, high]")
        low, high = value
        if _comparable(low) is None or _comparable(high) is None:
            raise ConditionError(where, "between takes two numbers or two dates")
        return value
    if operator in ("in", "not_in"):
        if not isinstance(value, list) or not value:
            raise ConditionError(where, f"{operator} takes a non-empty list of values")
        return value
    if operator in ("gt", "gte", "lt", "lte"):
        if _comparable(value) is None:
            raise ConditionError(where, f"{operator} takes a number or a date")
        return value
    if operator in ("before", "after"):
        if _moment(value, datetime(2000, 1, 1, tzinfo=UTC)) is None:
            raise ConditionError(
                where, f"{operator} takes a date, a datetime, or a relative moment such as now-30d"
            )
        return value
    if operator in ("contains", "not_contains") and isinstance(value, list | dict):
        raise ConditionError(where, f"{operator} takes one value (a substring or a list element)")
    return value


def parse_group(raw: Any, where: str = "filter") -> ConditionGroup:
    if not isinstance(raw, Mapping):
        raise ConditionError(where, "expected {match, conditions}")
    match = raw.get("match", "all")
    if match not in ("all", "any"):
        raise ConditionError(f"{where}.match", "match is all (AND) or any (OR)")
    conditions = raw.get("conditions")
    if not isinstance(conditions, list) or not conditions:
        raise ConditionError(f"{where}.conditions", "expected a non-empty list of conditions")
    if len(conditions) > 100:
        raise ConditionError(f"{where}.conditions", "at most 100 conditions")
    return ConditionGroup(
        match, tuple(parse_condition(c, f"{where}.conditions[{i}]") for i, c in enumerate(conditions))
    )


# -- evaluation -------------------------------------------------------------------------------------------


def lookup(view: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    """The value at a dotted path, or MISSING."""
    current: Any = view
    for part in path:
        if isinstance(current, Mapping):
            current = current.get(part, MISSING)
        elif isinstance(current, list) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        else:
            return MISSING
        if current is MISSING:
            return MISSING
    return current


def _moment(value: Any, now: datetime) -> datetime | None:
    """A value as an aware UTC datetime (dates at midnight UTC), or None if it is not a moment."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    if isinstance(value, str):
        relative = RELATIVE.match(value.strip())
        if relative:
            base, sign, amount, unit = relative.groups()
            moment = now if base == "now" else now.replace(hour=0, minute=0, second=0, microsecond=0)
            if amount:
                delta = timedelta(**{UNITS[unit]: int(amount)})
                moment = moment + delta if sign == "+" else moment - delta
            return moment
        text = value.strip()
        if len(text) == 10:
            try:
                return _moment(date.fromisoformat(text), now)
            except ValueError:
                return None
        if len(text) >= 16 and text[4] == "-" and text[10] in "T ":
            try:
                parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
            except ValueError:
                return None
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


def moment_of(value: Any) -> datetime | None:
    """A date, datetime or ISO string as an aware UTC datetime; None for anything else."""
    if isinstance(value, str) and RELATIVE.match(value.strip()):
        return None
    return _moment(value, datetime(2000, 1, 1, tzinfo=UTC))


def moment_at(value: Any, now: datetime) -> datetime | None:
    """Like `moment_of`, with relative moments (`now-30d`, `today`) resolved against `now`."""
    return _moment(value, now)


def _comparable(value: Any) -> Any:
    """Numbers as numbers, moments as datetimes; None for anything that has no order."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return value
    return _moment(value, datetime(2000, 1, 1, tzinfo=UTC))


def _order(left: Any, right: Any, now: datetime) -> tuple[Any, Any] | None:
    if isinstance(left, bool) or isinstance(right, bool):
        return None
    if isinstance(left, int | float) and isinstance(right, int | float):
        return left, right
    a, b = _moment(left, now), _moment(right, now)
    if a is None or b is None:
        return None
    return a, b


def _equal(actual: Any, expected: Any, now: datetime) -> bool:
    if actual == expected and type(actual) is type(expected):
        return True
    if isinstance(actual, bool) or isinstance(expected, bool):
        return actual is expected
    if isinstance(actual, int | float) and isinstance(expected, int | float):
        return actual == expected
    if isinstance(actual, date | datetime) or isinstance(expected, date | datetime):
        pair = _order(actual, expected, now)
        return pair is not None and pair[0] == pair[1]
    return bool(actual == expected)


def _in_date(actual: Any, spec: str, now: datetime) -> bool:
    moment = _moment(actual, now)
    target = _moment(spec, now)
    if moment is None or target is None:
        return False
    if (moment.month, moment.day) == (target.month, target.day):
        return True
    # A 29 February anniversary is celebrated on 28 February in other years.
    if (moment.month, moment.day) == (2, 29) and (target.month, target.day) == (2, 28):
        try:
            date(target.year, 2, 29)
        except ValueError:
            return True
    return False


def check(condition: Condition, actual: Any, now: datetime) -> bool:
    """Whether one condition holds for the attribute's value (MISSING when absent)."""
    op = condition.operator
    expected = condition.value
    if op == "exists":
        present = actual is not MISSING and actual is not None and actual != "" and actual != []
        return present is expected
    if actual is MISSING or actual is None:
        return op in ("ne", "not_in", "not_contains")
    if op == "eq":
        return _equal(actual, expected, now)
    if op == "ne":
        return not _equal(actual, expected, now)
    if op in ("gt", "gte", "lt", "lte", "before", "after"):
        pair = _order(actual, expected, now)
        if pair is None:
            return False
        a, b = pair
        if op in ("gt", "after"):
            return bool(a > b)
        if op == "gte":
            return bool(a >= b)
        if op in ("lt", "before"):
            return bool(a < b)
        return bool(a <= b)
    if op == "between":
        low, high = _order(actual, expected[0], now), _order(actual, expected[1], now)
        return low is not None and high is not None and low[1] <= low[0] <= high[1]
    if op in ("contains", "not_contains"):
        if isinstance(actual, str):
            found = isinstance(expected, str) and expected in actual
        elif isinstance(actual, list):
            found = any(_equal(item, expected, now) for item in actual)
        else:
            found = False
        return found if op == "contains" else not found
    if op in ("in", "not_in"):
        found = any(_equal(actual, item, now) for item in expected)
        return found if op == "in" else not found
    if op == "in_date":
        return _in_date(actual, expected, now)
    raise AssertionError(op)  # pragma: no cover - parse_condition admits only known operators


Resolver = Callable[[Condition], Any]


def evaluate(group: ConditionGroup, resolve: Resolver, now: datetime) -> bool:
    """Whether the group holds; `resolve` returns a condition's attribute value (or MISSING)."""
    if group.match == "all":
        return all(check(c, resolve(c), now) for c in group.conditions)
    return any(check(c, resolve(c), now) for c in group.conditions)


def explain(group: ConditionGroup, resolve: Resolver, now: datetime) -> list[dict[str, Any]]:
    """Each condition with the value it saw and its outcome (for dry runs)."""
    out = []
    for c in group.conditions:
        actual = resolve(c)
        out.append(
            {
                **c.to_dict(),
                "actual": None if actual is MISSING else _jsonable(actual),
                "passed": check(c, actual, now),
            }
        )
    return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    return value
