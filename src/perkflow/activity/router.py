"""HTTP routes to read the activity stream in order, the way a consumer follows it."""

from __future__ import annotations

from fastapi import Query

from perkflow.activity.queries import feed, get_activity
from perkflow.api.deps import Ctx, read, require
from perkflow.api.responses import JSON
from perkflow.api.routing import api_router
from perkflow.core.limits import INT64_MAX

router = api_router(tags=["activity"])


@router.get("/activities", dependencies=[require("members:read")])
def list_activities(
    ctx: Ctx,
    after: int = Query(0, ge=0, le=INT64_MAX, description="Return activities with a larger seq than this"),
    type: list[str] | None = Query(None),
    member: str | None = None,
    limit: int = Query(100, ge=1, le=1000),
) -> JSON:
    page = read(ctx, lambda uow: feed(uow.conn, after_seq=after, types=type, member_id=member, limit=limit))
    return JSON({"data": [a.to_public() for a in page], "last_seq": page[-1].seq if page else after})


@router.get("/activities/{activity_id}", dependencies=[require("members:read")])
def activity(activity_id: str, ctx: Ctx) -> JSON:
    return JSON(read(ctx, lambda uow: get_activity(uow.conn, activity_id)).to_public())
