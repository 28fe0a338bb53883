"""HTTP routes to manage API keys (admin only); the CLI creates the first key."""

from __future__ import annotations

from fastapi import Request, Response
from pydantic import BaseModel, ConfigDict, Field

from perkflow.api.deps import Ctx, read, require, write
from perkflow.api.responses import JSON, no_content
from perkflow.api.routing import api_router
from perkflow.auth import service

router = api_router(tags=["api keys"])


class ApiKeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    scopes: list[str] = Field(min_length=1)


@router.get("/api-keys", dependencies=[require("admin")])
def list_keys(ctx: Ctx) -> JSON:
    return JSON({"data": read(ctx, service.list_api_keys), "scopes": service.SCOPES})


@router.post("/api-keys", status_code=201, dependencies=[require("admin")])
def create_key(body: ApiKeyCreate, ctx: Ctx) -> JSON:
    info, key = write(ctx, lambda uow: service.create_api_key(uow, body.name, body.scopes))
    return JSON({**info, "key": key}, status_code=201)


@router.delete("/api-keys/{key_id}", status_code=204, dependencies=[require("admin")])
def revoke_key(key_id: str, request: Request, ctx: Ctx) -> Response:
    write(ctx, lambda uow: service.revoke_api_key(uow, key_id))
    request.app.state.key_verifier.forget()
    return no_content()
