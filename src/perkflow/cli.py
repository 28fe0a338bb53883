"""The `perkflow` command line: serve, worker, demo, database, API keys, imports and benchmarks."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

app = typer.Typer(help="Perkflow: self-hosted loyalty and promotions engine.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
apikey_app = typer.Typer(help="API keys.", no_args_is_help=True)
import_app = typer.Typer(help="Bulk imports.", no_args_is_help=True)
bench_app = typer.Typer(help="Benchmarks; each prints one JSON line as its last line.", no_args_is_help=True)
jobs_app = typer.Typer(help="Scheduled jobs, run once (for cron).", no_args_is_help=True)
deliveries_app = typer.Typer(help="Delivery to the connected platforms.", no_args_is_help=True)
sandbox_app = typer.Typer(help="Local stand-ins for Braze and Bloomreach.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(apikey_app, name="apikey")
app.add_typer(import_app, name="import")
app.add_typer(bench_app, name="bench")
app.add_typer(jobs_app, name="jobs")
app.add_typer(deliveries_app, name="deliveries")
app.add_typer(sandbox_app, name="sandbox")


def _register_sandboxes() -> None:
    from perkflow.sandbox.bloomreach.cli import serve_bloomreach_sandbox
    from perkflow.sandbox.braze.cli import serve_braze_sandbox

    sandbox_app.command("braze", help="A local Braze REST API (users/track, export/ids).")(
        serve_braze_sandbox
    )
    sandbox_app.command("bloomreach", help="A local Bloomreach Tracking API.")(serve_bloomreach_sandbox)


_register_sandboxes()


def _register_segments() -> None:
    from perkflow.segments.cli import segments_app

    app.add_typer(segments_app, name="segments")


_register_segments()

console = Console(stderr=True)
out = Console()


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _database_url() -> str:
    from perkflow.core.settings import get_settings

    return get_settings().database_url


def serve_app(ctx: object, host: str, port: int, *, run_jobs: bool, log_level: str = "info") -> None:
    import uvicorn

    from perkflow.api.app import create_app

    api = create_app(ctx, run_background_jobs=run_jobs)  # type: ignore[arg-type]
    config = uvicorn.Config(api, host=host, port=port, log_level=log_level, access_log=False)
    uvicorn.Server(config).run()


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to listen on")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on")] = None,
    migrate: Annotated[bool, typer.Option(help="Apply pending migrations first")] = True,
) -> None:
    """Serve the API (default http://127.0.0.1:8000) and run the background jobs."""
    from perkflow.bootstrap import build_context, upgrade_database
    from perkflow.core.settings import get_settings

    settings = get_settings()
    _setup_logging(settings.log_level)
    if migrate:
        upgrade_database(settings.database_url)
    ctx = build_context(settings)
    serve_app(
        ctx,
        host or settings.host,
        port or settings.port,
        run_jobs=settings.serve_runs_jobs,
        log_level=settings.log_level,
    )


@app.command()
def worker(
    threads: Annotated[
        int | None, typer.Option(help="Delivery threads (default PERKFLOW_DELIVERY_THREADS)")
    ] = None,
) -> None:
    """Deliver to the connected platforms and run the scheduled jobs, without the API.

    Several workers can run side by side (on PostgreSQL, on several hosts): none delivers an item
    another one holds.
    """
    import signal

    from perkflow.bootstrap import build_context
    from perkflow.runtime import BackgroundJobs

    ctx = build_context()
    _setup_logging(ctx.settings.log_level)
    jobs = BackgroundJobs(ctx, delivery_threads=threads)
    signal.signal(signal.SIGTERM, lambda *_: jobs.request_stop())
    signal.signal(signal.SIGINT, lambda *_: jobs.request_stop())
    console.print("[green]perkflow worker running[/green] (Ctrl-C to stop)")
    jobs.run_forever()


@app.command()
def demo(
    once: Annotated[
        bool, typer.Option("--once", help="Replay the day and exit (non-zero if a step failed)")
    ] = False,
    reset: Annotated[
        bool, typer.Option("--reset", help="Empty the database first if it holds a demo")
    ] = False,
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8000,
) -> None:
    """Load the demo program, replay a scripted day of member activity, print it, then serve the API."""
    from perkflow.demo.runner import run_demo

    ok = run_demo(
        database_url=_database_url(), reset=reset, serve=not once, host=host, port=port, console=out
    )
    raise typer.Exit(0 if ok else 1)


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument()] = "head") -> None:
    """Apply the schema migrations to PERKFLOW_DATABASE_URL."""
    from perkflow.bootstrap import upgrade_database

    upgrade_database(_database_url(), revision)
    console.print(f"[green]database at {revision}[/green]")


@apikey_app.command("create")
def apikey_create(
    name: Annotated[str, typer.Option(help="What the key is for")],
    scopes: Annotated[str, typer.Option(help="Comma-separated scopes, e.g. events:write,members:read")],
) -> None:
    """Create an API key; the key is printed once, alone on the last line."""
    from perkflow.auth.service import create_api_key
    from perkflow.bootstrap import build_context
    from perkflow.core import transactions
    from perkflow.core.errors import PerkflowError

    ctx = build_context(pool=False)
    try:
        info, key = transactions.run(ctx, lambda uow: create_api_key(uow, name, scopes.split(",")))
    except PerkflowError as exc:
        console.print(f"[red]{exc.message}[/red] {exc.details or ''}")
        raise typer.Exit(2) from exc
    console.print(f"API key {info['id']} ({', '.join(info['scopes'])}); it is shown only once:")
    print(key)


@import_app.command("members")
def import_members(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    program: Annotated[
        str | None, typer.Option(help="Opt members in to this program (opt_in column)")
    ] = None,
    rejects: Annotated[Path | None, typer.Option(help="Write rejected rows with reasons to this CSV")] = None,
) -> None:
    """Import members from a CSV file (streamed in batches), with a progress bar and a reject report."""
    from perkflow.bootstrap import build_context
    from perkflow.importer import import_members_csv

    ctx = build_context(pool=False)
    report = import_members_csv(ctx, file, program=program, rejects_path=rejects, console=console)
    out.print(
        f"imported {report.created} new and {report.updated} updated members, {len(report.rejected)} rejected"
    )
    for line, reason in report.rejected[:50]:
        out.print(f"  line {line}: {reason}")
    if len(report.rejected) > 50:
        out.print(f"  ... and {len(report.rejected) - 50} more")
    raise typer.Exit(0 if not report.rejected else 1)


@jobs_app.command("settle")
def jobs_settle() -> None:
    """Expire due lots and release matured pending points once."""
    from perkflow.bootstrap import build_context
    from perkflow.ledger.service import settle_due_accounts

    ctx = build_context(pool=False)
    out.print(f"settled {settle_due_accounts(ctx)} accounts")


@jobs_app.command("workflows")
def jobs_workflows(
    batch: Annotated[int, typer.Option(help="Members per transaction of a date-triggered run")] = 500,
) -> None:
    """Run due date-triggered workflows (catching up on missed occurrences) and resume finished waits.

    Safe to run from several hosts at once: each occurrence and each waiting run is taken by one.
    """
    import json

    from perkflow.bootstrap import build_context
    from perkflow.workflows.scheduler import resume_waiting_runs, run_date_triggers

    ctx = build_context(pool=False)
    result = {"date_runs": run_date_triggers(ctx, batch=batch), "resumed": resume_waiting_runs(ctx)}
    ctx.close()
    print(json.dumps(result))


workflows_app = typer.Typer(help="Workflows: templates, activation, listing.", no_args_is_help=True)
app.add_typer(workflows_app, name="workflows")


@workflows_app.command("list")
def workflows_list(
    status: Annotated[str | None, typer.Option(help="inactive, active or archived")] = None,
) -> None:
    """The workflows with their status, trigger and version."""
    from rich.table import Table

    from perkflow.bootstrap import build_context
    from perkflow.core import transactions
    from perkflow.workflows.service import list_workflows

    ctx = build_context(pool=False)
    found, _ = transactions.run(ctx, lambda uow: list_workflows(uow, status=status, limit=1000), write=False)
    table = Table()
    for column in ("id", "name", "kind", "status", "trigger", "version", "template"):
        table.add_column(column)
    for w in found:
        trigger = w["trigger"]["type"] + (f": {w['trigger']['key']}" if w["trigger"]["key"] else "")
        table.add_row(
            w["id"], w["name"], w["kind"], w["status"], trigger, str(w["version"]), w["template"] or ""
        )
    out.print(table)


@workflows_app.command("templates")
def workflows_templates() -> None:
    """The ready-made workflows `install-templates` installs, with their parameters."""
    from perkflow.workflows.templates import TEMPLATES

    for t in TEMPLATES.values():
        params = ", ".join(f"{p.name}{'' if p.required else f'={p.default}'}" for p in t.params)
        out.print(f"[bold]{t.name}[/bold] ({t.title}): {t.description}  [dim]params: {params}[/dim]")


@workflows_app.command("install-templates")
def workflows_install_templates(
    names: Annotated[list[str] | None, typer.Argument(help="Templates to install (default: all)")] = None,
    reward: Annotated[str | None, typer.Option(help="The reward the birthday_reward template gives")] = None,
    program: Annotated[str | None, typer.Option(help="Run the workflows in this program")] = None,
    activate: Annotated[bool, typer.Option(help="Activate them too (they install inactive)")] = False,
) -> None:
    """Install the seed use cases as workflows; ones already installed are left as they are."""
    from perkflow.bootstrap import build_context
    from perkflow.core import transactions
    from perkflow.core.errors import PerkflowError
    from perkflow.core.uow import UnitOfWork
    from perkflow.workflows.service import activate as activate_workflow
    from perkflow.workflows.templates import TEMPLATES, get_template, install_template

    ctx = build_context(pool=False)
    failed = False
    for name in names or list(TEMPLATES):
        params: dict[str, object] = {}
        try:
            template = get_template(name)
            if reward is not None and any(p.name == "reward" for p in template.params):
                params["reward"] = reward

            def work(uow: UnitOfWork, name: str = name, params: dict[str, object] = params) -> dict[str, Any]:
                created = install_template(uow, name, params, program_id=program)
                return activate_workflow(uow, created["id"]) if activate else created

            created = transactions.run(ctx, work)
            out.print(f"installed {name} as {created['id']} ({created['status']})")
        except PerkflowError as exc:
            if exc.code == "template_installed":
                out.print(f"{name}: already installed as {exc.details['workflow_id']}")
                continue
            failed = True
            out.print(f"[red]{name}: {exc.message}[/red]")
    ctx.close()
    raise typer.Exit(1 if failed else 0)


def _set_status(workflow_id: str, action: str) -> None:
    from perkflow.bootstrap import build_context
    from perkflow.core import transactions
    from perkflow.core.errors import PerkflowError
    from perkflow.workflows import service

    ctx = build_context(pool=False)
    change = service.activate if action == "activate" else service.deactivate
    try:
        found = transactions.run(ctx, lambda uow: change(uow, workflow_id))
    except PerkflowError as exc:
        console.print(f"[red]{exc.message}[/red]")
        raise typer.Exit(2) from exc
    out.print(f"{found['id']} is {found['status']} (version {found['version']})")


@workflows_app.command("activate")
def workflows_activate(workflow_id: Annotated[str, typer.Argument()]) -> None:
    """Activate a workflow (its latest version)."""
    _set_status(workflow_id, "activate")


@workflows_app.command("deactivate")
def workflows_deactivate(workflow_id: Annotated[str, typer.Argument()]) -> None:
    """Stop new runs of a workflow; waiting runs continue."""
    _set_status(workflow_id, "deactivate")


@deliveries_app.command("status")
def deliveries_status() -> None:
    """Per destination: queued, in flight, delivered, failed, dead, oldest lag."""
    from rich.table import Table

    from perkflow.bootstrap import build_context
    from perkflow.sync.deliveries import delivery_stats

    ctx = build_context(pool=False)
    table = Table()
    for column in (
        "integration",
        "kind",
        "status",
        "queued",
        "in flight",
        "delivered",
        "failed",
        "dead",
        "lag s",
    ):
        table.add_column(column)
    for s in delivery_stats(ctx, recent=0):
        table.add_row(
            s["integration_id"],
            s["kind"],
            s["status"],
            *(str(s[k]) for k in ("queued", "in_flight", "delivered", "failed", "dead", "oldest_lag_s")),
        )
    out.print(table)


@deliveries_app.command("replay")
def deliveries_replay(
    integration: Annotated[
        str | None, typer.Option(help="Replay every dead letter of this integration")
    ] = None,
    item: Annotated[
        list[int] | None, typer.Option("--id", help="Replay this dead letter (repeatable)")
    ] = None,
) -> None:
    """Put dead letters back in the queue."""
    from perkflow.bootstrap import build_context
    from perkflow.core import transactions
    from perkflow.core.errors import PerkflowError
    from perkflow.sync.deliveries import replay

    ctx = build_context(pool=False)
    try:
        count = transactions.run(ctx, lambda uow: replay(uow, integration_id=integration, item_ids=item))
    except PerkflowError as exc:
        console.print(f"[red]{exc.message}[/red]")
        raise typer.Exit(2) from exc
    out.print(f"replayed {count} dead letters")


@bench_app.command("ingest")
def bench_ingest(
    events: Annotated[int, typer.Option(help="Checkout events to ingest")] = 100_000,
    members: Annotated[int, typer.Option(help="Members the events are spread over")] = 10_000,
    batch: Annotated[int, typer.Option(help="Events per bulk request / transaction")] = 1000,
) -> None:
    """Bulk ingestion on a fresh SQLite database against a raw-SQLite baseline."""
    from perkflow.bench.ingest import run_ingest_bench

    run_ingest_bench(events=events, members=members, batch=batch, console=console)


@bench_app.command("workflows")
def bench_workflows(
    events: Annotated[int, typer.Option(help="Checkout events to ingest (each run)")] = 100_000,
    members: Annotated[int, typer.Option(help="Members the events are spread over")] = 10_000,
    batch: Annotated[int, typer.Option(help="Events per bulk request / transaction")] = 1000,
    workflows: Annotated[int, typer.Option(help="Active workflows in the second run")] = 1000,
    matching: Annotated[int, typer.Option(help="Of those, how many every checkout triggers")] = 10,
) -> None:
    """Bulk ingestion without workflows, then with 1,000 active ones (10 firing on every checkout)."""
    from perkflow.bench.workflows import run_workflows_bench

    run_workflows_bench(
        events=events, members=members, batch=batch, workflows=workflows, matching=matching, console=console
    )


@bench_app.command("sync")
def bench_sync(
    members: Annotated[int, typer.Option(help="Members enrolled and synced")] = 10_000,
    changes: Annotated[
        int, typer.Option(help="Profile changes and events ingested during the run")
    ] = 100_000,
    rate_limit: Annotated[int, typer.Option(help="Sandbox Braze limit: requests per window")] = 20,
    rate_window: Annotated[float, typer.Option(help="Sandbox Braze rate window in seconds")] = 1.0,
    workers: Annotated[int, typer.Option(help="`perkflow worker` processes")] = 2,
    threads: Annotated[int, typer.Option(help="Delivery threads per worker")] = 1,
) -> None:
    """Deliver a stream of changes to a rate-limited sandbox Braze and compare with its limit."""
    from perkflow.bench.sync import run_sync_bench

    run_sync_bench(
        members=members,
        changes=changes,
        rate_limit=rate_limit,
        rate_window=rate_window,
        workers=workers,
        threads=threads,
        console=console,
    )


@bench_app.command("segments")
def bench_segments(
    events: Annotated[int, typer.Option(help="Checkout events to ingest")] = 100_000,
    members: Annotated[int, typer.Option(help="Members the events are spread over")] = 10_000,
    batch: Annotated[int, typer.Option(help="Events per bulk request / transaction")] = 1000,
) -> None:
    """Bulk ingestion with and without twenty rule segments, then a full recomputation that must
    agree with the incrementally maintained membership."""
    from perkflow.bench.segments import run_segments_bench

    run_segments_bench(events=events, members=members, batch=batch, console=console)


codes_app = typer.Typer(help="Promotion codes: generation and export.", no_args_is_help=True)
app.add_typer(codes_app, name="codes")


@codes_app.command("export")
def codes_export(
    campaign: Annotated[str, typer.Argument(help="Campaign id or name")],
    unpublished: Annotated[bool, typer.Option("--unpublished", help="Only codes not yet published")] = False,
    output: Annotated[Path | None, typer.Option(help="Write to this file instead of standard output")] = None,
) -> None:
    """Stream a campaign's codes as a Braze promotion-code list (one column, no header)."""
    from perkflow.bootstrap import build_context
    from perkflow.core.errors import PerkflowError
    from perkflow.promotions.service import export_codes

    ctx = build_context(pool=False)
    target = output.open("w", encoding="utf-8", newline="") if output else sys.stdout
    written = 0
    try:
        for chunk in export_codes(ctx, campaign, unpublished=unpublished):
            target.write(chunk)
            written += chunk.count("\n")
    except PerkflowError as exc:
        console.print(f"[red]{exc.message}[/red]")
        raise typer.Exit(2) from exc
    finally:
        if output:
            target.close()
    console.print(f"{written} codes exported")


@contextlib.contextmanager
def _stop_on_ctrl_c(stop: threading.Event) -> Iterator[threading.Event]:
    """Ctrl-C sets `stop`, so that code generation stops between two chunks (never inside a
    transaction) and hands its job back; a second Ctrl-C stops at once, leaving the job to its lease."""
    import signal

    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:  # started with Ctrl-C ignored (nohup, &)
        yield stop
        return

    def on_interrupt(_signum: int, _frame: object) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        console.print("[yellow]stopping after the current chunk[/yellow] (Ctrl-C again to quit at once)")

    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)


@codes_app.command("generate")
def codes_generate(
    campaign: Annotated[str, typer.Argument(help="Campaign id or name")],
    count: Annotated[int, typer.Option(help="How many new codes")],
    chunk: Annotated[int, typer.Option(min=1, help="Codes per transaction")] = 50_000,
) -> None:
    """Add codes to a campaign with a progress bar (refused up front if the pattern cannot yield them).

    Interrupted (Ctrl-C), the codes made so far stay and the rest is resumed by `perkflow serve`,
    `perkflow worker` or `perkflow codes resume`.
    """
    from rich.progress import Progress

    from perkflow.bootstrap import build_context
    from perkflow.core.errors import PerkflowError
    from perkflow.promotions.service import generation_owner, hold_new_generation, run_generation_job

    ctx = build_context(pool=False)
    made = 0
    stop = threading.Event()
    try:
        with _stop_on_ctrl_c(stop):
            owner = generation_owner()
            found, job = hold_new_generation(ctx, campaign, count, owner)
            with Progress(console=console) as progress:
                task = progress.add_task(f"generating codes for {found.name}", total=count)

                def advance(n: int) -> None:
                    nonlocal made
                    made += n
                    progress.advance(task, n)

                run_generation_job(ctx, job, owner, chunk=chunk, progress=advance, stop=stop)
    except PerkflowError as exc:
        console.print(f"[red]{exc.message}[/red] {exc.details or ''}")
        raise typer.Exit(2) from exc
    except KeyboardInterrupt:
        stop.set()
    if stop.is_set() and made < count:
        console.print(
            f"[yellow]interrupted after {made} codes[/yellow]: the rest is generated by `perkflow serve` "
            f"or `perkflow worker`, or run `perkflow codes resume {campaign}`"
        )
        raise typer.Exit(130)
    out.print(f"generated {made} codes")


@codes_app.command("resume")
def codes_resume(
    campaign: Annotated[str | None, typer.Argument(help="Campaign id or name (default: all)")] = None,
    chunk: Annotated[int, typer.Option(min=1, help="Codes per transaction")] = 50_000,
) -> None:
    """Finish code generation that a stopped or crashed process left unfinished, with a progress bar."""
    import functools

    from rich.progress import Progress

    from perkflow.bootstrap import build_context
    from perkflow.core import transactions
    from perkflow.core.clock import isoformat_z
    from perkflow.core.errors import PerkflowError
    from perkflow.promotions.service import (
        GenerationJob,
        claim_generation_jobs,
        generation_owner,
        get_campaign,
        release_generation,
        run_generation_job,
        unfinished_generation,
    )

    ctx = build_context(pool=False)
    made = 0
    claimed: list[GenerationJob] = []
    stop = threading.Event()
    try:
        with _stop_on_ctrl_c(stop):
            campaign_id = None
            if campaign is not None:
                found = transactions.run(ctx, lambda uow: get_campaign(uow, campaign), write=False)
                campaign_id = found.id
            owner = generation_owner()
            claimed = claim_generation_jobs(ctx, owner, campaign_id=campaign_id)
            if not claimed and campaign_id is not None:
                held: GenerationJob | None = transactions.run(
                    ctx, lambda uow: unfinished_generation(uow, found.id), write=False
                )
                if held is None:
                    console.print(f"nothing to resume: {found.name} has no unfinished code generation")
                    return
                until = isoformat_z(held.lease_until) if held.lease_until else "now"
                console.print(
                    f"[red]{found.name} is being generated by {held.lease_owner} until {until}[/red]"
                )
                raise typer.Exit(1)
            with Progress(console=console) as progress:
                for job in claimed:
                    if stop.is_set():
                        release_generation(ctx, job, owner)
                        continue
                    task = progress.add_task(
                        f"resuming {job.campaign_id}", total=job.requested, completed=job.generated
                    )
                    made += run_generation_job(
                        ctx,
                        job,
                        owner,
                        chunk=chunk,
                        progress=functools.partial(progress.advance, task),
                        stop=stop,
                    )
    except PerkflowError as exc:
        console.print(f"[red]{exc.message}[/red] {exc.details or ''}")
        raise typer.Exit(2) from exc
    except KeyboardInterrupt:
        stop.set()
    if stop.is_set():
        console.print(f"[yellow]interrupted after {made} codes[/yellow]; run `perkflow codes resume` again")
        raise typer.Exit(130)
    out.print(f"resumed {len(claimed)} generation jobs, generated {made} codes")


@bench_app.command("codes")
def bench_codes(
    count: Annotated[int, typer.Option(help="Codes to generate")] = 1_000_000,
    length: Annotated[int, typer.Option(help="Code length (alphanumeric)")] = 10,
    chunk: Annotated[int, typer.Option(help="Codes per transaction")] = 100_000,
) -> None:
    """Generate a campaign of unique codes into a fresh SQLite database."""
    from perkflow.bench.codes import run_codes_bench

    run_codes_bench(count=count, length=length, chunk=chunk, console=console)


@bench_app.command("publish")
def bench_publish(
    seconds: Annotated[float, typer.Option(help="Measured duration")] = 20.0,
    clients: Annotated[int, typer.Option(help="Concurrent keep-alive connections")] = 8,
    customers: Annotated[int, typer.Option(help="Members the requests are spread over")] = 10_000,
) -> None:
    """Connected Content publications over loopback HTTP against `perkflow serve` (embedded SQLite)."""
    from perkflow.bench.publish import run_publish_bench

    run_publish_bench(seconds=seconds, clients=clients, customers=customers, console=console)


def main() -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
