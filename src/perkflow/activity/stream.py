"""Recording activities: the one way any part of Perkflow reports a state change.

Each activity gets its sequence number when recorded, so a lot, an outbox item or a workflow run can
point at it before anything is written. Activities are buffered in the unit of work and inserted in
one executemany at flush time. Before commit they are handed to the subscribers (CEP sync, workflows,
segments), which add their own writes to the same transaction.

Per-member history is kept as chains rather than an index on (member, seq): each activity points at
the previous activity of the same chain, and the chain head lives on the row the change already
updates (the account for program activity, the member for profile activity). An index would cost a
random B-tree insert per event, the single largest cost of bulk ingestion on SQLite.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from perkflow.activity.tables import activities
from perkflow.core.clock import isoformat_z
from perkflow.core.uow import UnitOfWork


class ChainHead(Protocol):
    """The row that holds the newest activity of a chain: an account or a member."""

    last_activity_seq: int | None

    def mark_dirty(self) -> None: ...

    def note_activity(self, activity_type: str, occurred_epoch: int) -> None:
        """Count the activity in the holder's per-type statistics (accounts keep them)."""


@dataclass(slots=True)
class Activity:
    seq: int
    type: str
    member_id: str
    program_id: str | None
    occurred_at: datetime
    recorded_at: datetime
    data: dict[str, Any]
    effects: dict[str, Any] = field(default_factory=dict)
    source: str = "api"
    points_delta: int = 0
    pending_delta: int = 0
    event_id: str | None = None
    dedup_key: str | None = None
    prev_seq: int | None = None

    @property
    def id(self) -> str:
        return f"act_{self.seq}"

    def to_public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "seq": self.seq,
            "type": self.type,
            "member_id": self.member_id,
            "program_id": self.program_id,
            "occurred_at": isoformat_z(self.occurred_at),
            "recorded_at": isoformat_z(self.recorded_at),
            "source": self.source,
            "event_id": self.event_id,
            "points_delta": self.points_delta,
            "pending_delta": self.pending_delta,
            "data": self.data,
            "effects": self.effects,
        }

    @classmethod
    def from_row(cls, row: Any) -> Activity:
        payload = row.payload or {}
        return cls(
            seq=row.seq,
            type=row.type,
            member_id=row.member_id,
            program_id=row.program_id,
            occurred_at=row.occurred_at,
            recorded_at=row.recorded_at,
            data=payload.get("data", {}),
            effects=payload.get("effects", {}),
            source=row.source,
            points_delta=row.points_delta,
            pending_delta=row.pending_delta,
            event_id=row.event_id,
            dedup_key=row.dedup_key,
            prev_seq=row.prev_seq,
        )


INSERT_COLUMNS = (
    "seq",
    "type",
    "member_id",
    "program_id",
    "occurred_at",
    "recorded_at",
    "source",
    "event_id",
    "dedup_key",
    "points_delta",
    "pending_delta",
    "payload",
    "prev_seq",
)


class ActivityLog:
    """Unit-of-work component that numbers, buffers, dispatches and writes activities."""

    def __init__(self, uow: UnitOfWork) -> None:
        self.uow = uow
        self._seq = uow.db.sequence(uow.conn, sequence="activity_seq", table="activities", column="seq")
        self._unwritten: list[Activity] = []
        self._undispatched: list[Activity] = []
        self.recorded: list[Activity] = []
        self._recorded_at = uow.now
        self._recorded_at_param = uow.db.param_datetime(uow.now)
        self._dt_params: dict[datetime, Any] = {}

    def next_seq(self, hint: int = 1) -> int:
        return self._seq.take(hint)

    def reserve(self, count: int) -> None:
        """Fetch sequence numbers for `count` upcoming activities in one round trip (PostgreSQL)."""
        self._seq.reserve(count)

    def record(
        self,
        *,
        type: str,
        member_id: str,
        program_id: str | None,
        chain: ChainHead,
        data: dict[str, Any],
        effects: dict[str, Any] | None = None,
        occurred_at: datetime | None = None,
        source: str = "api",
        points_delta: int = 0,
        pending_delta: int = 0,
        event_id: str | None = None,
        dedup_key: str | None = None,
        seq: int | None = None,
    ) -> Activity:
        activity = Activity(
            seq if seq is not None else self._seq.take(),
            type,
            member_id,
            program_id,
            occurred_at or self._recorded_at,
            self._recorded_at,
            data,
            effects if effects is not None else {},
            source,
            points_delta,
            pending_delta,
            event_id,
            dedup_key,
            chain.last_activity_seq,
        )
        chain.last_activity_seq = activity.seq
        chain.mark_dirty()
        chain.note_activity(type, self.uow.times.epoch(activity.occurred_at))
        self._unwritten.append(activity)
        self._undispatched.append(activity)
        self.recorded.append(activity)
        return activity

    def before_commit(self) -> bool:
        if not self._undispatched:
            return False
        batch, self._undispatched = self._undispatched, []
        for subscriber in self.uow.ctx.subscribers:
            subscriber(self.uow, batch)
        return True

    def flush(self) -> None:
        if not self._unwritten:
            return
        db = self.uow.db
        dt_cache = self._dt_params
        rows = []
        for a in self._unwritten:
            occurred = dt_cache.get(a.occurred_at)
            if occurred is None:
                occurred = dt_cache[a.occurred_at] = db.param_datetime(a.occurred_at)
            rows.append(
                (
                    a.seq,
                    a.type,
                    a.member_id,
                    a.program_id,
                    occurred,
                    self._recorded_at_param,
                    a.source,
                    a.event_id,
                    a.dedup_key,
                    a.points_delta,
                    a.pending_delta,
                    db.param_json({"data": a.data, "effects": a.effects}),
                    a.prev_seq,
                )
            )
        self._unwritten = []
        db.bulk_insert(self.uow.conn, activities, INSERT_COLUMNS, rows)
