"""What delivery looks like from outside: per-destination counts, lag, errors, dead letters, replay."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import and_, case, func, select, update

from perkflow.core.context import AppContext
from perkflow.core.errors import InvalidInput
from perkflow.core.uow import UnitOfWork
from perkflow.sync.integrations import load_integrations
from perkflow.sync.tables import delivery_counters, outbox


def delivery_stats(ctx: AppContext, *, recent: int = 10) -> list[dict[str, Any]]:
    with ctx.uow(write=False) as uow:
        now = uow.now
        integrations = load_integrations(uow)
        counts = {
            (row.integration_id, row.status, row.retried): row.n
            for row in uow.conn.execute(
                select(
                    outbox.c.integration_id,
                    outbox.c.status,
                    case((outbox.c.attempts > 0, True), else_=False).label("retried"),
                    func.count().label("n"),
                ).group_by(outbox.c.integration_id, outbox.c.status, "retried")
            )
        }
        oldest = {
            row.integration_id: row.oldest
            for row in uow.conn.execute(
                select(outbox.c.integration_id, func.min(outbox.c.created_at).label("oldest"))
                .where(outbox.c.status.in_(("pending", "in_flight")))
                .group_by(outbox.c.integration_id)
            )
        }
        totals = {row.integration_id: row for row in uow.conn.execute(select(delivery_counters))}
        stats = []

        def count(integration_id: str, status: str, retried: bool | None = None) -> int:
            if retried is None:
                return sum(n for (i, s, _), n in counts.items() if i == integration_id and s == status)
            return counts.get((integration_id, status, retried), 0)

        for integration in integrations:
            first: datetime | None = oldest.get(integration.id)
            errors: list[dict[str, Any]] = []
            if recent:
                errors = [
                    {
                        "item_id": r.id,
                        "member_id": r.member_id,
                        "kind": r.kind,
                        "status": r.status,
                        "attempts": r.attempts,
                        "error": r.last_error,
                        "at": r.delivered_at or r.available_at,
                    }
                    for r in uow.conn.execute(
                        select(outbox)
                        .where(outbox.c.integration_id == integration.id, outbox.c.last_error.is_not(None))
                        .order_by(outbox.c.id.desc())
                        .limit(recent)
                    )
                ]
            stats.append(
                {
                    "integration_id": integration.id,
                    "kind": integration.kind,
                    "name": integration.name,
                    "status": integration.status,
                    "paused_because": integration.last_error,
                    "queued": count(integration.id, "pending"),
                    "in_flight": count(integration.id, "in_flight"),
                    "delivered": count(integration.id, "delivered"),
                    "failed": count(integration.id, "pending", True),  # waiting to be retried
                    "dead": count(integration.id, "dead"),
                    "oldest_lag_s": round((now - first).total_seconds(), 3) if first else None,
                    "totals": _totals(totals.get(integration.id)),
                    "recent_errors": errors,
                }
            )
    return stats


def _totals(row: Any) -> dict[str, int]:
    """Running totals of every worker; `attributes_full_equivalent` is what full mode would have sent
    for the same flushes, so the difference is the data points delta mode saved."""
    if row is None:
        return {"requests": 0, "objects": 0, "attributes_sent": 0, "attributes_full_equivalent": 0}
    return {
        "requests": row.requests,
        "objects": row.objects,
        "attributes_sent": row.attributes_sent,
        "attributes_full_equivalent": row.attributes_full,
    }


def dead_letters(
    uow: UnitOfWork, *, integration_id: str | None, limit: int, after_id: int = 0
) -> list[dict[str, Any]]:
    stmt = select(outbox).where(outbox.c.status == "dead", outbox.c.id > after_id)
    if integration_id:
        stmt = stmt.where(outbox.c.integration_id == integration_id)
    return [
        {
            "id": r.id,
            "integration_id": r.integration_id,
            "member_id": r.member_id,
            "kind": r.kind,
            "attempts": r.attempts,
            "error": r.last_error,
            "payload": r.payload,
            "created_at": r.created_at,
        }
        for r in uow.conn.execute(stmt.order_by(outbox.c.id).limit(limit))
    ]


def replay(uow: UnitOfWork, *, integration_id: str | None = None, item_ids: list[int] | None = None) -> int:
    """Put dead letters back in the queue with a fresh attempt count; returns how many were replayed.

    A member may have only one waiting profile item, and a profile item carries no values (the
    worker reads the member's current ones), so dead profile items of a member collapse into one,
    or into the one already waiting.
    """
    if not integration_id and not item_ids:
        raise InvalidInput("name an integration or the dead letters to replay", code="replay_scope_required")

    def scope(table: Any) -> Any:
        condition = table.c.status == "dead"
        if integration_id:
            condition = and_(condition, table.c.integration_id == integration_id)
        if item_ids:
            condition = and_(condition, table.c.id.in_(item_ids))
        return condition

    def same_member_profile(other: Any) -> Any:
        return and_(
            other.c.integration_id == outbox.c.integration_id,
            other.c.member_id == outbox.c.member_id,
            other.c.kind == "profile",
        )

    conn = uow.conn
    replayed = int(conn.execute(select(func.count()).select_from(outbox).where(scope(outbox))).scalar_one())
    profiles = and_(scope(outbox), outbox.c.kind == "profile")
    waiting = outbox.alias("waiting")
    conn.execute(
        outbox.delete().where(
            profiles,
            select(waiting.c.id).where(same_member_profile(waiting), waiting.c.status == "pending").exists(),
        )
    )
    earlier = outbox.alias("earlier")
    conn.execute(
        outbox.delete().where(
            profiles,
            select(earlier.c.id)
            .where(same_member_profile(earlier), scope(earlier), earlier.c.id < outbox.c.id)
            .exists(),
        )
    )
    conn.execute(
        update(outbox)
        .where(scope(outbox))
        .values(status="pending", attempts=0, available_at=uow.now, lease_until=None, claimed_by=None)
    )
    return replayed


def purge_delivered(ctx: AppContext, *, older_than_s: float = 7 * 86400) -> int:
    """Delete delivered items past the retention (the stats count what is still kept)."""
    from datetime import timedelta

    with ctx.uow() as uow:
        cutoff = uow.now - timedelta(seconds=older_than_s)
        result = uow.conn.execute(
            outbox.delete().where(outbox.c.status == "delivered", outbox.c.delivered_at < cutoff)
        )
        uow.commit()
    return int(result.rowcount)
