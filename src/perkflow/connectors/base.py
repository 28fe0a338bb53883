"""The connector interface: turn sync units into requests, and a response into a verdict per item.

Everything a platform does not decide (claiming work, retries and backoff, rate limiting, dead
letters, shadows for delta mode) lives once in `perkflow.sync`, not in each connector.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Literal, TypeVar

import httpx

from perkflow.core.errors import InvalidInput


class FieldError(ValueError):
    """A value the platform would refuse (too long, wrong shape); the field is left out, not the request."""


def field_datetime(value: Any, where: str) -> datetime:
    """A datetime from a datetime or an ISO-8601 string (a trailing Z included), else a FieldError."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise FieldError(f"{where}: {value[:40]!r} is not an ISO-8601 date and time") from None
    if not isinstance(value, datetime):
        raise FieldError(f"{where}: expected a datetime")
    return value


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
    properties: dict[str, Any]  # already in the platform's encoding (see Connector.event_properties)
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

    @classmethod
    def check_event_name(cls, name: str) -> None:
        """Refuse, when events are selected, event names the platform cannot take (raises FieldError)."""
        if not name or len(name) > 255:
            raise FieldError("event names are 1-255 characters")

    @classmethod
    def check_events(cls, events: list[dict[str, Any]]) -> None:
        """Every selected event's platform name is acceptable, or a 422 naming each bad one."""
        problems: dict[str, str] = {}
        for selected in events:
            name = selected.get("name") or selected["type"]
            try:
                cls.check_event_name(name)
            except FieldError as exc:
                problems[name] = str(exc)
        if problems:
            raise InvalidInput(
                f"some event names cannot be sent to {cls.kind}", code="invalid_event_name", details=problems
            )

    def event_properties(self, properties: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """Event properties in the platform's encoding, and why any were left out (one line each)."""
        return properties, []

    @abstractmethod
    def pack(self, units: list[MemberUnit]) -> list[PreparedRequest]:
        """Requests carrying the units, within the platform's caps, each member's events in order."""

    @abstractmethod
    def classify(self, request: PreparedRequest, response: httpx.Response) -> Verdict:
        """Map a response back to the parts of the request."""

    @abstractmethod
    def check_connection(self, client: httpx.Client) -> None:
        """Prove the credentials work with a real, harmless call; raises ConnectionCheckFailed."""


T = TypeVar("T")
Cost = tuple[int, ...]


def _plus(a: Cost, b: Cost) -> Cost:
    return tuple(x + y for x, y in zip(a, b, strict=True))


OPEN_REQUESTS = 8  # how many part-full requests first fit tries before it opens a new one


def pack_members(
    members: Sequence[Sequence[T]],
    cost: Callable[[Sequence[T]], Cost],
    fits: Callable[[Cost], bool],
    smallest: Sequence[Cost],
) -> list[list[T]]:
    """Group each member's objects into requests: a member's objects travel in one request whenever they
    fit in one, placed in the first of the last few part-full requests with room (first fit, so
    requests stay full; a request that cannot take even one of the `smallest` objects is closed).

    A member with more objects than one request holds is cut into consecutive runs, each opening a new
    request after the previous run's, so sending the requests in order keeps the member's order.
    """
    groups: list[list[T]] = []
    totals: list[Cost] = []
    open_groups: list[int] = []

    def has_room(total: Cost) -> bool:
        return any(fits(_plus(total, one)) for one in smallest)

    def start(objects: list[T], total: Cost) -> None:
        groups.append(objects)
        totals.append(total)
        if has_room(total):
            open_groups.append(len(groups) - 1)
            if len(open_groups) > OPEN_REQUESTS:
                open_groups.pop(0)

    for objects in members:
        if not objects:
            continue
        whole = cost(objects)
        if not fits(whole):
            run: list[T] = []
            for obj in objects:
                if run and not fits(cost([*run, obj])):
                    groups.append(run)
                    totals.append(cost(run))
                    run = []
                run.append(obj)
            if run:
                groups.append(run)
                totals.append(cost(run))
            continue
        for slot, position in enumerate(open_groups):
            combined = _plus(totals[position], whole)
            if fits(combined):
                groups[position].extend(objects)
                totals[position] = combined
                if not has_room(combined):
                    open_groups.pop(slot)
                break
        else:
            start(list(objects), whole)
    return groups


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
