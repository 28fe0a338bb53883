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
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, delete, func, insert, select

from perkflow.activity.stream import Activity, ActivityLog
from perkflow.conditions import lookup
from perkflow.core.context import AppContext
from perkflow.core.uow import UnitOfWork
from perkflow.ledger.accounts import AccountRepository
from perkflow.members.repository import MemberRepository
from perkflow.members.views import ActivityStats, CustomerView
from perkflow.programs.service import ProgramCatalog
from perkflow.segments.rules import (
    SEGMENT_ACTIVITY_TYPES,
    CompiledGroup,
    RuleSet,
    changed_keys,
    compile_rules,
    matches,
    may_change,
    parse_rules,
)
from perkflow.segments.tables import segment_members, segments

# The activity types workflows, distributions and CEP sync react to; data = {segment_id, segment_name}.
SEGMENT_ENTERED = "segment_entered"
SEGMENT_LEFT = "segment_left"


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


ActivityKey = tuple[str, str, bool, bool]
PROFILE_KEY: ActivityKey = ("profile", "", False, False)


class SegmentIndex:
    """The rule segments, grouped so an activity finds the ones it may affect without scanning.

    What an activity can change depends only on its type, program and whether it moves points
    (`key`); the segments each key and each combination of keys may affect are worked out once and
    kept, as tuples sorted by segment id.
    """

    def __init__(self, found: Iterable[RuleSegment]) -> None:
        self.segments = tuple(sorted(found, key=_by_id))
        self.by_id = {segment.id: segment for segment in self.segments}
        self.by_program: dict[str | None, tuple[RuleSegment, ...]] = {}
        for segment in self.segments:
            self.by_program[segment.program_id] = (*self.by_program.get(segment.program_id, ()), segment)
        self._by_key: dict[ActivityKey, tuple[RuleSegment, ...]] = {}
        self._by_keys: dict[frozenset[ActivityKey], tuple[RuleSegment, ...]] = {}

    @staticmethod
    def key(activity: Activity) -> ActivityKey | None:
        """What about an activity decides the segments it may affect; None when it affects none."""
        kind = activity.type
        if kind == "profile":
            return PROFILE_KEY
        if kind in SEGMENT_ACTIVITY_TYPES or activity.program_id is None:
            # Member-level activity other than a profile change moves no standing or statistics.
            return None
        return (kind, activity.program_id, activity.points_delta != 0, activity.pending_delta != 0)

    def affected(self, keys: frozenset[ActivityKey]) -> tuple[RuleSegment, ...]:
        found = self._by_keys.get(keys)
        if found is None:
            ids = {segment.id for key in keys for segment in self._for_key(key)}
            found = tuple(segment for segment in self.segments if segment.id in ids)
            if len(self._by_keys) < 4096:
                self._by_keys[keys] = found
        return found

    def _for_key(self, key: ActivityKey) -> tuple[RuleSegment, ...]:
        if key == PROFILE_KEY:
            return self.segments
        found = self._by_key.get(key)
        if found is None:
            kind, program_id, moves_points, moves_pending = key
            changed = changed_keys(kind, {}, int(moves_points), int(moves_pending), True)
            found = tuple(s for s in self.by_program.get(program_id, ()) if may_change(s.rules, changed))
            if len(self._by_key) < 4096:
                self._by_key[key] = found
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
    keys: dict[str, set[ActivityKey]] = {}
    key_of = index.key
    for activity in activities:
        key = key_of(activity)
        if key is not None:
            found = keys.get(activity.member_id)
            if found is None:
                keys[activity.member_id] = {key}
            else:
                found.add(key)
    wanted = {}
    for member_id, member_keys in keys.items():
        affected = index.affected(frozenset(member_keys))
        if affected:
            wanted[member_id] = affected
    if wanted:
        evaluate_members(uow, wanted)


# -- evaluating members -------------------------------------------------------------------------------------


def current_memberships(
    uow: UnitOfWork, member_ids: list[str], segment_ids: list[str]
) -> set[tuple[str, str]]:
    """(segment id, member id) pairs among these members and segments, in one query.

    Only the member list goes to the database (through the member index); other segments' rows are
    dropped here, which is cheaper than a second IN list.
    """
    db = uow.db
    wanted = set(segment_ids)
    rows = uow.conn.execute(
        select(segment_members.c.segment_id, segment_members.c.member_id).where(
            db.in_list(segment_members.c.member_id, "members")
        ),
        {"members": db.list_param(member_ids)},
    )
    return {(segment_id, member_id) for segment_id, member_id in rows if segment_id in wanted}


@dataclass(frozen=True, slots=True)
class _ProgramPlan:
    """The segments of one program in a combination: which attribute paths to read, then which
    compiled rules to test on them."""

    program_id: str | None
    paths: tuple[tuple[str, ...], ...]
    rules: tuple[tuple[str, CompiledGroup], ...]


def _plan(
    segments: tuple[RuleSegment, ...], compiled: dict[str, CompiledGroup], now: datetime
) -> tuple[_ProgramPlan, ...]:
    by_program: dict[str | None, list[RuleSegment]] = {}
    for segment in segments:
        by_program.setdefault(segment.program_id, []).append(segment)
    plans = []
    for program_id, found in by_program.items():
        paths = sorted({path for segment in found for path in segment.rules.paths})
        rules = []
        for segment in found:
            rule = compiled.get(segment.id)
            if rule is None:
                rule = compiled[segment.id] = compile_rules(segment.rules.root, now)
            rules.append((segment.id, rule))
        plans.append(_ProgramPlan(program_id, tuple(paths), tuple(rules)))
    return tuple(plans)


def decide(uow: UnitOfWork, wanted: Mapping[str, tuple[RuleSegment, ...]]) -> dict[str, set[str]]:
    """For each member, the ids of the given segments whose rules it satisfies now; no writes.

    Members and accounts are read through the unit of work's identity maps, so the ones the
    transaction already holds cost nothing and the others one query (accounts: one per program).
    Members that share a combination of segments (most of a batch) share its plan, and each
    attribute is read once per member and program, then every rule is tested on plain values.
    """
    member_ids = sorted(wanted)
    # What each combination of segments needs loaded (combinations are shared, so this is cheap).
    needs_of: dict[int, tuple[bool, tuple[tuple[str, bool], ...]]] = {}
    profiled: list[str] = []
    accounts_wanted: dict[str, list[str]] = {}
    dated: set[str] = set()
    for member_id in member_ids:
        found = wanted[member_id]
        needs = needs_of.get(id(found))
        if needs is None:
            programs_needed = {
                (s.program_id, s.rules.needs_dates)
                for s in found
                if s.program_id is not None and s.rules.needs_program
            }
            needs = needs_of[id(found)] = (
                any(s.rules.needs_profile for s in found),
                tuple(sorted(programs_needed)),
            )
        if needs[0]:
            profiled.append(member_id)
        for program_id, with_dates in needs[1]:
            accounts_wanted.setdefault(program_id, []).append(member_id)
            if with_dates:
                dated.add(program_id)
    # Rules on standing and statistics alone read only accounts (which ingestion already holds).
    members = uow.component(MemberRepository).load_many(profiled) if profiled else {}
    accounts = uow.component(AccountRepository)
    for program_id, ids in accounts_wanted.items():
        keys = [(member_id, program_id) for member_id in dict.fromkeys(ids)]
        accounts.load(keys)
        if program_id in dated:
            accounts.load_dates(keys)
    now = uow.now
    programs = uow.component(ProgramCatalog).programs
    compiled: dict[str, CompiledGroup] = {}
    plans: dict[tuple[str, ...], tuple[_ProgramPlan, ...]] = {}
    decided: dict[str, set[str]] = {}
    for member_id in member_ids:
        holding = decided[member_id] = set()
        if member_id in members and members[member_id] is None:
            continue
        found = wanted[member_id]
        key = tuple(segment.id for segment in found)
        plan = plans.get(key)
        if plan is None:
            plan = plans[key] = _plan(found, compiled, now)
        for part in plan:
            program = programs.get(part.program_id) if part.program_id else None
            account = accounts.get(member_id, program.id) if program is not None else None
            # Statistics come from the account (the view would load the member row for them).
            stats = ActivityStats(account.activity_stats if account is not None else {})
            view = CustomerView(uow, member_id, program, now=now, overrides={"activity": stats})
            known = {path: lookup(view, path) for path in part.paths}
            for segment_id, rule in part.rules:
                if matches(rule, known):
                    holding.add(segment_id)
    return decided


def evaluate_members(uow: UnitOfWork, wanted: Mapping[str, tuple[RuleSegment, ...]]) -> tuple[int, int]:
    """Evaluate each member for its segments (tuples sorted by segment id, most of them shared) and
    apply the differences; returns (entered, left)."""
    canonical = wanted
    decided = decide(uow, canonical)
    refs: dict[str, SegmentRef] = {}
    candidates: dict[int, frozenset[str]] = {}
    for found in canonical.values():
        if id(found) not in candidates:
            candidates[id(found)] = frozenset(segment.id for segment in found)
            for segment in found:
                refs[segment.id] = segment.ref
    present: dict[str, set[str]] = {}
    for segment_id, member_id in current_memberships(uow, sorted(canonical), sorted(refs)):
        present.setdefault(member_id, set()).add(segment_id)
    entered: list[tuple[SegmentRef, str]] = []
    left: list[tuple[SegmentRef, str]] = []
    for member_id in sorted(canonical):
        holding = decided[member_id]
        # Only the segments evaluated for this member: others of the batch were not asked about it.
        now_in = present.get(member_id, set()) & candidates[id(canonical[member_id])]
        for segment_id in sorted(holding - now_in):
            entered.append((refs[segment_id], member_id))
        for segment_id in sorted(now_in - holding):
            left.append((refs[segment_id], member_id))
    apply_changes(uow, entered, left, via="rules")
    return len(entered), len(left)


def _by_id(segment: RuleSegment) -> str:
    return segment.id


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
