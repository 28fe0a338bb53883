"""Running workflows: which ones an activity triggers, walking their graphs, and recording runs.

The engine is an activity subscriber, so runs happen inside the unit of work that recorded the
triggering activity and commit with it. Finding the workflows of an activity does not scan them:
active workflows are indexed by trigger (activity type, segment id), and within a trigger by the
equality their first filter demands of the event (see `graph._discriminator`), so 990 workflows on
other events or other stores cost a dictionary lookup. Activities that workflow actions record are
run through the engine too; a cascade is bounded (see `Lineage`) so workflows that trigger each other
cannot run forever or multiply.

A run that stops at a failed filter without doing anything is not stored (it would cost a row per
listening workflow per event) unless the workflow asks for every run (`run_log: all`); every run
that acts, waits, fails or interrupts is. A first event filter that decides alone (the graph's gate)
is checked on the event before a run is even set up.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from perkflow.activity.stream import Activity, ActivityLog
from perkflow.conditions import MISSING, explain, lookup
from perkflow.core.clock import isoformat_z
from perkflow.core.context import AppContext
from perkflow.core.errors import NotFound, PerkflowError
from perkflow.core.uow import UnitOfWork
from perkflow.members.views import CustomerView
from perkflow.programs.service import ProgramCatalog, ProgramConfig
from perkflow.workflows.actions import ACTIONS, ActionFailed, RunScope, coupon_view, reward_view
from perkflow.workflows.graph import COUPON_EVENTS, REWARD_EVENTS, Graph, WaitParams, parse_graph
from perkflow.workflows.tables import workflow_runs, workflow_versions, workflows

log = logging.getLogger("perkflow.workflows")

MAX_DEPTH = 4  # a workflow action's activity may trigger workflows, whose actions may... up to here
MAX_CASCADE_RUNS = 100  # runs that the activities of workflow actions may trigger, per triggering event
RUN_COLUMNS = (
    "workflow_id",
    "version",
    "member_id",
    "trigger",
    "status",
    "path",
    "results",
    "context",
    "resume_at",
    "resume_node",
    "started_at",
    "finished_at",
)


@dataclass(slots=True)
class ActiveWorkflow:
    id: str
    version: int
    kind: str
    program_id: str | None
    starts_at: datetime | None
    ends_at: datetime | None
    bonus_cap: int | None
    priority: int
    activated_at: datetime | None
    graph: Graph
    run_log: str = "acted"  # acted: store runs that did something; all: every run, filtered ones too

    @classmethod
    def from_row(cls, row: Any, version: int, graph: Graph) -> ActiveWorkflow:
        return cls(
            id=row.id,
            version=version,
            kind=row.kind,
            program_id=row.program_id,
            starts_at=row.starts_at,
            ends_at=row.ends_at,
            bonus_cap=row.bonus_cap,
            priority=row.priority,
            activated_at=row.activated_at,
            graph=graph,
            run_log=row.run_log,
        )

    def in_window(self, moment: datetime) -> bool:
        if self.kind != "campaign":
            return True
        if self.starts_at is not None and moment < self.starts_at:
            return False
        return not (self.ends_at is not None and moment >= self.ends_at)

    @property
    def order(self) -> tuple[int, str]:
        return self.priority, self.id

    def scope(
        self,
        uow: UnitOfWork,
        member_id: str,
        program: ProgramConfig | None,
        *,
        now: datetime,
        trigger_ref: str,
        occurred_at: datetime,
        event: dict[str, Any] | None,
        customer: CustomerView,
        **extra: Any,
    ) -> RunScope:
        """A run of this version for `member_id` (the activity hot path builds it positionally)."""
        return RunScope(
            uow,
            self.id,
            self.version,
            self.kind,
            self.bonus_cap,
            member_id,
            program,
            now,
            trigger_ref,
            occurred_at,
            event,
            customer,
            **extra,
        )


@dataclass
class TriggerBucket:
    """The workflows of one trigger key: those that always run, and those indexed by an event value."""

    always: list[ActiveWorkflow] = field(default_factory=list)
    indexed: dict[tuple[str, ...], dict[Any, list[ActiveWorkflow]]] = field(default_factory=dict)

    def add(self, workflow: ActiveWorkflow) -> None:
        discriminator = workflow.graph.discriminator
        if discriminator is None:
            self.always.append(workflow)
            return
        path, values = discriminator
        by_value = self.indexed.setdefault(path, {})
        for value in values:
            by_value.setdefault(value, []).append(workflow)

    def candidates(self, event: dict[str, Any]) -> list[ActiveWorkflow]:
        """The workflows to consider, in run order; the caller must not change the list."""
        found: list[ActiveWorkflow] | None = None
        for path, by_value in self.indexed.items():
            value = lookup(event, path)
            if value is MISSING or isinstance(value, dict | list):
                continue
            matched = by_value.get(value)
            if matched:
                if found is None:
                    found = list(self.always)
                found.extend(matched)
        if found is None:
            return self.always  # built in run order (WorkflowIndex.build sorts), nothing to merge
        if len(found) > 1:
            found.sort(key=lambda w: w.order)
        return found


@dataclass
class WorkflowIndex:
    by_event: dict[str, TriggerBucket] = field(default_factory=dict)
    modifiers: dict[str, list[ActiveWorkflow]] = field(default_factory=dict)
    dated: list[ActiveWorkflow] = field(default_factory=list)
    count: int = 0

    @classmethod
    def build(cls, active: Iterable[ActiveWorkflow]) -> WorkflowIndex:
        index = cls()
        for workflow in sorted(active, key=lambda w: w.order):
            index.count += 1
            graph = workflow.graph
            if graph.trigger_type == "date":
                index.dated.append(workflow)
                continue
            if graph.trigger_type in ("segment_entered", "segment_left"):
                # Segment activity carries the segment id, so the segment is just an indexed value.
                bucket = index.by_event.setdefault(graph.trigger_type, TriggerBucket())
                bucket.indexed.setdefault(("segment_id",), {}).setdefault(graph.trigger_keys[0], []).append(
                    workflow
                )
                continue
            for event_type in graph.trigger_keys:
                index.by_event.setdefault(event_type, TriggerBucket()).add(workflow)
                if graph.has_modifier:
                    index.modifiers.setdefault(event_type, []).append(workflow)
        return index


class IndexCache:
    """The active workflows, compiled once per version and re-checked at most once a second.

    A cheap stamp query (how many workflows, the latest change) decides whether to reload; graphs are
    compiled once per (workflow, version) and kept, so reloading after one edit parses one graph.
    """

    ttl_s = 1.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._checked_at = -1e9
        self._stamp: Any = None
        self._index = WorkflowIndex()
        self._compiled: dict[tuple[str, int], Graph] = {}

    def get(self, uow: UnitOfWork) -> WorkflowIndex:
        with self._lock:
            if time.monotonic() - self._checked_at < self.ttl_s:
                return self._index
        stamp = tuple(
            uow.conn.execute(
                select(func.count(), func.max(workflows.c.updated_at)).where(workflows.c.status == "active")
            ).one()
        )
        with self._lock:
            if stamp == self._stamp:
                self._checked_at = time.monotonic()
                return self._index
        index = self._load(uow)
        with self._lock:
            self._index = index
            self._stamp = stamp
            self._checked_at = time.monotonic()
        return index

    def _load(self, uow: UnitOfWork) -> WorkflowIndex:
        rows = uow.conn.execute(
            select(workflows, workflow_versions.c.graph)
            .join(
                workflow_versions,
                (workflow_versions.c.workflow_id == workflows.c.id)
                & (workflow_versions.c.version == workflows.c.active_version),
            )
            .where(workflows.c.status == "active")
        ).all()
        active = []
        for row in rows:
            key = (row.id, row.active_version)
            graph = self._compiled.get(key)
            if graph is None:
                try:
                    graph = self._compiled[key] = parse_graph(row.graph)
                except ValueError:  # pragma: no cover - graphs are validated when saved
                    log.exception(
                        "workflow %s version %s no longer compiles; skipped", row.id, row.active_version
                    )
                    continue
            active.append(ActiveWorkflow.from_row(row, row.active_version, graph))
        return WorkflowIndex.build(active)

    def graph_of(self, uow: UnitOfWork, workflow_id: str, version: int) -> Graph | None:
        """Any version's graph (waiting runs continue on the version they started with); None if gone."""
        key = (workflow_id, version)
        graph = self._compiled.get(key)
        if graph is None:
            raw = uow.conn.execute(
                select(workflow_versions.c.graph).where(
                    workflow_versions.c.workflow_id == workflow_id, workflow_versions.c.version == version
                )
            ).scalar()
            if raw is None:
                return None
            graph = self._compiled[key] = parse_graph(raw)
        return graph

    def invalidate(self) -> None:
        with self._lock:
            self._checked_at = -1e9
            self._stamp = None


def index_cache(ctx: AppContext) -> IndexCache:
    found = ctx.caches.get("workflows")
    if found is None:
        found = ctx.caches["workflows"] = IndexCache()
    return found


# -- views of the triggering event --------------------------------------------------------------------

SCALAR_EFFECTS = ("points", "balance", "tier", "tier_change", "expires_at", "release_at", "checkout")


def event_view(uow: UnitOfWork, activity: Activity) -> dict[str, Any]:
    """The event as filters and templates read it: its data, scalar effects, and a few basics.

    checkout_accept, checkout_reject and refund also carry the original checkout's data (total,
    items, store...) under the names it had, so "last purchase" workflows work on either event.
    """
    view: dict[str, Any] = {}
    effects = activity.effects
    for key in SCALAR_EFFECTS:
        if key in effects:
            view[key] = effects[key]
    original = effects.get("checkout")
    if isinstance(original, str) and activity.type in ("checkout_accept", "checkout_reject", "refund"):
        view.update(_original_checkout(uow, original))
    view.update(activity.data)
    items = view.get("items")
    if isinstance(items, list):
        view["items_count"] = sum(
            i.get("quantity", 1) if isinstance(i, dict) and isinstance(i.get("quantity", 1), int) else 1
            for i in items
        )
    view["type"] = activity.type
    view["id"] = activity.id
    view["occurred_at"] = isoformat_z(activity.occurred_at)
    view["points"] = effects.get("points", activity.points_delta)
    view["pending_points"] = activity.pending_delta
    view["program_id"] = activity.program_id
    view["source"] = activity.source
    return view


def _original_checkout(uow: UnitOfWork, activity_id: str) -> dict[str, Any]:
    from perkflow.activity.queries import get_activity

    recorded = {a.id: a for a in uow.component(ActivityLog).recorded if a.type == "checkout"}
    if activity_id in recorded:
        return dict(recorded[activity_id].data)
    try:
        return dict(get_activity(uow.conn, activity_id).data)
    except NotFound:  # pragma: no cover - the checkout was deleted by hand
        return {}


def raw_event_view(
    action: str, data: dict[str, Any], occurred_at: datetime, program_id: str | None
) -> dict[str, Any]:
    """The view of an event not stored yet (for the modifier branch)."""
    view = dict(data)
    items = view.get("items")
    if isinstance(items, list):
        view["items_count"] = sum(
            i.get("quantity", 1) if isinstance(i, dict) and isinstance(i.get("quantity", 1), int) else 1
            for i in items
        )
    view.update(type=action, occurred_at=isoformat_z(occurred_at), program_id=program_id)
    return view


# -- walking a graph -----------------------------------------------------------------------------------


@dataclass(slots=True)
class RunOutcome:
    """What a walk did: the path, each node's result, where it waits, and whether it was rejected."""

    path: list[str] = field(default_factory=list)
    results: dict[str, Any] = field(default_factory=dict)
    pending: list[tuple[str, datetime]] = field(default_factory=list)  # (wait node, resume at)
    acted: bool = False
    failed: bool = False
    interrupted: dict[str, Any] | None = None
    explain: bool = False

    @property
    def status(self) -> str:
        if self.interrupted is not None:
            return "interrupted"
        if self.pending:
            return "waiting"
        if self.failed:
            return "failed"
        # Ended at a filter before doing anything: the member or the event did not qualify.
        return "completed" if self.acted else "filtered"

    @property
    def worth_recording(self) -> bool:
        return self.acted or self.failed or bool(self.pending) or self.interrupted is not None


def walk(graph: Graph, scope: RunScope, start: list[str], outcome: RunOutcome) -> RunOutcome:
    """Run nodes from `start`, depth first in edge order; waits park their branch for later."""
    uow = scope.uow
    log_ = uow.component(ActivityLog)
    nodes = graph.nodes
    path = outcome.path
    results = outcome.results
    stack = start[::-1]
    while stack:
        node = nodes[stack.pop()]
        path.append(node.id)
        kind = node.kind
        if kind == "action":
            before = len(log_.recorded)
            try:
                result = ACTIONS[node.type](scope, node)
                results[node.id] = {"type": node.type, "status": "ok", **result}
                following = node.on_success
            except (ActionFailed, PerkflowError) as exc:
                # Services validate before they change anything, so a refused action left no trace
                # and the run can carry on along the action's fail output.
                outcome.failed = True
                following = node.on_fail
                results[node.id] = {
                    "type": node.type,
                    "status": "error",
                    "code": exc.code,
                    "error": exc.message,
                }
            outcome.acted = True
            if len(log_.recorded) > before:
                uow.component(WorkflowRunner).note_produced(log_.recorded[before:], scope)
        elif kind == "filter":
            assert node.group is not None and node.test is not None
            source: Any = scope.event if node.type == "filter.event_attribute" else scope.customer
            source = source if source is not None else {}
            passed = node.test(source, scope.now)
            following = node.on_success if passed else node.on_fail
            if outcome.explain:

                def resolve(condition: Any, source: Any = source) -> Any:
                    return lookup(source, condition.path)

                results[node.id] = {
                    "type": node.type,
                    "passed": passed,
                    "conditions": explain(node.group, resolve, scope.now),
                }
        elif node.type == "action.wait":
            params: WaitParams = node.params
            outcome.pending.append((node.id, scope.now + timedelta(seconds=params.seconds)))
            results[node.id] = {
                "type": node.type,
                "status": "waiting",
                "resume_at": isoformat_z(outcome.pending[-1][1]),
            }
            continue
        elif node.type == "action.interrupt":
            outcome.interrupted = {"node": node.id, "code": node.params.code, "message": node.params.message}
            results[node.id] = {"type": node.type, "status": "interrupted", **outcome.interrupted}
            return outcome
        else:  # pragma: no cover - validation lets no other node follow the trigger
            following = graph.next(node.id, "success")
        if following:
            stack.extend(following[::-1])
    return outcome


# -- the unit-of-work component ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Lineage:
    """Where an activity recorded by a workflow action comes from.

    `root` names what started the cascade (the triggering activity or schedule), `chain` the workflows
    whose runs led to it. A workflow never runs on an activity its own run led to (a workflow giving
    points on point_add would otherwise feed itself), a cascade stops at MAX_DEPTH, and the runs one
    root may trigger through workflow actions are capped at MAX_CASCADE_RUNS: without the cap, a few
    workflows that each answer the others' activities would multiply at every level.
    """

    root: str
    chain: frozenset[str]
    depth: int


class WorkflowRunner:
    """Runs the workflows triggered by the unit of work's activities and buffers their run records.

    In a dry run (`dry_run`) it runs one given workflow only, whatever its status, and keeps each run
    in `captured` instead of writing it; the caller never commits that unit of work.
    """

    def __init__(self, uow: UnitOfWork) -> None:
        self.uow = uow
        # Activity seq -> the run whose action recorded it; its Lineage is worked out only if a
        # workflow listens to that activity (most action activities, e.g. bonuses, have none).
        self.produced_by: dict[int, RunScope] = {}
        self._cascade_runs: dict[str, int] = {}
        self._programs: dict[str | None, ProgramConfig | None] = {}
        self._now_param = uow.db.param_datetime(uow.now)
        self._json = uow.db.param_json
        self._now_iso = isoformat_z(uow.now)
        # The runs an activity starts share its trigger, and a workflow's runs mostly take the same
        # path: both are serialised once, not per run record.
        self._trigger_key: tuple[int, str] | None = None
        self._trigger: dict[str, Any] = {}
        self._trigger_param: Any = None
        self._path_params: dict[tuple[str, ...], Any] = {}
        # The last columns of every run that does not wait: no context, no resumption, finished now.
        self._not_waiting = (uow.db.param_json({}), None, None, self._now_param, self._now_param)
        self._rows: list[tuple[Any, ...]] = []
        self._index: WorkflowIndex | None = None
        self.capture = False
        self.captured: list[dict[str, Any]] = []

    @property
    def index(self) -> WorkflowIndex:
        if self._index is None:
            self._index = index_cache(self.uow.ctx).get(self.uow)
        return self._index

    def use_index(self, index: WorkflowIndex) -> None:
        self._index = index

    def dry_run(self, workflow: ActiveWorkflow) -> None:
        self._index = WorkflowIndex.build([workflow])
        self.capture = True

    def program_for(self, workflow: ActiveWorkflow, program_id: str | None) -> ProgramConfig | None:
        wanted = workflow.program_id or program_id
        if wanted in self._programs:
            return self._programs[wanted]
        catalog = self.uow.component(ProgramCatalog)
        found: ProgramConfig | None
        if wanted is not None:
            found = catalog.programs.get(wanted)
        else:
            default = catalog.default_id()
            found = catalog.programs[default] if default is not None else None
        self._programs[wanted] = found
        return found

    def note_produced(self, activities: list[Activity], scope: RunScope) -> None:
        for activity in activities:
            self.produced_by[activity.seq] = scope

    def lineage_of(self, activity: Activity) -> Lineage:
        scope = self.produced_by.get(activity.seq)
        if scope is None:
            return Lineage(activity.id, frozenset(), 0)
        return Lineage(scope.root or scope.trigger_ref, scope.chain | {scope.workflow_id}, scope.depth + 1)

    def on_activities(self, activities: list[Activity]) -> None:
        index = self.index
        if not index.by_event:
            return
        for activity in activities:
            bucket = index.by_event.get(activity.type)
            if bucket is None:
                continue
            lineage = self.lineage_of(activity)
            view = event_view(self.uow, activity)
            now = self.uow.now
            for workflow in bucket.candidates(view):
                if workflow.program_id is not None and activity.program_id not in (None, workflow.program_id):
                    continue
                if not workflow.in_window(activity.occurred_at) or workflow.id in lineage.chain:
                    continue
                gate = workflow.graph.gate
                if (
                    gate is not None
                    and workflow.run_log != "all"
                    and not self.capture
                    and not gate.test(view, now)  # type: ignore[misc]
                ):
                    continue  # the run would end at its first filter without doing anything
                if lineage.depth and not self._within_cascade(workflow, activity, lineage):
                    continue
                self.run_for_activity(workflow, activity, view, lineage)

    def _within_cascade(self, workflow: ActiveWorkflow, activity: Activity, lineage: Lineage) -> bool:
        runs = self._cascade_runs.get(lineage.root, 0)
        if runs < 0:
            return False  # this cascade was stopped already
        if lineage.depth >= MAX_DEPTH or runs >= MAX_CASCADE_RUNS:
            # Recorded once per cascade, not once per workflow it spares.
            self._cascade_runs[lineage.root] = -1
            self._record_skip(
                workflow,
                activity,
                f"too many workflows triggered each other (a cascade stops at depth {MAX_DEPTH} "
                f"or after {MAX_CASCADE_RUNS} runs)",
            )
            return False
        self._cascade_runs[lineage.root] = runs + 1
        return True

    def scope_for_activity(
        self,
        workflow: ActiveWorkflow,
        activity: Activity,
        view: dict[str, Any],
        lineage: Lineage | None = None,
        activity_id: str | None = None,
    ) -> RunScope:
        program = self.program_for(workflow, activity.program_id)
        uow = self.uow
        # Positional, in RunScope's field order: one scope per run, and matching a dozen keywords
        # costs more than the rest of the call.
        scope = RunScope(
            uow,
            workflow.id,
            workflow.version,
            workflow.kind,
            workflow.bonus_cap,
            activity.member_id,
            program,
            uow.now,
            activity_id or activity.id,  # trigger_ref
            activity.occurred_at,
            view,
            CustomerView(uow, activity.member_id, program),
        )
        scope.now_iso = self._now_iso
        if lineage is not None:
            scope.depth, scope.root, scope.chain = lineage.depth, lineage.root, lineage.chain
        if activity.type in REWARD_EVENTS or activity.type in COUPON_EVENTS:
            scope.coupon = coupon_view(activity.data, "reward" if activity.type == "reward_claim" else "pool")
        if activity.type in REWARD_EVENTS or activity.type == "coupon_assigned":
            scope.reward = reward_view(activity.data, activity.program_id)
        return scope

    def run_for_activity(
        self,
        workflow: ActiveWorkflow,
        activity: Activity,
        view: dict[str, Any],
        lineage: Lineage | None = None,
    ) -> RunOutcome:
        graph = workflow.graph
        key = (activity.seq, graph.trigger.type)
        if key != self._trigger_key:
            trigger: dict[str, Any] = {
                "kind": graph.trigger_type,
                "activity": activity.id,
                "type": activity.type,
            }
            if activity.type in ("segment_entered", "segment_left"):
                trigger["segment_id"] = activity.data.get("segment_id")
            self._trigger_key, self._trigger, self._trigger_param = key, trigger, None
        scope = self.scope_for_activity(workflow, activity, view, lineage, self._trigger["activity"])
        return self.execute(workflow, scope, self._trigger, graph.trigger.on_success)

    def execute(
        self,
        workflow: ActiveWorkflow,
        scope: RunScope,
        trigger: dict[str, Any],
        start: list[str],
        outcome: RunOutcome | None = None,
    ) -> RunOutcome:
        if outcome is None:
            outcome = RunOutcome(path=[workflow.graph.trigger.id], explain=self.capture)
        walk(workflow.graph, scope, start, outcome)
        if outcome.worth_recording or workflow.run_log == "all" or self.capture:
            self.record(workflow.id, workflow.version, scope, trigger, outcome)
        return outcome

    def record(
        self, workflow_id: str, version: int, scope: RunScope, trigger: dict[str, Any], outcome: RunOutcome
    ) -> None:
        resume_at = min(at for _node, at in outcome.pending) if outcome.pending else None
        context: dict[str, Any] = {}
        if outcome.pending:
            # What the run needs to continue after its wait, since the event is not kept with it.
            context = {
                "event": scope.event,
                "reward": scope.reward,
                "coupon": scope.coupon,
                "program_id": scope.program.id if scope.program else None,
                "trigger_ref": scope.trigger_ref,
                "occurred_at": isoformat_z(scope.occurred_at),
                "pending": [[node, isoformat_z(at)] for node, at in outcome.pending],
            }
        status = outcome.status
        if self.capture:
            self.captured.append(
                {
                    "workflow_id": workflow_id,
                    "version": version,
                    "member_id": scope.member_id,
                    "trigger": trigger,
                    "status": status,
                    "path": outcome.path,
                    "results": outcome.results,
                    "resume_at": isoformat_z(resume_at) if resume_at else None,
                }
            )
            return
        json = self._json
        if trigger is self._trigger:
            if self._trigger_param is None:
                self._trigger_param = json(trigger)
            trigger_param = self._trigger_param
        else:
            trigger_param = json(trigger)
        path_key = tuple(outcome.path)
        path_param = self._path_params.get(path_key)
        if path_param is None:
            path_param = self._path_params[path_key] = json(list(path_key))
        if outcome.pending:
            waiting: tuple[Any, ...] = (
                json(context),
                self.uow.db.param_datetime(resume_at),
                outcome.pending[0][0],
                self._now_param,
                None,
            )
        else:
            waiting = self._not_waiting
        self._rows.append(
            (
                workflow_id,
                version,
                scope.member_id,
                trigger_param,
                status,
                path_param,
                json(outcome.results),
                *waiting,
            )
        )

    def _record_skip(self, workflow: ActiveWorkflow, activity: Activity, reason: str) -> None:
        log.warning("workflow %s not run for %s: %s", workflow.id, activity.id, reason)
        if self.capture:
            return
        db = self.uow.db
        now = db.param_datetime(self.uow.now)
        self._rows.append(
            (
                workflow.id,
                workflow.version,
                activity.member_id,
                db.param_json({"kind": "event", "activity": activity.id, "type": activity.type}),
                "failed",
                db.param_json([workflow.graph.trigger.id]),
                db.param_json({workflow.graph.trigger.id: {"status": "error", "error": reason}}),
                db.param_json({}),
                None,
                None,
                now,
                now,
            )
        )

    # -- the modifier branch (before an event is stored) ------------------------------------------------

    def guard(
        self, member_id: str, action: str, data: dict[str, Any], occurred_at: datetime, program_id: str | None
    ) -> dict[str, Any] | None:
        """Run the modifier branches listening to `action`; returns the interrupt that rejects the event."""
        workflows_ = self.index.modifiers.get(action)
        if not workflows_:
            return None
        view = raw_event_view(action, data, occurred_at, program_id)
        for workflow in workflows_:
            if workflow.program_id is not None and program_id not in (None, workflow.program_id):
                continue
            if not workflow.in_window(occurred_at):
                continue
            program = self.program_for(workflow, program_id)
            scope = workflow.scope(
                self.uow,
                member_id,
                program,
                now=self.uow.now,
                trigger_ref=f"pre:{action}",
                occurred_at=occurred_at,
                event=view,
                customer=CustomerView(self.uow, member_id, program),
            )
            outcome = RunOutcome(path=[workflow.graph.trigger.id], explain=self.capture)
            walk(workflow.graph, scope, workflow.graph.next(workflow.graph.trigger.id, "modifier"), outcome)
            if outcome.interrupted is not None or workflow.run_log == "all" or self.capture:
                trigger = {"kind": "modifier", "type": action, "data": data}
                self.record(workflow.id, workflow.version, scope, trigger, outcome)
            if outcome.interrupted is not None:
                return {**outcome.interrupted, "workflow_id": workflow.id, "version": workflow.version}
        return None

    # -- component protocol -------------------------------------------------------------------------------

    def before_commit(self) -> bool:
        return False

    def flush(self) -> None:
        if self._rows:
            rows, self._rows = self._rows, []
            self.uow.db.bulk_insert(self.uow.conn, workflow_runs, RUN_COLUMNS, rows)


class EventInterrupted(PerkflowError):
    """A workflow's interrupt node rejected the event; `code` is the one the workflow chose."""

    status = 422


def run_workflows(uow: UnitOfWork, activities: list[Activity]) -> None:
    """Activity subscriber: run what the activities trigger, in the same transaction."""
    if not uow.has_component(WorkflowRunner) and not index_cache(uow.ctx).get(uow).by_event:
        return
    uow.component(WorkflowRunner).on_activities(activities)


def guards_events(uow: UnitOfWork) -> bool:
    """Whether `guard_event` can do anything in this unit of work (ingestion asks once per batch)."""
    return uow.has_component(WorkflowRunner) or bool(index_cache(uow.ctx).get(uow).modifiers)


def guard_event(
    uow: UnitOfWork,
    member_id: str,
    action: str,
    data: dict[str, Any],
    occurred_at: datetime,
    program_id: str | None,
) -> None:
    """Ingest hook: modifier branches run before the event is applied; an interrupt rejects it."""
    if not guards_events(uow):
        return
    interrupt = uow.component(WorkflowRunner).guard(member_id, action, data, occurred_at, program_id)
    if interrupt is not None:
        raise EventInterrupted(
            interrupt["message"],
            code=interrupt["code"],
            details={
                "interrupted_by": {
                    "workflow_id": interrupt["workflow_id"],
                    "version": interrupt["version"],
                    "node": interrupt["node"],
                }
            },
        )
