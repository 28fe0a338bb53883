"""Fault injection for the fake: scripted faults first, then random errors, dropped connections, delays."""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Fault:
    status: int | None = None  # answer with this status and apply nothing
    drop: bool = False  # close the connection mid-response and apply nothing
    slow_ms: int = 0  # wait, then go on (with the status/drop above, or normally)

    @property
    def label(self) -> str:
        parts = []
        if self.slow_ms:
            parts.append(f"slow:{self.slow_ms}")
        if self.drop:
            parts.append("drop")
        if self.status is not None:
            parts.append(str(self.status))
        return "+".join(parts)

    @property
    def blocks(self) -> bool:
        """Whether the request is refused; a merely slow request is still processed."""
        return self.drop or self.status is not None


PASS = "ok"  # noqa: S105 - "let the request pass", not a password


def parse_fault(entry: Any) -> Fault | None:
    """A queue entry: an HTTP status (int or digits), "drop", "slow:<ms>", or "ok"/None for no fault."""
    if entry is None or entry == PASS:
        return None
    if isinstance(entry, str) and entry.strip().isdigit():
        entry = int(entry)
    if isinstance(entry, int) and not isinstance(entry, bool):
        if not 200 <= entry <= 599:
            raise ValueError(f"fault status must be between 200 and 599, not {entry}")
        return Fault(status=entry)
    if isinstance(entry, str):
        text = entry.strip().lower()
        if text == "drop":
            return Fault(drop=True)
        if text.startswith("slow:"):
            ms = text.removeprefix("slow:")
            if ms.isdigit():
                return Fault(slow_ms=int(ms))
    raise ValueError(f"unknown fault {entry!r}: use a status, 'drop', 'slow:<ms>' or 'ok'")


def _rate(name: str, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be between 0 and 1")
    return float(value)


class FaultInjector:
    """Decides the fault of each incoming tracking request; not thread-safe (the sandbox holds a lock)."""

    def __init__(self) -> None:
        self.configure()

    def configure(
        self,
        queue: Iterable[Any] = (),
        error_rate: float = 0.0,
        slow_ms: int = 0,
        drop_rate: float = 0.0,
        seed: int | None = None,
    ) -> None:
        entries = list(queue)
        parsed = deque(parse_fault(entry) for entry in entries)
        if slow_ms < 0:
            raise ValueError("slow_ms must not be negative")
        self._entries = deque(entries)
        self._queue = parsed
        self.error_rate = _rate("error_rate", error_rate)
        self.drop_rate = _rate("drop_rate", drop_rate)
        self.slow_ms = int(slow_ms)
        self.seed = seed
        self._rng = random.Random(seed)

    def next(self) -> Fault | None:
        if self._queue:
            self._entries.popleft()
            return self._queue.popleft()
        status = None
        drop = False
        if self.error_rate and self._rng.random() < self.error_rate:
            status = self._rng.choice((500, 503))
        elif self.drop_rate and self._rng.random() < self.drop_rate:
            drop = True
        if status is None and not drop and not self.slow_ms:
            return None
        return Fault(status=status, drop=drop, slow_ms=self.slow_ms)

    def describe(self) -> dict[str, Any]:
        return {
            "queue": list(self._entries),
            "error_rate": self.error_rate,
            "slow_ms": self.slow_ms,
            "drop_rate": self.drop_rate,
            "seed": self.seed,
        }
