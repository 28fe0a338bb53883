"""HTTP routes for segments: definitions, membership, previews, evaluation runs and the inbound
webhook that Braze webhook campaigns call to add members to static segments."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import Depends, Query, Request, Response

from perkflow.api.deps import Ctx, authenticate, read, require, write
from perkflow.api.responses import JSON, no_content
from perkflow.api.routing import api_router
from perkflow.core.errors import NotFound, Unauthorized
from perkflow.core.uow import UnitOfWork
from perkflow.segments import service
from perkflow.segments.inbound import (
    SIGNATURE_HEADER,
    MemberReference,
    parse_body,
    read_reference,
    signature_matches,
)
from perkflow.segments.runs import run_due, run_evaluation
from perkflow.segments.schemas import PreviewBody, SegmentCreate, SegmentUpdate, SweepBody

router = api_router(tags=["segments"])

INBOUND_BODY = {
    "requestBody": {
        "description": 'JSON {"user_id": ...} or {"email": ...} (or {"member_ids": [...]}), or the same as '
        "key=value pairs (form-encoded, or raw text under a JSON content type, as Braze webhooks send)",
        "content": {
            "application/json": {"schema": {"type": "object"}},
            "application/x-www-form-urlencoded": {"schema": {"type": "object"}},
        },
    }
}


async def raw_body(request: Request) -> bytes:
    return await request.body()


RawBody = Annotated[bytes, Depends(raw_body)]


@router.post("/segments", status_code=201, dependencies=[require("admin")])
def create_segment(body: SegmentCreate, ctx: Ctx) -> JSON:
    """Create a rule or static segment. A rule segment's membership is computed at once for up to
    `PERKFLOW_SEGMENT_BATCH_SIZE` members, otherwise in the background (follow `evaluation`)."""
    spec = body.model_dump(exclude_none=True)

    def work(uow: UnitOfWork) -> dict[str, Any]:
        segment, secret = service.create_segment(uow, spec)
        out = service.public(uow, segment)
        if secret is not None:
            out["webhook_secret"] = secret
        return out

    return JSON(write(ctx, work), status_code=201)


@router.get("/segments", dependencies=[require("segments:read")])
def list_segments(
    ctx: Ctx,
    limit: int = Query(100, ge=1, le=500),
    cursor: str | None = Query(None, max_length=64),
    kind: str | None = Query(None, pattern="^(rule|static)$"),
) -> JSON:
    found, next_cursor = read(
        ctx, lambda uow: service.list_segments(uow, limit=limit, after=cursor, kind=kind)
    )
    return JSON({"data": found, "next_cursor": next_cursor})


@router.post("/segments/preview", dependencies=[require("segments:read")])
def preview(body: PreviewBody, ctx: Ctx) -> JSON:
    """How many members a rule set matches now, with a sample of them; nothing is saved."""
    return JSON(
        service.preview(
            ctx,
            body.rules,
            program_id=body.program_id,
            sample_size=body.sample_size,
            max_members=body.max_members,
            max_seconds=body.max_seconds,
        )
    )


@router.post("/segments/sweep", dependencies=[require("admin")])
def sweep(body: SweepBody, ctx: Ctx) -> JSON:
    """Run the periodic segment job now: start due re-evaluations (rules that change with time,
    reconciliation) and continue runs under way, for at most `max_seconds`."""
    results = run_due(ctx, budget_s=body.max_seconds, force=body.force)
    return JSON({"data": [{"segment_id": k, "evaluation": _progress(v)} for k, v in results.items()]})


@router.get("/segments/{segment_id}", dependencies=[require("segments:read")])
def get_segment(segment_id: str, ctx: Ctx) -> JSON:
    return JSON(read(ctx, lambda uow: service.public(uow, service.get_segment(uow, segment_id))))


@router.patch("/segments/{segment_id}", dependencies=[require("admin")])
def update_segment(segment_id: str, body: SegmentUpdate, ctx: Ctx) -> JSON:
    changes = body.model_dump(exclude_unset=True)
    return JSON(write(ctx, lambda uow: service.public(uow, service.update_segment(uow, segment_id, changes))))


@router.delete("/segments/{segment_id}", status_code=204, dependencies=[require("admin")])
def delete_segment(segment_id: str, ctx: Ctx) -> Response:
    write(ctx, lambda uow: service.delete_segment(uow, segment_id))
    return no_content()


@router.post("/segments/{segment_id}/evaluate", dependencies=[require("admin")])
def evaluate(
    segment_id: str,
    ctx: Ctx,
    restart: bool = Query(True, description="Start over from the first member (else continue a run)"),
    max_seconds: float = Query(10.0, gt=0, le=300),
) -> JSON:
    """Compute the rule segment's membership over all members now, in batches, for at most
    `max_seconds`; 200 when done, 202 with progress when the rest continues in the background."""
    from perkflow.segments.runs import request_evaluation

    write(ctx, lambda uow: request_evaluation(uow, segment_id, "requested", restart=restart))
    state = run_evaluation(ctx, segment_id, deadline=time.monotonic() + max_seconds)
    return JSON(
        {"segment_id": segment_id, "evaluation": _progress(state)},
        status_code=200 if state["status"] == "ready" else 202,
    )


def _progress(state: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in state.items() if k not in ("after_pk", "version")}


@router.post("/segments/{segment_id}/webhook-secret", status_code=201, dependencies=[require("admin")])
def rotate_secret(segment_id: str, ctx: Ctx) -> JSON:
    """A new secret for signing inbound webhooks (HMAC-SHA256 of the raw body, hex, in
    X-Perkflow-Signature); it is shown only in this response and replaces the previous one."""
    secret = write(ctx, lambda uow: service.rotate_webhook_secret(uow, segment_id))
    return JSON(
        {"segment_id": segment_id, "webhook_secret": secret, "signature_header": SIGNATURE_HEADER},
        status_code=201,
    )


@router.delete("/segments/{segment_id}/webhook-secret", status_code=204, dependencies=[require("admin")])
def remove_secret(segment_id: str, ctx: Ctx) -> Response:
    write(ctx, lambda uow: service.remove_webhook_secret(uow, segment_id))
    return no_content()


# -- membership ---------------------------------------------------------------------------------------------


@router.get("/segments/{segment_id}/members", dependencies=[require("segments:read")])
def list_members(
    segment_id: str,
    ctx: Ctx,
    limit: int = Query(100, ge=1, le=1000),
    cursor: str | None = None,
) -> JSON:
    return JSON(
        read(ctx, lambda uow: service.list_segment_members(uow, segment_id, limit=limit, cursor=cursor))
    )


@router.get("/segments/{segment_id}/members/{member_id}", dependencies=[require("segments:read")])
def get_membership(segment_id: str, member_id: str, ctx: Ctx) -> JSON:
    return JSON(read(ctx, lambda uow: service.membership(uow, segment_id, member_id)))


@router.get("/members/{member_id}/segments", dependencies=[require("members:read")])
def member_segments(member_id: str, ctx: Ctx) -> JSON:
    """The segments a member is in now."""
    return JSON({"data": read(ctx, lambda uow: service.segments_of_member(uow, member_id))})


def _inbound_via(request: Request) -> str:
    """`api` for a caller with an API key (checked here), `webhook` for a signed request (checked
    against the segment's secret inside the transaction)."""
    headers = request.headers
    if headers.get("authorization") or headers.get("x-app-id"):
        authenticate(request).require("segments:write")
        return "api"
    if headers.get(SIGNATURE_HEADER):
        return "webhook"
    raise Unauthorized(
        "send an API key with the segments:write scope (Authorization: Bearer <key>), or sign the body "
        f"with the segment's webhook secret in {SIGNATURE_HEADER}",
        code="unauthorized",
    )


def _check_signature(uow: UnitOfWork, request: Request, segment_id: str, body: bytes) -> None:
    refused = Unauthorized(
        f"the {SIGNATURE_HEADER} signature does not match this segment's webhook secret",
        code="invalid_signature",
    )
    try:
        segment = service.get_segment(uow, segment_id)
    except NotFound:
        raise refused from None  # unsigned callers learn nothing about which segments exist
    secret = service.open_secret(uow, segment)
    if secret is None or not signature_matches(secret, body, request.headers[SIGNATURE_HEADER]):
        raise refused


def _members_named(uow: UnitOfWork, reference: MemberReference) -> list[str]:
    if reference.email is not None:
        return [service.find_member(uow, email=reference.email)]
    if len(reference.member_ids) == 1:
        return [service.find_member(uow, member_id=reference.member_ids[0])]
    return list(reference.member_ids)


def _inbound(
    segment_id: str, request: Request, ctx: Ctx, body: bytes, *, add: bool
) -> tuple[list[dict[str, Any]], MemberReference]:
    via = _inbound_via(request)

    def work(uow: UnitOfWork) -> tuple[list[dict[str, Any]], MemberReference]:
        if via == "webhook":
            _check_signature(uow, request, segment_id, body)
        service.get_segment(uow, segment_id)
        reference = read_reference(parse_body(body, request.headers.get("content-type", "")), segment_id)
        member_ids = _members_named(uow, reference)
        if add:
            return service.add_members(uow, segment_id, member_ids, via=via), reference
        return service.remove_members(uow, segment_id, member_ids), reference

    return write(ctx, work)


@router.post("/segments/{segment_id}/members", openapi_extra=INBOUND_BODY)
def add_members(segment_id: str, request: Request, ctx: Ctx, body: RawBody) -> JSON:
    """Add members to a static segment: Punchh's custom-segment call, for Braze webhook campaigns.

    Authenticate with an API key with the `segments:write` scope, or sign the raw body with the
    segment's webhook secret (HMAC-SHA256, hex, in X-Perkflow-Signature). Members must exist: an
    unknown user_id or email is a 404 naming it. Repeats answer 200 `already_member`.
    """
    results, reference = _inbound(segment_id, request, ctx, body, add=True)
    status = 201 if any(r["status"] == "added" for r in results) else 200
    if len(results) == 1 and len(reference.member_ids) <= 1:
        return JSON(results[0], status_code=status)
    return JSON({"data": results}, status_code=status)


@router.post("/segments/{segment_id}/members/remove", openapi_extra=INBOUND_BODY)
def remove_members(segment_id: str, request: Request, ctx: Ctx, body: RawBody) -> JSON:
    """Remove members from a static segment; same bodies and authentication as adding them."""
    results, reference = _inbound(segment_id, request, ctx, body, add=False)
    if len(results) == 1 and len(reference.member_ids) <= 1:
        return JSON(results[0])
    return JSON({"data": results})


@router.delete(
    "/segments/{segment_id}/members/{member_id}", status_code=204, dependencies=[require("segments:write")]
)
def remove_member(segment_id: str, member_id: str, ctx: Ctx) -> Response:
    def work(uow: UnitOfWork) -> None:
        result = service.remove_members(uow, segment_id, [member_id])[0]
        if result["status"] != "removed":
            raise NotFound(
                f"member {member_id!r} is not in segment {segment_id!r}",
                code="not_a_member",
                details={"segment_id": segment_id, "member_id": member_id},
            )

    write(ctx, work)
    return no_content()
