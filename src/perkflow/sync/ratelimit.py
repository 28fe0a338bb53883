"""A token bucket per destination, kept in the database so every worker process shares it.

Besides its own pace, the bucket obeys what the platform says: a 429's Retry-After (or Braze's
X-Ratelimit-Retry-After) and an exhausted X-RateLimit-Remaining block the destination until then.
"""

from __future__ import annotations

import time

from sqlalchemy import select, update

from perkflow.connectors.base import RateInfo
from perkflow.core.context import AppContext
from perkflow.sync.tables import rate_buckets


def acquire(
    ctx: AppContext, integration_id: str, rate_per_s: float, wanted: int = 1, burst: float | None = None
) -> tuple[int, float]:
    """Take up to `wanted` tokens; returns (tokens taken, seconds to wait before asking again).

    Taking several tokens in one transaction lets a worker pace a run of requests without a
    database write per request, while every process still draws on the same bucket.
    """
    capacity = burst if burst is not None else max(1.0, rate_per_s)
    with ctx.uow() as uow:
        db = uow.db
        row = uow.conn.execute(
            db.for_update(select(rate_buckets).where(rate_buckets.c.integration_id == integration_id))
        ).first()
        now = time.time()
        if row is None:
            granted = min(wanted, int(capacity))
            uow.conn.execute(
                db.insert_ignore(
                    rate_buckets,
                    {
                        "integration_id": integration_id,
                        "tokens": capacity - granted,
                        "updated_epoch": now,
                        "blocked_until_epoch": 0.0,
                    },
                    conflict_columns=("integration_id",),
                )
            )
            uow.commit()
            return granted, 0.0
        tokens = min(capacity, row.tokens + (now - row.updated_epoch) * rate_per_s)
        granted = 0
        wait = 0.0
        if now < row.blocked_until_epoch:
            wait = row.blocked_until_epoch - now
        elif tokens >= 1.0:
            granted = min(wanted, int(tokens))
            tokens -= granted
        else:
            wait = (1.0 - tokens) / rate_per_s
        uow.conn.execute(
            update(rate_buckets)
            .where(rate_buckets.c.integration_id == integration_id)
            .values(tokens=tokens, updated_epoch=now)
        )
        uow.commit()
    return granted, wait


def note_response(ctx: AppContext, integration_id: str, info: RateInfo, *, throttled: bool) -> float:
    """Block the destination as the platform asks; returns how long it is blocked from now (0 if not)."""
    now = time.time()
    until = 0.0
    if info.retry_after_s is not None and (throttled or info.retry_after_s > 0):
        until = now + max(0.0, info.retry_after_s)
    elif info.remaining is not None and info.remaining <= 0 and info.reset_epoch is not None:
        until = info.reset_epoch
    elif throttled:
        until = now + 1.0  # a 429 that says nothing: back off a little
    if until <= now:
        return 0.0
    with ctx.uow() as uow:
        result = uow.conn.execute(
            update(rate_buckets)
            .where(
                rate_buckets.c.integration_id == integration_id, rate_buckets.c.blocked_until_epoch < until
            )
            .values(blocked_until_epoch=until, tokens=0.0, updated_epoch=now)
        )
        if result.rowcount == 0:
            uow.conn.execute(
                uow.db.insert_ignore(
                    rate_buckets,
                    {
                        "integration_id": integration_id,
                        "tokens": 0.0,
                        "updated_epoch": now,
                        "blocked_until_epoch": until,
                    },
                    conflict_columns=("integration_id",),
                )
            )
        uow.commit()
    return until - now


def reset(ctx: AppContext, integration_id: str) -> None:
    with ctx.uow() as uow:
        uow.conn.execute(
            update(rate_buckets)
            .where(rate_buckets.c.integration_id == integration_id)
            .values(blocked_until_epoch=0.0)
        )
        uow.commit()
