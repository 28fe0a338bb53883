"""The connector interface: turn sync units into requests, and a response into a verdict per item.

Everything a platform does not decide (claiming work, retries and backoff, rate limiting, dead
letters, shadows for delta mode) lives once in `perkflow.sync`, not in each connector.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Literal

import httpx

from perkflow.core.errors import InvalidInput


class FieldError(ValueError):
    """A value the platform would refuse (too long, wrong shape); the field is left out, not the request."""


class UnitError(ValueError):
    """A member cannot be sent at all (e.g. no value for the platform's identifier)."""


class ConnectionCheckFailed(InvalidInput):
    """Credentials or endpoint refused while connecting; nothing is saved."""

    status = 422
    code = "connection_failed"


@dataclass(slots=True)
class EventPart:
    item_id: int
    name: str
    occurred_at: datetime
    properties: dict[str, Any]
    event_id: str


@dataclass(slots=True)
class MemberUnit:
    """Everything due for one member in one flush: one attributes object plus events in order."""

    member_id: str
    identity: dict[str, Any]
    attributes: dict[str, Any]
    attribute_item_ids: list[int]
    events: list[EventPart]
    profile: dict[str, Any] = field(default_factory=dict)  # typed loyalty values, for envelopes


@dataclass(slots=True)
class Part:
    """One object of a request, and the outbox items it carries."""

    member_id: str
    kind: Literal["attributes", "event"]
    item_ids: list[int]
    attributes: dict[str, Any] = field(default_factory=dict)
    array: str = ""  # Braze input_array of the object
    index: int = 0  # position in that array (Braze) or in the command list (Bloomreach)
    command_id: str = ""


@dataclass(slots=True)
class PreparedRequest:
    method: str
    url: str
    headers: dict[str, str]
    content: bytes
    parts: list[Part]

    @property
    def objects(self) -> int:
        return len(self.parts)


@dataclass(slots=True)
class RateInfo:
    remaining: int | None = None
    reset_epoch: float | None = None
    retry_after_s: float | None = None


VerdictKind = Literal["ok", "retry", "permanent", "split", "pause"]


@dataclass(slots=True)
class Verdict:
    """What a response means.

    ok: delivered, except the parts listed in `part_errors` (refused for good, by index in parts).
    retry: nothing was accepted; try again later (408, 429, 5xx, transport errors).
    permanent: the request is refused for good; its items go to the dead letters.
    split: too large; send it again in smaller requests.
    pause: the destination refuses our credentials or address; stop delivering until reconnected.
    """

    kind: VerdictKind
    reason: str = ""
    part_errors: dict[int, str] = field(default_factory=dict)
    rate: RateInfo = field(default_factory=RateInfo)


class Connector(ABC):
    kind: ClassVar[str]
    #: how many objects (attributes objects plus events) one request may carry
    max_objects: int = 50

    def __init__(self, config: dict[str, Any], secrets: dict[str, Any], settings: dict[str, Any]) -> None:
        self.config = config
        self.secrets = secrets
        self.settings = settings

    def identity_fields(self) -> set[str]:
        """Loyalty fields needed to address a member on the platform (beyond the mapped ones)."""
        return set()

    @abstractmethod
    def identify(self, member_id: str, values: dict[str, Any]) -> dict[str, Any]:
        """How the platform addresses this member; raises UnitError if it cannot be addressed."""

    @abstractmethod
    def encode(self, field_type: str, value: Any) -> Any:
        """A typed loyalty value in the platform's encoding; FieldError if the platform would refuse it."""

    @abstractmethod
    def check_name(self, remote_field: str) -> None:
        """Refuse, at mapping time, remote field names the platform cannot take (raises FieldError)."""

    @abstractmethod
    def pack(self, units: list[MemberUnit]) -> list[PreparedRequest]:
        """Requests carrying the units, within the platform's caps, each member's events in order."""

    @abstractmethod
    def classify(self, request: PreparedRequest, response: httpx.Response) -> Verdict:
        """Map a response back to the parts of the request."""

    @abstractmethod
    def check_connection(self, client: httpx.Client) -> None:
        """Prove the credentials work with a real, harmless call; raises ConnectionCheckFailed."""


def header_float(response: httpx.Response, *names: str) -> float | None:
    for name in names:
        raw = response.headers.get(name)
        if raw is not None:
            try:
                return float(raw)
            except ValueError:
                continue
    return None


def transport_failure(reason: str) -> Verdict:
    return Verdict("retry", reason)


def status_verdict(response: httpx.Response, body_reason: str) -> Verdict | None:
    """The verdicts every HTTP API shares: retry 408/429/5xx, split 413, pause 401/403/404."""
    status = response.status_code
    reason = f"HTTP {status}: {body_reason}".strip()
    if status in (408, 429) or status >= 500:
        return Verdict("retry", reason)
    if status == 413:
        return Verdict("split", reason)
    if status in (401, 403, 404):
        return Verdict("pause", reason)
    return None
