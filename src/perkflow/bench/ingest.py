"""`perkflow bench ingest`: bulk ingestion against the raw speed of SQLite on the same machine.

Both runs start from the same in-memory events and use the same journal mode, synchronous setting
and transaction size; the raw baseline writes each event as one plain row, which is the physical
limit of the store. The ratio says how much of that limit the whole ingestion path keeps.
"""

from __future__ import annotations

import json
import random
import sqlite3
import tempfile
import time
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress

from perkflow.bootstrap import build_context, upgrade_database
from perkflow.core import transactions
from perkflow.core.context import AppContext
from perkflow.core.db import json_dumps
from perkflow.demo.program import DEMO_PROGRAM, DEMO_PROGRAM_ID
from perkflow.events.service import ingest
from perkflow.programs.service import create_program


def make_events(count: int, members: int, seed: int = 7) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [
        {
            "customer": f"m{rng.randrange(members):06d}",
            "action": "checkout",
            "data": {
                "transaction_id": f"T{i:09d}",
                "total": rng.randint(100, 20_000),
                "channel": "store",
                "items": [{"product_id": f"sku-{rng.randrange(500)}", "quantity": rng.randint(1, 3)}],
            },
        }
        for i in range(count)
    ]


def raw_baseline(path: Path, events: list[dict[str, Any]], batch: int) -> float:
    """Insert the events as plain rows in `batch`-row transactions; returns events per second."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(
        "CREATE TABLE events (id INTEGER PRIMARY KEY, customer TEXT, action TEXT, data TEXT, at TEXT)"
    )
    started = time.perf_counter()
    for start in range(0, len(events), batch):
        now = datetime.now(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")
        rows = [
            (e["customer"], e["action"], json_dumps(e["data"]), now) for e in events[start : start + batch]
        ]
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO events (customer, action, data, at) VALUES (?, ?, ?, ?)", rows)
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    return len(events) / elapsed


def prepare_database(url: str, members: int, console: Console) -> AppContext:
    """A migrated database with the demo program and `members` opted-in members m000000, ..."""
    upgrade_database(url)
    ctx = build_context(database_url=url)
    transactions.run(ctx, lambda uow: create_program(uow, DEMO_PROGRAM))
    member_ids = [f"m{i:06d}" for i in range(members)]
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("enrolling members", total=members)
        for start in range(0, members, 1000):
            chunk = [
                {"customer": m, "action": "opt_in", "data": {}} for m in member_ids[start : start + 1000]
            ]
            transactions.run(ctx, partial(ingest, raw_events=chunk), bulk=True)
            progress.advance(task, len(chunk))
    return ctx


def run_ingest_bench(*, events: int, members: int, batch: int, console: Console) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="perkflow-bench-"))
    url = f"sqlite:///{workdir / 'perkflow.db'}"
    ctx = prepare_database(url, members, console)
    stream = make_events(events, members)
    accepted = 0
    started = time.perf_counter()
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("ingesting checkouts", total=events)
        for start in range(0, events, batch):
            chunk = stream[start : start + batch]
            outcomes = transactions.run(ctx, partial(ingest, raw_events=chunk), bulk=True)
            accepted += sum(1 for o in outcomes if o.status == "accepted")
            progress.advance(task, len(chunk))
    elapsed = time.perf_counter() - started
    events_per_s = events / elapsed
    if accepted != events:
        raise SystemExit(f"only {accepted} of {events} events were accepted")
    expected_points = sum(e["data"]["total"] // 100 for e in stream) + 5 * members
    with ctx.uow(write=False) as uow:
        total = uow.conn.exec_driver_sql(
            "SELECT SUM(points_balance) FROM accounts WHERE program_id = ?", (DEMO_PROGRAM_ID,)
        ).scalar_one()
    if total != expected_points:
        raise SystemExit(f"balances sum to {total}, expected {expected_points}")
    ctx.close()
    raw_per_s = raw_baseline(workdir / "raw.db", stream, batch)
    result = {
        "events": events,
        "events_per_s": round(events_per_s),
        "raw_events_per_s": round(raw_per_s),
        "ratio": round(events_per_s / raw_per_s, 3),
    }
    console.print(f"database: {workdir}")
    print(json.dumps(result))
    return result
