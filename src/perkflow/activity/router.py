"""HTTP routes to read the activity stream in order, the way a consumer follows it."""

from __future__ import annotations

from fastapi import Query

from perkflow.activity.queries import (
    FEED_START,
    FeedPage,
    decode_feed_cursor,
    encode_feed_cursor,
    feed,
    feed_position_after_seq,
    get_activity,
)
from perkflow.api.deps import Ctx, read, require
from perkflow.api.responses import JSON
from perkflow.api.routing import api_router
from perkflow.core.errors import InvalidCursor, InvalidInput
from perkflow.core.limits import INT64_MAX
from perkflow.core.uow import UnitOfWork

router = api_router(tags=["activity"])


@router.get("/activities", dependencies=[require("members:read")])
def list_activities(
    ctx: Ctx,
    cursor: str | None = Query(None, max_length=200, description="The next_cursor of the previous page"),
    after: int | None = Query(
        None, ge=0, le=INT64_MAX, description="Older form: activities with a larger seq (SQLite only)"
    ),
    type: list[str] | None = Query(None),
    member: str | None = None,
    limit: int = Query(100, ge=1, le=1000),
) -> JSON:
    if cursor is not None and after is not None:
        raise InvalidCursor("pass either cursor or after, not both")

    def page(uow: UnitOfWork) -> FeedPage:
        if cursor is not None:
            position = decode_feed_cursor(cursor)
        elif after:
            position = feed_position_after_seq(uow.db, uow.conn, after)
            if not uow.db.is_sqlite:
                # Seq order is not commit order here: paging by seq would skip activities that
                # commit late, so the old form is refused with a cursor that resumes safely.
                raise InvalidInput(
                    "after=<seq> cannot page this feed without losing activities; pass cursor (the "
                    "next_cursor of each page) instead. details.cursor resumes after that seq, "
                    "repeating the activities committed around it",
                    code="cursor_required",
                    details={"after": after, "cursor": encode_feed_cursor(position)},
                    status=400,
                )
        else:
            position = FEED_START
        return feed(uow.db, uow.conn, position=position, types=type, member_id=member, limit=limit)

    found = read(ctx, page)
    activities = found.activities
    return JSON(
        {
            "data": [a.to_public() for a in activities],
            "next_cursor": found.cursor,
            # The seq of the last activity served, for information: resume with next_cursor.
            "last_seq": found.position[1],
        }
    )


@router.get("/activities/{activity_id}", dependencies=[require("members:read")])
def activity(activity_id: str, ctx: Ctx) -> JSON:
    return JSON(read(ctx, lambda uow: get_activity(uow.conn, activity_id)).to_public())
