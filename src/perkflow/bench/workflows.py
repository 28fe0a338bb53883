"""`perkflow bench workflows`: what 1,000 active workflows cost bulk ingestion.

The stream of `perkflow bench ingest` (checkouts spread over opted-in members) is ingested twice, each
time into a fresh SQLite database (batch by batch in turn, so both see the same machine): once with
no workflows, once with `workflows` active workflows of which `matching` are triggered by every
checkout and fire actions. The others listen to other
activity types, or to checkouts behind a first filter the stream never passes (most on a store or
channel the engine can index, some on a threshold it must evaluate per event). The firing ones add
bonus points (a ledger activity each, in the event's transaction), or queue a platform event or
profile attributes for a connected Braze (the sandbox, started in this process; nothing is
delivered while measuring). Every run that acts is recorded, so each checkout writes `matching` run
records on top of its own rows. The run checks that every event was accepted, that the balances add
up to the rules' points plus the bonuses, and that every expected run was recorded.
"""

from __future__ import annotations

import itertools
import json
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress
from sqlalchemy import func, select

from perkflow.bench.ingest import make_events, prepare_database
from perkflow.core import transactions
from perkflow.core.context import AppContext
from perkflow.core.uow import UnitOfWork
from perkflow.demo.program import DEMO_PROGRAM_ID
from perkflow.events.service import ingest
from perkflow.sandbox.braze import BrazeSandbox, BrazeSandboxConfig
from perkflow.sandbox.braze import create_app as braze_app
from perkflow.sandbox.server import ServerThread
from perkflow.sync import integrations
from perkflow.sync.tables import outbox
from perkflow.workflows.service import activate, create_workflow
from perkflow.workflows.tables import workflow_runs

# Activity types the stream never records; point_add is left out because the bonuses record it.
OTHER_EVENTS = (
    "opt_out",
    "profile",
    "refund",
    "point_subtract",
    "birthday",
    "reward_claim",
    "checkout_accept",
    "checkout_reject",
    "tier_down",
    "points_expired",
    "coupon_assigned",
)
BONUS_WORKFLOWS = 4  # of the matching ones; the others queue platform events or attributes


def _graph(trigger: list[str], *nodes: dict[str, Any]) -> dict[str, Any]:
    chain = [{"id": "trigger", "type": "trigger.event", "params": {"events": trigger}}, *nodes]
    return {
        "nodes": chain,
        "edges": [{"from": a["id"], "to": b["id"]} for a, b in itertools.pairwise(chain)],
    }


def _filter(*conditions: tuple[str, str, Any]) -> dict[str, Any]:
    return {
        "id": "filter",
        "type": "filter.event_attribute",
        "params": {"conditions": [{"attribute": a, "operator": o, "value": v} for a, o, v in conditions]},
    }


def workflow_specs(count: int, matching: int) -> list[dict[str, Any]]:
    """The workflow mix: `matching` fire on every checkout, the rest never do for this stream."""
    specs: list[dict[str, Any]] = []
    for n in range(matching):
        if n < BONUS_WORKFLOWS:
            action = {
                "id": "bonus",
                "type": "action.add_points",
                "params": {"points": 1, "reason": f"bonus {n}"},
            }
        elif n % 2:
            action = {
                "id": "sync",
                "type": "action.sync_event",
                "params": {
                    "name": f"purchase_{n}",
                    "properties": {"total": "{{ event.total }}", "tier": "{{ customer.tier }}"},
                },
            }
        else:
            action = {
                "id": "fields",
                "type": "action.sync_fields",
                "params": {"fields": {f"last_basket_{n}": "{{ event.total }}"}},
            }
        specs.append({"name": f"matching {n}", "graph": _graph(["checkout"], action)})
    others = count - matching
    on_checkout = others * 3 // 10
    unindexed = max(1, others // 100)
    bonus = {"id": "bonus", "type": "action.add_points", "params": {"points": 5}}
    for n in range(others):
        if n < on_checkout - unindexed:
            # Campaigns for other stores and channels: the engine indexes on the value.
            condition: tuple[str, str, Any] = (
                ("store", "eq", f"store-{n}") if n % 2 else ("channel", "eq", f"channel-{n}")
            )
            specs.append({"name": f"store {n}", "graph": _graph(["checkout"], _filter(condition), bonus)})
        elif n < on_checkout:
            # A threshold the stream never reaches: evaluated for every checkout.
            condition = ("total", "gt", 1_000_000 + n)
            specs.append({"name": f"threshold {n}", "graph": _graph(["checkout"], _filter(condition), bonus)})
        else:
            event = OTHER_EVENTS[n % len(OTHER_EVENTS)]
            specs.append({"name": f"other {n}", "graph": _graph([event], bonus)})
    return specs


def _install(ctx: AppContext, specs: list[dict[str, Any]], braze_url: str) -> None:
    checked = integrations.check_credentials("braze", {"instance_url": braze_url}, {"api_key": "braze-key"})

    def work(uow: UnitOfWork) -> None:
        integrations.connect(uow, checked, name="Braze (sandbox)")
        for spec in specs:
            activate(uow, create_workflow(uow, spec)["id"])

    transactions.run(ctx, work)


def _ingest_alternately(
    contexts: list[AppContext], stream: list[dict[str, Any]], batch: int, console: Console
) -> list[float]:
    """Events per second into each database, batch by batch in turn.

    Taking turns, rather than one whole run after the other, gives every run the same share of
    whatever else the (shared, noisy) machine is doing meanwhile.
    """
    elapsed = [0.0] * len(contexts)
    accepted = [0] * len(contexts)
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("ingesting checkouts", total=len(stream))
        for start in range(0, len(stream), batch):
            chunk = stream[start : start + batch]
            for n, ctx in enumerate(contexts):
                began = time.perf_counter()
                outcomes = transactions.run(ctx, partial(ingest, raw_events=chunk), bulk=True)
                elapsed[n] += time.perf_counter() - began
                accepted[n] += sum(1 for o in outcomes if o.status == "accepted")
            progress.advance(task, len(chunk))
    if any(count != len(stream) for count in accepted):
        raise SystemExit(f"only {accepted} of {len(stream)} events were accepted")
    return [len(stream) / seconds for seconds in elapsed]


def _check(
    ctx: AppContext, stream: list[dict[str, Any]], members: int, bonus_per_event: int, runs: int
) -> int:
    expected_points = (
        sum(e["data"]["total"] // 100 for e in stream) + 5 * members + bonus_per_event * len(stream)
    )
    with ctx.uow(write=False) as uow:
        total = uow.conn.exec_driver_sql(
            "SELECT SUM(points_balance) FROM accounts WHERE program_id = ?", (DEMO_PROGRAM_ID,)
        ).scalar_one()
        recorded = uow.conn.execute(select(func.count()).select_from(workflow_runs)).scalar_one()
        queued = uow.conn.execute(select(func.count()).select_from(outbox)).scalar_one()
    if total != expected_points:
        raise SystemExit(f"balances sum to {total}, expected {expected_points}")
    if recorded != runs:
        raise SystemExit(f"{recorded} workflow runs were recorded, expected {runs}")
    return int(queued)


def run_workflows_bench(
    *, events: int, members: int, batch: int, workflows: int, matching: int, console: Console
) -> dict[str, Any]:
    if not 0 <= matching <= workflows:
        raise SystemExit("--matching must be between 0 and --workflows")
    workdir = Path(tempfile.mkdtemp(prefix="perkflow-bench-workflows-"))
    stream = make_events(events, members)
    specs = workflow_specs(workflows, matching)
    sandbox = BrazeSandbox(BrazeSandboxConfig())
    with ServerThread(braze_app(sandbox)) as server:
        without = prepare_database(f"sqlite:///{workdir / 'without.db'}", members, console)
        with_ = prepare_database(f"sqlite:///{workdir / 'with.db'}", members, console)
        _install(with_, specs, server.url)
        per_s_without, per_s_with = _ingest_alternately([without, with_], stream, batch, console)
    _check(without, stream, members, 0, 0)
    queued = _check(with_, stream, members, min(matching, BONUS_WORKFLOWS), matching * events)
    without.close()
    with_.close()
    result = {
        "events": events,
        "workflows": workflows,
        "matching": matching,
        "runs_recorded": matching * events,
        "outbox_items": queued,
        "events_per_s_without": round(per_s_without),
        "events_per_s_with": round(per_s_with),
        "ratio": round(per_s_with / per_s_without, 3),
    }
    console.print(f"databases: {workdir}")
    print(json.dumps(result))
    return result
