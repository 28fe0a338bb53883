"""Workflow graphs: the node catalogue, validation with errors that name the node, and compilation.

A graph is `{"nodes": [{"id", "type", "params"}], "edges": [{"from", "to", "branch"}]}` with exactly
one trigger. Filters and actions have `success` and `fail` outputs; the event trigger also has a
`modifier` output whose filters run before the event is stored and may end in `interrupt`, which
rejects the event (Antavo's modifier branch). No I/O here: what the graph may refer to (event types,
fields, rewards, integrations) is passed in as a `Catalog`.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from croniter import CroniterBadDateError, croniter
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from perkflow.conditions import (
    MISSING,
    Condition,
    ConditionError,
    ConditionGroup,
    check,
    lookup,
    moment_of,
    parse_group,
)
from perkflow.workflows.expressions import (
    ROOTS,
    CompiledValue,
    ExpressionError,
    is_template,
    references,
    template_strings,
)

NODE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_NODES = 200
BRANCHES = ("success", "fail", "modifier")


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# -- triggers --------------------------------------------------------------------------------------------


class EventTrigger(Params):
    events: list[str] = Field(min_length=1, max_length=20, description="activity types that start a run")

    @model_validator(mode="before")
    @classmethod
    def _one_event(cls, data: Any) -> Any:
        # {"event": "opt_in"} is the common case; it means {"events": ["opt_in"]}.
        if isinstance(data, dict) and "event" in data and "events" not in data:
            data = {**data, "events": [data["event"]]}
            data.pop("event")
        return data


class DateTrigger(Params):
    at: datetime | None = Field(None, description="one-time: the UTC moment to run")
    cron: str | None = Field(None, description="repeating: a cron schedule in UTC, e.g. '0 9 * * *'")
    prefilter: dict[str, Any] | None = Field(None, description="customer conditions selecting the members")

    @model_validator(mode="after")
    def _one_schedule(self) -> DateTrigger:
        if (self.at is None) == (self.cron is None):
            raise ValueError("give either at (one-time) or cron (repeating)")
        if self.at is not None and (self.at.tzinfo is None or self.at.utcoffset() is None):
            raise ValueError("at needs a UTC offset or Z")
        if self.cron is not None:
            if not croniter.is_valid(self.cron):
                raise ValueError(f"{self.cron!r} is not a cron schedule (minute hour day month weekday)")
            try:
                croniter(self.cron, datetime(2000, 1, 1)).get_next(datetime)
            except CroniterBadDateError as exc:
                raise ValueError(f"{self.cron!r} never happens (e.g. 31 February)") from exc
        return self


class SegmentTrigger(Params):
    segment: str = Field(min_length=1, max_length=64)


# -- filters ---------------------------------------------------------------------------------------------


class FilterParams(Params):
    match: Literal["all", "any"] = "all"
    conditions: list[dict[str, Any]] = Field(min_length=1, max_length=100)


# -- actions ---------------------------------------------------------------------------------------------


def _amount(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("expected a number of points or a template")
    if isinstance(value, int):
        if not 1 <= value <= 1_000_000_000:
            raise ValueError("points must be between 1 and 1,000,000,000")
        return value
    if is_template(value):
        return value
    raise ValueError("expected a number of points or a {{ template }}")


class PointsParams(Params):
    points: int | str
    reason: str = Field("", max_length=200)
    expires_in_days: int | None = Field(None, ge=1, le=36_500)

    @field_validator("points", mode="before")
    @classmethod
    def _check_points(cls, value: Any) -> Any:
        return _amount(value)


class RewardClaimParams(Params):
    reward: str = Field(min_length=1, max_length=64)
    free: bool = False


class SetTierParams(Params):
    tier: str = Field(min_length=1, max_length=64, description="tier id or name")
    reason: str = Field("", max_length=200)


class AssignCouponParams(Params):
    reward: str = Field(min_length=1, max_length=64, description="the reward whose coupon pool to use")


class ModifyFieldParams(Params):
    field: str = Field(min_length=1, max_length=64)
    value: Any = None


INTEGRATION_HELP = "an integration id, braze or bloomreach (every connected one of that kind), or * (both)"


class SyncFieldsParams(Params):
    integration: str = Field("*", min_length=1, max_length=64, description=INTEGRATION_HELP)
    fields: dict[str, Any] = Field(min_length=1, max_length=100, description="remote attribute -> value")


class SyncEventParams(Params):
    integration: str = Field("*", min_length=1, max_length=64, description=INTEGRATION_HELP)
    name: str = Field(min_length=1, max_length=200)
    properties: dict[str, Any] = Field(default_factory=dict, max_length=100)


class WebhookParams(Params):
    integration: str = Field(min_length=1, max_length=64, description="a webhook integration id")
    event_type: str = Field("workflow", min_length=1, max_length=100)
    payload: dict[str, Any] = Field(default_factory=dict, max_length=100)


class WaitParams(Params):
    minutes: int = Field(0, ge=0, le=525_600)
    hours: int = Field(0, ge=0, le=87_600)
    days: int = Field(0, ge=0, le=3_650)

    @model_validator(mode="after")
    def _at_least_a_minute(self) -> WaitParams:
        if self.seconds < 60:
            raise ValueError("a wait lasts at least one minute")
        return self

    @property
    def seconds(self) -> int:
        return self.minutes * 60 + self.hours * 3600 + self.days * 86400


INTERRUPT_CODE = re.compile(r"^([a-z][a-z0-9_]{1,63}|[1-9][0-9]{4})$")


class InterruptParams(Params):
    code: str = Field(
        description="the error code the events API answers with: a five-digit number (as in Antavo) "
        "or a snake_case name",
    )
    message: str = Field("the event was rejected by a workflow", min_length=1, max_length=500)

    @field_validator("code", mode="before")
    @classmethod
    def _check_code(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or not INTERRUPT_CODE.match(value):
            raise ValueError(
                "the code is a five-digit number such as 40001 or a snake_case name such as store_closed"
            )
        return value


@dataclass(frozen=True, slots=True)
class NodeType:
    name: str
    kind: Literal["trigger", "filter", "action", "flow"]
    params: type[Params]
    branches: tuple[str, ...]
    description: str


NODE_TYPES: dict[str, NodeType] = {
    t.name: t
    for t in (
        NodeType("trigger.event", "trigger", EventTrigger, ("success", "modifier"), "an activity happened"),
        NodeType("trigger.date", "trigger", DateTrigger, ("success",), "at a moment or on a cron schedule"),
        NodeType("trigger.segment_entered", "trigger", SegmentTrigger, ("success",), "joined a segment"),
        NodeType("trigger.segment_left", "trigger", SegmentTrigger, ("success",), "left a segment"),
        NodeType(
            "filter.customer_attribute", "filter", FilterParams, ("success", "fail"), "member attributes"
        ),
        NodeType(
            "filter.event_attribute", "filter", FilterParams, ("success", "fail"), "the triggering event"
        ),
        NodeType("action.add_points", "action", PointsParams, ("success", "fail"), "give points"),
        NodeType("action.subtract_points", "action", PointsParams, ("success", "fail"), "take points"),
        NodeType("action.reward_claim", "action", RewardClaimParams, ("success", "fail"), "claim a reward"),
        NodeType("action.set_tier", "action", SetTierParams, ("success", "fail"), "move to a tier"),
        NodeType(
            "action.assign_coupon", "action", AssignCouponParams, ("success", "fail"), "a coupon from a pool"
        ),
        NodeType(
            "action.modify_field", "action", ModifyFieldParams, ("success", "fail"), "change a member field"
        ),
        NodeType(
            "action.sync_fields", "action", SyncFieldsParams, ("success", "fail"), "write remote attributes"
        ),
        NodeType(
            "action.sync_event", "action", SyncEventParams, ("success", "fail"), "send a platform event"
        ),
        NodeType("action.webhook", "action", WebhookParams, ("success", "fail"), "send a signed webhook"),
        NodeType("action.wait", "flow", WaitParams, ("success",), "continue later"),
        NodeType("action.interrupt", "flow", InterruptParams, (), "reject the incoming event"),
    )
}
# Sync actions may name every connected platform of a kind instead of one integration id, which is
# what lets templates work before (or whatever) the brand connects.
CEP_TARGETS = ("*", "braze", "bloomreach")
REWARD_SOURCES = {"action.reward_claim"}
COUPON_SOURCES = {"action.reward_claim", "action.assign_coupon"}
# Activity types whose data describe a reward or a coupon, so the trigger makes them available.
REWARD_EVENTS = {"reward_claim"}
COUPON_EVENTS = {"reward_claim", "coupon_assigned", "voucher_published"}


@dataclass
class Catalog:
    """What a graph may refer to; `None` for a set means "do not check"."""

    event_types: set[str] | None = None
    # event type -> its attribute names, or None when the event's data is free-form
    event_attributes: dict[str, set[str] | None] = field(default_factory=dict)
    customer_attributes: set[str] | None = None
    reward_attributes: set[str] = field(
        default_factory=lambda: {"id", "name", "description", "points_cost", "program_id"}
    )
    coupon_attributes: set[str] = field(
        default_factory=lambda: {"code", "value", "currency", "expires_at", "reward_id", "source"}
    )
    rewards: set[str] | None = None
    tiers: set[str] | None = None
    segments: set[str] | None = None
    integrations: dict[str, str] | None = None  # id -> kind
    member_fields: set[str] | None = None  # fields modify_field may write


class GraphErrors(ValueError):
    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__("; ".join(f"{e.get('node') or 'graph'}: {e['message']}" for e in errors))
        self.errors = errors


Predicate = Callable[[Mapping[str, Any], datetime], bool]


def compile_group(group: ConditionGroup) -> Predicate:
    """The group as one function of a view and the moment, answering exactly as `conditions.check`.

    Filters run for every event a workflow listens to, so the common conditions (a number compared
    with a constant, a text equal to a constant) are specialised; every other condition is checked
    by `conditions.check` itself.
    """
    tests = [_condition_test(c) for c in group.conditions]
    if len(tests) == 1:
        return tests[0]
    if group.match == "all":
        return lambda view, now: all(test(view, now) for test in tests)
    return lambda view, now: any(test(view, now) for test in tests)


NUMBER_TESTS: dict[str, Callable[[Any, Any], bool]] = {
    "gt": operator.gt,
    "gte": operator.ge,
    "lt": operator.lt,
    "lte": operator.le,
}


def _condition_test(condition: Condition) -> Predicate:
    path, op, expected = condition.path, condition.operator, condition.value
    key = path[0] if len(path) == 1 else None

    def value_of(view: Mapping[str, Any]) -> Any:
        return view.get(key, MISSING) if key is not None else lookup(view, path)

    number = isinstance(expected, int | float) and not isinstance(expected, bool)
    if number and op in NUMBER_TESTS:
        compare = NUMBER_TESTS[op]

        def number_test(view: Mapping[str, Any], now: datetime) -> bool:
            # check() orders only numbers with a number: text, dates, booleans and absence fail.
            actual = value_of(view)
            return type(actual) in (int, float) and compare(actual, expected)

        return number_test
    if op in ("eq", "ne") and isinstance(expected, str) and moment_of(expected) is None:
        # A text that is not a date equals only the same text (check() compares dates as moments).
        if op == "eq":
            return lambda view, now: value_of(view) == expected
        return lambda view, now: value_of(view) != expected
    return lambda view, now: check(condition, value_of(view), now)


@dataclass(slots=True)
class Node:
    id: str
    type: str
    raw_params: dict[str, Any]
    params: Any  # the validated Params model
    group: ConditionGroup | None = None  # filters, and the date trigger's prefilter
    test: Predicate | None = None  # the group, compiled
    values: dict[str, CompiledValue] = field(default_factory=dict)  # action params that may be templates
    # Resolved once when the graph is compiled, so a run reads them off the node instead of looking
    # them up per step (runs happen for every matching event).
    kind: str = field(init=False, default="")
    on_success: list[str] = field(init=False, default_factory=list)
    on_fail: list[str] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        self.kind = NODE_TYPES[self.type].kind


@dataclass(slots=True)
class Graph:
    nodes: dict[str, Node]
    trigger: Node
    edges: dict[tuple[str, str], list[str]]  # (node, branch) -> next nodes, in edge order
    raw: dict[str, Any]
    modifier_nodes: frozenset[str] = frozenset()
    # An equality the trigger's first filter demands of the event: (attribute path, allowed values).
    discriminator: tuple[tuple[str, ...], frozenset[Any]] | None = None
    # That first filter itself, when a failure ends the run before anything happens (see `_gate`).
    gate: Node | None = None

    def next(self, node_id: str, branch: str) -> list[str]:
        return self.edges.get((node_id, branch), [])

    @property
    def trigger_type(self) -> str:
        return self.trigger.type.removeprefix("trigger.")

    @property
    def trigger_keys(self) -> list[str]:
        """What the trigger is keyed on: activity types, a segment id; empty for date triggers."""
        params = self.trigger.params
        if isinstance(params, EventTrigger):
            return list(params.events)
        if isinstance(params, SegmentTrigger):
            return [params.segment]
        return []

    @property
    def has_modifier(self) -> bool:
        return bool(self.next(self.trigger.id, "modifier"))

    def to_public(self) -> dict[str, Any]:
        return self.raw


def _pydantic_errors(node_id: str, exc: ValidationError) -> list[dict[str, Any]]:
    out = []
    for error in exc.errors():
        loc = ".".join(str(part) for part in error.get("loc", ()))
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        out.append({"node": node_id, "field": f"params.{loc}" if loc else "params", "message": message})
    return out


def parse_graph(raw: Any, catalog: Catalog | None = None) -> Graph:
    """Validate and compile a graph; raises GraphErrors listing every problem, each naming its node."""
    catalog = catalog or Catalog()
    errors: list[dict[str, Any]] = []

    def fail(node: str | None, message: str, field_name: str | None = None) -> None:
        entry: dict[str, Any] = {"node": node, "message": message}
        if field_name:
            entry["field"] = field_name
        errors.append(entry)

    if not isinstance(raw, dict):
        raise GraphErrors([{"node": None, "message": "a graph is an object with nodes and edges"}])
    unknown_keys = set(raw) - {"nodes", "edges", "layout"}
    if unknown_keys:
        fail(None, f"unknown keys {sorted(unknown_keys)}")
    raw_nodes = raw.get("nodes")
    raw_edges = raw.get("edges", [])
    if not isinstance(raw_nodes, list) or not raw_nodes:
        raise GraphErrors([{"node": None, "message": "nodes must be a non-empty list"}])
    if len(raw_nodes) > MAX_NODES:
        raise GraphErrors([{"node": None, "message": f"a workflow has at most {MAX_NODES} nodes"}])
    if not isinstance(raw_edges, list):
        raise GraphErrors([{"node": None, "message": "edges must be a list"}])

    nodes: dict[str, Node] = {}
    for position, item in enumerate(raw_nodes):
        if not isinstance(item, dict):
            fail(None, f"nodes[{position}] is not an object")
            continue
        node_id = item.get("id")
        if not isinstance(node_id, str) or not NODE_ID.match(node_id):
            fail(None, f"nodes[{position}].id must be 1-64 letters, digits, _ or -")
            continue
        if node_id in nodes:
            fail(node_id, "two nodes have this id")
            continue
        extra = set(item) - {"id", "type", "params", "name", "position"}
        if extra:
            fail(node_id, f"unknown keys {sorted(extra)}")
        node_type = NODE_TYPES.get(item.get("type"))  # type: ignore[arg-type]
        if node_type is None:
            fail(
                node_id, f"unknown node type {item.get('type')!r}; known types: {sorted(NODE_TYPES)}", "type"
            )
            continue
        raw_params = item.get("params") or {}
        if not isinstance(raw_params, dict):
            fail(node_id, "params must be an object", "params")
            continue
        try:
            params = node_type.params.model_validate(raw_params)
        except ValidationError as exc:
            errors.extend(_pydantic_errors(node_id, exc))
            continue
        node = Node(node_id, node_type.name, raw_params, params)
        try:
            if isinstance(params, FilterParams):
                node.group = parse_group(params.model_dump(), "params")
            elif isinstance(params, DateTrigger) and params.prefilter is not None:
                node.group = parse_group(params.prefilter, "params.prefilter")
        except ConditionError as exc:
            fail(node_id, exc.message, exc.where)
            continue
        if node.group is not None:
            node.test = compile_group(node.group)
        nodes[node_id] = node

    triggers = [n for n in nodes.values() if n.kind == "trigger"]
    trigger_types = [
        i.get("id")
        for i in raw_nodes
        if isinstance(i, dict) and str(i.get("type", "")).startswith("trigger.")
    ]
    if len(trigger_types) != 1:
        fail(None, f"a workflow has exactly one trigger node; found {len(trigger_types)}")
    if errors:
        raise GraphErrors(errors)
    trigger = triggers[0]

    edges: dict[tuple[str, str], list[str]] = {}
    incoming: dict[str, int] = {}
    seen_edges: set[tuple[str, str, str]] = set()
    for position, item in enumerate(raw_edges):
        if not isinstance(item, dict):
            fail(None, f"edges[{position}] is not an object")
            continue
        source, target = item.get("from"), item.get("to")
        branch = item.get("branch", "success")
        extra = set(item) - {"from", "to", "branch"}
        if extra:
            fail(
                source if isinstance(source, str) else None,
                f"edges[{position}] has unknown keys {sorted(extra)}",
            )
        if source not in nodes:
            fail(None, f"edges[{position}] starts at unknown node {source!r}")
            continue
        if target not in nodes:
            fail(source, f"edges[{position}] leads to unknown node {target!r}")
            continue
        assert isinstance(source, str) and isinstance(target, str)
        allowed = NODE_TYPES[nodes[source].type].branches
        if branch not in allowed:
            fail(
                source,
                f"a {nodes[source].type} node has no {branch!r} output"
                + (f" (outputs: {', '.join(allowed)})" if allowed else " (it ends the run)"),
            )
            continue
        if target == trigger.id:
            fail(source, "nothing may lead back to the trigger")
            continue
        if source == target:
            fail(source, "a node cannot lead to itself")
            continue
        if (source, target, branch) in seen_edges:
            fail(source, f"the edge to {target!r} ({branch}) is repeated")
            continue
        seen_edges.add((source, target, branch))
        edges.setdefault((source, branch), []).append(target)
        incoming[target] = incoming.get(target, 0) + 1
    if errors:
        raise GraphErrors(errors)

    graph = Graph(nodes, trigger, edges, raw)
    for (source, branch), targets in edges.items():
        if branch == "success":
            nodes[source].on_success = targets
        elif branch == "fail":
            nodes[source].on_fail = targets
    _check_cycles(graph, fail)
    if errors:
        raise GraphErrors(errors)
    _check_reachability(graph, fail)
    _check_references(graph, catalog, fail)
    if errors:
        raise GraphErrors(errors)
    graph.gate = _gate(graph)
    graph.discriminator = _discriminator(graph)
    return graph


def _successors(graph: Graph, node_id: str) -> Iterable[tuple[str, str]]:
    for branch in BRANCHES:
        for target in graph.next(node_id, branch):
            yield branch, target


def _check_cycles(graph: Graph, fail: Any) -> None:
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(node_id: str, trail: list[str]) -> bool:
        state[node_id] = 1
        for _branch, target in _successors(graph, node_id):
            if state.get(target) == 1:
                cycle = (
                    [*trail[trail.index(target) :], node_id, target] if target in trail else [node_id, target]
                )
                fail(target, "the graph has a cycle: " + " -> ".join(cycle))
                return True
            if state.get(target) is None and visit(target, [*trail, node_id]):
                return True
        state[node_id] = 2
        return False

    for node_id in graph.nodes:
        if state.get(node_id) is None and visit(node_id, []):
            return


def _reach(graph: Graph, start: list[str]) -> set[str]:
    seen: set[str] = set()
    stack = list(start)
    while stack:
        node_id = stack.pop()
        if node_id in seen:
            continue
        seen.add(node_id)
        stack.extend(target for _b, target in _successors(graph, node_id))
    return seen


def _check_reachability(graph: Graph, fail: Any) -> None:
    trigger = graph.trigger
    main = _reach(graph, graph.next(trigger.id, "success"))
    modifier = _reach(graph, graph.next(trigger.id, "modifier"))
    for node_id in graph.nodes:
        if node_id != trigger.id and node_id not in main and node_id not in modifier:
            fail(node_id, "no path from the trigger reaches this node")
    for node_id in sorted(main & modifier):
        fail(node_id, "a node cannot be on both the modifier branch and the main branch")
    for node_id in sorted(modifier):
        node = graph.nodes[node_id]
        if node.kind == "action" or node.type == "action.wait":
            fail(
                node_id,
                "the modifier branch runs before the event is stored: it may hold only filters and "
                "interrupt; put actions on the trigger's success output",
            )
    for node_id in sorted(main):
        if graph.nodes[node_id].type == "action.interrupt":
            fail(
                node_id,
                "interrupt rejects the incoming event, so it belongs on the event trigger's modifier "
                "output (it runs before the event is stored)",
            )
    if trigger.type != "trigger.event":
        for node_id in sorted(main):
            if graph.nodes[node_id].type == "filter.event_attribute" and trigger.type == "trigger.date":
                fail(node_id, "a date trigger has no event: use a customer attribute filter")
    graph.modifier_nodes = frozenset(modifier)


def _ancestors(graph: Graph) -> dict[str, set[str]]:
    parents: dict[str, set[str]] = {n: set() for n in graph.nodes}
    for (source, _branch), targets in graph.edges.items():
        for target in targets:
            parents[target].add(source)
    memo: dict[str, set[str]] = {}

    def up(node_id: str) -> set[str]:
        if node_id not in memo:
            found: set[str] = set()
            for parent in parents[node_id]:
                found.add(parent)
                found |= up(parent)
            memo[node_id] = found
        return memo[node_id]

    return {n: up(n) for n in graph.nodes}


def _check_references(graph: Graph, catalog: Catalog, fail: Any) -> None:
    trigger = graph.trigger
    trigger_events: list[str] = []
    if isinstance(trigger.params, EventTrigger):
        trigger_events = list(trigger.params.events)
        if catalog.event_types is not None:
            for name in trigger_events:
                if name not in catalog.event_types:
                    fail(trigger.id, f"unknown event type {name!r}", "params.events")
    elif isinstance(trigger.params, SegmentTrigger):
        trigger_events = ["segment_entered" if trigger.type.endswith("entered") else "segment_left"]
        if catalog.segments is not None and trigger.params.segment not in catalog.segments:
            fail(trigger.id, f"segment {trigger.params.segment!r} does not exist", "params.segment")
    ancestors = _ancestors(graph)

    def event_attributes() -> set[str] | None:
        if not trigger_events:
            return set()
        known: set[str] = set()
        for name in trigger_events:
            attrs = catalog.event_attributes.get(name, None) if catalog.event_attributes else None
            if attrs is None:
                return None
            known |= attrs
        return known | {"type", "id", "occurred_at", "points", "pending_points", "program_id", "source"}

    event_known = event_attributes()

    def check_attribute(node: Node, root: str, attr: str, where: str) -> None:
        above = {graph.nodes[a].type for a in ancestors[node.id]}
        if root == "event":
            if not trigger_events:
                fail(node.id, f"{root}.{attr}: a {trigger.type} workflow has no event", where)
            elif event_known is not None and attr not in event_known:
                fail(
                    node.id,
                    f"event.{attr}: {'/'.join(trigger_events)} events have no attribute {attr!r}",
                    where,
                )
        elif root == "customer":
            known = catalog.customer_attributes
            if known is not None and attr not in known:
                fail(node.id, f"customer.{attr}: no such member attribute or field", where)
        elif root == "reward":
            if not (above & REWARD_SOURCES or set(trigger_events) & REWARD_EVENTS):
                fail(
                    node.id,
                    "reward.* needs a reward claim before this node (or a reward_claim trigger)",
                    where,
                )
            elif attr not in catalog.reward_attributes:
                fail(node.id, f"reward.{attr}: rewards have {sorted(catalog.reward_attributes)}", where)
        elif root == "coupon":
            if not (above & COUPON_SOURCES or set(trigger_events) & COUPON_EVENTS):
                fail(node.id, "coupon.* needs a reward claim or assign coupon before this node", where)
            elif attr not in catalog.coupon_attributes:
                fail(node.id, f"coupon.{attr}: coupons have {sorted(catalog.coupon_attributes)}", where)

    for node in graph.nodes.values():
        params = node.params
        if node.group is not None and node.type != "trigger.date":
            root = "event" if node.type == "filter.event_attribute" else "customer"
            for position, condition in enumerate(node.group.conditions):
                check_attribute(node, root, condition.root, f"params.conditions[{position}].attribute")
        if isinstance(params, DateTrigger) and node.group is not None:
            for position, condition in enumerate(node.group.conditions):
                check_attribute(node, "customer", condition.root, f"params.prefilter.conditions[{position}]")
        # Template parameters: compile them and check every name they read.
        for name in type(params).model_fields:
            value = getattr(params, name)
            strings = template_strings(value)
            if not strings:
                continue
            try:
                node.values[name] = CompiledValue(node.raw_params.get(name, value))
                for source in strings:
                    refs = references(source)
                    for root in sorted(refs.roots - set(ROOTS)):
                        fail(
                            node.id,
                            f"unknown name {root!r} in {source!r}; use {', '.join(ROOTS)}",
                            f"params.{name}",
                        )
                    for root, attr in sorted(refs.attributes):
                        if root in ROOTS and root != "now":
                            check_attribute(node, root, attr, f"params.{name}")
            except ExpressionError as exc:
                fail(node.id, str(exc), f"params.{name}")
        _check_targets(node, catalog, fail)


def _check_targets(node: Node, catalog: Catalog, fail: Any) -> None:
    params = node.params
    if isinstance(params, RewardClaimParams | AssignCouponParams):
        if catalog.rewards is not None and params.reward not in catalog.rewards:
            fail(node.id, f"reward {params.reward!r} does not exist", "params.reward")
    elif isinstance(params, SetTierParams):
        if catalog.tiers is not None and params.tier not in catalog.tiers:
            fail(node.id, f"tier {params.tier!r} does not exist", "params.tier")
    elif isinstance(params, ModifyFieldParams):
        if catalog.member_fields is not None and params.field not in catalog.member_fields:
            fail(node.id, f"{params.field!r} is not a member field that can be written", "params.field")
    elif isinstance(params, SyncFieldsParams | SyncEventParams | WebhookParams):
        if catalog.integrations is None:
            return
        if isinstance(params, WebhookParams):
            if catalog.integrations.get(params.integration) != "webhook":
                fail(
                    node.id,
                    f"{params.integration!r} is not a connected webhook integration",
                    "params.integration",
                )
        elif params.integration not in CEP_TARGETS and catalog.integrations.get(params.integration) not in (
            "braze",
            "bloomreach",
        ):
            fail(
                node.id,
                f"{params.integration!r} is not a connected Braze or Bloomreach integration "
                "(or braze, bloomreach, * for every connected one)",
                "params.integration",
            )
    if isinstance(
        params, ModifyFieldParams | SyncFieldsParams | SyncEventParams | WebhookParams | PointsParams
    ):
        for name in type(params).model_fields:
            if name not in node.values and name in ("value", "fields", "properties", "payload", "points"):
                try:
                    node.values[name] = CompiledValue(getattr(params, name))
                except ExpressionError:
                    continue  # reported with the node's other template problems


def _gate(graph: Graph) -> Node | None:
    """The event-attribute filter a run must pass before anything happens, if there is one.

    When the trigger leads to exactly one node, an event-attribute filter whose fail output leads
    nowhere, an event failing it ends the run before it does anything, so the engine can check it on
    the event alone and skip the workflow without setting a run up.
    """
    following = graph.next(graph.trigger.id, "success")
    if len(following) != 1:
        return None
    node = graph.nodes[following[0]]
    if node.type != "filter.event_attribute" or node.group is None or graph.next(node.id, "fail"):
        return None
    return node


def _discriminator(graph: Graph) -> tuple[tuple[str, ...], frozenset[Any]] | None:
    """An equality every run must satisfy before anything happens, so the engine can index on it:
    one of the gate's conditions, when all of them must hold."""
    node = graph.gate
    if node is None or node.group is None or node.group.match != "all":
        return None
    for condition in node.group.conditions:
        if condition.operator == "eq" and _indexable(condition.value):
            return condition.path, frozenset([condition.value])
        if condition.operator == "in" and all(_indexable(v) for v in condition.value):
            return condition.path, frozenset(condition.value)
    return None


def _indexable(value: Any) -> bool:
    # Strings that read as dates compare as moments (2026-03-14 equals 2026-03-14T00:00:00Z), which
    # a hash lookup would miss; they are left to the filter itself.
    if isinstance(value, str):
        return moment_of(value) is None
    return isinstance(value, int) and not isinstance(value, bool)


def node_catalogue() -> list[dict[str, Any]]:
    """The node types with their parameters, for editors and documentation."""
    return [
        {
            "type": t.name,
            "kind": t.kind,
            "description": t.description,
            "outputs": list(t.branches),
            "params": t.params.model_json_schema(),
        }
        for t in NODE_TYPES.values()
    ]
