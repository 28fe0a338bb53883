"""The delivery worker: claims due outbox items, sends them in batches, and records what happened.

Several workers (threads or processes, on PostgreSQL several hosts) can run side by side. A claim
takes a short lock on the integration row, so claims for one destination never interleave, and it
skips members that already have items in flight, so one member's items are never in two requests at
once: each member's changes and events reach the platform in order. In-flight items carry a lease;
a worker that dies leaves its items to be claimed again when the lease runs out (at-least-once: the
platform may see a retried request twice, which is why events carry a stable id).
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any

import httpx
from sqlalchemy import and_, func, or_, select, update

from perkflow.connectors.base import (
    Connector,
    EventPart,
    FieldError,
    MemberUnit,
    Part,
    PreparedRequest,
    UnitError,
    Verdict,
    transport_failure,
)
from perkflow.connectors.braze.encoding import infer_type
from perkflow.core import transactions
from perkflow.core.context import AppContext
from perkflow.core.security import SecretsUnreadable
from perkflow.ledger.accounts import AccountRepository
from perkflow.members.repository import MemberRepository
from perkflow.members.service import FieldCatalog
from perkflow.programs.service import ProgramCatalog
from perkflow.sync import metrics, ratelimit
from perkflow.sync.fields import catalogue, read_values
from perkflow.sync.integrations import Integration, cache, load_integrations, set_status, vault
from perkflow.sync.tables import delivery_counters, integrations, outbox, sync_shadows

log = logging.getLogger("perkflow.sync")

CLAIM_LIMIT = 2000
MISSING = object()


@dataclass(slots=True)
class Item:
    id: int
    member_id: str
    kind: str
    payload: dict[str, Any]
    attempts: int
    created_at: datetime


@dataclass
class Outcome:
    delivered: dict[int, str | None] = field(default_factory=dict)  # item -> warning
    dead: dict[int, str] = field(default_factory=dict)
    retry: dict[int, tuple[str, float | None]] = field(default_factory=dict)  # item -> (reason, not before s)
    release: set[int] = field(default_factory=set)  # back to the queue untouched (destination paused)
    shadows: dict[str, dict[str, Any]] = field(default_factory=dict)  # member -> acknowledged attributes
    requests: int = 0
    objects: int = 0
    attributes_sent: int = 0  # attribute values the platform acknowledged
    attributes_full: int = 0  # what full mode would have sent for the same flushes
    paused: str | None = None


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"


def backoff_s(attempts: int, base: float, cap: float) -> float:
    """Exponential backoff with jitter (50-150 %) so retries of many items do not stampede."""
    return min(cap, base * 2 ** max(0, attempts - 1)) * random.uniform(0.5, 1.5)


# -- claiming --------------------------------------------------------------------------------------------


def _pending_due(integration_id: str, now: datetime) -> Any:
    return and_(
        outbox.c.integration_id == integration_id, outbox.c.status == "pending", outbox.c.available_at <= now
    )


def _lease_expired(integration_id: str, now: datetime) -> Any:
    return and_(
        outbox.c.integration_id == integration_id, outbox.c.status == "in_flight", outbox.c.lease_until < now
    )


def _due(integration_id: str, now: datetime) -> Any:
    return or_(_pending_due(integration_id, now), _lease_expired(integration_id, now))


def ready(ctx: AppContext, integration: Integration, batch: int) -> bool:
    """Is there a full batch due, or a part-full one whose oldest item has waited long enough?"""
    with ctx.uow(write=False) as uow:
        now = uow.now
        if uow.conn.execute(select(outbox.c.id).where(_lease_expired(integration.id, now)).limit(1)).first():
            return True
        first = uow.conn.execute(
            select(outbox.c.created_at)
            .where(_pending_due(integration.id, now))
            .order_by(outbox.c.id)
            .limit(1)
        ).first()
        if first is None:
            return False
        if (now - first.created_at).total_seconds() * 1000 >= integration.settings["flush_age_ms"]:
            return True
        counted = uow.conn.execute(
            select(func.count()).select_from(
                select(outbox.c.id).where(_pending_due(integration.id, now)).limit(batch).subquery()
            )
        ).scalar_one()
    return int(counted) >= batch


def claim(
    ctx: AppContext,
    integration_id: str,
    worker_id: str,
    *,
    limit: int = CLAIM_LIMIT,
    members: set[str] | None = None,
) -> list[Item]:
    """Mark due items in flight for this worker, all of a member's due items together.

    The write transaction only picks ids and marks them; the items are read afterwards, so the
    (SQLite-wide) write lock is held as briefly as possible.
    """
    with ctx.uow() as uow:
        db = uow.db
        locked = uow.conn.execute(
            db.for_update(
                select(integrations.c.id).where(integrations.c.id == integration_id), skip_locked=True
            )
        ).first()
        if locked is None:
            return []  # another worker is claiming for this destination right now
        now = uow.now
        lease = timedelta(seconds=ctx.settings.delivery_lease_s)
        busy = select(outbox.c.member_id).where(
            outbox.c.integration_id == integration_id,
            outbox.c.status == "in_flight",
            outbox.c.lease_until >= now,
        )
        # Two index-friendly scans (pending by id, expired leases) rather than one OR over the queue.
        chosen: list[str] = []
        for due in (_lease_expired(integration_id, now), _pending_due(integration_id, now)):
            stmt = select(outbox.c.member_id).where(due, outbox.c.member_id.not_in(busy))
            if members is not None:
                stmt = stmt.where(outbox.c.member_id.in_(sorted(members)))
            chosen += uow.conn.execute(stmt.order_by(outbox.c.id).limit(limit)).scalars()
        chosen = list(dict.fromkeys(chosen))
        if chosen:
            # A member whose earlier event waits on a backoff must not have later ones sent first.
            backing_off = set(
                uow.conn.execute(
                    select(outbox.c.member_id).where(
                        outbox.c.integration_id == integration_id,
                        db.in_list(outbox.c.member_id, "members"),
                        outbox.c.status == "pending",
                        outbox.c.kind == "event",
                        outbox.c.available_at > now,
                    ),
                    {"members": db.list_param(chosen)},
                ).scalars()
            )
            chosen = [m for m in chosen if m not in backing_off]
        if not chosen:
            return []
        ids = list(
            uow.conn.execute(
                select(outbox.c.id).where(
                    _due(integration_id, now), db.in_list(outbox.c.member_id, "members")
                ),
                {"members": db.list_param(chosen)},
            ).scalars()
        )
        # Due is checked again as rows are updated: an item whose holder just renewed its lease (the
        # holder does not take the integration lock to renew) stays with that holder.
        uow.conn.execute(
            update(outbox)
            .where(db.in_list(outbox.c.id, "ids"), _due(integration_id, now))
            .values(status="in_flight", claimed_by=worker_id, lease_until=now + lease),
            {"ids": db.list_param(ids)},
        )
        uow.commit()
    with ctx.uow(write=False) as uow:
        rows = uow.conn.execute(
            select(outbox)
            .where(
                uow.db.in_list(outbox.c.id, "ids"),
                outbox.c.claimed_by == worker_id,
                outbox.c.status == "in_flight",
            )
            .order_by(outbox.c.id),
            {"ids": uow.db.list_param(ids)},
        ).all()
    return [Item(r.id, r.member_id, r.kind, r.payload or {}, r.attempts, r.created_at) for r in rows]


# -- building what to send -------------------------------------------------------------------------------


def build_units(
    ctx: AppContext, integration: Integration, connector: Connector, items: list[Item], outcome: Outcome
) -> tuple[list[MemberUnit], dict[str, dict[str, Any]]]:
    """One unit per member: current values of the mapped fields (only what differs from the shadow in
    delta mode), explicit attribute writes, and events in order. Also returns the shadows read."""
    by_member: OrderedDict[str, list[Item]] = OrderedDict()
    for item in items:
        by_member.setdefault(item.member_id, []).append(item)
    with ctx.uow(write=False) as uow:
        fields = catalogue(uow.component(FieldCatalog).fields)
        programs = uow.component(ProgramCatalog)
        program = programs.resolve(integration.program_id) if programs.programs else None
        members = uow.component(MemberRepository).load_many(by_member)
        accounts = uow.component(AccountRepository)
        if program is not None:
            accounts.load(((m, program.id) for m in by_member), with_dates=True)
        shadows = {
            row.member_id: dict(row.attributes or {})
            for row in uow.conn.execute(
                select(sync_shadows.c.member_id, sync_shadows.c.attributes).where(
                    sync_shadows.c.integration_id == integration.id,
                    sync_shadows.c.member_id.in_(list(by_member)),
                )
            )
        }
        wanted = integration.mapped_fields | connector.identity_fields()
        delta = integration.settings["mode"] == "delta"
        units: list[MemberUnit] = []
        for member_id, member_items in by_member.items():
            member = members.get(member_id)
            account = accounts.get_with_dates(member_id, program.id) if program and member else None
            tier = program.ladder.get(account.tier_id) if program and account else None
            values = read_values(member, account, tier.name if tier else None, uow.now, wanted)
            if member is None:
                for item in member_items:
                    outcome.dead[item.id] = f"member {member_id!r} no longer exists"
                continue
            try:
                identity = connector.identify(member_id, values)
            except (UnitError, FieldError) as exc:
                for item in member_items:
                    outcome.dead[item.id] = str(exc)
                continue
            shadow = shadows.get(member_id, {})
            attributes: dict[str, Any] = {}
            warnings: list[str] = []
            attribute_items: list[int] = []
            events: list[EventPart] = []
            for item in member_items:
                if item.kind == "profile" or item.kind == "attributes":
                    attribute_items.append(item.id)
                elif item.kind == "event":
                    payload = item.payload
                    occurred = datetime.fromisoformat(payload["occurred_at"].replace("Z", "+00:00"))
                    raw = payload["properties"] if connector.kind != "webhook" else payload["activity"]
                    properties, dropped = connector.event_properties(raw)
                    if dropped:
                        outcome.delivered[item.id] = "; ".join(dropped)  # kept unless the send fails
                    events.append(
                        EventPart(item.id, payload["name"], occurred, properties, payload["event_id"])
                    )
            if any(i.kind == "profile" for i in member_items):
                outcome.attributes_full += len(integration.mappings)
                for loyalty, remote in integration.mappings:
                    spec = fields.get(loyalty)
                    if spec is None:
                        warnings.append(f"{remote}: {loyalty!r} is no longer a loyalty field")
                        continue
                    try:
                        attributes[remote] = connector.encode(spec.type, values.get(loyalty))
                    except (FieldError, ValueError) as exc:
                        warnings.append(f"{remote}: {exc}")
            for item in member_items:
                if item.kind == "attributes":
                    for remote, value in item.payload.get("values", {}).items():
                        try:
                            connector.check_name(remote)
                            attributes[remote] = connector.encode(infer_type(value), value)
                        except (FieldError, ValueError) as exc:
                            warnings.append(f"{remote}: {exc}")
            if delta:
                attributes = {k: v for k, v in attributes.items() if shadow.get(k, MISSING) != v}
            warning = "; ".join(warnings) if warnings else None
            if not attributes:
                for item_id in attribute_items:
                    outcome.delivered[item_id] = warning  # nothing the platform does not already have
                attribute_items = []
            else:
                for item_id in attribute_items:
                    outcome.delivered[item_id] = warning  # provisional, settled by the response
            if attributes or events:
                units.append(MemberUnit(member_id, identity, attributes, attribute_items, events, values))
    return units, shadows


# -- sending ---------------------------------------------------------------------------------------------


class Lease:
    """Keeps this worker's claim on its items alive while it works through them.

    Before each request (and before recording), if the lease could run out before that step ends
    (within the request timeout), it is renewed for the items still held. Items another worker
    claimed after an expiry are reported lost, so they are not sent a second time from here.
    """

    def __init__(self, ctx: AppContext, worker_id: str, item_ids: list[int], *, step_s: float) -> None:
        self.ctx = ctx
        self.worker_id = worker_id
        self.length_s = ctx.settings.delivery_lease_s
        self.step_s = step_s  # the longest a step may take (the request timeout)
        self.held = set(item_ids)
        # Counted from now, a little after the claim set it: the margin keeps this estimate early.
        self.until = time.monotonic() + self.length_s - 1.0

    def keep(self, item_ids: list[int]) -> set[int]:
        """Which of these items this worker still holds, renewing the lease if it is running short."""
        wanted = self.held.intersection(item_ids)
        if time.monotonic() + self.step_s + 1.0 < self.until:
            return wanted
        self.until = time.monotonic() + self.length_s
        with self.ctx.uow() as uow:
            db = uow.db
            mine = and_(
                db.in_list(outbox.c.id, "ids"),
                outbox.c.claimed_by == self.worker_id,
                outbox.c.status == "in_flight",
            )
            params = {"ids": db.list_param(sorted(self.held))}
            uow.conn.execute(
                update(outbox).where(mine).values(lease_until=uow.now + timedelta(seconds=self.length_s)),
                params,
            )
            self.held = set(uow.conn.execute(select(outbox.c.id).where(mine), params).scalars())
            uow.commit()
        return self.held.intersection(item_ids)


class Sender:
    """Sends prepared requests for one integration, pacing them and splitting those that are too big.

    Requests go out one after another. When an event of a member is to be retried, the member's
    later objects still waiting in this flush are held back (released untouched to the queue), and
    claims skip the member until the retry is due, so the platform sees each member's events in order.
    """

    def __init__(
        self,
        ctx: AppContext,
        integration: Integration,
        connector: Connector,
        client: httpx.Client,
        outcome: Outcome,
        shadows: dict[str, dict[str, Any]],
        deadline: float | None = None,
        *,
        strict: bool = False,
        lease: Lease | None = None,
    ) -> None:
        self.ctx = ctx
        self.strict = strict
        self.lease = lease
        self.integration = integration
        self.connector = connector
        self.client = client
        self.outcome = outcome
        self.shadows = shadows
        self.deadline = deadline
        self.tokens = 0  # requests this sender may still make without asking the bucket
        self.pending = 1  # requests it expects to make, so it asks for enough tokens at once
        self.units: dict[str, MemberUnit] = {}
        self.held: set[str] = set()  # members whose earlier event is being retried

    def send_all(self, units: list[MemberUnit]) -> None:
        self.units = {unit.member_id: unit for unit in units}
        requests = self.connector.pack(units)
        self.pending = len(requests)
        for position, request in enumerate(requests):
            if self.outcome.paused is not None:
                self._release(request.parts)
                continue
            if self.deadline is not None and time.monotonic() > self.deadline:
                for rest in requests[position:]:
                    self._release(rest.parts)
                return
            self._send(request)

    def _units_for(self, parts: list[Part]) -> list[MemberUnit]:
        """The members' units cut down to these parts (so re-packing never resends other parts)."""
        with_attributes = {p.member_id for p in parts if p.kind == "attributes"}
        events = {i for p in parts if p.kind == "event" for i in p.item_ids}
        found = []
        for member_id in dict.fromkeys(p.member_id for p in parts):
            unit = self.units[member_id]
            keep = member_id in with_attributes
            found.append(
                MemberUnit(
                    member_id,
                    unit.identity,
                    unit.attributes if keep else {},
                    unit.attribute_item_ids if keep else [],
                    [e for e in unit.events if e.item_id in events],
                    unit.profile,
                )
            )
        return found

    def _pace(self) -> bool:
        while True:
            if self.tokens > 0:
                self.tokens -= 1
                self.pending = max(1, self.pending - 1)
                return True
            granted, wait = ratelimit.acquire(
                self.ctx, self.integration.id, self.integration.rate_per_s, wanted=self.pending
            )
            if granted:
                self.tokens = granted
                continue
            if self.deadline is not None and time.monotonic() + wait > self.deadline:
                return False
            time.sleep(min(wait, 5.0))

    def _send(self, request: PreparedRequest) -> None:
        held = [p for p in request.parts if p.member_id in self.held]
        if held:
            self._release(held)
            rest = [p for p in request.parts if p.member_id not in self.held]
            for smaller in self.connector.pack(self._units_for(rest)) if rest else []:
                self._send(smaller)
            return
        if not self._pace():
            self._release(request.parts)
            return
        if self.lease is not None:
            kept = self.lease.keep([i for p in request.parts for i in p.item_ids])
            lost = [p for p in request.parts if not kept.issuperset(p.item_ids)]
            if lost:
                # Another worker claimed these after our lease ran out: they are its to send now.
                for part in lost:
                    for item_id in part.item_ids:
                        self.outcome.delivered.pop(item_id, None)
                rest = [p for p in request.parts if kept.issuperset(p.item_ids)]
                self.tokens += 1  # the token taken for this request was not used
                for smaller in self.connector.pack(self._units_for(rest)) if rest else []:
                    self._send(smaller)
                return
        started = time.monotonic()
        timeout: Any = httpx.USE_CLIENT_DEFAULT
        if self.strict and self.deadline is not None:
            left = self.deadline - started
            if left <= 0.01:
                self._release(request.parts)
                return
            timeout = httpx.Timeout(left)
        try:
            response = self.client.request(
                request.method, request.url, headers=request.headers, content=request.content, timeout=timeout
            )
        except httpx.HTTPError as exc:
            verdict = transport_failure(f"{type(exc).__name__} talking to {self.integration.kind}")
        else:
            verdict = self.connector.classify(request, response)
            blocked = ratelimit.note_response(
                self.ctx, self.integration.id, verdict.rate, throttled=response.status_code == 429
            )
            if blocked > 0:
                self.tokens = 0  # the platform asked everyone to wait: tokens taken earlier are void
        metrics.observe_request(
            self.ctx, self.integration, verdict.kind, time.monotonic() - started, request.objects
        )
        self.outcome.requests += 1
        self._apply(request, verdict)

    def _apply(self, request: PreparedRequest, verdict: Verdict) -> None:
        outcome = self.outcome
        if verdict.kind == "split" and len(request.parts) > 1:
            original = self.connector.max_objects
            self.connector.max_objects = max(1, len(request.parts) // 2)
            try:
                smaller = self.connector.pack(self._units_for(request.parts))
            finally:
                self.connector.max_objects = original
            for part_request in smaller:
                self._send(part_request)
            return
        if verdict.kind == "split":
            verdict = Verdict("permanent", f"too large for the platform even alone: {verdict.reason}")
        if verdict.kind == "pause":
            outcome.paused = verdict.reason
            self._release(request.parts)
            return
        if verdict.kind == "retry":
            retry_after = verdict.rate.retry_after_s
            for part in request.parts:
                if part.kind == "event":
                    self.held.add(part.member_id)
                for item_id in part.item_ids:
                    outcome.retry[item_id] = (verdict.reason, retry_after)
                    outcome.delivered.pop(item_id, None)
            return
        if verdict.kind == "permanent":
            for part in request.parts:
                for item_id in part.item_ids:
                    outcome.dead[item_id] = verdict.reason
                    outcome.delivered.pop(item_id, None)
            return
        outcome.objects += len(request.parts)
        for index, part in enumerate(request.parts):
            error = verdict.part_errors.get(index)
            for item_id in part.item_ids:
                if error is not None:
                    outcome.dead[item_id] = error
                    outcome.delivered.pop(item_id, None)
                else:
                    outcome.delivered.setdefault(item_id, None)
            if error is None and part.kind == "attributes":
                outcome.attributes_sent += len(part.attributes)
                acknowledged = outcome.shadows.setdefault(
                    part.member_id, dict(self.shadows.get(part.member_id, {}))
                )
                acknowledged.update(part.attributes)

    def _release(self, parts: list[Part]) -> None:
        for part in parts:
            for item_id in part.item_ids:
                self.outcome.release.add(item_id)
                self.outcome.delivered.pop(item_id, None)


# -- recording -------------------------------------------------------------------------------------------


def record(
    ctx: AppContext, integration: Integration, items: list[Item], outcome: Outcome, worker_id: str
) -> None:
    """Write the results for items this worker still holds (a lost lease means someone else has them).

    Parameters are prepared first so the write transaction itself is short.
    """
    by_id = {item.id: item for item in items}
    max_attempts = int(integration.settings["max_attempts"])
    base, cap = float(integration.settings["backoff_base_s"]), float(integration.settings["backoff_max_s"])
    db = ctx.db
    now = ctx.clock.now()
    now_param = db.param_datetime(now)
    delivered = [
        i for i, warning in outcome.delivered.items() if warning is None and i not in outcome.release
    ]
    settled: list[tuple[Any, ...]] = []  # (status, delivered_at, available_at, attempts, last_error, id)
    requeued_profiles: list[tuple[int, int, datetime, str]] = []  # (id, attempts, available_at, error)
    for item_id, warning in outcome.delivered.items():
        if warning is not None and item_id not in outcome.release:
            settled.append(("delivered", now_param, now_param, by_id[item_id].attempts, warning, item_id))
    for item_id, reason in outcome.dead.items():
        settled.append(("dead", None, now_param, by_id[item_id].attempts + 1, reason, item_id))
    for item_id, (reason, retry_after) in outcome.retry.items():
        attempts = by_id[item_id].attempts + 1
        if attempts >= max_attempts:
            settled.append(
                ("dead", None, now_param, attempts, f"gave up after {attempts} attempts: {reason}", item_id)
            )
        else:
            delay = max(backoff_s(attempts, base, cap), retry_after or 0.0)
            later = now + timedelta(seconds=delay)
            if by_id[item_id].kind == "profile":
                requeued_profiles.append((item_id, attempts, later, reason))
            else:
                settled.append(("pending", None, db.param_datetime(later), attempts, reason, item_id))
    shadows = [
        (integration.id, member, db.param_json(attrs), now_param) for member, attrs in outcome.shadows.items()
    ]
    with ctx.uow() as uow:
        conn = uow.conn
        mine = and_(outbox.c.claimed_by == worker_id, outbox.c.status == "in_flight")
        if delivered:
            conn.execute(
                update(outbox)
                .where(db.in_list(outbox.c.id, "ids"), mine)
                .values(status="delivered", delivered_at=now, lease_until=None, last_error=None),
                {"ids": db.list_param(delivered)},
            )
        released_profiles = [i for i in outcome.release if by_id[i].kind == "profile"]
        if outcome.release:
            others = sorted(i for i in outcome.release if by_id[i].kind != "profile")
            conn.execute(
                update(outbox)
                .where(db.in_list(outbox.c.id, "ids"), mine)
                .values(status="pending", lease_until=None, claimed_by=None),
                {"ids": db.list_param(others)},
            )
        for item_id in released_profiles:
            _requeue_profile(
                conn, item_id, worker_id, attempts=by_id[item_id].attempts, available_at=now, last_error=None
            )
        for item_id, attempts, available_at, error in requeued_profiles:
            _requeue_profile(
                conn, item_id, worker_id, attempts=attempts, available_at=available_at, last_error=error
            )
        if settled:
            db.bulk_update(
                conn,
                outbox,
                ("status", "delivered_at", "available_at", "attempts", "last_error"),
                ("id", "claimed_by"),
                [(*row[:-1], row[-1], worker_id) for row in settled],
            )
            conn.execute(
                update(outbox)
                .where(
                    db.in_list(outbox.c.id, "ids"),
                    outbox.c.claimed_by == worker_id,
                    outbox.c.status != "in_flight",
                )
                .values(lease_until=None),
                {"ids": db.list_param([row[-1] for row in settled])},
            )
        if outcome.requests or outcome.attributes_full:
            added = (outcome.requests, outcome.objects, outcome.attributes_sent, outcome.attributes_full)
            bumped = conn.execute(
                update(delivery_counters)
                .where(delivery_counters.c.integration_id == integration.id)
                .values(
                    requests=delivery_counters.c.requests + added[0],
                    objects=delivery_counters.c.objects + added[1],
                    attributes_sent=delivery_counters.c.attributes_sent + added[2],
                    attributes_full=delivery_counters.c.attributes_full + added[3],
                )
            )
            if bumped.rowcount == 0:
                db.bulk_insert(
                    conn,
                    delivery_counters,
                    ("integration_id", "requests", "objects", "attributes_sent", "attributes_full"),
                    [(integration.id, *added)],
                )
        db.bulk_upsert(
            conn,
            sync_shadows,
            ("integration_id", "member_id", "attributes", "updated_at"),
            ("integration_id", "member_id"),
            shadows,
        )
        if outcome.paused is not None:
            set_status(uow, integration.id, "paused", outcome.paused)
        uow.commit()
    metrics.count_outcome(ctx, integration, outcome, max_attempts, by_id)
    if outcome.paused is not None:
        log.warning("delivery to %s %s paused: %s", integration.kind, integration.id, outcome.paused)


def _requeue_profile(
    conn: Any, item_id: int, worker_id: str, *, attempts: int, available_at: Any, last_error: str | None
) -> None:
    """Put a profile item back in the queue, unless a newer one for the member already waits there.

    At most one profile item per member may wait (uq_outbox_pending_profile). If one does, it will send
    the member's latest values anyway, so this one is dropped; the waiting one inherits the backoff.
    """
    waiting = outbox.alias("waiting")
    newer = (
        select(waiting.c.id)
        .where(
            waiting.c.integration_id == outbox.c.integration_id,
            waiting.c.member_id == outbox.c.member_id,
            waiting.c.kind == "profile",
            waiting.c.status == "pending",
        )
        .exists()
    )
    mine = and_(outbox.c.id == item_id, outbox.c.claimed_by == worker_id, outbox.c.status == "in_flight")
    moved = conn.execute(
        update(outbox)
        .where(mine, ~newer)
        .values(
            status="pending",
            attempts=attempts,
            available_at=available_at,
            last_error=last_error,
            lease_until=None,
            claimed_by=None,
        )
    ).rowcount
    if moved:
        return
    row = conn.execute(select(outbox.c.integration_id, outbox.c.member_id).where(mine)).first()
    if row is None:
        return  # the lease ran out and another worker holds it now
    conn.execute(
        update(outbox)
        .where(
            outbox.c.integration_id == row.integration_id,
            outbox.c.member_id == row.member_id,
            outbox.c.kind == "profile",
            outbox.c.status == "pending",
            outbox.c.available_at < available_at,
        )
        .values(available_at=available_at)
    )
    conn.execute(outbox.delete().where(mine))


def deliver(
    ctx: AppContext,
    integration: Integration,
    items: list[Item],
    client: httpx.Client,
    worker_id: str,
    *,
    deadline: float | None = None,
    strict: bool = False,
) -> Outcome:
    """Send claimed items and record the results. No request starts after `deadline`; with `strict`,
    none may still be running after it either (each request's timeout is the time left)."""
    outcome = Outcome()
    if not items:
        return outcome
    connector = integration.connector(vault(ctx))
    step_s = client.timeout.read or 15.0
    lease = Lease(ctx, worker_id, [item.id for item in items], step_s=step_s)
    try:
        units, shadows = build_units(ctx, integration, connector, items, outcome)
        sender = Sender(
            ctx, integration, connector, client, outcome, shadows, deadline, strict=strict, lease=lease
        )
        sender.send_all(units)
        lease.keep([item.id for item in items])  # recording must not come after someone else's claim
    finally:
        record(ctx, integration, items, outcome, worker_id)
    return outcome


# -- the loop --------------------------------------------------------------------------------------------


class DeliveryWorker:
    """Delivers due items for every connected integration; `run_once` is one pass, `run` loops."""

    def __init__(self, ctx: AppContext, *, worker_id: str | None = None, timeout_s: float = 15.0) -> None:
        self.ctx = ctx
        self.worker_id = worker_id or default_worker_id()
        self.timeout_s = timeout_s
        self.client = httpx.Client(timeout=timeout_s, limits=httpx.Limits(max_keepalive_connections=8))
        self._stop = threading.Event()

    def close(self) -> None:
        self.client.close()

    def active(self) -> list[Integration]:
        with self.ctx.uow(write=False) as uow:
            return [i for i in cache(self.ctx).get(uow) if i.status == "connected"]

    def run_once(self, *, force: bool = False) -> int:
        """One pass over the destinations; returns how many items it settled."""
        handled = 0
        for integration in self.active():
            try:
                connector_batch = integration.connector(vault(self.ctx)).max_objects
            except SecretsUnreadable as exc:
                # Another instance key than the one the credentials were sealed with: nothing can be
                # sent until the integration is reconnected, so say so instead of failing every pass.
                reason = exc.message
                transactions.run(
                    self.ctx,
                    partial(set_status, integration_id=integration.id, status="paused", error=reason),
                )
                log.warning("delivery to %s %s paused: %s", integration.kind, integration.id, reason)
                continue
            if not force and not ready(self.ctx, integration, connector_batch):
                continue
            items = claim(self.ctx, integration.id, self.worker_id)
            if items:
                deliver(self.ctx, integration, items, self.client, self.worker_id)
                handled += len(items)
        return handled

    def drain(self, *, timeout_s: float = 60.0) -> None:
        """Deliver until nothing is due (tests and the demo); items waiting on a backoff stay queued."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.run_once(force=True) == 0:
                return
        raise TimeoutError("the outbox did not drain in time")

    def run(self, idle_s: float = 0.2) -> None:
        while not self._stop.is_set():
            try:
                handled = self.run_once()
            except Exception:
                log.exception("delivery pass failed; retrying")
                handled = 0
            if handled == 0:
                self._stop.wait(idle_s)

    def stop(self) -> None:
        self._stop.set()


def deliver_members_now(ctx: AppContext, pushes: dict[str, set[str]]) -> None:
    """Push these members' items right away (Bloomreach with asynchronous sync off), within a bound.

    The whole push, connecting and waiting included, takes at most the integration's
    `sync_push_timeout_s`; whatever does not go through in time, or fails, stays in the queue for
    the worker.
    """
    started = time.monotonic()
    worker_id = default_worker_id() + ":now"
    try:
        with ctx.uow(write=False) as uow:
            by_id = {i.id: i for i in load_integrations(uow)}
        for integration_id, members in pushes.items():
            integration = by_id.get(integration_id)
            if integration is None or integration.status != "connected":
                continue
            budget = float(integration.settings["sync_push_timeout_s"])
            remaining = budget - (time.monotonic() - started)
            if remaining <= 0:
                continue
            with httpx.Client(timeout=remaining) as client:
                items = claim(ctx, integration_id, worker_id, members=members)
                deliver(ctx, integration, items, client, worker_id, deadline=started + budget, strict=True)
    except Exception:
        log.exception("immediate delivery failed; the items stay queued")
