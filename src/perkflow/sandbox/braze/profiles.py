"""User profiles held by the fake Braze and the identifier lookups that find or create them."""

from __future__ import annotations

import copy
import itertools
import uuid
from dataclasses import dataclass, field
from typing import Any

Alias = tuple[str, str]  # (alias_name, alias_label)


@dataclass
class Profile:
    braze_id: str
    external_id: str | None = None
    aliases: list[Alias] = field(default_factory=list)
    standard: dict[str, Any] = field(default_factory=dict)
    custom: dict[str, Any] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    purchases: list[dict[str, Any]] = field(default_factory=list)
    # Order of last update; Braze's email lookup prefers the most recently updated profile.
    updated_seq: int = 0

    def snapshot(self) -> dict[str, Any]:
        """A deep copy in the shape `BrazeSandbox.user()` documents."""
        return {
            "external_id": self.external_id,
            "braze_id": self.braze_id,
            "user_aliases": [{"alias_name": name, "alias_label": label} for name, label in self.aliases],
            "attributes": copy.deepcopy(self.custom),
            "standard": copy.deepcopy(self.standard),
            "events": [_public_event(event) for event in self.events],
            "purchases": [copy.deepcopy(purchase) for purchase in self.purchases],
        }


def _public_event(event: dict[str, Any]) -> dict[str, Any]:
    public = copy.deepcopy(event)
    public.pop("external_id", None)
    public.pop("braze_id", None)
    return public


class ProfileStore:
    """Profiles with indexes by every identifier Braze resolves; not thread-safe on its own."""

    def __init__(self) -> None:
        self.by_braze_id: dict[str, Profile] = {}
        self._by_external_id: dict[str, Profile] = {}
        self._by_alias: dict[Alias, Profile] = {}
        self._by_email: dict[str, set[str]] = {}
        self._by_phone: dict[str, set[str]] = {}
        self._sequence = itertools.count(1)

    def __len__(self) -> int:
        return len(self.by_braze_id)

    def by_external_id(self, external_id: str) -> Profile | None:
        return self._by_external_id.get(external_id)

    def by_alias(self, alias: Alias) -> Profile | None:
        return self._by_alias.get(alias)

    def by_email(self, email: str) -> Profile | None:
        return self._most_relevant(self._by_email.get(email.lower(), set()))

    def by_phone(self, phone: str) -> Profile | None:
        return self._most_relevant(self._by_phone.get(phone, set()))

    def _most_relevant(self, braze_ids: set[str]) -> Profile | None:
        """Braze's tie-break: the most recently updated profile with an external_id, else the most recent."""
        candidates = [self.by_braze_id[braze_id] for braze_id in braze_ids]
        if not candidates:
            return None
        identified = [p for p in candidates if p.external_id is not None]
        return max(identified or candidates, key=lambda p: p.updated_seq)

    def create(
        self,
        *,
        external_id: str | None = None,
        alias: Alias | None = None,
        email: str | None = None,
        phone: str | None = None,
    ) -> Profile:
        profile = Profile(braze_id=uuid.uuid4().hex[:24], external_id=external_id)
        self.by_braze_id[profile.braze_id] = profile
        if external_id is not None:
            self._by_external_id[external_id] = profile
        if alias is not None:
            profile.aliases.append(alias)
            self._by_alias[alias] = profile
        if email is not None:
            self.set_standard(profile, "email", email)
        if phone is not None:
            self.set_standard(profile, "phone", phone)
        self.touch(profile)
        return profile

    def touch(self, profile: Profile) -> None:
        profile.updated_seq = next(self._sequence)

    def set_standard(self, profile: Profile, name: str, value: Any) -> None:
        """Set (or with None, remove) a standard field, keeping the email and phone indexes in step."""
        index = {"email": self._by_email, "phone": self._by_phone}.get(name)
        old = profile.standard.get(name)
        if index is not None and isinstance(old, str):
            index.get(self._index_key(name, old), set()).discard(profile.braze_id)
        if value is None:
            profile.standard.pop(name, None)
            return
        profile.standard[name] = value
        if index is not None and isinstance(value, str):
            index.setdefault(self._index_key(name, value), set()).add(profile.braze_id)

    @staticmethod
    def _index_key(name: str, value: str) -> str:
        return value.lower() if name == "email" else value
