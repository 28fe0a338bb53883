"""`perkflow demo`: prepare the database, replay the day, print what happened, then serve."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from rich.console import Console
from rich.table import Table
from sqlalchemy import inspect, select
from sqlalchemy.engine import make_url

from perkflow.bootstrap import build_context, import_all_tables, upgrade_database
from perkflow.core import transactions
from perkflow.core.clock import ManualClock
from perkflow.core.context import AppContext
from perkflow.core.db import Database, normalize_url
from perkflow.demo.platforms import Platforms, connect_platforms, start_platforms
from perkflow.demo.program import DEMO_PROGRAM_ID, install_demo_program
from perkflow.demo.script import run_day


def reset_database(url: str) -> None:
    """Drop everything Perkflow created (SQLite: delete the file)."""
    url = normalize_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        path = parsed.database
        if path and path != ":memory:":
            for suffix in ("", "-wal", "-shm"):
                Path(path + suffix).unlink(missing_ok=True)
        return
    from sqlalchemy import text

    from perkflow.core.schema import metadata

    import_all_tables()
    db = Database(url, pool=False)
    with db.engine.begin() as conn:
        metadata.drop_all(conn)
        conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
        conn.execute(text("DROP SEQUENCE IF EXISTS activity_seq"))
    db.dispose()


def demo_exists(url: str) -> bool:
    from perkflow.programs.tables import programs

    db = Database(url, pool=False)
    try:
        with db.engine.connect() as conn:
            if "programs" not in inspect(conn).get_table_names():
                return False
            return (
                conn.execute(select(programs.c.id).where(programs.c.id == DEMO_PROGRAM_ID)).first()
                is not None
            )
    finally:
        db.dispose()


def print_platforms(console: Console, platforms: Platforms) -> None:
    """What a marketer would see in each platform for the demo members."""
    braze = Table(title="What Braze received (custom attributes and events per user)")
    for column in ("external_id", "attributes", "events"):
        braze.add_column(column)
    for user in sorted(platforms.braze.users(), key=lambda u: u["external_id"] or ""):
        attrs = ", ".join(f"{k}={v}" for k, v in sorted(user["attributes"].items()))
        events = ", ".join(e["name"] for e in user["events"])
        braze.add_row(user["external_id"], attrs, events)
    console.print(braze)
    bloomreach = Table(title="What Bloomreach received (customer properties and events, by hard ID)")
    for column in ("registered", "properties", "events"):
        bloomreach.add_column(column)
    for customer in sorted(platforms.bloomreach.customers(), key=lambda c: str(c["ids"].get("registered"))):
        props = ", ".join(f"{k}={v}" for k, v in sorted(customer["properties"].items()))
        events = ", ".join(e["event_type"] for e in customer["events"])
        bloomreach.add_row(str(customer["ids"].get("registered")), props, events)
    console.print(bloomreach)


def print_workflows(console: Console, ctx: AppContext) -> None:
    """The seed workflows, what triggers them and what their runs did."""
    from perkflow.demo.workflows import workflow_report

    report = transactions.run(ctx, workflow_report, write=False)
    table = Table(title="Workflows (the five seed templates) and their runs")
    for column in ("workflow", "trigger", "runs", "latest run"):
        table.add_column(column)
    for entry in report:
        workflow, latest = entry["workflow"], entry["latest"]
        trigger = workflow["trigger"]["type"] + (
            f" {workflow['trigger']['key']}" if workflow["trigger"]["key"] else ""
        )
        if workflow["trigger"]["type"] == "date":
            params = next(n["params"] for n in workflow["graph"]["nodes"] if n["type"] == "trigger.date")
            trigger += " " + (params.get("cron") or params.get("at") or "")
        runs = ", ".join(f"{n} {status}" for status, n in sorted(entry["runs"].items())) or "none"
        detail = ""
        if latest is not None:
            detail = f"{latest['member_id']}: " + " -> ".join(latest["path"])
        table.add_row(workflow["name"], trigger, runs, detail)
    console.print(table)


def run_demo(*, database_url: str, reset: bool, serve: bool, host: str, port: int, console: Console) -> bool:
    if reset:
        reset_database(database_url)
    elif demo_exists(database_url):
        console.print(
            "[red]This database already holds the demo program.[/red] Run `perkflow demo --reset` "
            "(or `make demo`) to start from an empty database."
        )
        return False
    upgrade_database(database_url)
    day = (datetime.now(UTC) - timedelta(days=1)).date()
    clock = ManualClock(datetime(day.year, day.month, day.day, 7, 0, tzinfo=UTC))
    ctx = build_context(database_url=database_url, clock=clock)
    console.rule(f"[bold]Perkflow demo[/bold] - a day at the shop, {day.isoformat()}")
    transactions.run(ctx, install_demo_program)
    platforms = start_platforms()
    connect_platforms(ctx, platforms)
    console.print(
        "Loaded program [bold]demo[/bold]: 1 point per euro, tiers Bronze 0 / Silver 10 / Gold 50 / "
        "Platinum 100, points expire after 365 days, two rewards with coupon pools.\n"
        f"Connected the Braze sandbox ({platforms.braze_server.url}) and the Bloomreach sandbox "
        f"({platforms.bloomreach_server.url}): fields mapped, tier/reward events selected.",
        soft_wrap=True,
    )
    results = run_day(ctx, clock, day, platforms)
    table = Table(show_lines=False)
    table.add_column("time")
    table.add_column("")
    table.add_column("step")
    table.add_column("what happened")
    for r in results:
        table.add_row(
            r.at.strftime("%H:%M"), "[green]ok[/green]" if r.ok else "[red]FAIL[/red]", r.title, r.detail
        )
    console.print(table)
    summary = Table(title="Members at the end of the day")
    for column in ("member", "tier", "balance", "pending", "earned", "expired", "opted in"):
        summary.add_column(column)
    from perkflow.demo.script import Day

    reader = Day(ctx, clock, day)
    for member_id in ("ana", "ben", "chloe", "dan"):
        s = reader.standing(member_id)
        summary.add_row(
            member_id,
            str(s["tier"]),
            str(s["balance"]),
            str(s["pending"]),
            str(s["earned"]),
            str(s["expired"]),
            "yes" if s["opted_in"] else "no",
        )
    console.print(summary)
    print_workflows(console, ctx)
    print_platforms(console, platforms)
    failed = [r for r in results if not r.ok]
    if failed:
        console.print(f"[red]{len(failed)} step(s) did not do what was expected.[/red]")
    else:
        console.print(f"[green]All {len(results)} steps did what was expected.[/green]")
    from perkflow.auth.service import create_api_key

    _info, key = transactions.run(ctx, lambda uow: create_api_key(uow, "demo", ["admin"]))
    ctx.close()
    if not serve:
        platforms.stop()
        return not failed
    console.print(
        f"\nServing the API on http://{host}:{port} (docs at /docs) with the system clock; the sandboxes "
        f"keep running (Braze {platforms.braze_server.url}/sandbox/users/ana, Bloomreach "
        f"{platforms.bloomreach_server.url}/sandbox/customers) and the worker keeps them in sync.\n"
        f"Admin API key for the demo: {key}\nTry:\n"
        f"  curl -H 'Authorization: Bearer {key}' http://{host}:{port}/api/v1/members/ana\n"
        f"  curl -H 'Authorization: Bearer {key}' 'http://{host}:{port}/api/v1/members/ana/activities?limit=5'\n"
        "Press Ctrl-C to stop.",
        soft_wrap=True,
        highlight=False,
    )
    from perkflow.cli import serve_app

    serve_app(build_context(database_url=database_url), host, port, run_jobs=True)
    return not failed
