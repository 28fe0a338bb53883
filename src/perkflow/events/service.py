"""The ingestion pipeline behind POST /events and /events/bulk.

A batch is processed in one unit of work: everything the batch needs (members, accounts, earlier
events with the same ids or transaction ids) is loaded up front in a few queries, each event is then
applied in order to the in-memory aggregates, and the resulting activities and account changes are
written in bulk at commit. Each event succeeds or fails on its own: handlers validate before they
change anything, so a rejected event leaves no trace.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from perkflow.activity.queries import existing_dedup_keys, find_by_dedup_keys, find_by_event_ids
from perkflow.activity.stream import Activity, ActivityLog
from perkflow.core.clock import to_epoch
from perkflow.core.errors import Conflict, InvalidInput, NotFound, PerkflowError
from perkflow.core.uow import UnitOfWork
from perkflow.events.parsing import EventIn, parse_event
from perkflow.events.types import EventTypeCatalog
from perkflow.ledger.accounts import Account, AccountRepository
from perkflow.ledger.service import settle_if_due
from perkflow.members.repository import Member, MemberRepository
from perkflow.programs.service import ProgramCatalog, ProgramConfig
from perkflow.tiers.service import evaluate_tier
from perkflow.workflows.engine import guard_event, guards_events

FUTURE_TOLERANCE = timedelta(minutes=5)


class DuplicateEvent(Exception):
    """The event was seen before; `original` is the activity it produced the first time."""

    def __init__(self, original: Activity) -> None:
        super().__init__(original.id)
        self.original = original


@dataclass(slots=True)
class EventOutcome:
    index: int
    status: str  # accepted | duplicate | rejected
    activity: Activity | None = None
    error: PerkflowError | None = None

    def to_public(self) -> dict[str, Any]:
        out: dict[str, Any] = {"index": self.index, "status": self.status}
        if self.activity is not None:
            out["event"] = self.activity.to_public()
        if self.error is not None:
            out["error"] = self.error.to_dict()
        return out


class IngestContext:
    """What handlers work with: the unit of work's repositories plus the batch's lookups."""

    def __init__(self, uow: UnitOfWork, source: str) -> None:
        self.uow = uow
        self.source = source
        self.now = uow.now
        self.now_epoch = to_epoch(uow.now)
        self.catalog = uow.component(ProgramCatalog)
        self.members = uow.component(MemberRepository)
        self.accounts = uow.component(AccountRepository)
        self.log = uow.component(ActivityLog)
        self.by_event_id: dict[str, Activity] = {}
        self.by_dedup_key: dict[str, Activity | None] = {}
        self._settled: set[int] = set()
        # Asked once per batch: the workflow index it reads is refreshed at most once a second anyway.
        self.guarded = guards_events(uow)

    # -- lookups ------------------------------------------------------------------------------------

    def prefetch_dedup(self, keys: set[str]) -> None:
        wanted = [k for k in keys if k not in self.by_dedup_key]
        if wanted:
            # Most keys are new: ask which exist first and load full activities only for those.
            existing = existing_dedup_keys(self.uow.db, self.uow.conn, wanted)
            found = find_by_dedup_keys(self.uow.conn, existing) if existing else {}
            for key in wanted:
                self.by_dedup_key[key] = found.get(key)

    def seen(self, key: str) -> Activity | None:
        if key not in self.by_dedup_key:
            self.prefetch_dedup({key})
        return self.by_dedup_key.get(key)

    def member(self, ev: EventIn, *, lock: bool = False) -> Member:
        member = self.members.get_for_update(ev.customer) if lock else self.members.get(ev.customer)
        if member is None:
            raise NotFound(f"member {ev.customer!r} does not exist", code="member_not_found")
        return member

    def active_member(self, ev: EventIn) -> Member:
        member = self.member(ev)
        if not member.active:
            raise Conflict(f"member {ev.customer!r} is {member.status}", code="member_not_active")
        return member

    def opted_in_account(self, ev: EventIn, program: ProgramConfig) -> Account:
        account = self.accounts.get(ev.customer, program.id)
        if account is None:
            self.member(ev)  # a clear member_not_found before not_opted_in
        elif account.member_status != "active":
            raise Conflict(f"member {ev.customer!r} is {account.member_status}", code="member_not_active")
        if account is None or not account.opted_in:
            raise Conflict(
                f"member {ev.customer!r} has not opted in to program {program.id!r}",
                code="not_opted_in",
                details={"member_id": ev.customer, "program_id": program.id},
            )
        self.settle(account, program)
        return account

    def settle(self, account: Account, program: ProgramConfig) -> None:
        if account.id not in self._settled:
            self._settled.add(account.id)
            settle_if_due(self.uow, account, program)

    def occurred_at(self, ev: EventIn) -> Any:
        return ev.occurred_at or self.now

    # -- results ------------------------------------------------------------------------------------

    def finish(self, activity: Activity, account: Account | None, program: ProgramConfig) -> Activity:
        """Re-check the tier after a points change and note the outcome on the event's effects."""
        if account is not None:
            change = evaluate_tier(self.uow, account, program, source=self.source)
            tier = program.ladder.get(account.tier_id)
            activity.effects["balance"] = account.points.spendable(self.now_epoch)
            activity.effects["tier"] = tier.name if tier else None
            if change is not None:
                activity.effects["tier_change"] = change.type
        self.remember(activity)
        return activity

    def remember(self, activity: Activity) -> None:
        if activity.event_id:
            self.by_event_id[activity.event_id] = activity
        if activity.dedup_key:
            self.by_dedup_key[activity.dedup_key] = activity


Handler = Callable[[IngestContext, EventIn, ProgramConfig], Activity]


def _builtin_handlers() -> dict[str, Handler]:
    from perkflow.events import handlers

    return handlers.HANDLERS


def ingest(uow: UnitOfWork, raw_events: list[Any], *, source: str = "api") -> list[EventOutcome]:
    """Apply a batch of events in order; returns one outcome per event."""
    ctx = IngestContext(uow, source)
    handlers = _builtin_handlers()
    outcomes: list[EventOutcome] = []
    parsed: list[EventIn | PerkflowError] = []
    for raw in raw_events:
        try:
            parsed.append(parse_event(raw))
        except PerkflowError as exc:
            parsed.append(exc)
    events = [ev for ev in parsed if isinstance(ev, EventIn)]
    _prefetch(ctx, events, handlers)
    ctx.log.reserve(len(events) * 2)
    for index, ev in enumerate(parsed):
        if isinstance(ev, PerkflowError):
            outcomes.append(EventOutcome(index, "rejected", error=ev))
            continue
        try:
            outcomes.append(EventOutcome(index, "accepted", activity=_handle(ctx, ev, handlers)))
        except DuplicateEvent as dup:
            outcomes.append(EventOutcome(index, "duplicate", activity=dup.original))
        except PerkflowError as exc:
            outcomes.append(EventOutcome(index, "rejected", error=exc))
    return outcomes


def _handle(ctx: IngestContext, ev: EventIn, handlers: dict[str, Handler]) -> Activity:
    if ev.id is not None:
        original = ctx.by_event_id.get(ev.id)
        if original is not None:
            if original.member_id != ev.customer or original.type != ev.action:
                raise Conflict(
                    f"event id {ev.id!r} was already used for another event",
                    code="event_id_reused",
                    details={
                        "activity_id": original.id,
                        "customer": original.member_id,
                        "action": original.type,
                    },
                )
            raise DuplicateEvent(original)
    if ev.occurred_at is not None and ev.occurred_at > ctx.now + FUTURE_TOLERANCE:
        raise InvalidInput(
            "occurred_at is in the future", code="invalid_event", details={"field": "occurred_at"}
        )
    program = ctx.catalog.resolve(ev.program)
    # Workflows' modifier branches see the event before it is applied and may reject it.
    if ctx.guarded:
        guard_event(ctx.uow, ev.customer, ev.action, ev.data, ctx.occurred_at(ev), program.id)
    handler = handlers.get(ev.action)
    if handler is None:
        from perkflow.events.handlers import handle_custom

        if uow_types(ctx).get(ev.action) is None:
            raise InvalidInput(
                f"unknown action {ev.action!r}: use a built-in action or register a custom event type",
                code="unknown_action",
                details={"action": ev.action},
            )
        handler = handle_custom
    activity = handler(ctx, ev, program)
    ctx.remember(activity)
    return activity


def uow_types(ctx: IngestContext) -> EventTypeCatalog:
    return ctx.uow.component(EventTypeCatalog)


def _prefetch(ctx: IngestContext, events: list[EventIn], handlers: dict[str, Handler]) -> None:
    """Load what the batch will touch in a handful of queries instead of several per event."""
    if not events:
        return
    ctx.by_event_id.update(find_by_event_ids(ctx.uow.conn, [ev.id for ev in events if ev.id]))
    default_program = ctx.catalog.default_id()
    keys: set[str] = set()
    account_keys: list[tuple[str, str]] = []
    lock_members: list[str] = []
    for ev in events:
        program_id = ev.program or default_program
        if ev.action in ("opt_in", "profile"):
            lock_members.append(ev.customer)
        if program_id is None:
            continue
        account_keys.append((ev.customer, program_id))
        tx = ev.data.get("transaction_id")
        if isinstance(tx, str) and ev.action in ("checkout", "checkout_accept", "checkout_reject", "refund"):
            keys.add(f"checkout:{program_id}:{tx}")
            if ev.action != "checkout":
                keys.update((f"checkout_accept:{program_id}:{tx}", f"checkout_reject:{program_id}:{tx}"))
    ctx.members.load_many(lock_members, lock=True)
    ctx.accounts.load(account_keys)
    ctx.prefetch_dedup(keys)
