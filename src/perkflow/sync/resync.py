"""Resync: queue every member's mapped fields for an integration again, e.g. after adding a mapping.

Field changes queue a profile item on their own, but a mapping added to a live integration, a
platform whose profiles were wiped, or an integration connected to an existing member base has no
change to react to. A resync queues one profile item per member (the worker reads the values when it
sends, and an item already waiting for a member absorbs the new one), in transactions of `CHUNK`
members so that a large base never holds the write lock for long. `forget_acknowledged` also drops
what the platform last acknowledged, so a delta-mode integration sends every mapped field again.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, select

from perkflow.core import transactions
from perkflow.core.context import AppContext
from perkflow.core.errors import Conflict
from perkflow.core.uow import UnitOfWork
from perkflow.ledger.tables import accounts
from perkflow.members.tables import members
from perkflow.programs.service import ProgramCatalog
from perkflow.sync.integrations import Integration, get_integration
from perkflow.sync.outbox import OutboxWriter
from perkflow.sync.tables import sync_shadows

CHUNK = 1000


@dataclass(slots=True)
class ResyncResult:
    queued: int
    unknown: list[str]


def _target(uow: UnitOfWork, integration_id: str) -> tuple[Integration, str | None]:
    integration = get_integration(uow, integration_id)
    if integration.status == "disconnected":
        raise Conflict(f"integration {integration_id!r} is disconnected", code="integration_disconnected")
    if not integration.mappings:
        raise Conflict(
            f"integration {integration_id!r} maps no fields: there is nothing to resync",
            code="nothing_to_resync",
            details={"integration_id": integration_id},
        )
    return integration, integration.program_id or uow.component(ProgramCatalog).default_id()


def _queue(uow: UnitOfWork, integration: Integration, member_ids: list[str], forget: bool) -> None:
    if forget and member_ids:
        uow.conn.execute(
            delete(sync_shadows).where(
                sync_shadows.c.integration_id == integration.id, sync_shadows.c.member_id.in_(member_ids)
            )
        )
    writer = uow.component(OutboxWriter)
    for member_id in member_ids:
        writer.add(integration, member_id, "profile", {})


def resync_members(
    ctx: AppContext, integration_id: str, member_ids: list[str], *, forget_acknowledged: bool = False
) -> ResyncResult:
    """Queue the given members; ids that name no member are reported, not queued."""

    def work(uow: UnitOfWork) -> ResyncResult:
        integration, _ = _target(uow, integration_id)
        wanted = list(dict.fromkeys(member_ids))
        found = set(uow.conn.execute(select(members.c.id).where(members.c.id.in_(wanted))).scalars().all())
        known = [m for m in wanted if m in found]
        _queue(uow, integration, known, forget_acknowledged)
        return ResyncResult(queued=len(known), unknown=[m for m in wanted if m not in found])

    return transactions.run(ctx, work)


def resync_all(ctx: AppContext, integration_id: str, *, forget_acknowledged: bool = False) -> ResyncResult:
    """Queue every member of the integration's program, a chunk per transaction."""
    queued = 0
    after = ""
    while True:

        def chunk(uow: UnitOfWork, after: str = after) -> list[str]:
            integration, program_id = _target(uow, integration_id)
            stmt = select(accounts.c.member_id).distinct().where(accounts.c.member_id > after)
            if program_id is not None:
                stmt = stmt.where(accounts.c.program_id == program_id)
            ids = list(uow.conn.execute(stmt.order_by(accounts.c.member_id).limit(CHUNK)).scalars())
            _queue(uow, integration, ids, forget_acknowledged)
            return ids

        ids = transactions.run(ctx, chunk)
        queued += len(ids)
        if len(ids) < CHUNK:
            return ResyncResult(queued=queued, unknown=[])
        after = ids[-1]
