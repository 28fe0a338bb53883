"""Workflows as the API manages them: graphs saved as versions, activation, and their runs.

A workflow is created inactive. Saving checks the graph against what it refers to (event types,
member fields, rewards, tiers, segments, integrations) and refuses it with errors that name the node.
Editing a workflow whose latest version has been active creates a new version (runs keep pointing at
the version they used, and a waiting run continues on it); an active workflow's new version becomes
the one new runs use at once. Changes reach the engine's index after commit, in this process at once
and in others within a second.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, update

from perkflow.core.clock import isoformat_z
from perkflow.core.errors import Conflict, InvalidInput, NotFound
from perkflow.core.ids import new_id
from perkflow.core.uow import UnitOfWork
from perkflow.events.types import BUILTIN_ACTIONS, SYSTEM_ACTIVITY_TYPES, EventTypeCatalog
from perkflow.members.repository import MemberRepository
from perkflow.members.service import PROFILE_COLUMNS, FieldCatalog
from perkflow.members.views import customer_attribute_names
from perkflow.programs.service import ProgramCatalog
from perkflow.workflows.engine import index_cache
from perkflow.workflows.graph import Catalog, DateTrigger, Graph, GraphErrors, parse_graph
from perkflow.workflows.tables import workflow_occurrences, workflow_runs, workflow_versions, workflows

KINDS = ("general", "campaign")
STATUSES = ("inactive", "active", "archived")
RUN_LOGS = ("acted", "all")
RUN_STATUSES = ("completed", "filtered", "failed", "waiting", "interrupted", "cancelled")

# What the data of the activities Perkflow records itself holds, so `event.<typo>` is caught on save.
# Events sent through the API keep whatever data the shop sends, so their attributes are not checked.
SYSTEM_EVENT_ATTRIBUTES: dict[str, set[str]] = {
    "tier_up": {"from_tier", "to_tier", "tier", "from_tier_id", "to_tier_id", "qualifying_points", "reason"},
    "reward_claim": {
        "reward_id",
        "reward_name",
        "reward_description",
        "points_cost",
        "free",
        "coupon_code",
        "coupon_value",
        "coupon_currency",
        "coupon_expires_at",
    },
    "coupon_assigned": {
        "reward_id",
        "reward_name",
        "coupon_code",
        "coupon_value",
        "coupon_currency",
        "coupon_expires_at",
        "workflow_id",
        "node",
    },
    "segment_entered": {"segment_id", "segment_name"},
}
SYSTEM_EVENT_ATTRIBUTES["tier_down"] = SYSTEM_EVENT_ATTRIBUTES["tier_up"]
SYSTEM_EVENT_ATTRIBUTES["segment_left"] = SYSTEM_EVENT_ATTRIBUTES["segment_entered"]
# Effects the engine adds to every event view (see engine.event_view).
EFFECT_ATTRIBUTES = {"balance", "tier", "tier_change", "expires_at", "release_at", "checkout", "items_count"}


def _segment_ids(uow: UnitOfWork) -> set[str]:
    from perkflow.segments.tables import segments

    return set(uow.conn.execute(select(segments.c.id)).scalars())


def catalog_for(uow: UnitOfWork, program_id: str | None) -> Catalog:
    """Everything a graph may refer to, as it exists now."""
    from perkflow.rewards.tables import rewards
    from perkflow.sync.integrations import load_integrations

    custom_types = uow.component(EventTypeCatalog).types
    custom_fields = uow.component(FieldCatalog).fields
    event_attributes: dict[str, set[str] | None] = dict.fromkeys(BUILTIN_ACTIONS)
    for name in SYSTEM_ACTIVITY_TYPES:
        known = SYSTEM_EVENT_ATTRIBUTES.get(name)
        event_attributes[name] = known | EFFECT_ATTRIBUTES if known is not None else None
    for name, spec in custom_types.items():
        event_attributes[name] = set(spec["attributes"]) | EFFECT_ATTRIBUTES
    programs = uow.component(ProgramCatalog).programs
    ladders = [programs[program_id]] if program_id in programs else list(programs.values())
    return Catalog(
        event_types=set(event_attributes),
        event_attributes=event_attributes,
        customer_attributes=customer_attribute_names(custom_fields),
        rewards=set(uow.conn.execute(select(rewards.c.id)).scalars()),
        tiers={name for p in ladders for t in p.ladder.tiers for name in (t.id, t.name)},
        segments=_segment_ids(uow),
        integrations={i.id: i.kind for i in load_integrations(uow) if i.status != "disconnected"},
        member_fields={*PROFILE_COLUMNS, *custom_fields},
    )


def check_graph(uow: UnitOfWork, raw: Any, program_id: str | None) -> Graph:
    """The compiled graph, or a 422 listing every problem with the node it concerns."""
    try:
        return parse_graph(raw, catalog_for(uow, program_id))
    except GraphErrors as exc:
        first = exc.errors[0]
        where = f"node {first['node']!r}: " if first.get("node") else ""
        raise InvalidInput(
            f"the workflow graph is invalid: {where}{first['message']}"
            + (f" (and {len(exc.errors) - 1} more)" if len(exc.errors) > 1 else ""),
            code="invalid_workflow",
            details={"errors": exc.errors},
        ) from exc


# -- reading ------------------------------------------------------------------------------------------


def workflow_row(uow: UnitOfWork, workflow_id: str, *, lock: bool = False) -> Any:
    stmt = select(workflows).where(workflows.c.id == workflow_id)
    row = uow.conn.execute(uow.db.for_update(stmt) if lock else stmt).first()
    if row is None:
        raise NotFound(f"workflow {workflow_id!r} does not exist", code="workflow_not_found")
    return row


def version_row(uow: UnitOfWork, workflow_id: str, version: int) -> Any:
    row = uow.conn.execute(
        select(workflow_versions).where(
            workflow_versions.c.workflow_id == workflow_id, workflow_versions.c.version == version
        )
    ).first()
    if row is None:
        raise NotFound(
            f"workflow {workflow_id!r} has no version {version}", code="workflow_version_not_found"
        )
    return row


def _public(row: Any, version: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "description": row.description,
        "kind": row.kind,
        "status": row.status,
        "program_id": row.program_id,
        "priority": row.priority,
        "starts_at": row.starts_at,
        "ends_at": row.ends_at,
        "bonus_cap": row.bonus_cap,
        "run_log": row.run_log,
        "template": row.template,
        "version": row.latest_version,
        "active_version": row.active_version if row.status == "active" else None,
        "trigger": {"type": version.trigger_type, "key": version.trigger_key},
        "graph": version.graph,
        "activated_at": row.activated_at,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    }


def get_workflow(uow: UnitOfWork, workflow_id: str) -> dict[str, Any]:
    row = workflow_row(uow, workflow_id)
    return _public(row, version_row(uow, workflow_id, row.latest_version))


def list_workflows(
    uow: UnitOfWork,
    *,
    status: str | None = None,
    kind: str | None = None,
    trigger: str | None = None,
    template: str | None = None,
    limit: int = 50,
    after: str | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """Workflows in id order (archived ones only when asked for), with the cursor of the next page."""
    stmt = select(
        workflows,
        workflow_versions.c.graph,
        workflow_versions.c.trigger_type,
        workflow_versions.c.trigger_key,
    ).join(
        workflow_versions,
        (workflow_versions.c.workflow_id == workflows.c.id)
        & (workflow_versions.c.version == workflows.c.latest_version),
    )
    if status is not None:
        stmt = stmt.where(workflows.c.status == status)
    else:
        stmt = stmt.where(workflows.c.status != "archived")
    if kind is not None:
        stmt = stmt.where(workflows.c.kind == kind)
    if trigger is not None:
        key = workflow_versions.c.trigger_key  # the trigger's event types, comma-separated
        stmt = stmt.where(
            (workflow_versions.c.trigger_type == trigger)
            | (key == trigger)
            | key.startswith(f"{trigger},", autoescape=True)
            | key.endswith(f",{trigger}", autoescape=True)
            | key.contains(f",{trigger},", autoescape=True)
        )
    if template is not None:
        stmt = stmt.where(workflows.c.template == template)
    if after:
        stmt = stmt.where(workflows.c.id > after)
    rows = uow.conn.execute(stmt.order_by(workflows.c.id).limit(limit + 1)).all()
    found = [_public(r, r) for r in rows[:limit]]
    return found, (found[-1]["id"] if len(rows) > limit and found else None)


def installed_templates(uow: UnitOfWork) -> dict[str, str]:
    """Template name -> the workflow installed from it (archived ones do not count)."""
    rows = uow.conn.execute(
        select(workflows.c.template, workflows.c.id).where(
            workflows.c.template.is_not(None), workflows.c.status != "archived"
        )
    )
    return {template: workflow_id for template, workflow_id in rows.all()}  # noqa: C416 - rows, not pairs


def list_versions(uow: UnitOfWork, workflow_id: str) -> list[dict[str, Any]]:
    row = workflow_row(uow, workflow_id)
    versions = uow.conn.execute(
        select(workflow_versions)
        .where(workflow_versions.c.workflow_id == workflow_id)
        .order_by(workflow_versions.c.version.desc())
    ).all()
    return [
        {
            "version": v.version,
            "active": row.status == "active" and row.active_version == v.version,
            "trigger": {"type": v.trigger_type, "key": v.trigger_key},
            "graph": v.graph,
            "created_at": v.created_at,
        }
        for v in versions
    ]


def get_version(uow: UnitOfWork, workflow_id: str, version: int) -> dict[str, Any]:
    row = workflow_row(uow, workflow_id)
    v = version_row(uow, workflow_id, version)
    return {
        "version": v.version,
        "active": row.status == "active" and row.active_version == v.version,
        "trigger": {"type": v.trigger_type, "key": v.trigger_key},
        "graph": v.graph,
        "created_at": v.created_at,
    }


# -- writing ------------------------------------------------------------------------------------------


def _trigger_columns(graph: Graph) -> dict[str, Any]:
    keys = graph.trigger_keys
    return {"trigger_type": graph.trigger_type, "trigger_key": ",".join(keys)[:255] if keys else None}


def _check_schedule(
    kind: str, starts_at: datetime | None, ends_at: datetime | None, bonus_cap: int | None
) -> None:
    if kind not in KINDS:
        raise InvalidInput(f"kind is one of {', '.join(KINDS)}", code="invalid_workflow")
    if kind == "general":
        given = [
            name
            for name, value in (("starts_at", starts_at), ("ends_at", ends_at), ("bonus_cap", bonus_cap))
            if value is not None
        ]
        if given:
            raise InvalidInput(
                f"only campaigns have {', '.join(given)}; use kind campaign",
                code="invalid_workflow",
                details={"fields": given},
            )
    if starts_at is not None and ends_at is not None and ends_at <= starts_at:
        raise InvalidInput(
            "a campaign ends after it starts", code="invalid_workflow", details={"field": "ends_at"}
        )


def _check_program(uow: UnitOfWork, program_id: str | None) -> None:
    if program_id is not None:
        uow.component(ProgramCatalog).get(program_id)


def _invalidate(uow: UnitOfWork) -> None:
    uow.after_commit(index_cache(uow.ctx).invalidate)


def create_workflow(uow: UnitOfWork, spec: dict[str, Any], *, template: str | None = None) -> dict[str, Any]:
    kind = spec.get("kind") or "general"
    _check_schedule(kind, spec.get("starts_at"), spec.get("ends_at"), spec.get("bonus_cap"))
    program_id = spec.get("program_id")
    _check_program(uow, program_id)
    graph = check_graph(uow, spec.get("graph"), program_id)
    workflow_id = spec.get("id") or new_id("wf")
    if uow.conn.execute(select(workflows.c.id).where(workflows.c.id == workflow_id)).first() is not None:
        raise Conflict(f"workflow {workflow_id!r} already exists", code="workflow_exists")
    now = uow.now
    uow.conn.execute(
        insert(workflows).values(
            id=workflow_id,
            name=spec["name"],
            description=spec.get("description") or "",
            kind=kind,
            status="inactive",
            program_id=program_id,
            latest_version=1,
            active_version=None,
            starts_at=spec.get("starts_at"),
            ends_at=spec.get("ends_at"),
            bonus_cap=spec.get("bonus_cap"),
            template=template,
            priority=spec.get("priority") or 0,
            run_log=spec.get("run_log") or "acted",
            activated_at=None,
            created_at=now,
            updated_at=now,
        )
    )
    uow.conn.execute(
        insert(workflow_versions).values(
            workflow_id=workflow_id, version=1, graph=graph.raw, created_at=now, **_trigger_columns(graph)
        )
    )
    return get_workflow(uow, workflow_id)


def update_workflow(uow: UnitOfWork, workflow_id: str, changes: dict[str, Any]) -> dict[str, Any]:
    """Change settings and/or the graph; see the module docstring for when that makes a version."""
    row = workflow_row(uow, workflow_id, lock=True)
    if row.status == "archived":
        raise Conflict(f"workflow {workflow_id!r} is archived", code="workflow_archived")
    merged = {
        key: changes[key] if key in changes else getattr(row, key)
        for key in ("kind", "starts_at", "ends_at", "bonus_cap")
    }
    _check_schedule(merged["kind"], merged["starts_at"], merged["ends_at"], merged["bonus_cap"])
    program_id = changes.get("program_id", row.program_id)
    _check_program(uow, program_id)
    values: dict[str, Any] = {
        key: changes[key]
        for key in (
            "name",
            "description",
            "kind",
            "program_id",
            "priority",
            "starts_at",
            "ends_at",
            "bonus_cap",
            "run_log",
        )
        if key in changes
    }
    if values.get("description") is None and "description" in values:
        values["description"] = ""
    if values.get("priority") is None and "priority" in values:
        values["priority"] = 0
    now = uow.now
    if "graph" in changes:
        graph = check_graph(uow, changes["graph"], program_id)
        if row.status == "active":
            _check_activatable(graph, values.get("kind", row.kind), merged, now)
        has_run = row.active_version is not None and row.latest_version <= row.active_version
        if has_run:
            version = row.latest_version + 1
            uow.conn.execute(
                insert(workflow_versions).values(
                    workflow_id=workflow_id,
                    version=version,
                    graph=graph.raw,
                    created_at=now,
                    **_trigger_columns(graph),
                )
            )
            values["latest_version"] = version
            if row.status == "active":
                values["active_version"] = version
        else:
            uow.conn.execute(
                update(workflow_versions)
                .where(
                    workflow_versions.c.workflow_id == workflow_id,
                    workflow_versions.c.version == row.latest_version,
                )
                .values(graph=graph.raw, created_at=now, **_trigger_columns(graph))
            )
    elif "program_id" in values:
        # The graph's references (tiers) are checked against the program it will run in.
        check_graph(uow, version_row(uow, workflow_id, row.latest_version).graph, program_id)
    if values or "graph" in changes:
        values["updated_at"] = now
        uow.conn.execute(update(workflows).where(workflows.c.id == workflow_id).values(**values))
        if row.status == "active":
            _invalidate(uow)
    return get_workflow(uow, workflow_id)


def _check_activatable(graph: Graph, kind: str, schedule: dict[str, Any], now: datetime) -> None:
    ends_at = schedule.get("ends_at")
    if kind == "campaign" and ends_at is not None and ends_at <= now:
        raise Conflict(
            f"the campaign ended at {isoformat_z(ends_at)}; move ends_at to activate it",
            code="campaign_ended",
        )
    params = graph.trigger.params
    if isinstance(params, DateTrigger) and params.at is not None and params.at <= now:
        raise InvalidInput(
            f"the workflow graph is invalid: node {graph.trigger.id!r}: the one-time moment "
            f"{isoformat_z(params.at)} has passed",
            code="invalid_workflow",
            details={
                "errors": [
                    {"node": graph.trigger.id, "field": "params.at", "message": "the moment has passed"}
                ]
            },
        )


def activate(uow: UnitOfWork, workflow_id: str) -> dict[str, Any]:
    """Make the latest version the one new runs use; its graph is checked again first."""
    row = workflow_row(uow, workflow_id, lock=True)
    if row.status == "archived":
        raise Conflict(f"workflow {workflow_id!r} is archived", code="workflow_archived")
    version = version_row(uow, workflow_id, row.latest_version)
    graph = check_graph(uow, version.graph, row.program_id)
    if row.status == "active" and row.active_version == row.latest_version:
        return get_workflow(uow, workflow_id)
    now = uow.now
    _check_activatable(graph, row.kind, {"ends_at": row.ends_at}, now)
    values: dict[str, Any] = {"status": "active", "active_version": row.latest_version, "updated_at": now}
    if row.status != "active":
        values["activated_at"] = now
    uow.conn.execute(update(workflows).where(workflows.c.id == workflow_id).values(**values))
    _invalidate(uow)
    return get_workflow(uow, workflow_id)


def deactivate(uow: UnitOfWork, workflow_id: str) -> dict[str, Any]:
    """Stop new runs; runs already waiting continue on their version."""
    row = workflow_row(uow, workflow_id, lock=True)
    if row.status == "archived":
        raise Conflict(f"workflow {workflow_id!r} is archived", code="workflow_archived")
    if row.status == "active":
        uow.conn.execute(
            update(workflows)
            .where(workflows.c.id == workflow_id)
            .values(status="inactive", updated_at=uow.now)
        )
        _invalidate(uow)
    return get_workflow(uow, workflow_id)


def archive(uow: UnitOfWork, workflow_id: str) -> int:
    """Delete a workflow from use: it stops, its waiting runs are cancelled, its history stays readable.

    Returns how many waiting runs were cancelled.
    """
    row = workflow_row(uow, workflow_id, lock=True)
    if row.status == "archived":
        return 0
    now = uow.now
    uow.conn.execute(
        update(workflows).where(workflows.c.id == workflow_id).values(status="archived", updated_at=now)
    )
    cancelled = uow.conn.execute(
        update(workflow_runs)
        .where(workflow_runs.c.workflow_id == workflow_id, workflow_runs.c.status == "waiting")
        .values(status="cancelled", resume_at=None, resume_node=None, finished_at=now)
    ).rowcount
    _invalidate(uow)
    return int(cancelled or 0)


# -- runs ---------------------------------------------------------------------------------------------


def _run_public(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "workflow_id": row.workflow_id,
        "version": row.version,
        "member_id": row.member_id,
        "trigger": row.trigger,
        "status": row.status,
        "path": row.path,
        "results": row.results,
        "resume_at": row.resume_at,
        "started_at": row.started_at,
        "finished_at": row.finished_at,
    }


def list_runs(
    uow: UnitOfWork,
    *,
    workflow_id: str | None = None,
    member_id: str | None = None,
    status: str | None = None,
    limit: int = 50,
    before: int | None = None,
) -> tuple[list[dict[str, Any]], int | None]:
    """Runs newest first; `before` is the cursor the previous page returned."""
    if workflow_id is not None:
        workflow_row(uow, workflow_id)
    if (
        member_id is not None
        and workflow_id is None
        and uow.component(MemberRepository).get(member_id) is None
    ):
        raise NotFound(f"member {member_id!r} does not exist", code="member_not_found")
    stmt = select(workflow_runs)
    if workflow_id is not None:
        stmt = stmt.where(workflow_runs.c.workflow_id == workflow_id)
    if member_id is not None:
        stmt = stmt.where(workflow_runs.c.member_id == member_id)
    if status is not None:
        stmt = stmt.where(workflow_runs.c.status == status)
    if before is not None:
        stmt = stmt.where(workflow_runs.c.id < before)
    rows = uow.conn.execute(stmt.order_by(workflow_runs.c.id.desc()).limit(limit + 1)).all()
    found = [_run_public(r) for r in rows[:limit]]
    return found, (found[-1]["id"] if len(rows) > limit and found else None)


def get_run(uow: UnitOfWork, run_id: int) -> dict[str, Any]:
    row = uow.conn.execute(select(workflow_runs).where(workflow_runs.c.id == run_id)).first()
    if row is None:
        raise NotFound(f"workflow run {run_id} does not exist", code="workflow_run_not_found")
    return _run_public(row)


def run_counts(uow: UnitOfWork, workflow_id: str) -> dict[str, int]:
    workflow_row(uow, workflow_id)
    counts = dict.fromkeys(RUN_STATUSES, 0)
    for status, count in uow.conn.execute(
        select(workflow_runs.c.status, func.count())
        .where(workflow_runs.c.workflow_id == workflow_id)
        .group_by(workflow_runs.c.status)
    ):
        counts[status] = count
    return counts


def list_occurrences(uow: UnitOfWork, workflow_id: str, *, limit: int = 50) -> list[dict[str, Any]]:
    workflow_row(uow, workflow_id)
    rows = uow.conn.execute(
        select(workflow_occurrences)
        .where(workflow_occurrences.c.workflow_id == workflow_id)
        .order_by(workflow_occurrences.c.occurs_at.desc())
        .limit(limit)
    )
    return [
        {
            "occurs_at": r.occurs_at,
            "version": r.version,
            "status": r.status,
            "members_done": r.members_done,
            "started_at": r.started_at,
            "finished_at": r.finished_at,
        }
        for r in rows
    ]
