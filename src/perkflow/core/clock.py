"""The source of "now": always timezone-aware UTC, and controllable for the demo and tests."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class ManualClock:
    """A clock that only moves when told to; the demo replays a scripted day with it."""

    def __init__(self, start: datetime) -> None:
        self._now = ensure_utc(start)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def set(self, moment: datetime) -> None:
        with self._lock:
            self._now = ensure_utc(moment)

    def advance(self, delta: timedelta) -> datetime:
        with self._lock:
            self._now += delta
            return self._now


def ensure_utc(moment: datetime) -> datetime:
    """Reject naive datetimes and normalise aware ones to UTC."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("datetime must be timezone-aware")
    return moment.astimezone(UTC)


def to_epoch(moment: datetime) -> int:
    return int(moment.timestamp())


def from_epoch(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def isoformat_z(moment: datetime) -> str:
    """ISO-8601 in UTC with a trailing Z, the form every API response uses."""
    text = moment.astimezone(UTC).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


class TimeFormats:
    """Memoised conversions for hot paths: a batch repeats the same few instants many times."""

    __slots__ = ("_epochs", "_isos")

    def __init__(self) -> None:
        self._epochs: dict[datetime, int] = {}
        self._isos: dict[int, str] = {}

    def epoch(self, moment: datetime) -> int:
        found = self._epochs.get(moment)
        if found is None:
            found = self._epochs[moment] = int(moment.timestamp())
        return found

    def iso(self, epoch: int) -> str:
        found = self._isos.get(epoch)
        if found is None:
            found = self._isos[epoch] = isoformat_z(from_epoch(epoch))
        return found
