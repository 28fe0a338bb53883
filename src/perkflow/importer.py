"""`perkflow import members FILE.csv`: stream a CSV of members in, batch by batch, reporting bad rows.

Columns: `id` (required), `email`, `first_name`, `last_name`, `birth_date`, `status`, any custom field
from the catalogue (values parsed by the field's type: numbers, true/false, JSON for arrays and
objects), `external_source` + `external_source_id`, and `opt_in` (true/false, with --program or the
default program). Existing members are updated. Each batch is one transaction; a bad row is reported
with its line number and reason and skipped without affecting the others.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from perkflow.core import transactions
from perkflow.core.context import AppContext
from perkflow.core.errors import PerkflowError
from perkflow.core.uow import UnitOfWork
from perkflow.events.service import ingest
from perkflow.members import service
from perkflow.members.repository import MemberRepository

BATCH = 500
PROFILE = {"email", "first_name", "last_name", "birth_date", "status"}
SPECIAL = {"id", "opt_in", "external_source", "external_source_id"}


@dataclass
class ImportReport:
    created: int = 0
    updated: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)


def _typed(value: str, field_type: str) -> Any:
    if value == "":
        return None
    if field_type == "integer":
        return int(value)
    if field_type == "float":
        return float(value)
    if field_type == "boolean":
        lowered = value.strip().lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
        raise ValueError(f"{value!r} is not true or false")
    if field_type in ("array", "object", "array_of_objects"):
        return orjson.loads(value)
    return value


def _row_spec(row: dict[str, str], catalog: dict[str, dict[str, Any]]) -> tuple[dict[str, Any], bool]:
    member_id = (row.get("id") or "").strip()
    if not member_id:
        raise ValueError("the id column is empty")
    if any(value and "\x00" in value for value in row.values() if isinstance(value, str)):
        raise ValueError("the row contains a NUL character")
    spec: dict[str, Any] = {"id": member_id, "fields": {}}
    for key, raw in row.items():
        if key is None:
            raise ValueError("the row has more values than the header has columns")
        if key in SPECIAL:
            continue
        value = (raw or "").strip()
        if key in PROFILE:
            if value:
                spec[key] = value
        elif key in catalog:
            try:
                spec["fields"][key] = _typed(value, catalog[key]["type"])
            except (ValueError, orjson.JSONDecodeError) as exc:
                raise ValueError(f"{key}: {exc}") from exc
        else:
            raise ValueError(f"unknown column {key!r} (not a member attribute or a catalogue field)")
    if row.get("external_source") and row.get("external_source_id"):
        spec["identities"] = [
            {
                "external_source": row["external_source"].strip(),
                "external_source_id": row["external_source_id"].strip(),
            }
        ]
    opt_in = (row.get("opt_in") or "").strip().lower() in ("true", "1", "yes")
    return spec, opt_in


def _import_row(uow: UnitOfWork, spec: dict[str, Any], opt_in: bool, program: str | None) -> bool:
    """Create or update one member; returns True if it was created."""
    existing = uow.component(MemberRepository).get(spec["id"])
    if existing is None:
        service.create_member(uow, spec, source="import")
        created = True
    else:
        service.update_member(
            uow, spec["id"], {k: v for k, v in spec.items() if k not in ("id", "identities")}, source="import"
        )
        held = {
            (i["external_source"], i["external_source_id"])
            for i in service.identities_of(uow, [spec["id"]])[spec["id"]]
        }
        for identity in spec.get("identities", []):
            pair = (identity["external_source"], identity["external_source_id"])
            # Importing the same file twice is an update, not a clash with the member itself.
            if pair not in held:
                service.add_identity(uow, spec["id"], *pair, source="import")
        created = False
    if opt_in:
        event: dict[str, Any] = {"customer": spec["id"], "action": "opt_in"}
        if program:
            event["program"] = program
        outcome = ingest(uow, [event], source="import")[0]
        if outcome.error is not None and outcome.error.code != "already_opted_in":
            raise outcome.error
    return created


def import_members_csv(
    ctx: AppContext,
    path: Path,
    *,
    program: str | None = None,
    rejects_path: Path | None = None,
    console: Console | None = None,
) -> ImportReport:
    return _stream(ctx, path, program, rejects_path, console, ImportReport(), path.stat().st_size)


def _stream(
    ctx: AppContext,
    path: Path,
    program: str | None,
    rejects_path: Path | None,
    console: Console | None,
    report: ImportReport,
    total_bytes: int,
) -> ImportReport:
    catalog = transactions.run(ctx, lambda uow: dict(uow.component(service.FieldCatalog).fields), write=False)
    progress = Progress(
        TextColumn("importing members"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )
    with path.open("rb") as raw, progress:
        task = progress.add_task("import", total=total_bytes)
        text = io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")
        reader = csv.DictReader(text)
        if not reader.fieldnames or "id" not in reader.fieldnames:
            report.rejected.append((1, "the header has no id column"))
            return report
        batch: list[tuple[int, dict[str, Any], bool]] = []
        for row in reader:
            line = reader.line_num
            try:
                spec, opt_in = _row_spec(row, catalog)
            except ValueError as exc:
                report.rejected.append((line, str(exc)))
                continue
            batch.append((line, spec, opt_in))
            if len(batch) >= BATCH:
                _flush(ctx, batch, program, report)
                batch = []
                progress.update(task, completed=raw.tell())
        if batch:
            _flush(ctx, batch, program, report)
        progress.update(task, completed=total_bytes)
    if rejects_path is not None and report.rejected:
        with rejects_path.open("w", newline="") as out:
            writer = csv.writer(out)
            writer.writerow(["line", "reason"])
            writer.writerows(report.rejected)
    return report


def _flush(
    ctx: AppContext, batch: list[tuple[int, dict[str, Any], bool]], program: str | None, report: ImportReport
) -> None:
    """Import a batch in one transaction; rows that fail are retried alone so they cannot sink the rest."""

    def work(uow: UnitOfWork) -> list[bool]:
        return [_import_row(uow, spec, opt_in, program) for _, spec, opt_in in batch]

    try:
        created = transactions.run(ctx, work)
    except PerkflowError:
        for line, spec, opt_in in batch:
            try:
                was_created = transactions.run(
                    ctx, partial(_import_row, spec=spec, opt_in=opt_in, program=program)
                )
            except PerkflowError as exc:
                detail = f" {exc.details}" if exc.details else ""
                report.rejected.append((line, f"{exc.message}{detail}"))
                continue
            report.created += was_created
            report.updated += not was_created
        return
    report.created += sum(created)
    report.updated += len(created) - sum(created)
