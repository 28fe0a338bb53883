"""The durable scheduler: date-triggered workflows and runs that wait.

Date triggers. Each occurrence of a schedule (a one-time moment, or each time its cron fires) is a
row of `workflow_occurrences` whose primary key is (workflow, moment), so however many schedulers
race, one inserts it and owns it. The owner walks the program's members in id order in batches;
each batch commits together with the occurrence's resume point, so a scheduler that dies mid-way
leaves a lease that expires and another picks up from the last member done, and no member runs
twice. After downtime every missed occurrence since the last one is run, oldest first, each as of
its own moment (the birthday filter asks about that day, not today).

Waits. A run that reaches a wait is stored with its resume time; `resume_waiting_runs` claims due
runs (SKIP LOCKED on PostgreSQL) and continues them on the version they started with.
"""

from __future__ import annotations

import logging
import os
import socket
from datetime import UTC, datetime, timedelta
from typing import Any

from croniter import CroniterBadDateError, croniter
from sqlalchemy import func, or_, select, update

from perkflow.conditions import evaluate, lookup
from perkflow.core.clock import isoformat_z
from perkflow.core.context import AppContext
from perkflow.core.ids import new_id
from perkflow.core.uow import UnitOfWork
from perkflow.ledger.accounts import AccountRepository
from perkflow.ledger.tables import accounts
from perkflow.members.repository import MemberRepository
from perkflow.members.views import CustomerView
from perkflow.programs.service import ProgramCatalog
from perkflow.workflows.engine import ActiveWorkflow, RunOutcome, WorkflowRunner, index_cache, walk
from perkflow.workflows.graph import DateTrigger
from perkflow.workflows.tables import workflow_occurrences, workflow_runs, workflows

log = logging.getLogger("perkflow.workflows.scheduler")

MAX_CATCH_UP = 100  # occurrences of one workflow per pass; the next pass continues
MEMBER_BATCH = 500
LEASE = timedelta(minutes=2)


_WORKER: dict[int, str] = {}


def worker_name() -> str:
    """This process's scheduler name: the owner recorded on the occurrences it runs (stable per process,
    so a pass that failed half-way resumes its own occurrence instead of waiting out its lease)."""
    pid = os.getpid()
    if pid not in _WORKER:
        _WORKER[pid] = f"{socket.gethostname()}:{pid}:{new_id('w')[-6:]}"
    return _WORKER[pid]


def due_occurrences(
    trigger: DateTrigger, *, after: datetime, now: datetime, limit: int = MAX_CATCH_UP
) -> list[datetime]:
    """Occurrences in (after, now], oldest first."""
    if trigger.at is not None:
        at = trigger.at.astimezone(UTC)
        return [at] if after < at <= now else []
    assert trigger.cron is not None
    found: list[datetime] = []
    schedule = croniter(trigger.cron, after.astimezone(UTC))
    while len(found) < limit:
        moment = schedule.get_next(datetime)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        if moment > now:
            break
        found.append(moment)
    return found


def _last_occurrence(uow: UnitOfWork, workflow_id: str) -> datetime | None:
    return uow.conn.execute(
        select(func.max(workflow_occurrences.c.occurs_at)).where(
            workflow_occurrences.c.workflow_id == workflow_id
        )
    ).scalar()


def run_date_triggers(ctx: AppContext, *, worker: str | None = None, batch: int = MEMBER_BATCH) -> int:
    """Run every due occurrence of every active date-triggered workflow; returns runs executed."""
    worker = worker or worker_name()
    with ctx.uow(write=False) as uow:
        dated = list(index_cache(ctx).get(uow).dated)
        now = uow.now
        plans: list[tuple[ActiveWorkflow, datetime]] = []
        for workflow in dated:
            trigger: DateTrigger = workflow.graph.trigger.params
            # Occurrences after the later of the last one run and the activation: a schedule catches up
            # on what it missed while the service was down, never on what passed while it was inactive.
            last = _last_occurrence(uow, workflow.id)
            after = max(filter(None, [last, workflow.activated_at]), default=now)
            try:
                due = due_occurrences(trigger, after=after, now=now)
            except CroniterBadDateError:  # pragma: no cover - refused when saved
                log.warning("workflow %s: its schedule has no next occurrence", workflow.id)
                continue
            for moment in due:
                if workflow.in_window(moment):
                    plans.append((workflow, moment))
            # Occurrences a dead scheduler left unfinished.
            planned = {m for w, m in plans if w.id == workflow.id}
            for moment in _stale_occurrences(uow, workflow.id, now):
                if moment not in planned:
                    plans.append((workflow, moment))
    done = 0
    for workflow, moment in sorted(plans, key=lambda p: p[1]):
        try:
            done += run_occurrence(ctx, workflow, moment, worker=worker, batch=batch)
        except Exception:
            # One workflow's failure must not hold up the others; its occurrence keeps its resume
            # point and is taken up again on the next pass.
            log.exception("workflow %s: the occurrence of %s failed; it will be resumed", workflow.id, moment)
    return done


def _stale_occurrences(uow: UnitOfWork, workflow_id: str, now: datetime) -> list[datetime]:
    return list(
        uow.conn.execute(
            select(workflow_occurrences.c.occurs_at).where(
                workflow_occurrences.c.workflow_id == workflow_id,
                workflow_occurrences.c.status == "running",
                workflow_occurrences.c.lease_until < now,
            )
        ).scalars()
    )


def _claim(ctx: AppContext, workflow: ActiveWorkflow, moment: datetime, worker: str) -> bool:
    """Own the occurrence: create it, or take it over when its owner's lease has run out."""
    with ctx.uow() as uow:
        db = uow.db
        now = uow.now
        uow.conn.execute(
            db.insert_ignore(
                workflow_occurrences,
                {
                    "workflow_id": workflow.id,
                    "occurs_at": moment,
                    "version": workflow.version,
                    "status": "running",
                    "members_done": 0,
                    "last_member": None,
                    "claimed_by": worker,
                    "lease_until": now + LEASE,
                    "started_at": now,
                },
                conflict_columns=("workflow_id", "occurs_at"),
            )
        )
        taken = uow.conn.execute(
            update(workflow_occurrences)
            .where(
                workflow_occurrences.c.workflow_id == workflow.id,
                workflow_occurrences.c.occurs_at == moment,
                workflow_occurrences.c.status == "running",
                or_(workflow_occurrences.c.claimed_by == worker, workflow_occurrences.c.lease_until < now),
            )
            .values(claimed_by=worker, lease_until=now + LEASE)
        ).rowcount
        uow.commit()
    return bool(taken)


def run_occurrence(
    ctx: AppContext, workflow: ActiveWorkflow, moment: datetime, *, worker: str, batch: int = MEMBER_BATCH
) -> int:
    if not _claim(ctx, workflow, moment, worker):
        return 0
    ran = 0
    while True:
        with ctx.uow() as uow:
            row = uow.conn.execute(
                uow.db.for_update(
                    select(workflow_occurrences).where(
                        workflow_occurrences.c.workflow_id == workflow.id,
                        workflow_occurrences.c.occurs_at == moment,
                    )
                )
            ).first()
            if row is None or row.status != "running" or row.claimed_by != worker:
                return ran  # finished, or taken over by another scheduler after our lease ran out
            program = uow.component(WorkflowRunner).program_for(workflow, None)
            if program is None:
                log.warning("date workflow %s has no program to run in", workflow.id)
                member_ids: list[str] = []
            else:
                member_ids = list(
                    uow.conn.execute(
                        select(accounts.c.member_id)
                        .where(
                            accounts.c.program_id == program.id,
                            accounts.c.status == "opted_in",
                            accounts.c.member_id > (row.last_member or ""),
                        )
                        .order_by(accounts.c.member_id)
                        .limit(batch)
                    ).scalars()
                )
            if member_ids and program is not None:
                members = uow.component(MemberRepository).load_many(member_ids)
                uow.component(AccountRepository).load((m, program.id) for m in member_ids)
                runner = uow.component(WorkflowRunner)
                group = workflow.graph.trigger.group
                for member_id in member_ids:
                    member = members.get(member_id)
                    if member is None or not member.active:
                        continue
                    customer = CustomerView(uow, member_id, program, now=moment)
                    if group is not None and not evaluate(group, _resolver(customer), moment):
                        continue
                    scope = workflow.scope(
                        uow,
                        member_id,
                        program,
                        now=moment,
                        trigger_ref=f"date:{moment.strftime('%Y%m%dT%H%M%SZ')}:{member_id}",
                        occurred_at=moment,
                        event=None,
                        customer=customer,
                    )
                    trigger_info = {"kind": "date", "occurs_at": isoformat_z(moment)}
                    runner.execute(
                        workflow,
                        scope,
                        trigger_info,
                        workflow.graph.next(workflow.graph.trigger.id, "success"),
                    )
                    ran += 1
            finished = len(member_ids) < batch
            values: dict[str, Any] = {
                "members_done": workflow_occurrences.c.members_done + len(member_ids),
                "last_member": member_ids[-1] if member_ids else row.last_member,
                "lease_until": uow.now + LEASE,
            }
            if finished:
                values.update(status="done", finished_at=uow.now, lease_until=None)
            uow.conn.execute(
                update(workflow_occurrences)
                .where(
                    workflow_occurrences.c.workflow_id == workflow.id,
                    workflow_occurrences.c.occurs_at == moment,
                )
                .values(**values)
            )
            uow.commit()
        if finished:
            log.info("workflow %s occurrence %s done (%d runs)", workflow.id, moment, ran)
            return ran


def _resolver(view: CustomerView) -> Any:
    return lambda condition: lookup(view, condition.path)


def _due_runs(uow: UnitOfWork, limit: int, only: int | None = None) -> list[Any]:
    stmt = (
        select(workflow_runs)
        .where(workflow_runs.c.status == "waiting", workflow_runs.c.resume_at <= uow.now)
        .order_by(workflow_runs.c.resume_at)
        .limit(limit)
    )
    if only is not None:
        stmt = stmt.where(workflow_runs.c.id == only)
    return list(uow.conn.execute(uow.db.for_update(stmt, skip_locked=True)).all())


def resume_waiting_runs(ctx: AppContext, *, batch: int = 200) -> int:
    """Continue every waiting run whose time has come; returns how many were continued.

    Runs are continued in batches, one transaction each. If a batch fails, its runs are retried one
    by one, and a run that fails on its own is marked failed, so one bad run cannot hold up the others.
    """
    with ctx.uow(write=False) as uow:  # most passes find nothing: do not take the write lock for that
        if not _due_runs(uow, 1):
            return 0
    resumed = 0
    while True:
        rows: list[Any] = []
        try:
            with ctx.uow() as uow:
                rows = _due_runs(uow, batch)
                for row in rows:
                    _resume(uow, row)
                uow.commit()
            resumed += len(rows)
        except Exception:
            log.exception("resuming a batch of waiting workflow runs failed; retrying them one by one")
            resumed += _resume_one_by_one(ctx, [row.id for row in rows])
        if len(rows) < batch:
            return resumed


def _resume_one_by_one(ctx: AppContext, run_ids: list[int]) -> int:
    resumed = 0
    for run_id in run_ids:
        try:
            with ctx.uow() as uow:
                for row in _due_runs(uow, 1, only=run_id):
                    _resume(uow, row)
                    resumed += 1
                uow.commit()
        except Exception as exc:
            log.exception("workflow run %s could not be resumed; it is marked failed", run_id)
            with ctx.uow() as uow:
                uow.conn.execute(
                    update(workflow_runs)
                    .where(workflow_runs.c.id == run_id)
                    .values(
                        status="failed",
                        resume_at=None,
                        resume_node=None,
                        finished_at=uow.now,
                        context={"error": f"resuming failed: {type(exc).__name__}"},
                    )
                )
                uow.commit()
    return resumed


def _resume(uow: UnitOfWork, row: Any) -> None:
    graph = index_cache(uow.ctx).graph_of(uow, row.workflow_id, row.version)
    meta = uow.conn.execute(select(workflows).where(workflows.c.id == row.workflow_id)).first()
    if graph is None or meta is None or meta.status == "archived":
        uow.conn.execute(
            update(workflow_runs)
            .where(workflow_runs.c.id == row.id)
            .values(status="cancelled", resume_at=None, resume_node=None, finished_at=uow.now)
        )
        return
    context = dict(row.context or {})
    catalog = uow.component(ProgramCatalog)
    program = catalog.programs.get(context.get("program_id") or "") if context.get("program_id") else None
    # Runs continue on the version they started with, even if the workflow was edited or deactivated.
    workflow = ActiveWorkflow.from_row(meta, row.version, graph)
    pending = [(node, _parse(at)) for node, at in context.get("pending", [])]
    due = [p for p in pending if p[1] <= uow.now]
    later = [p for p in pending if p[1] > uow.now]
    occurred_at = _parse(context["occurred_at"]) if context.get("occurred_at") else row.started_at
    scope = workflow.scope(
        uow,
        row.member_id,
        program,
        now=uow.now,
        trigger_ref=context.get("trigger_ref") or f"run:{row.id}",
        occurred_at=occurred_at,
        event=context.get("event"),
        customer=CustomerView(uow, row.member_id, program),
        reward=context.get("reward"),
        coupon=context.get("coupon"),
    )
    results = dict(row.results or {})
    outcome = RunOutcome(path=list(row.path or []), results=results, pending=later)
    outcome.acted = True
    outcome.failed = any(isinstance(r, dict) and r.get("status") == "error" for r in results.values())
    for node_id, _at in due:
        outcome.results[node_id] = {
            **outcome.results.get(node_id, {}),
            "status": "ok",
            "resumed_at": isoformat_z(uow.now),
        }
        walk(graph, scope, graph.next(node_id, "success"), outcome)
    context["pending"] = [[node, isoformat_z(at)] for node, at in outcome.pending]
    if outcome.status == "waiting":
        context.update(event=scope.event, reward=scope.reward, coupon=scope.coupon)
    status = outcome.status
    uow.conn.execute(
        update(workflow_runs)
        .where(workflow_runs.c.id == row.id)
        .values(
            status=status,
            path=outcome.path,
            results=outcome.results,
            context=context if outcome.pending else {},
            resume_at=min((at for _n, at in outcome.pending), default=None),
            resume_node=outcome.pending[0][0] if outcome.pending else None,
            finished_at=None if outcome.pending else uow.now,
        )
    )


def _parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def run_schedules(ctx: AppContext) -> dict[str, int]:
    """One pass of the background job: due date triggers, then runs whose wait is over."""
    return {"date_runs": run_date_triggers(ctx), "resumed": resume_waiting_runs(ctx)}
