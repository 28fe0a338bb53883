"""`perkflow bench segments`: what keeping rule segments up to date costs bulk ingestion.

The stream of `perkflow bench ingest` is ingested twice into fresh SQLite databases, once with no
segments and once with twenty rule segments (tiers, points thresholds, checkout statistics, a
time-relative one, profile fields and a nested group). Afterwards every segment is recomputed from
scratch by an evaluation run: the incremental membership must equal it (no member enters or leaves),
and the run's speed is reported as member evaluations per second. Besides events per second, the
CPU seconds of each ingestion are reported (`cpu_ratio` = without / with), which the load of a shared
machine distorts far less than the wall clock.
"""

from __future__ import annotations

import json
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress

from perkflow.bench.ingest import make_events
from perkflow.bootstrap import build_context, upgrade_database
from perkflow.core import transactions
from perkflow.core.context import AppContext
from perkflow.demo.program import DEMO_FIELDS, DEMO_PROGRAM
from perkflow.events.service import ingest
from perkflow.members.service import define_field
from perkflow.programs.service import create_program


def _condition(attribute: str, operator: str, value: Any) -> dict[str, Any]:
    return {"attribute": attribute, "operator": operator, "value": value}


def bench_segments() -> list[dict[str, Any]]:
    """Twenty rule segments of the kinds marketers define."""
    found: list[dict[str, Any]] = []
    for tier in ("Bronze", "Silver", "Gold", "Platinum"):
        found.append({"name": f"Tier {tier}", "rules": {"conditions": [_condition("tier", "eq", tier)]}})
    for threshold in (100, 500, 1000, 2000, 5000):
        found.append(
            {
                "name": f"Balance {threshold}+",
                "rules": {"conditions": [_condition("points_balance", "gte", threshold)]},
            }
        )
    found.append(
        {"name": "Lifetime 1000+", "rules": {"conditions": [_condition("points_earned", "gte", 1000)]}}
    )
    found.append({"name": "Pending points", "rules": {"conditions": [_condition("points_pending", "gt", 0)]}})
    for count in (5, 10, 20, 40):
        found.append(
            {
                "name": f"{count}+ checkouts",
                "rules": {"conditions": [_condition("activity.checkout.count", "gte", count)]},
            }
        )
    found.append(
        {
            "name": "Bought this week",
            "rules": {"conditions": [_condition("activity.checkout.last_at", "after", "now-7d")]},
        }
    )
    found.append({"name": "Lyon", "rules": {"conditions": [_condition("favourite_store", "eq", "Lyon")]}})
    found.append({"name": "Newsletter", "rules": {"conditions": [_condition("newsletter", "eq", True)]}})
    found.append(
        {
            "name": "Valuable regulars",
            "rules": {
                "match": "all",
                "conditions": [
                    _condition("tier", "in", ["Gold", "Platinum"]),
                    {
                        "match": "any",
                        "conditions": [
                            _condition("activity.checkout.count", "gte", 10),
                            _condition("points_balance", "gte", 1000),
                        ],
                    },
                ],
            },
        }
    )
    found.append({"name": "Opted in", "rules": {"conditions": [_condition("opted_in", "eq", True)]}})
    assert len(found) == 20
    return found


def _fresh(workdir: Path, name: str, members: int, console: Console) -> AppContext:
    url = f"sqlite:///{workdir / name}"
    upgrade_database(url)
    ctx = build_context(database_url=url)

    def setup(uow: Any) -> None:
        for field in DEMO_FIELDS:
            define_field(uow, field["key"], field["type"], field["label"])
        create_program(uow, DEMO_PROGRAM)

    transactions.run(ctx, setup)
    member_ids = [f"m{i:06d}" for i in range(members)]
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"enrolling members ({name})", total=members)
        for start in range(0, members, 1000):
            chunk = [
                {
                    "customer": m,
                    "action": "opt_in",
                    "data": {"favourite_store": "Lyon" if i % 7 == 0 else "Paris", "newsletter": i % 3 == 0},
                }
                for i, m in enumerate(member_ids[start : start + 1000], start)
            ]
            transactions.run(ctx, partial(ingest, raw_events=chunk), bulk=True)
            progress.advance(task, len(chunk))
    return ctx


def _ingest(
    ctx: AppContext, stream: list[dict[str, Any]], batch: int, label: str, console: Console
) -> tuple[float, float]:
    """Events per second, and the CPU seconds this process spent (which a shared machine's load
    inflates far less than the wall clock)."""
    accepted = 0
    started = time.perf_counter()
    cpu_started = time.process_time()
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"ingesting checkouts ({label})", total=len(stream))
        for start in range(0, len(stream), batch):
            chunk = stream[start : start + batch]
            outcomes = transactions.run(ctx, partial(ingest, raw_events=chunk), bulk=True)
            accepted += sum(1 for o in outcomes if o.status == "accepted")
            progress.advance(task, len(chunk))
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    if accepted != len(stream):
        raise SystemExit(f"only {accepted} of {len(stream)} events were accepted ({label})")
    return len(stream) / elapsed, cpu


def _membership_changes(ctx: AppContext) -> int:
    """segment_entered and segment_left activities recorded so far."""
    from sqlalchemy import func, select

    from perkflow.activity.tables import activities

    with ctx.uow(write=False) as uow:
        return int(
            uow.conn.execute(
                select(func.count())
                .select_from(activities)
                .where(activities.c.type.in_(("segment_entered", "segment_left")))
            ).scalar_one()
        )


def run_segments_bench(*, events: int, members: int, batch: int, console: Console) -> dict[str, Any]:
    from sqlalchemy import func, select

    from perkflow.segments.runs import request_evaluation, run_evaluation
    from perkflow.segments.service import create_segment
    from perkflow.segments.tables import segment_members

    workdir = Path(tempfile.mkdtemp(prefix="perkflow-bench-segments-"))
    stream = make_events(events, members)
    plain = _fresh(workdir, "without.db", members, console)
    without, cpu_without = _ingest(plain, stream, batch, "no segments", console)
    plain.close()

    ctx = _fresh(workdir, "with.db", members, console)
    definitions = bench_segments()
    ids = []
    for definition in definitions:
        segment, _ = transactions.run(ctx, partial(create_segment, spec=definition))
        run_evaluation(ctx, segment.id)  # the initial membership, before the measured ingestion
        ids.append(segment.id)
    changes_before = _membership_changes(ctx)
    with_segments, cpu_with = _ingest(ctx, stream, batch, f"{len(ids)} rule segments", console)
    changes = _membership_changes(ctx) - changes_before
    with ctx.uow(write=False) as uow:
        memberships = uow.conn.execute(select(func.count()).select_from(segment_members)).scalar_one()

    # The incremental result must be exactly what a full recomputation finds.
    started = time.perf_counter()
    drift = 0
    evaluated = 0
    for segment_id in ids:
        transactions.run(ctx, partial(request_evaluation, segment_id=segment_id, reason="requested"))
        state = run_evaluation(ctx, segment_id)
        drift += state["entered"] + state["left"]
        evaluated += state["evaluated"]
    recompute_s = time.perf_counter() - started
    ctx.close()
    if drift:
        raise SystemExit(f"a full recomputation changed {drift} memberships the subscriber had missed")
    result = {
        "events": events,
        "members": members,
        "segments": len(ids),
        "memberships": memberships,
        "membership_changes": changes,
        "events_per_s_without": round(without),
        "events_per_s_with": round(with_segments),
        "ratio": round(with_segments / without, 3),
        "cpu_s_without": round(cpu_without, 2),
        "cpu_s_with": round(cpu_with, 2),
        "cpu_ratio": round(cpu_without / cpu_with, 3),
        "recompute_member_evaluations_per_s": round(evaluated / recompute_s),
    }
    console.print(f"databases: {workdir}")
    print(json.dumps(result))
    return result
