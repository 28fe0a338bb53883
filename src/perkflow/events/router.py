"""HTTP routes of the events API and the custom event type registry."""

from __future__ import annotations

from typing import Any

from fastapi import Request, Response

from perkflow.api.deps import Ctx, read, require, write
from perkflow.api.responses import JSON, no_content
from perkflow.api.routing import api_router
from perkflow.core import transactions
from perkflow.core.errors import PayloadTooLarge
from perkflow.core.uow import UnitOfWork
from perkflow.events import types as event_types
from perkflow.events.schemas import BulkEventsBody, BulkResult, EventBody, EventResult, EventTypeBody
from perkflow.events.service import ingest

router = api_router(tags=["events"])


@router.post(
    "/events",
    status_code=201,
    response_model=EventResult,
    dependencies=[require("events:write")],
    responses={200: {"description": "A repeat of an event already seen: the original result"}},
)
def post_event(body: EventBody, request: Request, ctx: Ctx) -> JSON:
    raw = body.model_dump(exclude_none=True, mode="json")
    outcome = write(ctx, lambda uow: ingest(uow, [raw], source="api")[0])
    if outcome.error is not None:
        raise outcome.error
    assert outcome.activity is not None
    if outcome.status == "duplicate":
        return JSON(outcome.activity.to_public(), status_code=200, headers={"Idempotent-Replayed": "true"})
    return JSON(outcome.activity.to_public(), status_code=201)


@router.post("/events/bulk", response_model=BulkResult, dependencies=[require("events:write")])
def post_events_bulk(body: BulkEventsBody, ctx: Ctx) -> JSON:
    limit = ctx.settings.bulk_max_events
    if len(body.events) > limit:
        raise PayloadTooLarge(
            f"a bulk request carries at most {limit} events, this one has {len(body.events)}",
            code="batch_too_large",
            details={"max_events": limit, "events": len(body.events)},
        )
    outcomes = transactions.run(ctx, lambda uow: ingest(uow, body.events, source="api"), bulk=True)
    results = [o.to_public() for o in outcomes]
    counts = {"accepted": 0, "duplicate": 0, "rejected": 0}
    for o in outcomes:
        counts[o.status] += 1
    return JSON(
        {
            "accepted": counts["accepted"],
            "duplicates": counts["duplicate"],
            "rejected": counts["rejected"],
            "results": results,
        }
    )


@router.get("/event-types", dependencies=[require("programs:read")])
def list_event_types(ctx: Ctx) -> JSON:
    def work(uow: UnitOfWork) -> list[dict[str, Any]]:
        return sorted(uow.component(event_types.EventTypeCatalog).types.values(), key=lambda t: t["name"])

    return JSON({"data": read(ctx, work), "builtin_actions": list(event_types.BUILTIN_ACTIONS)})


@router.post("/event-types", status_code=201, dependencies=[require("admin")])
def create_event_type(body: EventTypeBody, ctx: Ctx) -> JSON:
    created = write(
        ctx, lambda uow: event_types.register_event_type(uow, body.name, body.attributes, body.description)
    )
    return JSON(created, status_code=201)


@router.delete("/event-types/{name}", status_code=204, dependencies=[require("admin")])
def delete_event_type(name: str, ctx: Ctx) -> Response:
    write(ctx, lambda uow: event_types.delete_event_type(uow, name))
    return no_content()
