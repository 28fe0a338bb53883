"""Applying tier rules to accounts and recording tier_up / tier_down activity."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select

from perkflow.activity.stream import Activity, ActivityLog
from perkflow.core.uow import UnitOfWork
from perkflow.ledger.accounts import Account, AccountRepository
from perkflow.ledger.tables import accounts
from perkflow.programs.service import ProgramConfig
from perkflow.tiers.domain import TierDef


def evaluate_tier(
    uow: UnitOfWork,
    account: Account,
    program: ProgramConfig,
    *,
    occurred_at: datetime | None = None,
    source: str = "system",
) -> Activity | None:
    """Move the account to the tier its qualifying points earn, recording the change if any."""
    if not program.ladder or not account.opted_in:
        return None
    moment = occurred_at or uow.now
    qualifying = account.points.qualifying(program.tier_window_days, uow.times.epoch(uow.now) // 86400)
    change = program.ladder.evaluate(account.tier_id, qualifying)
    if change is None:
        return None
    return set_tier(
        uow, account, program, change.to_tier, occurred_at=moment, source=source, qualifying=qualifying
    )


def set_tier(
    uow: UnitOfWork,
    account: Account,
    program: ProgramConfig,
    tier: TierDef | None,
    *,
    occurred_at: datetime | None = None,
    source: str = "system",
    qualifying: int | None = None,
    reason: str | None = None,
) -> Activity | None:
    current = program.ladder.get(account.tier_id)
    if (current.id if current else None) == (tier.id if tier else None):
        return None
    old_rank = current.threshold if current else -1
    new_rank = tier.threshold if tier else -1
    account.move_to_tier(tier.id if tier else None, occurred_at or uow.now)
    data: dict[str, Any] = {
        "from_tier": current.name if current else None,
        "to_tier": tier.name if tier else None,
        "tier": tier.name if tier else None,
        "from_tier_id": current.id if current else None,
        "to_tier_id": tier.id if tier else None,
    }
    if qualifying is not None:
        data["qualifying_points"] = qualifying
    if reason:
        data["reason"] = reason
    return uow.component(ActivityLog).record(
        type="tier_up" if new_rank > old_rank else "tier_down",
        member_id=account.member_id,
        program_id=account.program_id,
        chain=account,
        data=data,
        occurred_at=occurred_at,
        source=source,
    )


def reevaluate_program_tiers(uow: UnitOfWork, program: ProgramConfig, *, batch: int = 500) -> int:
    """Re-check every opted-in account of a program (after its ladder changed); returns moves."""
    repo = uow.component(AccountRepository)
    moved = 0
    last_id = 0
    while True:
        rows = uow.conn.execute(
            select(accounts.c.member_id, accounts.c.id)
            .where(
                accounts.c.program_id == program.id, accounts.c.id > last_id, accounts.c.status == "opted_in"
            )
            .order_by(accounts.c.id)
            .limit(batch)
        ).all()
        if not rows:
            return moved
        last_id = rows[-1].id
        repo.load((row.member_id, program.id) for row in rows)
        for row in rows:
            account = repo.get(row.member_id, program.id)
            if account is not None and evaluate_tier(uow, account, program) is not None:
                moved += 1
        uow.flush()
