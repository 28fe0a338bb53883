"""Per-source-IP request limit in fixed one-second windows, as the Tracking API applies (100 rps default)."""

from __future__ import annotations

import math
from collections.abc import Callable


class FixedWindowLimiter:
    """Counts requests per key in the current whole second; not thread-safe (the sandbox holds a lock)."""

    _PRUNE_ABOVE = 10_000

    def __init__(self, limit_per_s: int | None, clock: Callable[[], float]):
        self.limit = limit_per_s
        self._clock = clock
        self._windows: dict[str, tuple[int, int]] = {}  # key -> (window second, requests in it)

    def hit(self, key: str) -> bool:
        """Count one request; False when it is over the limit (and must be refused with 429)."""
        if self.limit is None:
            return True
        window = math.floor(self._clock())
        start, count = self._windows.get(key, (window, 0))
        if start != window:
            count = 0
        count += 1
        self._windows[key] = (window, count)
        if len(self._windows) > self._PRUNE_ABOVE:
            self._windows = {k: v for k, v in self._windows.items() if v[0] == window}
        return count <= self.limit

    def reset(self) -> None:
        self._windows.clear()
