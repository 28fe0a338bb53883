"""Points operations that keep the account, its lots and the ledger activities in step.

Every change of points is recorded as an activity whose points_delta / pending_delta columns carry
the signed change, so the activities of an account always sum to its balances.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select

from perkflow.activity.stream import Activity, ActivityLog
from perkflow.core.clock import to_epoch
from perkflow.core.context import AppContext
from perkflow.core.uow import UnitOfWork
from perkflow.ledger.accounts import Account, AccountRepository
from perkflow.ledger.domain import Allocation
from perkflow.ledger.tables import accounts
from perkflow.programs.service import ProgramCatalog, ProgramConfig


def allocations_json(allocations: list[Allocation]) -> list[list[int]]:
    return [[a.lot_id, a.amount] for a in allocations]


def record_earning(
    uow: UnitOfWork,
    account: Account,
    program: ProgramConfig,
    *,
    type: str,
    points: int,
    occurred_at: datetime,
    data: dict[str, Any],
    effects: dict[str, Any] | None = None,
    pending_days: int = 0,
    expires_at: datetime | None = None,
    source: str = "api",
    event_id: str | None = None,
    dedup_key: str | None = None,
) -> Activity:
    """Record an activity whose points go into a lot (pending for `pending_days` if > 0)."""
    log = uow.component(ActivityLog)
    times = uow.times
    seq = log.next_seq()
    epoch = times.epoch(occurred_at)
    expiry = times.epoch(expires_at) if expires_at is not None else program.expiry.expires_epoch(epoch)
    release_at = epoch + pending_days * 86400 if pending_days > 0 else None
    lot = account.points.earn(
        seq,
        points,
        expires_at=expiry,
        release_at=release_at,
        earned_day=epoch // 86400,
        window_days=program.tier_window_days,
    )
    effects = {} if effects is None else effects
    effects["points"] = points
    effects["pending"] = release_at is not None
    effects["lot"] = lot.id
    effects["expires_at"] = times.iso(expiry) if expiry is not None else None
    if release_at is not None:
        effects["release_at"] = times.iso(release_at)
    return log.record(
        seq=seq,
        type=type,
        member_id=account.member_id,
        program_id=account.program_id,
        chain=account,
        data=data,
        effects=effects,
        occurred_at=occurred_at,
        source=source,
        points_delta=0 if release_at is not None else points,
        pending_delta=points if release_at is not None else 0,
        event_id=event_id,
        dedup_key=dedup_key,
    )


def record_spend(
    uow: UnitOfWork,
    account: Account,
    *,
    type: str,
    points: int,
    occurred_at: datetime,
    data: dict[str, Any],
    effects: dict[str, Any] | None = None,
    source: str = "api",
    event_id: str | None = None,
    dedup_key: str | None = None,
) -> Activity:
    """Record an activity that spends `points` soonest-expiring first; raises InsufficientPoints."""
    allocations = account.points.spend(points, to_epoch(uow.now))
    effects = {} if effects is None else effects
    effects["points"] = -points
    effects["lots"] = allocations_json(allocations)
    return uow.component(ActivityLog).record(
        type=type,
        member_id=account.member_id,
        program_id=account.program_id,
        chain=account,
        data=data,
        effects=effects,
        occurred_at=occurred_at,
        source=source,
        points_delta=-points,
        event_id=event_id,
        dedup_key=dedup_key,
    )


def settle_account(uow: UnitOfWork, account: Account, program: ProgramConfig) -> list[Activity]:
    """Materialise due pending releases and expiries as ledger activities, then re-check the tier."""
    from perkflow.tiers.service import evaluate_tier

    epoch = to_epoch(uow.now)
    window = program.tier_window_days
    settlement = account.points.settle(epoch, window_days=window)
    account.points.prune_window(window, epoch // 86400)
    account.mark_dirty()
    log = uow.component(ActivityLog)
    recorded: list[Activity] = []
    if settlement.released:
        points = settlement.released_points
        recorded.append(
            log.record(
                type="points_released",
                member_id=account.member_id,
                program_id=account.program_id,
                chain=account,
                data={"points": points, "lots": allocations_json(settlement.released)},
                effects={"points": points},
                source="system",
                points_delta=points,
                pending_delta=-points,
            )
        )
    if settlement.expired or settlement.expired_pending:
        expired = sum(a.amount for a in settlement.expired)
        expired_pending = sum(a.amount for a in settlement.expired_pending)
        recorded.append(
            log.record(
                type="points_expired",
                member_id=account.member_id,
                program_id=account.program_id,
                chain=account,
                data={
                    "points": expired,
                    "pending_points": expired_pending,
                    "lots": allocations_json(settlement.expired + settlement.expired_pending),
                },
                effects={"points": -expired, "balance": account.points.balance},
                source="system",
                points_delta=-expired,
                pending_delta=-expired_pending,
            )
        )
    change = evaluate_tier(uow, account, program)
    if change is not None:
        recorded.append(change)
    return recorded


def settle_if_due(uow: UnitOfWork, account: Account, program: ProgramConfig) -> list[Activity]:
    if not account.points.due_by(uow.times.epoch(uow.now), program.tier_window_days):
        return []
    return settle_account(uow, account, program)


def settle_due_accounts(ctx: AppContext, *, batch: int = 500) -> int:
    """The scheduled job: settle every account whose next due moment has passed. Returns accounts settled.

    Several workers can run it at once on PostgreSQL: each claims its batch with SKIP LOCKED.
    """
    settled = 0
    while True:
        with ctx.uow() as uow:
            stmt = (
                select(accounts.c.member_id, accounts.c.program_id)
                .where(accounts.c.next_due_epoch.is_not(None), accounts.c.next_due_epoch <= to_epoch(uow.now))
                .order_by(accounts.c.next_due_epoch)
                .limit(batch)
            )
            rows = uow.conn.execute(uow.db.for_update(stmt, skip_locked=True)).all()
            if not rows:
                return settled
            repo = uow.component(AccountRepository)
            catalog = uow.component(ProgramCatalog)
            repo.load((row.member_id, row.program_id) for row in rows)
            for row in rows:
                account = repo.get(row.member_id, row.program_id)
                if account is None:
                    continue
                settle_account(uow, account, catalog.get(row.program_id))
                settled += 1
            uow.commit()
        if len(rows) < batch:
            return settled
