"""HTTP routes for workflows: CRUD and versions, activation, dry runs, runs, templates."""

from __future__ import annotations

from typing import Any

from fastapi import Path, Query, Response

from perkflow.api.deps import Ctx, read, require, write
from perkflow.api.responses import JSON, no_content
from perkflow.api.routing import api_router
from perkflow.core.uow import UnitOfWork
from perkflow.workflows import service
from perkflow.workflows.dryrun import dry_run
from perkflow.workflows.graph import node_catalogue
from perkflow.workflows.schemas import DryRunBody, TemplateInstall, WorkflowCreate, WorkflowUpdate
from perkflow.workflows.templates import TEMPLATES, install_template

router = api_router(tags=["workflows"])
READ = require("workflows:read")
WRITE = require("workflows:write")
MAX_ID = 2**62


@router.get("/workflows/nodes", dependencies=[READ])
def list_node_types() -> JSON:
    """Every node type with its outputs and the JSON schema of its parameters."""
    return JSON({"data": node_catalogue()})


@router.get("/workflows/templates", dependencies=[READ])
def list_templates(ctx: Ctx) -> JSON:
    def work(uow: UnitOfWork) -> list[dict[str, Any]]:
        installed = service.installed_templates(uow)
        return [{**t.to_public(), "installed_as": installed.get(t.name)} for t in TEMPLATES.values()]

    return JSON({"data": read(ctx, work)})


@router.post("/workflows/templates/{name}/install", status_code=201, dependencies=[WRITE])
def install(name: str, ctx: Ctx, body: TemplateInstall | None = None) -> JSON:
    """Create the template's workflow (inactive unless `activate` is true)."""
    spec = body or TemplateInstall()

    def work(uow: UnitOfWork) -> dict[str, Any]:
        created = install_template(uow, name, spec.params, program_id=spec.program_id)
        return service.activate(uow, created["id"]) if spec.activate else created

    return JSON(write(ctx, work), status_code=201)


@router.get("/workflows", dependencies=[READ])
def list_workflows(
    ctx: Ctx,
    status: str | None = Query(None, pattern="^(inactive|active|archived)$"),
    kind: str | None = Query(None, pattern="^(general|campaign)$"),
    trigger: str | None = Query(None, max_length=64, description="A trigger type (event, date...) or key"),
    template: str | None = Query(None, max_length=64),
    limit: int = Query(50, ge=1, le=500),
    after: str | None = Query(None, max_length=64, description="The next_cursor of the previous page"),
) -> JSON:
    found, cursor = read(
        ctx,
        lambda uow: service.list_workflows(
            uow, status=status, kind=kind, trigger=trigger, template=template, limit=limit, after=after
        ),
    )
    return JSON({"data": found, "next_cursor": cursor})


@router.post("/workflows", status_code=201, dependencies=[WRITE])
def create_workflow(body: WorkflowCreate, ctx: Ctx) -> JSON:
    """Create a workflow, inactive; the graph is checked first and refused with errors naming nodes."""
    spec = body.model_dump()
    return JSON(write(ctx, lambda uow: service.create_workflow(uow, spec)), status_code=201)


@router.get("/workflows/{workflow_id}", dependencies=[READ])
def get_workflow(workflow_id: str, ctx: Ctx) -> JSON:
    def work(uow: UnitOfWork) -> dict[str, Any]:
        return {**service.get_workflow(uow, workflow_id), "runs": service.run_counts(uow, workflow_id)}

    return JSON(read(ctx, work))


@router.patch("/workflows/{workflow_id}", dependencies=[WRITE])
def update_workflow(workflow_id: str, body: WorkflowUpdate, ctx: Ctx) -> JSON:
    """Change settings or the graph; editing a version that has run makes a new version."""
    changes = body.model_dump(exclude_unset=True)
    return JSON(write(ctx, lambda uow: service.update_workflow(uow, workflow_id, changes)))


@router.delete("/workflows/{workflow_id}", status_code=204, dependencies=[WRITE])
def delete_workflow(workflow_id: str, ctx: Ctx) -> Response:
    """Archive: it stops for good and its waiting runs are cancelled; it and its runs stay readable."""
    write(ctx, lambda uow: service.archive(uow, workflow_id))
    return no_content()


@router.post("/workflows/{workflow_id}/activate", dependencies=[WRITE])
def activate(workflow_id: str, ctx: Ctx) -> JSON:
    return JSON(write(ctx, lambda uow: service.activate(uow, workflow_id)))


@router.post("/workflows/{workflow_id}/deactivate", dependencies=[WRITE])
def deactivate(workflow_id: str, ctx: Ctx) -> JSON:
    return JSON(write(ctx, lambda uow: service.deactivate(uow, workflow_id)))


@router.get("/workflows/{workflow_id}/versions", dependencies=[READ])
def list_versions(workflow_id: str, ctx: Ctx) -> JSON:
    return JSON({"data": read(ctx, lambda uow: service.list_versions(uow, workflow_id))})


@router.get("/workflows/{workflow_id}/versions/{version}", dependencies=[READ])
def get_version(workflow_id: str, ctx: Ctx, version: int = Path(ge=1, le=MAX_ID)) -> JSON:
    return JSON(read(ctx, lambda uow: service.get_version(uow, workflow_id, version)))


@router.post("/workflows/{workflow_id}/test", dependencies=[WRITE])
def test_workflow(workflow_id: str, body: DryRunBody, ctx: Ctx) -> JSON:
    """Dry run: the path a sample event and member take, and what every action would do and send.

    Nothing is written: the run happens in a transaction that is rolled back.
    """
    event = body.event.model_dump() if body.event is not None else None
    return JSON(
        dry_run(
            ctx,
            workflow_id,
            member_id=body.member_id,
            event=event,
            member=body.member,
            version=body.version,
            at=body.at,
        )
    )


def _runs_page(found: list[dict[str, Any]], cursor: int | None) -> JSON:
    return JSON({"data": found, "next_cursor": cursor})


@router.get("/workflows/{workflow_id}/runs", dependencies=[READ])
def workflow_runs(
    workflow_id: str,
    ctx: Ctx,
    status: str | None = Query(None, pattern="^(completed|filtered|failed|waiting|interrupted|cancelled)$"),
    member: str | None = Query(None, max_length=128),
    limit: int = Query(50, ge=1, le=500),
    before: int | None = Query(None, ge=1, le=MAX_ID, description="The next_cursor of the previous page"),
) -> JSON:
    return _runs_page(
        *read(
            ctx,
            lambda uow: service.list_runs(
                uow, workflow_id=workflow_id, member_id=member, status=status, limit=limit, before=before
            ),
        )
    )


@router.get("/workflows/{workflow_id}/occurrences", dependencies=[READ])
def occurrences(workflow_id: str, ctx: Ctx, limit: int = Query(50, ge=1, le=500)) -> JSON:
    """Date triggers: each scheduled occurrence, how far it got and when it finished."""
    return JSON({"data": read(ctx, lambda uow: service.list_occurrences(uow, workflow_id, limit=limit))})


@router.get("/workflow-runs/{run_id}", dependencies=[READ])
def get_run(ctx: Ctx, run_id: int = Path(ge=1, le=MAX_ID)) -> JSON:
    return JSON(read(ctx, lambda uow: service.get_run(uow, run_id)))


@router.get("/members/{member_id}/workflow-runs", dependencies=[READ])
def member_runs(
    member_id: str,
    ctx: Ctx,
    status: str | None = Query(None, pattern="^(completed|filtered|failed|waiting|interrupted|cancelled)$"),
    limit: int = Query(50, ge=1, le=500),
    before: int | None = Query(None, ge=1, le=MAX_ID),
) -> JSON:
    return _runs_page(
        *read(
            ctx,
            lambda uow: service.list_runs(
                uow, member_id=member_id, status=status, limit=limit, before=before
            ),
        )
    )
