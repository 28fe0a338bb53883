"""Injected failures for /users/track: a queue of scripted faults, then random errors, drops and latency."""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

RANDOM_SERVER_ERRORS = (500, 502, 503, 504)
DROP = "drop"
# Apply the request, then drop the connection: the client cannot tell whether Braze got it.
DROP_AFTER_APPLY = "drop_after_apply"
SLOW_PREFIX = "slow:"
# A 429 whose only rate header is a plain Retry-After: undocumented for /users/track, but seen in front
# of Braze (proxies, gateways), so clients should honour it (contract §6).
PLAIN_RETRY_AFTER_429 = "429:retry-after"


@dataclass(frozen=True)
class Fault:
    """What to do to one request. `status` set: answer it without applying data (2xx ones excepted).

    `drop`: close the connection without a complete response. `delay_ms`: wait first, then go on.
    `plain_retry_after`: a 429 that carries only `Retry-After` instead of Braze's own rate headers.
    """

    label: str
    status: int | None = None
    drop: bool = False
    drop_after_apply: bool = False
    delay_ms: int = 0
    plain_retry_after: bool = False

    @property
    def short_circuits(self) -> bool:
        """Whether the request ends here, before auth, limits and data (as a gateway failure would)."""
        return self.drop or (self.status is not None and self.status >= 300)


NO_FAULT = Fault(label="none")


def parse_fault(entry: Any) -> Fault:
    """One queue entry: an HTTP status, "429:retry-after", "drop", "drop_after_apply" or "slow:<ms>"."""
    if entry == PLAIN_RETRY_AFTER_429:
        return Fault(label=entry, status=429, plain_retry_after=True)
    if isinstance(entry, str) and entry.isdigit():
        entry = int(entry)
    if isinstance(entry, int) and not isinstance(entry, bool):
        if not 200 <= entry <= 599:
            raise ValueError(f"fault status must be 200..599, not {entry}")
        return Fault(label=str(entry), status=entry)
    if entry == DROP:
        return Fault(label=DROP, drop=True)
    if entry == DROP_AFTER_APPLY:
        return Fault(label=DROP_AFTER_APPLY, drop_after_apply=True)
    if isinstance(entry, str) and entry.startswith(SLOW_PREFIX):
        milliseconds = entry.removeprefix(SLOW_PREFIX)
        if milliseconds.isdigit():
            return Fault(label=entry, delay_ms=int(milliseconds))
    raise ValueError(
        f"unknown fault {entry!r}: use a status code, '{PLAIN_RETRY_AFTER_429}', 'drop', 'drop_after_apply' "
        "or 'slow:<ms>'"
    )


def fault_body(status: int) -> dict[str, Any]:
    """A response body shaped like Braze's for an injected status."""
    if status == 429:
        return {"message": "Rate Limit Exceeded"}
    if status == 202:
        return {"message": "queued"}
    try:
        return {"message": HTTPStatus(status).phrase}
    except ValueError:
        return {"message": "Error"}


class FaultPlan:
    """The faults still to come; not thread-safe on its own: the sandbox calls it under its lock."""

    def __init__(
        self,
        queue: Iterable[Any] = (),
        *,
        error_rate: float = 0.0,
        slow_ms: int = 0,
        drop_rate: float = 0.0,
        retry_after_s: int = 1,
        seed: int | None = None,
    ) -> None:
        for name, rate in (("error_rate", error_rate), ("drop_rate", drop_rate)):
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
        if slow_ms < 0 or retry_after_s < 0:
            raise ValueError("slow_ms and retry_after_s must not be negative")
        self.queue: deque[Fault] = deque(parse_fault(entry) for entry in queue)
        self.error_rate = error_rate
        self.slow_ms = slow_ms
        self.drop_rate = drop_rate
        self.retry_after_s = retry_after_s
        self.seed = seed
        self._random = random.Random(seed)

    def next_fault(self) -> Fault:
        if self.queue:
            return self.queue.popleft()
        if self.error_rate and self._random.random() < self.error_rate:
            status = self._random.choice(RANDOM_SERVER_ERRORS)
            return Fault(label=f"random:{status}", status=status, delay_ms=self.slow_ms)
        if self.drop_rate and self._random.random() < self.drop_rate:
            return Fault(label=f"random:{DROP}", drop=True, delay_ms=self.slow_ms)
        if self.slow_ms:
            return Fault(label=f"{SLOW_PREFIX}{self.slow_ms}", delay_ms=self.slow_ms)
        return NO_FAULT

    def describe(self) -> dict[str, Any]:
        return {
            "queue": [int(fault.label) if fault.label.isdigit() else fault.label for fault in self.queue],
            "error_rate": self.error_rate,
            "slow_ms": self.slow_ms,
            "drop_rate": self.drop_rate,
            "retry_after_s": self.retry_after_s,
            "seed": self.seed,
        }
