"""HTTP routes for members, their identities and activity, and the field catalogue."""

from __future__ import annotations

from typing import Any

from fastapi import Query, Request, Response

from perkflow.activity.queries import decode_cursor, encode_cursor, timeline
from perkflow.api.deps import Ctx, read, require, write
from perkflow.api.responses import JSON, no_content
from perkflow.api.routing import api_router
from perkflow.core.errors import NotFound
from perkflow.core.uow import UnitOfWork
from perkflow.ledger.accounts import AccountRepository
from perkflow.members import service
from perkflow.members.repository import Member, MemberRepository
from perkflow.members.schemas import (
    FieldCreate,
    Identity,
    MemberCreate,
    MemberIdPath,
    MemberOut,
    MemberPage,
    MemberUpdate,
)
from perkflow.programs.service import ProgramCatalog

router = api_router(tags=["members"])


def member_view(uow: UnitOfWork, members: list[Member]) -> list[dict[str, Any]]:
    """Members with their identities and their standing in each program, as of now."""
    identities = service.identities_of(uow, [m.id for m in members])
    catalog = uow.component(ProgramCatalog)
    repo = uow.component(AccountRepository)
    out = []
    for member in members:
        standings = []
        for account in repo.for_member(member.id):
            program = catalog.programs.get(account.program_id)
            tier = program.ladder.get(account.tier_id) if program else None
            window = program.tier_window_days if program else None
            standings.append(account.view(uow.now, tier.name if tier else None, window))
        out.append({**member.to_public(), "identities": identities[member.id], "programs": standings})
    return out


def _get_member(uow: UnitOfWork, member_id: str) -> Member:
    member = uow.component(MemberRepository).get(member_id)
    if member is None:
        raise NotFound(f"member {member_id!r} does not exist", code="member_not_found")
    return member


@router.post("/members", status_code=201, response_model=MemberOut, dependencies=[require("members:write")])
def create_member(body: MemberCreate, ctx: Ctx) -> JSON:
    spec = body.model_dump(mode="json", exclude_none=True)

    def work(uow: UnitOfWork) -> dict[str, Any]:
        member = service.create_member(uow, spec)
        return member_view(uow, [member])[0]

    return JSON(write(ctx, work), status_code=201)


@router.get("/members", response_model=MemberPage, dependencies=[require("members:read")])
def list_members(
    request: Request,
    ctx: Ctx,
    limit: int = Query(50, ge=1, le=200),
    cursor: str | None = None,
    email: str | None = None,
    status: str | None = None,
    program: str | None = None,
    opted_in: bool | None = None,
    tier: str | None = Query(None, description="A tier id or tier name (with program)"),
) -> JSON:
    field_filters = {
        key.removeprefix("field."): value
        for key, value in request.query_params.items()
        if key.startswith("field.")
    }

    def work(uow: UnitOfWork) -> dict[str, Any]:
        tier_id = tier
        if tier is not None:
            program_config = uow.component(ProgramCatalog).resolve(program)
            match = next((t for t in program_config.ladder.tiers if tier in (t.id, t.name)), None)
            if match is None:
                raise NotFound(f"program {program_config.id!r} has no tier {tier!r}", code="tier_not_found")
            tier_id = match.id
        found, next_cursor = service.list_members(
            uow,
            limit=limit,
            cursor=cursor,
            email=email,
            status=status,
            program_id=program,
            opted_in=opted_in,
            tier_id=tier_id,
            field_filters=field_filters,
        )
        return {"data": member_view(uow, found), "next_cursor": next_cursor}

    return JSON(read(ctx, work))


@router.get("/members/lookup", response_model=MemberOut, dependencies=[require("members:read")])
def lookup_member(ctx: Ctx, external_source: str, external_source_id: str) -> JSON:
    def work(uow: UnitOfWork) -> dict[str, Any]:
        return member_view(uow, [service.find_by_identity(uow, external_source, external_source_id)])[0]

    return JSON(read(ctx, work))


@router.get("/members/{member_id}", response_model=MemberOut, dependencies=[require("members:read")])
def get_member(member_id: MemberIdPath, ctx: Ctx) -> JSON:
    return JSON(read(ctx, lambda uow: member_view(uow, [_get_member(uow, member_id)])[0]))


@router.patch("/members/{member_id}", response_model=MemberOut, dependencies=[require("members:write")])
def update_member(member_id: MemberIdPath, body: MemberUpdate, ctx: Ctx) -> JSON:
    spec = body.model_dump(mode="json", exclude_unset=True)

    def work(uow: UnitOfWork) -> dict[str, Any]:
        member = service.update_member(uow, member_id, spec)
        return member_view(uow, [member])[0]

    return JSON(write(ctx, work))


@router.post("/members/{member_id}/identities", status_code=201, dependencies=[require("members:write")])
def add_identity(member_id: MemberIdPath, body: Identity, ctx: Ctx) -> JSON:
    created = write(
        ctx, lambda uow: service.add_identity(uow, member_id, body.external_source, body.external_source_id)
    )
    return JSON(created, status_code=201)


@router.delete("/members/{member_id}/identities", status_code=204, dependencies=[require("members:write")])
def remove_identity(
    member_id: MemberIdPath, external_source: str, external_source_id: str, ctx: Ctx
) -> Response:
    write(ctx, lambda uow: service.remove_identity(uow, member_id, external_source, external_source_id))
    return no_content()


@router.get("/members/{member_id}/activities", dependencies=[require("members:read")])
def member_activities(
    member_id: MemberIdPath,
    ctx: Ctx,
    limit: int = Query(50, ge=1, le=200),
    cursor: str | None = None,
    type: list[str] | None = Query(None, description="Only these activity types"),
) -> JSON:
    """The member's activity stream, newest first."""

    def work(uow: UnitOfWork) -> dict[str, Any]:
        member = _get_member(uow, member_id)
        if cursor:
            heads = decode_cursor(cursor)
        else:
            heads = {"member": member.last_activity_seq}
            for account in uow.component(AccountRepository).for_member(member_id):
                heads[f"account:{account.program_id}"] = account.last_activity_seq
        page, positions = timeline(
            uow.conn, heads, limit=limit, types=set(type) if type else None, member_id=member_id
        )
        return {
            "data": [a.to_public() for a in page],
            "next_cursor": encode_cursor(positions) if positions else None,
        }

    return JSON(read(ctx, work))


@router.get("/fields", dependencies=[require("members:read")])
def list_fields(ctx: Ctx) -> JSON:
    return JSON({"data": list(read(ctx, lambda uow: uow.component(service.FieldCatalog).fields).values())})


@router.post("/fields", status_code=201, dependencies=[require("admin")])
def create_field(body: FieldCreate, ctx: Ctx) -> JSON:
    created = write(
        ctx, lambda uow: service.define_field(uow, body.key, body.type, body.label, body.description)
    )
    return JSON(created, status_code=201)


@router.delete("/fields/{key}", status_code=204, dependencies=[require("admin")])
def delete_field(key: str, ctx: Ctx) -> Response:
    write(ctx, lambda uow: service.delete_field(uow, key))
    return no_content()
