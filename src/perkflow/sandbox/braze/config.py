"""Settings of the fake Braze: keys and permissions, request caps, rate limits and data-type limits."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Literal

TRACK_PERMISSION = "users.track"
EXPORT_PERMISSION = "users.export.ids"
ALL_PERMISSIONS = frozenset({TRACK_PERMISSION, EXPORT_PERMISSION})

CapMode = Literal["total", "per_array"]
ResetHeaderMode = Literal["epoch", "seconds"]

# Types a dashboard can force on a custom attribute; values of other types are then coerced or ignored.
FORCEABLE_TYPES = frozenset({"integer", "float", "string", "boolean", "time"})


def _default_api_keys() -> dict[str, Collection[str]]:
    return {"braze-key": set(ALL_PERMISSIONS)}


@dataclass
class BrazeSandboxConfig:
    """How the fake behaves; the defaults follow Braze's current documented limits (contract §4, §6)."""

    api_keys: Mapping[str, Collection[str]] = field(default_factory=_default_api_keys)
    cap_mode: CapMode = "total"
    object_cap: int = 75
    max_body_bytes: int = 4 * 1024 * 1024
    array_max_items: int = 25
    rate_limit: int | None = 3000
    rate_window_s: float = 3.0
    reset_header_mode: ResetHeaderMode = "epoch"
    mau_mode: bool = False
    string_max_chars: int = 255
    key_max_chars: int = 255
    external_id_max_bytes: int = 987
    properties_max_bytes: int = 50 * 1024
    nested_object_max_bytes: int = 50 * 1024
    array_of_objects_max_bytes: int = 100 * 1024
    export_max_ids: int = 50
    forced_types: Mapping[str, str] = field(default_factory=dict)
    request_log_size: int = 500
    # Wall-clock source in epoch seconds; tests pass a controllable one to pin rate-limit windows.
    clock: Callable[[], float] = time.time

    def __post_init__(self) -> None:
        self.api_keys = {key: frozenset(perms) for key, perms in self.api_keys.items()}
        if self.cap_mode not in ("total", "per_array"):
            raise ValueError(f"cap_mode must be 'total' or 'per_array', not {self.cap_mode!r}")
        if self.reset_header_mode not in ("epoch", "seconds"):
            raise ValueError(
                f"reset_header_mode must be 'epoch' or 'seconds', not {self.reset_header_mode!r}"
            )
        if self.rate_limit is not None and self.rate_limit < 1:
            raise ValueError("rate_limit must be at least 1, or None to disable limiting")
        if self.rate_window_s <= 0:
            raise ValueError("rate_window_s must be positive")
        for name in ("object_cap", "max_body_bytes", "array_max_items", "export_max_ids", "request_log_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        unknown = {t for t in self.forced_types.values() if t not in FORCEABLE_TYPES}
        if unknown:
            raise ValueError(f"forced_types may only use {sorted(FORCEABLE_TYPES)}, not {sorted(unknown)}")
        self.forced_types = dict(self.forced_types)
