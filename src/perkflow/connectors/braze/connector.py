"""The Braze connector: packs sync units into /users/track requests and reads Braze's answers."""

from __future__ import annotations

from typing import Any, ClassVar

import httpx
import orjson

from perkflow.connectors.base import (
    ConnectionCheckFailed,
    Connector,
    FieldError,
    MemberUnit,
    Part,
    PreparedRequest,
    RateInfo,
    Verdict,
    header_float,
    pack_members,
    status_verdict,
)
from perkflow.connectors.braze.encoding import (
    braze_time,
    check_key,
    check_remote_field,
    encode_attribute,
    event_properties,
)

TRACK_PATH = "/users/track"
MAX_INPUT = "max input length exceeded"


def parse_rate(response: httpx.Response, now_epoch: float | None = None) -> RateInfo:
    """Read X-RateLimit-* (Reset is epoch seconds, or seconds until reset on MAU plans) and retry hints."""
    import time

    now = now_epoch if now_epoch is not None else time.time()
    remaining = header_float(response, "x-ratelimit-remaining")
    reset = header_float(response, "x-ratelimit-reset")
    if reset is not None and reset < 1e9:  # a small number is "seconds until the window resets"
        reset = now + reset
    retry_after = header_float(response, "x-ratelimit-retry-after", "retry-after")
    return RateInfo(
        remaining=int(remaining) if remaining is not None else None,
        reset_epoch=reset,
        retry_after_s=retry_after,
    )


class BrazeConnector(Connector):
    kind: ClassVar[str] = "braze"

    def __init__(self, config: dict[str, Any], secrets: dict[str, Any], settings: dict[str, Any]) -> None:
        super().__init__(config, secrets, settings)
        self.base_url: str = config["instance_url"]
        self.app_id: str | None = config.get("app_id") or None
        self.cap_mode: str = settings.get("braze_cap_mode", "total")
        self.max_objects = int(settings.get("braze_max_objects", 75))
        self.array_max = int(settings.get("braze_array_max", 25))

    # -- addressing and encoding ------------------------------------------------------------------

    def identify(self, member_id: str, values: dict[str, Any]) -> dict[str, Any]:
        if len(member_id.encode()) > 987:
            raise FieldError("Braze external_id is at most 987 bytes")
        return {"external_id": member_id}

    def encode(self, field_type: str, value: Any) -> Any:
        return encode_attribute(field_type, value, array_max=self.array_max)

    def check_name(self, remote_field: str) -> None:
        check_remote_field(remote_field)

    @classmethod
    def check_event_name(cls, name: str) -> None:
        check_key(name, what="custom event")

    # -- requests ---------------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.secrets['api_key']}", "Content-Type": "application/json"}

    def _fits(self, attributes: int, events: int) -> bool:
        if self.cap_mode == "per_array":
            return attributes <= self.max_objects and events <= self.max_objects
        return attributes + events <= self.max_objects

    def event_properties(self, properties: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        return event_properties(properties)

    def _objects(self, unit: MemberUnit) -> list[tuple[str, dict[str, Any], Part]]:
        """The member's attributes object, then its events in order: (input array, object, part)."""
        found: list[tuple[str, dict[str, Any], Part]] = []
        if unit.attributes:
            part = Part(
                unit.member_id, "attributes", unit.attribute_item_ids, dict(unit.attributes), "attributes"
            )
            found.append(("attributes", {**unit.identity, **unit.attributes}, part))
        for event in unit.events:
            body_event: dict[str, Any] = {
                **unit.identity,
                "name": event.name,
                "time": braze_time(event.occurred_at),
                "properties": event.properties,
            }
            if self.app_id:
                body_event["app_id"] = self.app_id
            found.append(("events", body_event, Part(unit.member_id, "event", [event.item_id], {}, "events")))
        return found

    @staticmethod
    def _cost(objects: Any) -> tuple[int, int]:
        attributes = sum(1 for array, _, _ in objects if array == "attributes")
        return attributes, len(objects) - attributes

    def pack(self, units: list[MemberUnit]) -> list[PreparedRequest]:
        groups = pack_members(
            [self._objects(unit) for unit in units],
            self._cost,
            lambda cost: self._fits(*cost),
            smallest=[(1, 0), (0, 1)],
        )
        requests: list[PreparedRequest] = []
        for group in groups:
            arrays: dict[str, list[dict[str, Any]]] = {"attributes": [], "events": []}
            parts: list[Part] = []
            for array, obj, part in group:
                part.index = len(arrays[array])
                arrays[array].append(obj)
                parts.append(part)
            body = {name: objects for name, objects in arrays.items() if objects}
            requests.append(
                PreparedRequest(
                    "POST", self.base_url + TRACK_PATH, self._headers(), orjson.dumps(body), parts
                )
            )
        return requests

    def classify(self, request: PreparedRequest, response: httpx.Response) -> Verdict:
        rate = parse_rate(response)
        try:
            body = response.json()
        except ValueError:
            body = {}
        message = str(body.get("message", "")) if isinstance(body, dict) else ""
        errors = body.get("errors") if isinstance(body, dict) else None
        status = response.status_code
        if status in (400, 413) and MAX_INPUT in message.lower():
            return Verdict("split", f"HTTP {status}: {message}", rate=rate)
        shared = status_verdict(response, message)
        if shared is not None:
            shared.rate = rate
            if shared.kind == "pause":
                shared.reason = {
                    401: "Braze refused the REST API key (401): rotate the key or fix the instance URL",
                    403: "Braze denied access (403): the key lacks users.track or the plan is inactive",
                    404: "Braze has no such endpoint (404): check the instance URL",
                }.get(status, shared.reason)
            return shared
        part_errors = self._part_errors(request, errors)
        if 200 <= status < 300:
            return Verdict("ok", message, part_errors=part_errors, rate=rate)
        if status == 400 and part_errors:
            # Every object was invalid: each part carries its own reason.
            for index in range(len(request.parts)):
                part_errors.setdefault(index, message or "refused by Braze")
            return Verdict("ok", message, part_errors=part_errors, rate=rate)
        return Verdict("permanent", f"HTTP {status}: {message or response.text[:200]}", rate=rate)

    @staticmethod
    def _part_errors(request: PreparedRequest, errors: Any) -> dict[int, str]:
        found: dict[int, str] = {}
        if not isinstance(errors, list):
            return found
        by_position = {(p.array, p.index): i for i, p in enumerate(request.parts)}
        for error in errors:
            if not isinstance(error, dict):
                continue
            key = (str(error.get("input_array", "")), error.get("index"))
            reason = str(error.get("type") or error.get("message") or "refused by Braze")
            if key in by_position:
                found[by_position[key]] = reason
        return found

    def check_connection(self, client: httpx.Client) -> None:
        """An empty /users/track: a key with users.track gets 400 "Valid data must be provided"."""
        try:
            response = client.post(self.base_url + TRACK_PATH, headers=self._headers(), content=b"{}")
        except httpx.HTTPError as exc:
            raise ConnectionCheckFailed(
                f"cannot reach Braze at {self.base_url}: {type(exc).__name__}", code="unreachable"
            ) from exc
        status = response.status_code
        if status == 401:
            raise ConnectionCheckFailed(
                "Braze refused the REST API key (401 Invalid API Key); check the key, and that the instance "
                "URL is the REST endpoint of the workspace the key belongs to",
                code="invalid_api_key",
            )
        if status == 403:
            raise ConnectionCheckFailed(
                "Braze denied access (403): the REST API key needs the users.track permission",
                code="missing_permission",
            )
        if status == 404:
            raise ConnectionCheckFailed(
                f"{self.base_url} has no /users/track (404): this is not a Braze REST endpoint",
                code="wrong_instance",
            )
        if status not in (200, 201, 202, 400):
            raise ConnectionCheckFailed(
                f"Braze answered HTTP {status} to a test call", code="unexpected_response"
            )
