"""Keeping rule-based segments up to date as members change, inside the transaction that changed them.

`maintain_memberships` is an activity subscriber. It asks the rule segments' index which segments an
activity can affect (from what each segment's rules depend on), so a checkout re-evaluates a member
only for segments on points, tier or checkout statistics of that program, and a transaction with no
rule segments defined costs a dictionary lookup. The members it touched are then evaluated together:
members and accounts come from the unit of work's identity maps (already loaded by the transaction
that changed them, otherwise in one query each), their current memberships in one query, and the
entered/left differences are written with one statement each. Every change is a `segment_entered`
or `segment_left` activity on the member's chain, with `data = {segment_id, segment_name}`.

Rule segments are cached per process and re-checked at most once a second with a stamp query
(count, sum of versions, latest change); changes made in this process invalidate the cache when they
commit, so they apply to the next transaction at once. Other processes see them within a second; a
transaction that raced a rule change is caught by the periodic reconciliation (see runs.py).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, delete, func, insert, select

from perkflow.activity.stream import Activity, ActivityLog
from perkflow.conditions import lookup
from perkflow.core.context import AppContext
from perkflow.core.uow import UnitOfWork
from perkflow.ledger.accounts import AccountRepository
from perkflow.members.repository import MemberRepository
from perkflow.members.views import CustomerView
from perkflow.programs.service import ProgramCatalog
from perkflow.segments.rules import (
    SEGMENT_ACTIVITY_TYPES,
    Resolver,
    RuleSet,
    changed_keys,
    holds,
    may_change,
    parse_rules,
)
from perkflow.segments.tables import segment_members, segments

SEGMENT_ENTERED = "segment_entered"
SEGMENT_LEFT = "segment_left"
# segment_members.source: who put the member there.
SOURCES = ("rules", "api", "webhook")


@dataclass(frozen=True, slots=True)
class SegmentRef:
    """What a membership change names: the segment's id and its name at the time."""

    id: str
    name: str


@dataclass(frozen=True, slots=True)
class RuleSegment:
    id: str
    name: str
    program_id: str | None
    rules: RuleSet

    @property
    def ref(self) -> SegmentRef:
        return SegmentRef(self.id, self.name)

    @classmethod
    def from_row(cls, row: Any) -> RuleSegment:
        return cls(row.id, row.name, row.program_id, parse_rules(row.rules, None))


class SegmentIndex:
    """The rule segments, grouped so an activity finds the ones it may affect without scanning."""

    def __init__(self, found: Iterable[RuleSegment]) -> None:
        self.segments = tuple(sorted(found, key=lambda s: s.id))
        self.by_program: dict[str | None, tuple[RuleSegment, ...]] = {}
        for segment in self.segments:
            self.by_program[segment.program_id] = (*self.by_program.get(segment.program_id, ()), segment)
        self._memo: dict[tuple[str, str, bool, bool], tuple[RuleSegment, ...]] = {}

    def affected(self, activity: Activity) -> tuple[RuleSegment, ...]:
        kind = activity.type
        if kind in SEGMENT_ACTIVITY_TYPES:
            return ()
        if kind == "profile":
            return self.segments
        program_id = activity.program_id
        if program_id is None:
            # Member-level activity other than a profile change moves no standing or statistics.
            return ()
        # Apart from profile changes, what an activity may change depends only on these.
        key = (kind, program_id, activity.points_delta != 0, activity.pending_delta != 0)
        found = self._memo.get(key)
        if found is None:
            changed = changed_keys(kind, {}, activity.points_delta, activity.pending_delta, True)
            found = tuple(s for s in self.by_program.get(program_id, ()) if may_change(s.rules, changed))
            if len(self._memo) < 4096:
                self._memo[key] = found
        return found


class SegmentIndexCache:
    ttl_s = 1.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._checked_at = -1e9
        self._stamp: Any = None
        self._index = SegmentIndex(())

    def get(self, uow: UnitOfWork) -> SegmentIndex:
        if time.monotonic() - self._checked_at < self.ttl_s:
            return self._index
        stamp = tuple(
            uow.conn.execute(
                select(func.count(), func.sum(segments.c.version), func.max(segments.c.updated_at)).where(
                    segments.c.kind == "rule"
                )
            ).one()
        )
        with self._lock:
            if stamp == self._stamp:
                self._checked_at = time.monotonic()
                return self._index
        rows = uow.conn.execute(
            select(segments.c.id, segments.c.name, segments.c.program_id, segments.c.rules).where(
                segments.c.kind == "rule"
            )
        ).all()
        index = SegmentIndex(RuleSegment.from_row(row) for row in rows)
        with self._lock:
            self._index, self._stamp, self._checked_at = index, stamp, time.monotonic()
        return index

    def invalidate(self) -> None:
        with self._lock:
            self._checked_at = -1e9
            self._stamp = None


def index_cache(ctx: AppContext) -> SegmentIndexCache:
    found = ctx.caches.get("segments.rules")
    if found is None:
        found = ctx.caches["segments.rules"] = SegmentIndexCache()
    return found


def maintain_memberships(uow: UnitOfWork, activities: list[Activity]) -> None:
    """Activity subscriber: re-evaluate the members these activities touched, for the segments the
    activities can affect."""
    index = index_cache(uow.ctx).get(uow)
    if not index.segments:
        return
    wanted: dict[str, dict[str, RuleSegment]] = {}
    for activity in activities:
        found = index.affected(activity)
        if found:
            bucket = wanted.setdefault(activity.member_id, {})
            for segment in found:
                bucket[segment.id] = segment
    if wanted:
        evaluate_members(uow, {member: tuple(found.values()) for member, found in wanted.items()})


# -- evaluating members -------------------------------------------------------------------------------------


def current_memberships(
    uow: UnitOfWork, member_ids: list[str], segment_ids: list[str]
) -> set[tuple[str, str]]:
    """(segment id, member id) pairs among these members and segments, in one query."""
    db = uow.db
    rows = uow.conn.execute(
        select(segment_members.c.segment_id, segment_members.c.member_id).where(
            db.in_list(segment_members.c.member_id, "members"),
            db.in_list(segment_members.c.segment_id, "segments"),
        ),
        {"members": db.list_param(member_ids), "segments": db.list_param(segment_ids)},
    )
    return {(row.segment_id, row.member_id) for row in rows}


def decide(uow: UnitOfWork, wanted: Mapping[str, Iterable[RuleSegment]]) -> dict[str, set[str]]:
    """For each member, the ids of the given segments whose rules it satisfies now; no writes.

    Members and accounts are read through the unit of work's identity maps, so the ones the
    transaction already holds cost nothing and the others one query (accounts: one per program).
    """
    member_ids = sorted(wanted)
    # Rules on standing and statistics alone read only accounts (which ingestion already holds).
    profiled = sorted(m for m, found in wanted.items() if any(s.rules.needs_profile for s in found))
    members = uow.component(MemberRepository).load_many(profiled) if profiled else {}
    catalog = uow.component(ProgramCatalog)
    accounts = uow.component(AccountRepository)
    needs: dict[str, set[str]] = {}
    dated: set[str] = set()
    for member_id, found in wanted.items():
        for segment in found:
            if segment.program_id is not None and segment.rules.needs_program:
                needs.setdefault(segment.program_id, set()).add(member_id)
                if segment.rules.needs_dates:
                    dated.add(segment.program_id)
    for program_id, ids in needs.items():
        keys = [(member_id, program_id) for member_id in sorted(ids)]
        accounts.load(keys)
        if program_id in dated:
            accounts.load_dates(keys)
    now = uow.now
    decided: dict[str, set[str]] = {}
    for member_id in member_ids:
        holding = decided[member_id] = set()
        if member_id in members and members[member_id] is None:
            continue
        views: dict[str | None, CustomerView] = {}
        for segment in wanted[member_id]:
            view = views.get(segment.program_id)
            if view is None:
                program = catalog.programs.get(segment.program_id) if segment.program_id else None
                view = views[segment.program_id] = CustomerView(uow, member_id, program, now=now)
            if holds(segment.rules.root, _resolver(view), now):
                holding.add(segment.id)
    return decided


def evaluate_members(uow: UnitOfWork, wanted: Mapping[str, Iterable[RuleSegment]]) -> tuple[int, int]:
    """Evaluate each member for its segments and apply the differences; returns (entered, left)."""
    wanted = {member_id: tuple(found) for member_id, found in wanted.items()}
    decided = decide(uow, wanted)
    segment_ids = sorted({segment.id for found in wanted.values() for segment in found})
    current = current_memberships(uow, sorted(wanted), segment_ids)
    entered: list[tuple[SegmentRef, str]] = []
    left: list[tuple[SegmentRef, str]] = []
    for member_id in sorted(wanted):
        holding = decided[member_id]
        for segment in wanted[member_id]:
            present = (segment.id, member_id) in current
            if segment.id in holding and not present:
                entered.append((segment.ref, member_id))
            elif present and segment.id not in holding:
                left.append((segment.ref, member_id))
    apply_changes(uow, entered, left, via="rules")
    return len(entered), len(left)


def _resolver(view: CustomerView) -> Resolver:
    return lambda condition: lookup(view, condition.path)


def apply_changes(
    uow: UnitOfWork,
    entered: list[tuple[SegmentRef, str]],
    left: list[tuple[SegmentRef, str]],
    *,
    via: str,
) -> None:
    """Write membership changes and record a segment_entered / segment_left activity for each.

    The activities go on the member's chain, whose head is the member row: the members that change
    are locked first (one query), as every writer of a member chain does. A concurrent writer that
    inserted the same membership first makes the insert fail, and the unit of work's retry then sees
    the row (so no member ever enters twice).
    """
    if not entered and not left:
        return
    heads = uow.component(MemberRepository).load_many(
        {m for _, m in entered} | {m for _, m in left}, lock=True
    )
    conn = uow.conn
    if left:
        conn.execute(
            delete(segment_members).where(
                segment_members.c.segment_id == bindparam("s"), segment_members.c.member_id == bindparam("m")
            ),
            [{"s": segment.id, "m": member_id} for segment, member_id in left],
        )
    if entered:
        conn.execute(
            insert(segment_members),
            [
                {"segment_id": segment.id, "member_id": member_id, "source": via, "added_at": uow.now}
                for segment, member_id in entered
            ],
        )
    log = uow.component(ActivityLog)
    log.reserve(len(entered) + len(left))
    source = "system" if via == "rules" else "api"
    for kind, changes in ((SEGMENT_LEFT, left), (SEGMENT_ENTERED, entered)):
        for segment, member_id in changes:
            head = heads.get(member_id)
            assert head is not None, "a member with a membership row exists (foreign key)"
            log.record(
                type=kind,
                member_id=member_id,
                program_id=None,
                chain=head,
                data={"segment_id": segment.id, "segment_name": segment.name},
                effects={"via": via},
                source=source,
            )
