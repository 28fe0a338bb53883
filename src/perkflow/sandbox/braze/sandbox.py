"""The fake Braze's state behind one lock: profiles, events, rate windows, faults, stats and a request log."""

from __future__ import annotations

import copy
import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from perkflow.sandbox.braze.attributes import AttributeTypes
from perkflow.sandbox.braze.config import BrazeSandboxConfig
from perkflow.sandbox.braze.faults import NO_FAULT, Fault, FaultPlan
from perkflow.sandbox.braze.profiles import Profile, ProfileStore
from perkflow.sandbox.braze.ratelimit import FixedWindowLimiter, RateWindow
from perkflow.sandbox.braze.times import epoch_to_datetime, format_time
from perkflow.sandbox.braze.track import TrackOutcome, TrackRequest

EXPORT_FIELDS_ALWAYS = ("external_id",)


@dataclass
class SandboxStats:
    requests: int = 0
    accepted_requests: int = 0
    rejected_requests: int = 0
    rate_limited: int = 0
    injected_faults: int = 0
    server_errors: int = 0
    dropped: int = 0
    slowed: int = 0
    objects: int = 0
    attribute_objects: int = 0
    event_objects: int = 0
    purchase_objects: int = 0
    skipped_objects: int = 0
    data_points: int = 0
    item_errors: int = 0
    export_requests: int = 0


@dataclass(frozen=True)
class RequestRecord:
    """One request as GET /sandbox/requests lists it; `status` is None when the connection was dropped."""

    time: str
    method: str
    path: str
    status: int | None
    outcome: str
    attribute_objects: int = 0
    event_objects: int = 0
    purchase_objects: int = 0
    data_points: int = 0
    item_errors: int = 0
    fault: str | None = None
    duration_ms: float = 0.0


class ExportRejected(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BrazeSandbox:
    """A stateful, thread-safe fake of Braze's user-data REST API; `create_app` serves it over HTTP.

    Every read-back returns copies, so tests can inspect state while uvicorn serves from another thread.
    """

    def __init__(self, config: BrazeSandboxConfig | None = None) -> None:
        self.config = config or BrazeSandboxConfig()
        self._lock = threading.RLock()
        self._limiter = (
            FixedWindowLimiter(self.config.rate_limit, self.config.rate_window_s, self.config.clock)
            if self.config.rate_limit is not None
            else None
        )
        self._clear()

    def _clear(self) -> None:
        self._store = ProfileStore()
        self._types = AttributeTypes(dict(self.config.forced_types))
        self._events: list[dict[str, Any]] = []
        self._stats = SandboxStats()
        self._faults = FaultPlan()
        self._requests: deque[RequestRecord] = deque(maxlen=self.config.request_log_size)
        if self._limiter is not None:
            self._limiter.reset()

    # -- read-back -------------------------------------------------------------------------------

    def user(self, external_id: str) -> dict[str, Any] | None:
        """The profile with this external_id: external_id, braze_id, user_aliases, attributes (custom),
        standard, events (arrival order) and purchases; None if Braze has no such user."""
        with self._lock:
            profile = self._store.by_external_id(external_id)
            return profile.snapshot() if profile is not None else None

    def user_by_alias(self, alias_name: str, alias_label: str) -> dict[str, Any] | None:
        with self._lock:
            profile = self._store.by_alias((alias_name, alias_label))
            return profile.snapshot() if profile is not None else None

    def users(self) -> list[dict[str, Any]]:
        with self._lock:
            return [profile.snapshot() for profile in self._store.by_braze_id.values()]

    def events(self, external_id: str | None = None) -> list[dict[str, Any]]:
        """Every event received, in arrival order, each with its external_id and braze_id."""
        with self._lock:
            return [
                copy.deepcopy(event)
                for event in self._events
                if external_id is None or event["external_id"] == external_id
            ]

    def attribute_types(self) -> dict[str, str]:
        """The type each custom attribute took from its first value (or was forced to)."""
        with self._lock:
            return self._types.snapshot()

    def stats(self) -> dict[str, Any]:
        """Counters since the last reset.

        requests: POST /users/track calls (with or without the trailing slash), whatever the answer.
        accepted_requests: those whose data was applied (201, an injected 202, or drop_after_apply).
        rejected_requests: 4xx other than 429; rate_limited: 429s from the limiter itself.
        injected_faults: injected statuses and drops; server_errors: injected 5xx; dropped; slowed.
        objects / attribute_objects / event_objects / purchase_objects: objects received in accepted
        requests, valid or not. skipped_objects: valid objects whose user did not exist and could not be
        created (_update_existing_only, unknown braze_id). item_errors: entries of `errors` returned.

        data_points, metered on applied objects only (Braze bills at face value, changed or not):
          - each custom attribute key applied: 1 for a scalar set, a null (removal), an `inc`, or a
            whole-array set; `{"add": [...], "remove": [...]}` costs 1 per value listed in either;
          - a nested object costs 1 per leaf key sent (a 7-key object = 7; nested objects are walked,
            an array or `$time` counts as one leaf; an empty object 1), the same with `_merge_objects`;
          - an array of objects costs the leaves of every object when set whole (at least 1),
            and with operators: 1 per `$remove` entry + the leaves of each `$update` `$new_object`
            + the leaves of each `$add` object;
          - standard fields first_name, last_name, email, phone, gender, home_city, time_zone, dob,
            country and language cost 1 each (null included); subscription states, push tokens,
            subscription groups and other standard fields are free;
          - identifiers, `_update_existing_only`, `_merge_objects` and unknown top-level keys are free;
          - each event costs 1 (event properties are free: segmentation on them is off by default);
          - each purchase costs its quantity;
          - values refused with an item error and nested updates dropped because of a bad nested
            value cost nothing, nor does anything in a rejected request.
        """
        with self._lock:
            stats: dict[str, Any] = asdict(self._stats)
            stats["users"] = len(self._store)
            stats["events"] = len(self._events)
            return stats

    def recent_requests(self, limit: int = 50) -> list[dict[str, Any]]:
        with self._lock:
            records = list(self._requests)[-limit:] if limit > 0 else []
            return [asdict(record) for record in reversed(records)]

    def faults(self) -> dict[str, Any]:
        with self._lock:
            return self._faults.describe()

    # -- control ---------------------------------------------------------------------------------

    def set_faults(
        self,
        queue: Iterable[int | str] | None = None,
        error_rate: float = 0.0,
        slow_ms: int = 0,
        drop_rate: float = 0.0,
        retry_after_s: int = 1,
        seed: int | None = None,
    ) -> None:
        """Replace the fault plan. Queue entries apply to the next /users/track requests, one each:
        an HTTP status (answered without applying data; 2xx statuses apply it and answer that status),
        "drop", "drop_after_apply" or "slow:<ms>". Then random 5xx at `error_rate`, drops at
        `drop_rate`, and `slow_ms` of latency on every request."""
        plan = FaultPlan(
            queue or (),
            error_rate=error_rate,
            slow_ms=slow_ms,
            drop_rate=drop_rate,
            retry_after_s=retry_after_s,
            seed=seed,
        )
        with self._lock:
            self._faults = plan

    def reset(self) -> None:
        """Forget users, events, attribute types, stats, faults, rate windows and the request log."""
        with self._lock:
            self._clear()

    # -- used by the HTTP layer ------------------------------------------------------------------

    def authorize(self, authorization: str | None, permission: str) -> int | None:
        """None when the Bearer key may use `permission`; otherwise the status to answer (401 or 403)."""
        scheme, _, key = (authorization or "").strip().partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            return 401
        permissions = self.config.api_keys.get(key.strip())
        if permissions is None:
            return 401
        return None if permission in permissions else 403

    def next_fault(self) -> Fault:
        with self._lock:
            fault = self._faults.next_fault()
            if fault is NO_FAULT:
                return fault
            if fault.status is not None or fault.drop or fault.drop_after_apply:
                self._stats.injected_faults += 1
            self._stats.server_errors += fault.status is not None and fault.status >= 500
            self._stats.dropped += fault.drop or fault.drop_after_apply
            self._stats.slowed += fault.delay_ms > 0
            return fault

    @property
    def retry_after_s(self) -> int:
        with self._lock:
            return self._faults.retry_after_s

    def admit_track(self) -> RateWindow | None:
        """Count a /users/track request against the rate window; None when limiting is off."""
        with self._lock:
            return self._limiter.acquire() if self._limiter is not None else None

    def rate_window(self) -> RateWindow | None:
        with self._lock:
            return self._limiter.peek() if self._limiter is not None else None

    def now_epoch(self) -> float:
        return self.config.clock()

    def track(self, payload: Any) -> TrackOutcome:
        """Validate and apply one /users/track body atomically with respect to readers."""
        with self._lock:
            now = epoch_to_datetime(self.config.clock())
            outcome = TrackRequest(self._store, self._types, self.config, now, self._events).process(payload)
            self._stats.item_errors += len(outcome.errors)
            if outcome.status == 201:
                self._stats.objects += outcome.objects
                self._stats.attribute_objects += outcome.received["attributes"]
                self._stats.event_objects += outcome.received["events"]
                self._stats.purchase_objects += outcome.received["purchases"]
                self._stats.skipped_objects += outcome.skipped_objects
                self._stats.data_points += outcome.data_points
            return outcome

    def record_request(self, record: RequestRecord) -> None:
        with self._lock:
            self._requests.append(record)
            if record.path.startswith("/users/export"):
                self._stats.export_requests += 1
                return
            self._stats.requests += 1
            if record.outcome in ("accepted", "accepted_then_dropped"):
                self._stats.accepted_requests += 1
            elif record.outcome == "rejected":
                self._stats.rejected_requests += 1
            elif record.outcome == "rate_limited":
                self._stats.rate_limited += 1

    def timestamp(self) -> str:
        return format_time(epoch_to_datetime(self.config.clock()))

    def export_ids(self, payload: Any) -> dict[str, Any]:
        """The /users/export/ids answer for a request body, or ExportRejected (a 400)."""
        if not isinstance(payload, dict):
            raise ExportRejected("Request body must be a JSON object")
        external_ids = payload.get("external_ids") or []
        aliases = payload.get("user_aliases") or []
        fields = payload.get("fields_to_export")
        if not isinstance(external_ids, list) or not all(isinstance(i, str) for i in external_ids):
            raise ExportRejected("'external_ids' must be an array of strings")
        if not isinstance(aliases, list) or not all(_is_alias(alias) for alias in aliases):
            raise ExportRejected("'user_aliases' must be an array of {alias_name, alias_label} objects")
        if fields is not None and (
            not isinstance(fields, list) or not all(isinstance(f, str) for f in fields)
        ):
            raise ExportRejected("'fields_to_export' must be an array of strings")
        if len(external_ids) + len(aliases) > self.config.export_max_ids:
            raise ExportRejected(f"At most {self.config.export_max_ids} users can be exported per request")
        braze_id, email = payload.get("braze_id"), payload.get("email_address")
        if not external_ids and not aliases and not isinstance(braze_id, str) and not isinstance(email, str):
            raise ExportRejected("Provide 'external_ids', 'user_aliases', 'braze_id' or 'email_address'")
        with self._lock:
            found: list[Profile] = []
            invalid: list[str] = []
            for external_id in external_ids:
                profile = self._store.by_external_id(external_id)
                if profile is None:
                    invalid.append(external_id)
                else:
                    found.append(profile)
            for alias in aliases:
                profile = self._store.by_alias((alias["alias_name"], alias["alias_label"]))
                if profile is not None:
                    found.append(profile)
            if isinstance(braze_id, str) and (profile := self._store.by_braze_id.get(braze_id)) is not None:
                found.append(profile)
            if isinstance(email, str) and (profile := self._store.by_email(email)) is not None:
                found.append(profile)
            users = [_exported(profile, fields) for profile in found]
        return {"users": users, "invalid_user_ids": invalid, "message": "success"}


def _is_alias(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and isinstance(value.get("alias_name"), str)
        and isinstance(value.get("alias_label"), str)
    )


def _summaries(records: list[dict[str, Any]], name_key: str) -> list[dict[str, Any]]:
    """Braze's export summarises events and purchases per name: count and first/last times."""
    summaries: dict[str, dict[str, Any]] = {}
    for record in records:
        name = record[name_key]
        summary = summaries.setdefault(
            name, {"name": name, "count": 0, "first": record["time"], "last": record["time"]}
        )
        summary["count"] += record.get("quantity", 1)
        summary["first"] = min(summary["first"], record["time"])
        summary["last"] = max(summary["last"], record["time"])
    return list(summaries.values())


def _exported(profile: Profile, fields: list[str] | None) -> dict[str, Any]:
    exported: dict[str, Any] = {
        "external_id": profile.external_id,
        "braze_id": profile.braze_id,
        "user_aliases": [{"alias_name": name, "alias_label": label} for name, label in profile.aliases],
        **copy.deepcopy(profile.standard),
        "custom_attributes": copy.deepcopy(profile.custom),
        "custom_events": _summaries(profile.events, "name"),
        "purchases": _summaries(profile.purchases, "product_id"),
    }
    if fields is None:
        return exported
    wanted = set(fields) | set(EXPORT_FIELDS_ALWAYS)
    return {key: value for key, value in exported.items() if key in wanted}
