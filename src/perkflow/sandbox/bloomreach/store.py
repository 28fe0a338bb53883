"""Customer profiles of the fake project: id resolution, merging, soft-id LRU, per-property update times."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

MERGE_EVENT = "merge"


@dataclass
class StoredEvent:
    seq: int  # global arrival order; keeps combined histories in arrival order after a merge
    event_type: str
    timestamp: float
    properties: dict[str, Any]


@dataclass
class Profile:
    pid: int  # creation order: the lower one is the older profile, which survives a merge
    hard: dict[str, str] = field(default_factory=dict)
    soft: dict[str, dict[str, int]] = field(default_factory=dict)  # type -> value -> last-used tick
    properties: dict[str, Any] = field(default_factory=dict)
    updated: dict[str, float] = field(default_factory=dict)  # property -> update time of its stored value
    events: list[StoredEvent] = field(default_factory=list)

    def ids(self) -> dict[str, Any]:
        ids: dict[str, Any] = dict(self.hard)
        for name, values in self.soft.items():
            if values:
                ids[name] = sorted(values, key=values.__getitem__)
        return ids

    def compatible(self, hard_ids: dict[str, str]) -> bool:
        """Whether these hard ids may join the profile: never two values of one hard-id type."""
        return all(self.hard.get(name, value) == value for name, value in hard_ids.items())


def event_dict(event: StoredEvent) -> dict[str, Any]:
    return {
        "event_type": event.event_type,
        "timestamp": event.timestamp,
        "properties": copy.deepcopy(event.properties),
    }


def profile_dict(profile: Profile) -> dict[str, Any]:
    return {
        "ids": profile.ids(),
        "properties": copy.deepcopy(profile.properties),
        "events": [event_dict(e) for e in profile.events],
    }


class CustomerStore:
    """All profiles and the id -> profile index; not thread-safe (`BloomreachSandbox` holds the lock)."""

    def __init__(self, id_types: dict[str, str], *, max_soft_ids: int = 64):
        self._kinds = dict(id_types)
        self._max_soft_ids = max_soft_ids
        self._profiles: dict[int, Profile] = {}
        self._owner: dict[tuple[str, str], int] = {}  # (id name, value) -> pid; a value has one owner
        self._next_pid = 1
        self._tick = 0
        self.merges = 0

    def _next_tick(self) -> int:
        self._tick += 1
        return self._tick

    def find(self, name: str, value: str) -> Profile | None:
        pid = self._owner.get((name, value))
        return None if pid is None else self._profiles[pid]

    def find_any(self, ids: dict[str, str]) -> Profile | None:
        for name, value in ids.items():
            profile = self.find(name, value)
            if profile is not None:
                return profile
        return None

    def profiles(self) -> list[Profile]:
        return [self._profiles[pid] for pid in sorted(self._profiles)]

    def events(self) -> list[tuple[Profile, StoredEvent]]:
        pairs = [(p, e) for p in self._profiles.values() for e in p.events]
        pairs.sort(key=lambda pair: pair[1].seq)
        return pairs

    # -- writes -------------------------------------------------------------------------------------------

    def update_properties(
        self, ids: dict[str, str], properties: dict[str, Any], update_timestamp: float | None, now: float
    ) -> Profile:
        profile = self.resolve(ids, now)
        stamp = now if update_timestamp is None else update_timestamp
        for name, value in properties.items():
            stored = profile.updated.get(name)
            # Without update_timestamp the receive time is used; a tie with an earlier untimed write in the
            # same clock tick must still let the later request win.
            if stored is None or stored < stamp or (update_timestamp is None and stored <= stamp):
                profile.properties[name] = copy.deepcopy(value)
                profile.updated[name] = stamp
        return profile

    def add_event(
        self, ids: dict[str, str], event_type: str, timestamp: float, properties: dict[str, Any], now: float
    ) -> Profile:
        profile = self.resolve(ids, now)
        profile.events.append(
            StoredEvent(self._next_tick(), event_type, timestamp, copy.deepcopy(properties))
        )
        return profile

    # -- identity -----------------------------------------------------------------------------------------

    def resolve(self, ids: dict[str, str], now: float) -> Profile:
        """The profile these ids address, creating, linking, merging or stealing ids as Bloomreach does."""
        hard = {n: v for n, v in ids.items() if self._kinds.get(n) == "hard"}
        soft = {n: v for n, v in ids.items() if self._kinds.get(n) == "soft"}
        profile = self._anchor(hard, soft)
        if profile is None:
            profile = Profile(pid=self._next_pid)
            self._next_pid += 1
            self._profiles[profile.pid] = profile
        for name, value in hard.items():
            owner = self.find(name, value)
            if owner is profile:
                continue
            if owner is None:
                # Hard ids are immutable: a different value for a type the profile already holds is not
                # attached (it would address another customer), so only a missing type is filled in.
                if name not in profile.hard:
                    profile.hard[name] = value
                    self._owner[(name, value)] = profile.pid
            elif profile.compatible(owner.hard):
                profile = self._merge(profile, owner, now)
        for name, value in soft.items():
            owner = self.find(name, value)
            if owner is not None and owner is not profile:
                if profile.compatible(owner.hard):
                    profile = self._merge(profile, owner, now)
                else:
                    # Stolen by another hard-id profile: the id moves, its history stays behind.
                    del owner.soft[name][value]
            self._touch_soft(profile, name, value)
        return profile

    def _anchor(self, hard: dict[str, str], soft: dict[str, str]) -> Profile | None:
        for name, value in hard.items():
            owner = self.find(name, value)
            if owner is not None:
                return owner
        for name, value in soft.items():
            owner = self.find(name, value)
            # An anonymous (soft-id) profile becomes the identified customer unless it already carries
            # a different hard id of the same type.
            if owner is not None and owner.compatible(hard):
                return owner
        return None

    def _touch_soft(self, profile: Profile, name: str, value: str) -> None:
        values = profile.soft.setdefault(name, {})
        values[value] = self._next_tick()
        self._owner[(name, value)] = profile.pid
        self._evict_soft(profile, name)

    def _evict_soft(self, profile: Profile, name: str) -> None:
        values = profile.soft[name]
        while len(values) > self._max_soft_ids:
            oldest = min(values, key=values.__getitem__)
            del values[oldest]
            del self._owner[(name, oldest)]

    def _merge(self, a: Profile, b: Profile, now: float) -> Profile:
        dest, src = (a, b) if a.pid < b.pid else (b, a)
        source_ids = src.ids()
        for name, value in src.hard.items():
            dest.hard.setdefault(name, value)
            self._owner[(name, value)] = dest.pid
        for name, values in src.soft.items():
            target = dest.soft.setdefault(name, {})
            for value, tick in values.items():
                target[value] = max(tick, target.get(value, 0))
                self._owner[(name, value)] = dest.pid
            self._evict_soft(dest, name)
        for prop, value in src.properties.items():
            stamp = src.updated.get(prop, 0.0)
            if prop not in dest.updated or stamp > dest.updated[prop]:
                dest.properties[prop] = value
                dest.updated[prop] = stamp
        dest.events = sorted(dest.events + src.events, key=lambda e: e.seq)
        dest.events.append(StoredEvent(self._next_tick(), MERGE_EVENT, now, {"merged_ids": source_ids}))
        del self._profiles[src.pid]
        self.merges += 1
        return dest
