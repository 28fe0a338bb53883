"""The transactional outbox: turning activities into sync work items inside the same transaction.

A subscriber of the activity stream. For each connected integration it queues an `event` item for
every activity of a selected type and one `profile` item per member whose mapped fields the
transaction changed. Profile items name the fields; the worker reads their values when it sends, so
all the changes of a member waiting in the queue go out as one attributes object.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from perkflow.activity.stream import Activity
from perkflow.core.clock import isoformat_z
from perkflow.core.uow import UnitOfWork
from perkflow.programs.service import ProgramCatalog
from perkflow.sync.fields import fields_changed_by
from perkflow.sync.integrations import Integration, cache
from perkflow.sync.tables import outbox

ITEM_COLUMNS = (
    "integration_id",
    "member_id",
    "kind",
    "activity_seq",
    "payload",
    "status",
    "attempts",
    "available_at",
    "created_at",
)
SCALAR_EFFECTS = ("points", "pending", "balance", "tier", "tier_change", "expires_at", "release_at")


def event_payload(activity: Activity, name: str) -> dict[str, Any]:
    """A platform-neutral event: flat properties for CEPs, the full activity for webhooks."""
    properties: dict[str, Any] = {k: v for k, v in activity.data.items() if v is not None}
    for key in SCALAR_EFFECTS:
        value = activity.effects.get(key)
        if value is not None and key not in properties:
            properties[key] = value
    properties["points_delta"] = activity.points_delta
    if activity.pending_delta:
        properties["pending_points_delta"] = activity.pending_delta
    if activity.program_id:
        properties["program_id"] = activity.program_id
    properties["perkflow_event_id"] = activity.id
    return {
        "name": name,
        "occurred_at": isoformat_z(activity.occurred_at),
        "event_id": activity.id,
        "properties": properties,
        "activity": {
            "type": activity.type,
            "program_id": activity.program_id,
            "points_delta": activity.points_delta,
            "pending_delta": activity.pending_delta,
            "data": activity.data,
            "effects": activity.effects,
        },
    }


class OutboxWriter:
    """Unit-of-work component that buffers work items and writes them with the transaction."""

    def __init__(self, uow: UnitOfWork) -> None:
        self.uow = uow
        self._rows: list[tuple[Any, ...]] = []
        self._profile_rows: list[tuple[Any, ...]] = []
        self.immediate: dict[str, set[str]] = {}  # integration id -> members to push before answering
        # Every item of the transaction is created and available at its one instant: formatted once.
        self._now = uow.db.param_datetime(uow.now)
        self._json = uow.db.param_json
        self._isos: dict[datetime, str] = {}  # the workflow runs of one event share its moment

    def iso(self, moment: datetime) -> str:
        found = self._isos.get(moment)
        if found is None:
            found = self._isos[moment] = isoformat_z(moment)
        return found

    def add(
        self,
        integration: Integration,
        member_id: str,
        kind: str,
        payload: dict[str, Any],
        activity_seq: int | None = None,
    ) -> None:
        now = self._now
        row = (integration.id, member_id, kind, activity_seq, self._json(payload), "pending", 0, now, now)
        (self._profile_rows if kind == "profile" else self._rows).append(row)
        if integration.kind == "bloomreach" and not integration.settings.get("async_sync", True):
            self.immediate.setdefault(integration.id, set()).add(member_id)

    def before_commit(self) -> bool:
        return False

    def flush(self) -> None:
        if self._rows or self._profile_rows:
            rows, self._rows = self._rows, []
            profiles, self._profile_rows = self._profile_rows, []
            db = self.uow.db
            db.bulk_insert(self.uow.conn, outbox, ITEM_COLUMNS, rows)
            db.bulk_insert(self.uow.conn, outbox, ITEM_COLUMNS, profiles, on_conflict_do_nothing=True)
            if self.immediate:
                from perkflow.sync.worker import deliver_members_now

                pushes, self.immediate = self.immediate, {}
                ctx = self.uow.ctx
                self.uow.after_commit(lambda: deliver_members_now(ctx, pushes))


def enqueue_activities(uow: UnitOfWork, activities: list[Activity]) -> None:
    """Activity subscriber: queue what each connected integration should receive."""
    targets = [i for i in cache(uow.ctx).get(uow) if i.status != "disconnected"]
    if not targets:
        return
    default_program: str | None = None
    if any(i.program_id is None for i in targets):
        default_program = uow.component(ProgramCatalog).default_id()
    writer = uow.component(OutboxWriter)
    for integration in targets:
        program_id = integration.program_id or default_program
        names = integration.event_names
        mapped = integration.mapped_fields
        changed_members: dict[str, None] = {}
        for activity in activities:
            if activity.program_id is not None and activity.program_id != program_id:
                continue
            name = names.get(activity.type)
            if name is not None:
                writer.add(
                    integration, activity.member_id, "event", event_payload(activity, name), activity.seq
                )
            if mapped and activity.member_id not in changed_members:
                changed = fields_changed_by(
                    activity.type, activity.data, activity.points_delta, activity.pending_delta
                )
                if changed & mapped:
                    changed_members[activity.member_id] = None
        for member_id in changed_members:
            writer.add(integration, member_id, "profile", {})


def enqueue_attributes(
    uow: UnitOfWork, integration: Integration, member_id: str, values: dict[str, Any]
) -> None:
    """Queue explicit remote attribute values (workflow "sync multiple fields")."""
    uow.component(OutboxWriter).add(integration, member_id, "attributes", {"values": values})


def enqueue_event(
    uow: UnitOfWork,
    integration: Integration,
    member_id: str,
    name: str,
    properties: dict[str, Any],
    event_id: str,
    occurred_at: Any,
) -> None:
    """Queue a custom platform event (workflow "sync platform event")."""
    writer = uow.component(OutboxWriter)
    payload = {
        "name": name,
        "occurred_at": writer.iso(occurred_at),
        "event_id": event_id,
        "properties": {**properties, "perkflow_event_id": event_id},
        "activity": {"type": name, "data": properties},
    }
    writer.add(integration, member_id, "event", payload)
