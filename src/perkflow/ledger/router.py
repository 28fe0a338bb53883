"""HTTP routes for a member's points: balances, open lots, the ledger, and the settlement job."""

from __future__ import annotations

import copy
from typing import Any

from fastapi import Query

from perkflow.activity.queries import decode_cursor, encode_cursor, timeline
from perkflow.api.deps import Ctx, read, require
from perkflow.api.responses import JSON
from perkflow.api.routing import api_router
from perkflow.core.clock import from_epoch, to_epoch
from perkflow.core.errors import NotFound
from perkflow.core.uow import UnitOfWork
from perkflow.ledger.accounts import AccountRepository
from perkflow.ledger.domain import Lot
from perkflow.ledger.service import settle_due_accounts
from perkflow.members.schemas import MemberIdPath
from perkflow.programs.service import ProgramCatalog

router = api_router(tags=["points"])


@router.get("/members/{member_id}/points", dependencies=[require("members:read")])
def member_points(member_id: MemberIdPath, ctx: Ctx, program: str | None = None) -> JSON:
    """Balances and the open lots (soonest-expiring first) in one program."""

    def work(uow: UnitOfWork) -> dict[str, Any]:
        config = uow.component(ProgramCatalog).resolve(program)
        account = uow.component(AccountRepository).get(member_id, config.id)
        if account is None:
            raise NotFound(
                f"member {member_id!r} has no account in program {config.id!r}", code="account_not_found"
            )
        tier = config.ladder.get(account.tier_id)
        view = account.view(uow.now, tier.name if tier else None, config.tier_window_days)
        points = copy.deepcopy(account.points)
        points.settle(to_epoch(uow.now), window_days=config.tier_window_days)
        view["lots"] = [
            {
                "id": lot.id,
                "earned_by": f"act_{lot.id}",
                "amount": lot.amount,
                "remaining": lot.remaining,
                "pending": lot.pending,
                "release_at": from_epoch(lot.release_at) if lot.release_at else None,
                "expires_at": from_epoch(lot.expires_at) if lot.expires_at else None,
            }
            for lot in sorted(points.lots, key=Lot.spend_key)
        ]
        return view

    return JSON(read(ctx, work))


@router.get("/members/{member_id}/ledger", dependencies=[require("members:read")])
def member_ledger(
    member_id: MemberIdPath,
    ctx: Ctx,
    program: str | None = None,
    limit: int = Query(50, ge=1, le=200),
    cursor: str | None = None,
) -> JSON:
    """The activities that moved the member's points in one program, newest first."""

    def work(uow: UnitOfWork) -> dict[str, Any]:
        config = uow.component(ProgramCatalog).resolve(program)
        account = uow.component(AccountRepository).get(member_id, config.id)
        if account is None:
            raise NotFound(
                f"member {member_id!r} has no account in program {config.id!r}", code="account_not_found"
            )
        heads = decode_cursor(cursor) if cursor else {"account": account.last_activity_seq}
        page, positions = timeline(uow.conn, heads, limit=limit, member_id=member_id, ledger_only=True)
        return {
            "data": [
                {
                    "activity_id": a.id,
                    "type": a.type,
                    "occurred_at": a.occurred_at,
                    "points_delta": a.points_delta,
                    "pending_delta": a.pending_delta,
                    "lots": a.effects.get("lots") or a.data.get("lots"),
                }
                for a in page
            ],
            "next_cursor": encode_cursor(positions) if positions else None,
        }

    return JSON(read(ctx, work))


@router.post("/jobs/settle", dependencies=[require("admin")])
def run_settlement(ctx: Ctx) -> JSON:
    """Expire due lots and release matured pending points now (also runs on a schedule)."""
    return JSON({"accounts_settled": settle_due_accounts(ctx)})
