"""Evaluation runs: computing a rule segment's membership over every member, in bounded batches.

A run is state on the segment row (`evaluation`): pending, then running with a cursor over members
in creation order, then ready. Each batch is its own transaction that locks the segment row, so
several workers (on PostgreSQL) never evaluate the same batch twice, a run survives restarts, and a
change of the rules (a new `version`) restarts it from the first member. Runs start when a segment
is created or its rules change (small member bases are computed at once, in the request), when
rules that depend on time alone are due again (`time_relative`: every `segment_sweep_interval_s` and
after each UTC midnight), and for every rule segment every `segment_reconcile_interval_s`, which also
repairs what two concurrent transactions on one member may have missed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from sqlalchemy import func, select, update

from perkflow.core import transactions
from perkflow.core.clock import isoformat_z
from perkflow.core.context import AppContext
from perkflow.core.errors import Conflict, NotFound
from perkflow.core.settings import Settings
from perkflow.core.uow import UnitOfWork
from perkflow.members.tables import members
from perkflow.segments.evaluation import RuleSegment, evaluate_members
from perkflow.segments.rules import parse_rules
from perkflow.segments.tables import segments

ACTIVE = ("pending", "running")


def due_reason(
    *, time_relative: bool, swept_at: datetime | None, now: datetime, settings: Settings
) -> str | None:
    """Why a ready rule segment needs a new full evaluation now, if it does."""
    if swept_at is None:
        return "reconcile"
    age = now - swept_at
    if time_relative and (
        age >= timedelta(seconds=settings.segment_sweep_interval_s) or swept_at.date() != now.date()
    ):
        return "sweep"
    if age >= timedelta(seconds=settings.segment_reconcile_interval_s):
        return "reconcile"
    return None


def request_evaluation(
    uow: UnitOfWork, segment_id: str, reason: str, *, restart: bool = True
) -> dict[str, Any]:
    """Mark a run as pending (from the first member). With `restart` False, a run already under way
    is left to continue."""
    row = uow.conn.execute(uow.db.for_update(select(segments).where(segments.c.id == segment_id))).first()
    if row is None:
        raise NotFound(f"segment {segment_id!r} does not exist", code="segment_not_found")
    if row.kind != "rule":
        raise Conflict(
            f"segment {segment_id!r} is static: it has no rules to evaluate",
            code="segment_not_rule",
            details={"segment_id": segment_id},
        )
    state = dict(row.evaluation or {})
    if not restart and state.get("status") in ACTIVE:
        return state
    state = pending_state(row.version, reason, uow.now)
    uow.conn.execute(update(segments).where(segments.c.id == segment_id).values(evaluation=state))
    return state


def pending_state(version: int, reason: str, now: datetime) -> dict[str, Any]:
    return {
        "status": "pending",
        "reason": reason,
        "version": version,
        "after_pk": 0,
        "evaluated": 0,
        "total": None,
        "entered": 0,
        "left": 0,
        "requested_at": isoformat_z(now),
        "started_at": None,
        "finished_at": None,
    }


def evaluate_batch(uow: UnitOfWork, segment_id: str, batch_size: int) -> dict[str, Any]:
    """Evaluate the run's next batch of members; returns the run's state afterwards."""
    conn = uow.conn
    row = conn.execute(uow.db.for_update(select(segments).where(segments.c.id == segment_id))).first()
    if row is None:
        raise NotFound(f"segment {segment_id!r} does not exist", code="segment_not_found")
    state = dict(row.evaluation or {})
    if row.kind != "rule":
        return {}
    if state.get("status") not in ACTIVE:
        return state
    if state["status"] == "pending" or state.get("version") != row.version:
        state = pending_state(row.version, state.get("reason", "requested"), uow.now) | {
            "status": "running",
            "started_at": isoformat_z(uow.now),
            "requested_at": state.get("requested_at"),
            "total": conn.execute(select(func.count()).select_from(members)).scalar_one(),
        }
    page = conn.execute(
        select(members.c.pk, members.c.id)
        .where(members.c.pk > state["after_pk"])
        .order_by(members.c.pk)
        .limit(batch_size)
    ).all()
    segment = RuleSegment.from_row(row)
    entered, left = evaluate_members(uow, dict.fromkeys((r.id for r in page), (segment,)))
    state["evaluated"] += len(page)
    state["entered"] += entered
    state["left"] += left
    if page:
        state["after_pk"] = page[-1].pk
    values: dict[str, Any] = {}
    if len(page) < batch_size:
        state["status"] = "ready"
        state["finished_at"] = isoformat_z(uow.now)
        state["total"] = max(state["total"] or 0, state["evaluated"])
        values["swept_at"] = uow.now
    # Progress is not a change of the definition: updated_at and version stay, so caches keep.
    conn.execute(update(segments).where(segments.c.id == segment_id).values(evaluation=state, **values))
    return state


def run_evaluation(
    ctx: AppContext,
    segment_id: str,
    *,
    deadline: float | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run batches until the run is ready or `deadline` (time.monotonic()) passes."""
    batch = ctx.settings.segment_batch_size
    while True:
        state = transactions.run(ctx, lambda uow: evaluate_batch(uow, segment_id, batch))
        if progress is not None:
            progress(state)
        if state.get("status") not in ACTIVE:
            return state
        if deadline is not None and time.monotonic() >= deadline:
            return state


def run_due(
    ctx: AppContext, *, budget_s: float | None = None, force: bool = False
) -> dict[str, dict[str, Any]]:
    """The periodic job: start the runs that are due and continue those under way, within
    `budget_s` seconds (the rest continues next time); `force` re-evaluates every rule segment."""
    deadline = None if budget_s is None else time.monotonic() + budget_s
    now = ctx.clock.now()
    with ctx.uow(write=False) as uow:
        rows = uow.conn.execute(
            select(segments.c.id, segments.c.rules, segments.c.evaluation, segments.c.swept_at)
            .where(segments.c.kind == "rule")
            .order_by(segments.c.id)
        ).all()
    todo: list[str] = []
    for row in rows:
        if (row.evaluation or {}).get("status") in ACTIVE:
            todo.append(row.id)
            continue
        reason = "requested" if force else None
        if reason is None:
            rules = parse_rules(row.rules, None)
            reason = due_reason(
                time_relative=rules.time_relative, swept_at=row.swept_at, now=now, settings=ctx.settings
            )
        if reason is not None:
            transactions.run(
                ctx, partial(request_evaluation, segment_id=row.id, reason=reason, restart=False)
            )
            todo.append(row.id)
    results: dict[str, dict[str, Any]] = {}
    for segment_id in todo:
        if deadline is not None and time.monotonic() >= deadline:
            break
        try:
            results[segment_id] = run_evaluation(ctx, segment_id, deadline=deadline)
        except NotFound:  # deleted meanwhile
            continue
    return results
