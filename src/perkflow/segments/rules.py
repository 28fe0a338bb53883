"""Segment rules: nested AND/OR groups of conditions, what they depend on, and evaluation; no I/O.

A rule set is a condition group of `perkflow.conditions` whose items may themselves be groups:

    {"match": "all", "conditions": [
        {"attribute": "tier", "operator": "in", "value": ["Gold", "Platinum"]},
        {"match": "any", "conditions": [
            {"attribute": "activity.checkout.last_at", "operator": "before", "value": "now-30d"},
            {"attribute": "activity.checkout.last_at", "operator": "exists", "value": false}]}]}

Attributes are those of the member view (`perkflow.members.views`): profile fields, custom catalogue
fields (dotted paths into object fields), the standing in the segment's program (tier, points, opt-in)
and per-type activity statistics `activity.<type>.count` / `activity.<type>.last_at`. `segments` is
refused: a segment defined by other segments' membership would depend on evaluation order.

Parsing also works out what the rules depend on (`depends_on`, keys such as `tier`, `points_balance`,
`email`, `activity.checkout`), so that the activity subscriber evaluates a member only for segments an
activity can change, and whether the outcome can change with time alone (`time_relative`), which is
what the periodic re-evaluation is for.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from perkflow.conditions import (
    RELATIVE,
    Condition,
    ConditionError,
    Match,
    check,
    moment_at,
    parse_condition,
)
from perkflow.members.views import DATE_FIELDS, PROFILE_KEYS
from perkflow.sync.fields import STANDING_FIELDS, fields_changed_by

MAX_DEPTH = 4
MAX_CONDITIONS = 100
ACTIVITY_STATS = ("count", "last_at")
ACTIVITY_TYPE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
SEGMENT_ACTIVITY_TYPES = frozenset({"segment_entered", "segment_left"})
# A profile activity may change any member attribute (it also reports a member's creation).
EVERYTHING = "*"


@dataclass(frozen=True, slots=True)
class RuleGroup:
    match: Match
    items: tuple[Condition | RuleGroup, ...]

    def leaves(self) -> Iterator[Condition]:
        for item in self.items:
            if isinstance(item, RuleGroup):
                yield from item.leaves()
            else:
                yield item

    def to_dict(self) -> dict[str, Any]:
        return {"match": self.match, "conditions": [item.to_dict() for item in self.items]}


@dataclass(frozen=True, slots=True)
class RuleSet:
    root: RuleGroup
    depends_on: frozenset[str]
    time_relative: bool
    # The attribute paths the conditions read: what to fetch once per member before evaluating.
    paths: frozenset[tuple[str, ...]]
    # Whether the rules read the member's standing in a program (tier, points, statistics), the
    # member's own attributes (profile, custom fields), or membership dates (loaded on demand).
    needs_program: bool
    needs_profile: bool
    needs_dates: bool

    def to_dict(self) -> dict[str, Any]:
        return self.root.to_dict()


def parse_rules(raw: Any, custom_fields: Mapping[str, Any] | None, where: str = "rules") -> RuleSet:
    """Parse and check a rule set; `custom_fields` None skips the check of attribute names (rules
    stored earlier stay usable after a field they name was deleted: the field then has no value)."""
    counter = [0]
    root = _parse_group(raw, where, 1, counter)
    depends: set[str] = set()
    paths: set[tuple[str, ...]] = set()
    relative = False
    for index, condition in enumerate(root.leaves()):
        depends.add(_dependency(condition, custom_fields, condition_where(root, index, where)))
        paths.add(condition.path)
        relative = relative or _is_time_relative(condition)
    in_program = {key for key in depends if key in STANDING_FIELDS or key.startswith("activity.")}
    return RuleSet(
        root=root,
        depends_on=frozenset(depends),
        time_relative=relative,
        paths=frozenset(paths),
        needs_program=bool(in_program),
        needs_profile=bool(depends - in_program),
        needs_dates=bool(depends & DATE_FIELDS),
    )


def condition_where(root: RuleGroup, index: int, where: str) -> str:
    """The path of the index-th leaf (for error messages), e.g. rules.conditions[1].conditions[0]."""

    def walk(group: RuleGroup, prefix: str, seen: list[int]) -> str | None:
        for position, item in enumerate(group.items):
            here = f"{prefix}.conditions[{position}]"
            if isinstance(item, RuleGroup):
                found = walk(item, here, seen)
                if found is not None:
                    return found
            else:
                if seen[0] == index:
                    return here
                seen[0] += 1
        return None

    return walk(root, where, [0]) or where


def _parse_group(raw: Any, where: str, depth: int, counter: list[int]) -> RuleGroup:
    if not isinstance(raw, Mapping):
        raise ConditionError(where, "expected {match, conditions}")
    unknown = set(raw) - {"match", "conditions"}
    if unknown:
        raise ConditionError(where, f"unknown keys {sorted(unknown)}")
    match = raw.get("match", "all")
    if match not in ("all", "any"):
        raise ConditionError(f"{where}.match", "match is all (AND) or any (OR)")
    items = raw.get("conditions")
    if not isinstance(items, list) or not items:
        raise ConditionError(f"{where}.conditions", "expected a non-empty list of conditions")
    parsed: list[Condition | RuleGroup] = []
    for position, item in enumerate(items):
        here = f"{where}.conditions[{position}]"
        if isinstance(item, Mapping) and "conditions" in item:
            if depth >= MAX_DEPTH:
                raise ConditionError(here, f"groups nest at most {MAX_DEPTH} levels deep")
            parsed.append(_parse_group(item, here, depth + 1, counter))
        else:
            counter[0] += 1
            if counter[0] > MAX_CONDITIONS:
                raise ConditionError(here, f"at most {MAX_CONDITIONS} conditions")
            parsed.append(parse_condition(item, here))
    return RuleGroup(match, tuple(parsed))


def _dependency(condition: Condition, custom_fields: Mapping[str, Any] | None, where: str) -> str:
    """The key an activity must change for this condition's outcome to change."""
    path = condition.path
    root = path[0]
    if root == "segments":
        raise ConditionError(f"{where}.attribute", "segment rules cannot depend on membership of segments")
    if root == "activity":
        if len(path) != 3 or not ACTIVITY_TYPE.match(path[1]) or path[2] not in ACTIVITY_STATS:
            raise ConditionError(
                f"{where}.attribute",
                "activity statistics are activity.<type>.count and activity.<type>.last_at",
            )
        return f"activity.{path[1]}"
    if root in STANDING_FIELDS or root in PROFILE_KEYS:
        if len(path) != 1:
            raise ConditionError(f"{where}.attribute", f"{root} has no parts to select")
        return "member_id" if root == "id" else root
    if custom_fields is not None and root not in custom_fields:
        raise ConditionError(
            f"{where}.attribute",
            f"unknown attribute {condition.attribute!r}: use a member attribute ({', '.join(PROFILE_KEYS)}),"
            f" a standing field ({', '.join(STANDING_FIELDS)}), a custom field of the catalogue"
            " or activity.<type>.count / activity.<type>.last_at",
        )
    return root


def _is_relative(value: Any) -> bool:
    return isinstance(value, str) and RELATIVE.match(value.strip()) is not None


def _is_time_relative(condition: Condition) -> bool:
    if condition.operator == "in_date":
        return True
    value = condition.value
    if isinstance(value, list):
        return any(_is_relative(v) for v in value)
    return _is_relative(value)


# -- evaluation -------------------------------------------------------------------------------------------

Resolver = Callable[[Condition], Any]


def holds(group: RuleGroup, resolve: Resolver, now: datetime) -> bool:
    """Whether the member (seen through `resolve`) satisfies the group."""
    if group.match == "all":
        return all(_item_holds(item, resolve, now) for item in group.items)
    return any(_item_holds(item, resolve, now) for item in group.items)


def _item_holds(item: Condition | RuleGroup, resolve: Resolver, now: datetime) -> bool:
    if isinstance(item, RuleGroup):
        return holds(item, resolve, now)
    return check(item, resolve(item), now)


# -- compiled evaluation ------------------------------------------------------------------------------------
#
# Evaluating thousands of members per transaction through `conditions.check` re-reads each
# condition's operator and re-parses its value every time. A compiled rule set resolves relative
# moments once per evaluation time and turns the common shapes (numbers compared with numbers,
# strings and booleans tested for equality or membership, datetimes against a moment) into direct
# comparisons; every other value and operator goes to `check`, and a property test holds the two to
# the same answers.

Predicate = Callable[[Any], bool]
ORDERS: dict[str, Callable[[Any, Any], bool]] = {
    "gt": operator.gt,
    "gte": operator.ge,
    "lt": operator.lt,
    "lte": operator.le,
    "after": operator.gt,
    "before": operator.lt,
}


@dataclass(frozen=True, slots=True)
class CompiledGroup:
    match_all: bool
    leaves: tuple[tuple[tuple[str, ...], Predicate], ...]
    groups: tuple[CompiledGroup, ...]


def compile_rules(group: RuleGroup, now: datetime) -> CompiledGroup:
    leaves = []
    groups = []
    for item in group.items:
        if isinstance(item, RuleGroup):
            groups.append(compile_rules(item, now))
        else:
            leaves.append((item.path, compile_condition(item, now)))
    return CompiledGroup(group.match == "all", tuple(leaves), tuple(groups))


def compile_condition(condition: Condition, now: datetime) -> Predicate:
    """A predicate on the attribute's value equal to `check(condition, value, now)`."""
    op = condition.operator
    expected = condition.value

    def slow(actual: Any) -> bool:
        return check(condition, actual, now)

    compare = ORDERS.get(op)
    if compare is not None and type(expected) in (int, float):

        def numbers(actual: Any) -> bool:
            kind = type(actual)
            return compare(actual, expected) if kind is int or kind is float else slow(actual)

        return numbers
    if compare is not None and isinstance(expected, str):
        moment = moment_at(expected, now)
        if moment is not None:

            def moments(actual: Any) -> bool:
                if type(actual) is datetime and actual.tzinfo is not None:
                    return compare(actual, moment)
                return slow(actual)

            return moments
    if op in ("eq", "ne") and type(expected) is bool:
        return (lambda actual: actual is expected) if op == "eq" else (lambda actual: actual is not expected)
    if op in ("eq", "ne") and type(expected) is str:
        equal = op == "eq"

        def strings(actual: Any) -> bool:
            return (actual == expected) is equal if type(actual) is str else slow(actual)

        return strings
    if op in ("in", "not_in") and all(type(v) is str for v in expected):
        listed = frozenset(expected)
        inside = op == "in"

        def members(actual: Any) -> bool:
            return (actual in listed) is inside if type(actual) is str else slow(actual)

        return members
    return slow


def matches(compiled: CompiledGroup, values: Mapping[tuple[str, ...], Any]) -> bool:
    """Whether the values (by attribute path, MISSING when absent) satisfy the compiled group."""
    if compiled.match_all:
        for path, predicate in compiled.leaves:
            if not predicate(values[path]):
                return False
        return all(matches(group, values) for group in compiled.groups)
    for path, predicate in compiled.leaves:
        if predicate(values[path]):
            return True
    return any(matches(group, values) for group in compiled.groups)


# -- which activities can change an outcome -----------------------------------------------------------------


def changed_keys(
    activity_type: str, data: Mapping[str, Any], points_delta: int, pending_delta: int, in_program: bool
) -> frozenset[str]:
    """The dependency keys an activity may change (a superset is fine: evaluation decides).

    `in_program` says whether the activity is on the segment's program's account (standing and
    activity statistics live there); profile activities may change anything.
    """
    if activity_type == "profile":
        return frozenset({EVERYTHING})
    if not in_program:
        return frozenset()
    changed = fields_changed_by(activity_type, dict(data), points_delta, pending_delta)
    changed.add(f"activity.{activity_type}")
    return frozenset(changed)


def may_change(rules: RuleSet, changed: frozenset[str]) -> bool:
    return EVERYTHING in changed or not rules.depends_on.isdisjoint(changed)
