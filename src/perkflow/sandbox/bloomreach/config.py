"""Settings of a fake Bloomreach Engagement project: token, API keys, id types, permissions and limits."""

from __future__ import annotations

from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Literal

ERROR_MODES = ("200", "4xx")
ID_KINDS = ("hard", "soft")


@dataclass(frozen=True)
class Permissions:
    """What the API group may write: named properties and event types, plus the "New ..." switches.

    The fake project starts without a schema, so any name outside an allow-list counts as new: it is
    accepted only when the matching `allow_new_*` switch is on.
    """

    properties: AbstractSet[str] = frozenset()
    event_types: AbstractSet[str] = frozenset()
    allow_new_properties: bool = False
    allow_new_events: bool = False

    def __post_init__(self) -> None:
        # Callers pass plain sets; freezing them keeps a shared config from changing under a running server.
        object.__setattr__(self, "properties", frozenset(self.properties))
        object.__setattr__(self, "event_types", frozenset(self.event_types))

    def property_allowed(self, name: str) -> bool:
        return name in self.properties or self.allow_new_properties

    def event_allowed(self, event_type: str) -> bool:
        return event_type in self.event_types or self.allow_new_events


def _default_api_keys() -> dict[str, str]:
    return {"key-id": "key-secret"}


def _default_id_types() -> dict[str, str]:
    return {"registered": "hard", "cookie": "soft"}


@dataclass
class BloomreachSandboxConfig:
    project_token: str = "test-project"  # noqa: S105 - an identifier in the URL, not a secret
    # Private API group keys (HTTP Basic key id -> secret).
    api_keys: dict[str, str] = field(default_factory=_default_api_keys)
    # Key ids of API groups that have no tracking permission in this project: refused with a 403.
    keys_without_access: set[str] = field(default_factory=set)
    # Public API group tokens, sent as `Authorization: Token <t>` or `?access_token=<t>`.
    public_tokens: set[str] = field(default_factory=set)
    id_types: dict[str, str] = field(default_factory=_default_id_types)
    permissions: Permissions | None = None
    rate_limit_per_s: int | None = 100
    max_batch_commands: int = 50
    max_message_bytes: int = 800 * 1024
    max_value_bytes: int = 16 * 1024
    error_mode: Literal["200", "4xx"] = "200"
    shuffle_batch: bool = False
    # Not in the brief's minimum, but in the contract checklist: soft-id cap, delayed visibility of writes
    # (Bloomreach queues writes) and a seed that makes shuffled batches reproducible.
    max_soft_ids: int = 64
    visibility_delay_ms: int = 0
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.error_mode not in ERROR_MODES:
            raise ValueError(f"error_mode must be one of {ERROR_MODES}, not {self.error_mode!r}")
        if not self.id_types:
            raise ValueError("id_types must name at least one customer id")
        for name, kind in self.id_types.items():
            if kind not in ID_KINDS:
                raise ValueError(f"id type {name!r} must be 'hard' or 'soft', not {kind!r}")
        if self.rate_limit_per_s is not None and self.rate_limit_per_s < 1:
            raise ValueError("rate_limit_per_s must be positive or None")
        for name in ("max_batch_commands", "max_message_bytes", "max_value_bytes", "max_soft_ids"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive")
        if self.visibility_delay_ms < 0:
            raise ValueError("visibility_delay_ms must not be negative")

    @property
    def hard_id_names(self) -> list[str]:
        return [name for name, kind in self.id_types.items() if kind == "hard"]

    @property
    def soft_id_names(self) -> list[str]:
        return [name for name, kind in self.id_types.items() if kind == "soft"]
