"""`perkflow segments ...`: list segments and run their evaluations from the command line (or cron)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console

segments_app = typer.Typer(help="Segments: list them, compute their membership.", no_args_is_help=True)
console = Console(stderr=True)
out = Console()


@segments_app.command("list")
def list_segments() -> None:
    """Every segment with its kind, member count and evaluation state."""
    from rich.table import Table

    from perkflow.bootstrap import build_context
    from perkflow.segments.service import list_segments as listed

    ctx = build_context(pool=False)
    table = Table()
    for column in ("id", "name", "kind", "members", "evaluation", "evaluated at"):
        table.add_column(column)
    cursor = None
    while True:
        with ctx.uow(write=False) as uow:
            page, cursor = listed(uow, limit=500, after=cursor)
        for s in page:
            evaluation = s["evaluation"] or {}
            state = evaluation.get("status", "-")
            if state in ("pending", "running"):
                state += f" {evaluation.get('evaluated', 0)}/{evaluation.get('total') or '?'}"
            table.add_row(
                s["id"], s["name"], s["kind"], str(s["member_count"]), state, s["evaluated_at"] or "-"
            )
        if cursor is None:
            break
    out.print(table)


@segments_app.command("evaluate")
def evaluate(
    segment: Annotated[str | None, typer.Argument(help="Segment id (omit with --all)")] = None,
    all_segments: Annotated[bool, typer.Option("--all", help="Every rule segment")] = False,
) -> None:
    """Compute rule segments' membership over all members now, with a progress bar; prints one JSON
    line per segment with what changed."""
    from functools import partial

    from rich.progress import Progress
    from sqlalchemy import select

    from perkflow.bootstrap import build_context
    from perkflow.core import transactions
    from perkflow.core.errors import PerkflowError
    from perkflow.segments.runs import request_evaluation, run_evaluation
    from perkflow.segments.tables import segments

    if (segment is None) == (not all_segments):
        console.print("[red]name one segment, or pass --all[/red]")
        raise typer.Exit(2)
    ctx = build_context(pool=False)
    if segment is not None:
        wanted = [segment]
    else:
        with ctx.uow(write=False) as uow:
            wanted = list(
                uow.conn.execute(
                    select(segments.c.id).where(segments.c.kind == "rule").order_by(segments.c.id)
                )
                .scalars()
                .all()
            )
    try:
        for segment_id in wanted:
            transactions.run(ctx, partial(request_evaluation, segment_id=segment_id, reason="requested"))
            with Progress(console=console, transient=True) as progress:
                task = progress.add_task(f"evaluating {segment_id}", total=None)

                def advance(state: dict[str, object], task: object = task) -> None:
                    progress.update(task, completed=state.get("evaluated"), total=state.get("total"))  # type: ignore[arg-type]

                state = run_evaluation(ctx, segment_id, progress=advance)
            print(
                json.dumps(
                    {"segment_id": segment_id, **{k: state.get(k) for k in ("evaluated", "entered", "left")}}
                )
            )
    except PerkflowError as exc:
        console.print(f"[red]{exc.message}[/red]")
        raise typer.Exit(2) from exc


@segments_app.command("sweep")
def sweep(
    force: Annotated[
        bool, typer.Option("--force", help="Re-evaluate every rule segment, due or not")
    ] = False,
) -> None:
    """Run the periodic segment job once (for cron): re-evaluate rules that change with time, reconcile
    segments due for it, and finish runs under way."""
    from perkflow.bootstrap import build_context
    from perkflow.segments.runs import run_due

    ctx = build_context(pool=False)
    results = run_due(ctx, force=force)
    for segment_id, state in results.items():
        print(
            json.dumps(
                {
                    "segment_id": segment_id,
                    **{k: state.get(k) for k in ("status", "reason", "evaluated", "entered", "left")},
                }
            )
        )
    console.print(f"{len(results)} segments evaluated")
