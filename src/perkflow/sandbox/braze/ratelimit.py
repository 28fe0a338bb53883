"""Braze's request rate limit: fixed windows aligned on the wall clock, and the headers that report them."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class RateWindow:
    """The state of the current window as a response reports it."""

    allowed: bool
    limit: int
    remaining: int
    reset_at: float  # epoch seconds at which the window ends
    now: float

    @property
    def seconds_until_reset(self) -> int:
        return max(1, math.ceil(self.reset_at - self.now))

    def headers(self, reset_mode: str) -> dict[str, str]:
        reset = math.ceil(self.reset_at) if reset_mode == "epoch" else self.seconds_until_reset
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(reset),
        }


class FixedWindowLimiter:
    """`limit` requests per window; windows start at multiples of `window_s` since the epoch.

    Braze's windows reset on the clock (3-second buckets, clock hours on MAU plans), not as a rolling
    window, so a burst straddling a boundary may legitimately get up to twice the limit through.
    Not thread-safe on its own: the sandbox calls it under its lock.
    """

    def __init__(self, limit: int, window_s: float, clock: Callable[[], float]) -> None:
        self.limit = limit
        self.window_s = window_s
        self.clock = clock
        self._window_index: int | None = None
        self._used = 0

    def _roll(self, now: float) -> int:
        index = math.floor(now / self.window_s)
        if index != self._window_index:
            self._window_index = index
            self._used = 0
        return index

    def _state(self, allowed: bool, index: int, now: float) -> RateWindow:
        return RateWindow(
            allowed=allowed,
            limit=self.limit,
            remaining=max(0, self.limit - self._used),
            reset_at=(index + 1) * self.window_s,
            now=now,
        )

    def acquire(self) -> RateWindow:
        """Count one request against the current window, if it still has room."""
        now = self.clock()
        index = self._roll(now)
        allowed = self._used < self.limit
        if allowed:
            self._used += 1
        return self._state(allowed, index, now)

    def peek(self) -> RateWindow:
        """The current window without counting a request (for responses refused before the limiter)."""
        now = self.clock()
        return self._state(True, self._roll(now), now)

    def reset(self) -> None:
        self._window_index = None
        self._used = 0
