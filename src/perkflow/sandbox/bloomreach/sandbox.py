"""The fake Bloomreach project: customer state, command execution, stats, faults and rate limits."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from perkflow.sandbox.bloomreach.auth import AuthFailure, check_auth
from perkflow.sandbox.bloomreach.commands import (
    MSG_BAD_COMMAND,
    MSG_INVALID_ID,
    Command,
    CommandError,
    CustomerUpdate,
    EventTrack,
    SystemTime,
    parse_command,
    valid_ids,
)
from perkflow.sandbox.bloomreach.config import BloomreachSandboxConfig
from perkflow.sandbox.bloomreach.faults import Fault, FaultInjector
from perkflow.sandbox.bloomreach.ratelimit import FixedWindowLimiter
from perkflow.sandbox.bloomreach.store import CustomerStore, event_dict, profile_dict

STAT_KEYS = (
    "requests",
    "accepted_requests",
    "rate_limited",
    "server_errors",
    "client_errors",
    "dropped",
    "faults_injected",
    "commands",
    "customer_updates",
    "events",
    "command_errors",
)
REQUEST_LOG_SIZE = 1000


@dataclass
class RequestRecord:
    """One tracking request, filled in as it goes through the gate and the route."""

    method: str
    path: str
    client: str
    time: float
    fault: Fault | None = None
    rate_limited: bool = False
    status: int | None = None  # None when the connection was dropped
    commands: int = 0
    failed_commands: int = 0
    accepted: bool = False

    def count(self, results: list[dict[str, Any]]) -> None:
        self.commands += len(results)
        self.failed_commands += sum(1 for r in results if not r.get("success"))

    def as_dict(self) -> dict[str, Any]:
        return {
            "time": self.time,
            "method": self.method,
            "path": self.path,
            "client": self.client,
            "status": self.status,
            "fault": self.fault.label if self.fault else None,
            "rate_limited": self.rate_limited,
            "commands": self.commands,
            "failed_commands": self.failed_commands,
            "accepted": self.accepted,
        }


class BloomreachSandbox:
    """The project behind the HTTP layer; one lock guards it because uvicorn serves it from a background
    thread while tests read the state from theirs. Read-back methods return copies."""

    def __init__(
        self,
        config: BloomreachSandboxConfig | None = None,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ):
        """`clock` gives Unix seconds ("now" for events and system/time); `monotonic` drives the rate-limit
        windows and the visibility delay, so tests can freeze it."""
        self.config = config or BloomreachSandboxConfig()
        self._clock = clock
        self._monotonic = monotonic
        self._lock = threading.RLock()
        self._faults = FaultInjector()
        self._limiter = FixedWindowLimiter(self.config.rate_limit_per_s, monotonic)
        self._init_state()

    def _init_state(self) -> None:
        self._store = CustomerStore(self.config.id_types, max_soft_ids=self.config.max_soft_ids)
        self._stats: Counter[str] = Counter()
        self._statuses: Counter[int] = Counter()
        self._log: deque[RequestRecord] = deque(maxlen=REQUEST_LOG_SIZE)
        self._pending: deque[tuple[float, Command, float]] = deque()
        self._shuffle_rng = random.Random(self.config.seed)

    def now(self) -> float:
        return self._clock()

    # -- control ------------------------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget customers, stats, the request log, pending writes, faults and rate-limit windows."""
        with self._lock:
            self._init_state()
            self._faults.configure()
            self._limiter.reset()

    def set_faults(
        self,
        queue: Iterable[Any] | None = None,
        error_rate: float = 0.0,
        slow_ms: int = 0,
        drop_rate: float = 0.0,
        seed: int | None = None,
    ) -> None:
        """Replace the fault plan: `queue` entries hit the next requests one each, then random faults."""
        with self._lock:
            self._faults.configure(queue or (), error_rate, slow_ms, drop_rate, seed)

    def faults(self) -> dict[str, Any]:
        with self._lock:
            return self._faults.describe()

    def flush(self) -> None:
        """Apply writes still waiting for `visibility_delay_ms`."""
        with self._lock:
            while self._pending:
                _, command, now = self._pending.popleft()
                self._write(command, now)

    # -- request lifecycle (called by the HTTP layer) -----------------------------------------------------

    def authenticate(
        self, authorization: str | None, access_token: str | None = None, *, allow_public: bool = True
    ) -> AuthFailure | None:
        return check_auth(self.config, authorization, access_token, allow_public=allow_public)

    def begin_request(self, method: str, path: str, client: str) -> RequestRecord:
        """Count an incoming tracking request and decide its fault and its rate-limit verdict."""
        with self._lock:
            record = RequestRecord(method=method, path=path, client=client, time=self.now())
            self._stats["requests"] += 1
            record.fault = self._faults.next()
            allowed = self._limiter.hit(client)
            if record.fault is not None:
                self._stats["faults_injected"] += 1
            if not allowed and not (record.fault and record.fault.blocks):
                record.rate_limited = True
                self._stats["rate_limited"] += 1
            return record

    def finish_request(self, record: RequestRecord) -> None:
        with self._lock:
            if record.status is None:
                self._stats["dropped"] += 1
            else:
                self._statuses[record.status] += 1
                if record.status >= 500:
                    self._stats["server_errors"] += 1
                elif record.status >= 400:
                    self._stats["client_errors"] += 1
            if record.accepted:
                self._stats["accepted_requests"] += 1
            self._log.append(record)

    # -- tracking -----------------------------------------------------------------------------------------

    def run_single(self, name: str, data: Any) -> dict[str, Any]:
        """One command from a single route; the result is a batch-style result dict."""
        return self.run_batch([{"name": name, "data": data}])[0]

    def refuse_command(self, message: str) -> dict[str, Any]:
        """Count a command the HTTP layer refused before parsing (e.g. an oversized body) and answer it."""
        with self._lock:
            return self._execute(CommandError(message), self.now())

    def run_batch(self, entries: list[Any]) -> list[dict[str, Any]]:
        """Validate and apply batch commands; results come back in input order whatever the apply order."""
        now = self.now()
        parsed: list[Command | CommandError] = []
        for entry in entries:
            if not isinstance(entry, dict):
                parsed.append(CommandError(MSG_BAD_COMMAND))
                continue
            try:
                parsed.append(parse_command(entry.get("name"), entry.get("data"), self.config, now=now))
            except CommandError as exc:
                parsed.append(exc)
        order = list(range(len(parsed)))
        results: list[dict[str, Any]] = [{} for _ in parsed]
        with self._lock:
            # Bloomreach does not execute batch commands in array order; clients must rely on timestamps.
            if self.config.shuffle_batch:
                self._shuffle_rng.shuffle(order)
            self._apply_due()
            for index in order:
                results[index] = self._execute(parsed[index], now)
        for entry, result in zip(entries, results, strict=True):
            if isinstance(entry, dict) and "command_id" in entry:
                result["command_id"] = entry["command_id"]
        return results

    def _execute(self, command: Command | CommandError, now: float) -> dict[str, Any]:
        self._stats["commands"] += 1
        if isinstance(command, CommandError):
            self._stats["command_errors"] += 1
            return {"success": False, "errors": [command.message]}
        if isinstance(command, SystemTime):
            return {"success": True, "time": self.now()}
        if isinstance(command, CustomerUpdate):
            self._stats["customer_updates"] += 1
        else:
            self._stats["events"] += 1
        if self.config.visibility_delay_ms:
            due = self._monotonic() + self.config.visibility_delay_ms / 1000
            self._pending.append((due, command, now))
        else:
            self._write(command, now)
        return {"success": True}

    def _apply_due(self) -> None:
        current = self._monotonic()
        while self._pending and self._pending[0][0] <= current:
            _, command, now = self._pending.popleft()
            self._write(command, now)

    def _write(self, command: Command, now: float) -> None:
        if isinstance(command, CustomerUpdate):
            self._store.update_properties(command.ids, command.properties, command.update_timestamp, now)
        elif isinstance(command, EventTrack):
            self._store.add_event(command.ids, command.event_type, command.timestamp, command.properties, now)

    # -- read-back ----------------------------------------------------------------------------------------

    def customer(self, hard_id_value: str, id_name: str = "registered") -> dict[str, Any] | None:
        """The profile holding this id (any configured id name works): ids, properties, events."""
        with self._lock:
            self._apply_due()
            profile = self._store.find(id_name, hard_id_value)
            return None if profile is None else profile_dict(profile)

    def customers(self) -> list[dict[str, Any]]:
        with self._lock:
            self._apply_due()
            return [profile_dict(p) for p in self._store.profiles()]

    def events(self, event_type: str | None = None) -> list[dict[str, Any]]:
        """All events in arrival order, each with the ids of the customer holding it now."""
        with self._lock:
            self._apply_due()
            return [
                {"ids": profile.ids(), **event_dict(event)}
                for profile, event in self._store.events()
                if event_type is None or event.event_type == event_type
            ]

    def export_one(self, customer_ids: Any) -> dict[str, Any] | None:
        """The body of Bloomreach's `customers/export-one`; None when no customer has these ids."""
        ids = valid_ids(customer_ids, self.config.id_types)
        if not ids:
            raise CommandError(MSG_INVALID_ID)
        with self._lock:
            self._apply_due()
            profile = self._store.find_any(ids)
            if profile is None:
                return None
            data = profile_dict(profile)
        events = [
            {"type": e["event_type"], "timestamp": e["timestamp"], "properties": e["properties"]}
            for e in data["events"]
        ]
        return {"success": True, "ids": data["ids"], "properties": data["properties"], "events": events}

    def stats(self) -> dict[str, Any]:
        with self._lock:
            self._apply_due()
            stats: dict[str, Any] = {key: self._stats[key] for key in STAT_KEYS}
            stats["merges"] = self._store.merges
            stats["customers"] = len(self._store.profiles())
            stats["pending_writes"] = len(self._pending)
            stats["responses_by_status"] = {str(k): v for k, v in sorted(self._statuses.items())}
            return stats

    def requests(self, limit: int = 50) -> list[dict[str, Any]]:
        """The most recent tracking requests, oldest first."""
        with self._lock:
            records = list(self._log)[-limit:] if limit > 0 else []
            return [r.as_dict() for r in records]
