"""Dry runs: a workflow run on a sample event and member that shows what would happen, writing nothing.

The run is real up to the commit: filters see the member as stored, actions go through the same
services (so the points, the tier and the coupon a claim would hand out are the actual ones), and
platform actions show the request each platform would receive. Then the unit of work is rolled back
instead of committed: buffered writes are never flushed and direct writes (a coupon taken from its
pool, a campaign budget) are undone, and nothing reaches the outbox. Only the given workflow runs,
whatever its status; workflows that its actions' activities would trigger are not run.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.exc import DBAPIError

from perkflow.activity.stream import Activity
from perkflow.conditions import evaluate, explain, lookup
from perkflow.core.clock import isoformat_z
from perkflow.core.context import AppContext
from perkflow.core.db import DatabaseBusy
from perkflow.core.errors import InvalidInput, NotFound
from perkflow.core.transactions import is_transient
from perkflow.core.uow import UnitOfWork
from perkflow.members.repository import MemberRepository
from perkflow.members.views import CustomerView
from perkflow.workflows.engine import ActiveWorkflow, RunOutcome, WorkflowIndex, WorkflowRunner, event_view
from perkflow.workflows.graph import EventTrigger, SegmentTrigger, parse_graph
from perkflow.workflows.service import version_row, workflow_row

DRY_RUN_REF = "dry-run"


def dry_run(
    ctx: AppContext,
    workflow_id: str,
    *,
    member_id: str,
    event: dict[str, Any] | None = None,
    member: dict[str, Any] | None = None,
    version: int | None = None,
    at: datetime | None = None,
) -> dict[str, Any]:
    """Run the workflow once for the member and return the path and every action's result."""
    try:
        with ctx.uow() as uow:  # never committed: leaving the block rolls everything back
            return _dry_run(uow, workflow_id, member_id, event, member, version, at)
    except DBAPIError as exc:
        if is_transient(exc):
            raise DatabaseBusy("the database is busy; try the dry run again") from exc
        raise


def _dry_run(
    uow: UnitOfWork,
    workflow_id: str,
    member_id: str,
    event: dict[str, Any] | None,
    member: dict[str, Any] | None,
    version: int | None,
    at: datetime | None,
) -> dict[str, Any]:
    row = workflow_row(uow, workflow_id)
    number = version or row.latest_version
    graph = parse_graph(version_row(uow, workflow_id, number).graph)
    workflow = ActiveWorkflow.from_row(row, number, graph)
    runner = uow.component(WorkflowRunner)
    runner.use_index(WorkflowIndex())  # nothing runs while a sample member is enrolled
    if uow.component(MemberRepository).get(member_id) is None:
        if member is None:
            raise NotFound(
                f"member {member_id!r} does not exist; pass `member` (a profile) to try the workflow on a "
                "new member, enrolled for the dry run only",
                code="member_not_found",
            )
        _enrol(uow, member_id, member, workflow.program_id)
    elif member is not None:
        raise InvalidInput(
            f"member {member_id!r} exists; `member` is only for trying a workflow on a new member",
            code="invalid_dry_run",
        )
    runner.dry_run(workflow)
    out: dict[str, Any] = {
        "workflow_id": workflow_id,
        "version": number,
        "member_id": member_id,
        "dry_run": True,
    }
    trigger = graph.trigger
    if isinstance(trigger.params, EventTrigger | SegmentTrigger):
        activity = _sample_activity(uow, workflow, member_id, event)
        out["event"] = activity.to_public() | {"id": None, "seq": None}
        if graph.has_modifier:
            interrupt = runner.guard(
                member_id, activity.type, activity.data, activity.occurred_at, activity.program_id
            )
            out["modifier"] = runner.captured.pop() if runner.captured else None
            if interrupt is not None:
                out["status"] = "interrupted"
                out["rejection"] = {"code": interrupt["code"], "message": interrupt["message"]}
                return out
        view = event_view(uow, activity)
        out["event_view"] = view
        scope = runner.scope_for_activity(workflow, activity, view)
        scope.trigger_ref = DRY_RUN_REF
        scope.preview = True
        trigger_info = {"kind": graph.trigger_type, "type": activity.type, "activity": None}
        runner.execute(workflow, scope, trigger_info, graph.next(trigger.id, "success"))
    else:
        if event is not None:
            raise InvalidInput(
                "a date-triggered workflow has no event; pass `at` to run it as of a moment",
                code="invalid_dry_run",
            )
        moment = at or uow.now
        program = runner.program_for(workflow, None)
        customer = CustomerView(uow, member_id, program, now=moment)
        out["occurs_at"] = isoformat_z(moment)
        if trigger.group is not None:
            passed = evaluate(trigger.group, lambda c: lookup(customer, c.path), moment)
            out["prefilter"] = {
                "passed": passed,
                "conditions": explain(trigger.group, lambda c: lookup(customer, c.path), moment),
            }
            if not passed:
                out.update(status="filtered", path=[trigger.id], results={})
                return out
        scope = workflow.scope(
            uow,
            member_id,
            program,
            now=moment,
            trigger_ref=DRY_RUN_REF,
            occurred_at=moment,
            event=None,
            customer=customer,
            preview=True,
        )
        runner.execute(
            workflow,
            scope,
            {"kind": "date", "occurs_at": isoformat_z(moment)},
            graph.next(trigger.id, "success"),
            RunOutcome(path=[trigger.id], explain=True),
        )
    run = runner.captured[-1]
    out.update(status=run["status"], path=run["path"], results=run["results"], resume_at=run["resume_at"])
    return out


def _enrol(uow: UnitOfWork, member_id: str, profile: dict[str, Any], program_id: str | None) -> None:
    from perkflow.events.service import ingest

    raw: dict[str, Any] = {"customer": member_id, "action": "opt_in", "data": profile}
    if program_id is not None:
        raw["program"] = program_id
    outcome = ingest(uow, [raw], source="dry-run")[0]
    if outcome.error is not None:
        raise InvalidInput(
            f"the sample member could not be enrolled: {outcome.error.message}",
            code="invalid_dry_run",
            details={"member": outcome.error.to_dict()},
        )


def _sample_activity(
    uow: UnitOfWork, workflow: ActiveWorkflow, member_id: str, event: dict[str, Any] | None
) -> Activity:
    """The triggering activity as the engine would see it, built from the sample (never recorded)."""
    trigger = workflow.graph.trigger
    event = dict(event or {})
    allowed: list[str]
    if isinstance(trigger.params, SegmentTrigger):
        allowed = [workflow.graph.trigger_type]
        data = {"segment_id": trigger.params.segment, "segment_name": trigger.params.segment}
        data.update(event.get("data") or {})
    else:
        allowed = list(trigger.params.events)
        data = dict(event.get("data") or {})
    event_type = event.get("type") or allowed[0]
    if event_type not in allowed:
        raise InvalidInput(
            f"the workflow is triggered by {', '.join(allowed)}, not {event_type!r}",
            code="invalid_dry_run",
            details={"field": "event.type", "allowed": allowed},
        )
    program = WorkflowRunner(uow).program_for(workflow, event.get("program"))
    occurred_at = event.get("occurred_at") or uow.now
    effects = dict(event.get("effects") or {})
    return Activity(
        seq=0,
        type=event_type,
        member_id=member_id,
        program_id=program.id if program else None,
        occurred_at=occurred_at,
        recorded_at=uow.now,
        data=data,
        effects=effects,
        source="dry-run",
        points_delta=int(effects.get("points", 0)) if isinstance(effects.get("points"), int) else 0,
    )
