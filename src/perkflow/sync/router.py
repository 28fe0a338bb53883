"""HTTP routes: connecting platforms, field mappings, event selection, settings, and delivery status."""

from __future__ import annotations

from typing import Any

from fastapi import Query, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from perkflow.api.deps import Ctx, read, require, write
from perkflow.api.responses import JSON
from perkflow.api.routing import api_router
from perkflow.connectors.urls import normalize_base_url
from perkflow.core.limits import INT64_MAX
from perkflow.core.security import random_secret
from perkflow.core.uow import UnitOfWork
from perkflow.sync import deliveries, integrations, metrics, resync
from perkflow.sync.schemas import (
    BloomreachConnect,
    BrazeConnect,
    Credentials,
    Events,
    MappingRow,
    Mappings,
    Replay,
    Resync,
    WebhookConnect,
)

router = api_router(tags=["integrations"])
metrics_router = api_router(tags=["operations"])
ADMIN = [require("admin")]


def _events(body: Any) -> list[dict[str, Any]]:
    return [e.model_dump(exclude_none=True) for e in body.events]


def _with_stats(ctx: Any, integration: integrations.Integration) -> dict[str, Any]:
    found = next((s for s in deliveries.delivery_stats(ctx) if s["integration_id"] == integration.id), None)
    return {**integration.to_public(), "deliveries": found}


@router.get("/integrations", dependencies=ADMIN)
def list_integrations(ctx: Ctx) -> JSON:
    return JSON({"data": [i.to_public() for i in read(ctx, integrations.load_integrations)]})


@router.get("/integrations/fields", dependencies=ADMIN)
def loyalty_fields(ctx: Ctx) -> JSON:
    """The loyalty fields a mapping can use, with their types."""
    fields = read(ctx, integrations.loyalty_fields)
    return JSON(
        {
            "data": [
                {"name": f.name, "type": f.type, "description": f.description, "scope": f.scope}
                for f in fields.values()
            ]
        }
    )


def _connect(
    ctx: Any,
    kind: str,
    *,
    name: str,
    config: dict[str, Any],
    secrets: dict[str, Any],
    settings: dict[str, Any],
    program_id: str | None,
) -> integrations.Integration:
    """Validate what needs no network, check the credentials with a real call outside any transaction
    (a slow platform must not hold a database lock), then save."""
    read(ctx, lambda uow: integrations.validate_new_integration(uow, kind, config, settings, program_id))
    checked = integrations.check_credentials(kind, config, secrets, settings)
    return write(
        ctx,
        lambda uow: integrations.connect(uow, checked, name=name, settings=settings, program_id=program_id),
    )


@router.post("/integrations/braze", status_code=201, dependencies=ADMIN)
def connect_braze(body: BrazeConnect, ctx: Ctx) -> JSON:
    url = normalize_base_url(body.instance_url, strip_paths=("/users/track",))
    created = _connect(
        ctx,
        "braze",
        name=body.name,
        config={"instance_url": url, "app_id": body.app_id},
        secrets={"api_key": body.api_key},
        settings={**body.settings, "events": _events(body)},
        program_id=body.program_id,
    )
    return JSON(created.to_public(), status_code=201)


@router.post("/integrations/bloomreach", status_code=201, dependencies=ADMIN)
def connect_bloomreach(body: BloomreachConnect, ctx: Ctx) -> JSON:
    url = normalize_base_url(body.base_url)
    created = _connect(
        ctx,
        "bloomreach",
        name=body.name,
        config={
            "base_url": url,
            "project_token": body.project_token,
            "hard_id": body.hard_id,
            "hard_id_field": body.hard_id_field,
        },
        secrets={"api_key_id": body.api_key_id, "api_secret": body.api_secret},
        settings={**body.settings, "events": _events(body), "async_sync": body.async_sync},
        program_id=body.program_id,
    )
    return JSON(created.to_public(), status_code=201)


@router.post("/integrations/webhook", status_code=201, dependencies=ADMIN)
def connect_webhook(body: WebhookConnect, ctx: Ctx) -> JSON:
    url = normalize_base_url(body.url)
    secret = body.secret or random_secret()
    created = _connect(
        ctx,
        "webhook",
        name=body.name,
        config={"url": url},
        secrets={"secret": secret},
        settings={**body.settings, "events": _events(body)},
        program_id=body.program_id,
    )
    out = created.to_public()
    if body.secret is None:
        out["secret"] = secret  # generated for you: shown this once, never again
    return JSON(out, status_code=201)


@router.get("/integrations/{integration_id}", dependencies=ADMIN)
def get_integration(integration_id: str, ctx: Ctx) -> JSON:
    integration = read(ctx, lambda uow: integrations.get_integration(uow, integration_id))
    return JSON(_with_stats(ctx, integration))


@router.delete("/integrations/{integration_id}", dependencies=ADMIN)
def disconnect(integration_id: str, ctx: Ctx) -> JSON:
    return JSON(write(ctx, lambda uow: integrations.disconnect(uow, integration_id)).to_public())


@router.put("/integrations/{integration_id}/credentials", dependencies=ADMIN)
def update_credentials(integration_id: str, body: Credentials, ctx: Ctx) -> JSON:
    """New credentials (and connection settings), checked with a real call before they replace the old."""
    integration = read(ctx, lambda uow: integrations.get_integration(uow, integration_id))
    config = integrations.credentials_config(integration, dict(body.config))
    for key in ("instance_url", "base_url", "url"):
        if key in body.config:
            config[key] = normalize_base_url(str(config[key]), strip_paths=("/users/track",))
    checked = integrations.check_credentials(integration.kind, config, body.secrets, integration.settings)
    return JSON(
        write(ctx, lambda uow: integrations.update_credentials(uow, integration_id, checked)).to_public()
    )


@router.get("/integrations/{integration_id}/fields", dependencies=ADMIN)
def get_mappings(integration_id: str, ctx: Ctx) -> JSON:
    integration = read(ctx, lambda uow: integrations.get_integration(uow, integration_id))
    return JSON({"data": integration.to_public()["field_mappings"]})


@router.put("/integrations/{integration_id}/fields", dependencies=ADMIN)
def save_mappings(integration_id: str, body: Mappings, ctx: Ctx) -> JSON:
    rows = [(row.loyalty_field, row.remote_field) for row in body.fields]
    saved = write(ctx, lambda uow: integrations.set_mappings(uow, integration_id, rows))
    return JSON({"data": saved.to_public()["field_mappings"]})


@router.post("/integrations/{integration_id}/fields", status_code=201, dependencies=ADMIN)
def add_mapping(integration_id: str, body: MappingRow, ctx: Ctx) -> JSON:
    saved = write(
        ctx, lambda uow: integrations.add_mapping(uow, integration_id, body.loyalty_field, body.remote_field)
    )
    return JSON({"data": saved.to_public()["field_mappings"]}, status_code=201)


@router.delete("/integrations/{integration_id}/fields/{remote_field}", dependencies=ADMIN)
def remove_mapping(integration_id: str, remote_field: str, ctx: Ctx) -> JSON:
    saved = write(ctx, lambda uow: integrations.remove_mapping(uow, integration_id, remote_field))
    return JSON({"data": saved.to_public()["field_mappings"]})


@router.get("/integrations/{integration_id}/events", dependencies=ADMIN)
def get_events(integration_id: str, ctx: Ctx) -> JSON:
    integration = read(ctx, lambda uow: integrations.get_integration(uow, integration_id))
    return JSON({"data": integration.settings["events"]})


@router.put("/integrations/{integration_id}/events", dependencies=ADMIN)
def save_events(integration_id: str, body: Events, ctx: Ctx) -> JSON:
    saved = write(ctx, lambda uow: integrations.set_events(uow, integration_id, _events(body)))
    return JSON({"data": saved.settings["events"]})


@router.patch("/integrations/{integration_id}/settings", dependencies=ADMIN)
def update_settings(integration_id: str, body: dict[str, Any], ctx: Ctx) -> JSON:
    """Change some settings; the others keep their values. A bad value is a 422 naming it.

    - `mode`: `delta` (default: only values that differ from what the platform acknowledged) or `full`
    - `events`: `[{type, name?}]`, the activity types sent as platform events
    - `flush_age_ms` (500): send a part-full batch once its oldest item is this old
    - `max_attempts` (8), `backoff_base_s` (1), `backoff_max_s` (300): retries, then dead letters
    - `rate_limit_per_s`: requests per second (default Braze 1000, Bloomreach 100, webhooks 50)
    - `braze_cap_mode` (`total`: 75 objects per request, or `per_array`: 75 per array, legacy
      contracts), `braze_max_objects` (75), `braze_array_max` (25)
    - `bloomreach_max_commands` (50)
    - `async_sync` (true): Bloomreach; false pushes each change within the request that caused it,
      for at most `sync_push_timeout_s` (3), and leaves it to the queue if that fails
    - the Bloomreach `hard_id` and `hard_id_field` are fixed once connected (409)
    """
    return JSON(write(ctx, lambda uow: integrations.update_settings(uow, integration_id, body)).to_public())


@router.get("/deliveries", dependencies=ADMIN)
def delivery_status(ctx: Ctx, recent: int = Query(10, ge=0, le=100)) -> JSON:
    """Per destination: queued, in flight, delivered, failed (awaiting retry), dead, lag, recent errors."""
    return JSON({"data": deliveries.delivery_stats(ctx, recent=recent)})


@router.post("/integrations/{integration_id}/resync", dependencies=ADMIN, status_code=202)
def resync_integration(integration_id: str, ctx: Ctx, body: Resync | None = None) -> JSON:
    """Queue members' mapped fields again (after adding a mapping, or when the platform lost them)."""
    body = body or Resync()
    if body.members is None:
        result = resync.resync_all(ctx, integration_id, forget_acknowledged=body.forget_acknowledged)
    else:
        result = resync.resync_members(
            ctx, integration_id, body.members, forget_acknowledged=body.forget_acknowledged
        )
    return JSON({"queued": result.queued, "unknown_members": result.unknown}, status_code=202)


@router.get("/deliveries/dead", dependencies=ADMIN)
def dead_letters(
    ctx: Ctx,
    integration: str | None = None,
    limit: int = Query(100, ge=1, le=1000),
    after: int = Query(0, ge=0, le=INT64_MAX),
) -> JSON:
    def work(uow: UnitOfWork) -> list[dict[str, Any]]:
        return deliveries.dead_letters(uow, integration_id=integration, limit=limit, after_id=after)

    found = read(ctx, work)
    return JSON({"data": found, "next_after": found[-1]["id"] if len(found) == limit else None})


@router.post("/deliveries/replay", dependencies=ADMIN)
def replay(body: Replay, ctx: Ctx) -> JSON:
    count = write(
        ctx, lambda uow: deliveries.replay(uow, integration_id=body.integration_id, item_ids=body.item_ids)
    )
    return JSON({"replayed": count})


@metrics_router.get("/metrics", include_in_schema=False)
def prometheus(ctx: Ctx) -> Response:
    return Response(generate_latest(metrics.of(ctx).registry), media_type=CONTENT_TYPE_LATEST)
