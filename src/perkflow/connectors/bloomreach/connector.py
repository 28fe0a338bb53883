"""The Bloomreach connector: customer updates and events as /batch commands matched back by command_id."""

from __future__ import annotations

import base64
import time
from typing import Any, ClassVar

import httpx
import orjson

from perkflow.connectors.base import (
    ConnectionCheckFailed,
    Connector,
    MemberUnit,
    Part,
    PreparedRequest,
    RateInfo,
    UnitError,
    Verdict,
    header_float,
    pack_members,
    status_verdict,
)
from perkflow.connectors.bloomreach.encoding import (
    MESSAGE_MAX_BYTES,
    check_property_name,
    encode_property,
    event_properties,
    unix_seconds,
)

ENVELOPE_BYTES = len(b'{"commands":[]}')
SMALL_COMMAND_BYTES = 200  # about the smallest customer update or event command
AUTH_ERRORS = ("invalid project id", "could not authenticate", "access key", "invalid secret")


def _errors_text(body: Any) -> str:
    """Bloomreach reports errors as `error`, `errors` (list or dict) or `message`."""
    if not isinstance(body, dict):
        return ""
    parts: list[str] = []
    for key in ("error", "message"):
        if isinstance(body.get(key), str):
            parts.append(body[key])
    errors = body.get("errors")
    if isinstance(errors, list):
        parts += [str(e) for e in errors]
    elif isinstance(errors, dict):
        for value in errors.values():
            parts += [str(v) for v in value] if isinstance(value, list) else [str(value)]
    return "; ".join(parts)


class BloomreachConnector(Connector):
    kind: ClassVar[str] = "bloomreach"

    def __init__(self, config: dict[str, Any], secrets: dict[str, Any], settings: dict[str, Any]) -> None:
        super().__init__(config, secrets, settings)
        self.base_url: str = config["base_url"]
        self.token: str = config["project_token"]
        self.hard_id: str = config.get("hard_id", "registered")
        self.hard_id_field: str = config.get("hard_id_field", "email")
        self.max_objects = int(settings.get("bloomreach_max_commands", 50))

    @property
    def _track(self) -> str:
        return f"{self.base_url}/track/v2/projects/{self.token}"

    def _headers(self) -> dict[str, str]:
        raw = f"{self.secrets['api_key_id']}:{self.secrets['api_secret']}".encode()
        return {
            "Authorization": "Basic " + base64.b64encode(raw).decode(),
            "Content-Type": "application/json",
        }

    # -- addressing and encoding ------------------------------------------------------------------

    def identity_fields(self) -> set[str]:
        return {self.hard_id_field}

    def identify(self, member_id: str, values: dict[str, Any]) -> dict[str, Any]:
        raw = member_id if self.hard_id_field == "member_id" else values.get(self.hard_id_field)
        if raw is None or str(raw).strip() == "":
            raise UnitError(
                f"the member has no {self.hard_id_field}, the Bloomreach hard ID {self.hard_id!r}"
            )
        value = str(raw).strip()
        if self.hard_id_field == "email":
            value = value.lower()  # hard IDs are case-sensitive: one spelling per person
        if not any(ch.isalnum() for ch in value):
            raise UnitError(f"{value!r} is not a valid Bloomreach ID (it needs a letter or digit)")
        return {"customer_ids": {self.hard_id: value}}

    def encode(self, field_type: str, value: Any) -> Any:
        return encode_property(field_type, value)

    def check_name(self, remote_field: str) -> None:
        check_property_name(remote_field)

    # -- requests ---------------------------------------------------------------------------------

    def event_properties(self, properties: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        return event_properties(properties)

    def _commands(self, unit: MemberUnit, now: float) -> list[tuple[bytes, Part]]:
        """The member's customer update, then its events in order, each encoded once with its command_id.

        command_id is the outbox item id (unique within any request), so results can be matched to
        items whatever order Bloomreach answers in.
        """
        ids = unit.identity["customer_ids"]
        found: list[tuple[bytes, Part]] = []
        if unit.attributes:
            part = Part(unit.member_id, "attributes", unit.attribute_item_ids, dict(unit.attributes))
            part.command_id = f"a{unit.attribute_item_ids[0]}" if unit.attribute_item_ids else "a"
            data = {"customer_ids": ids, "properties": unit.attributes, "update_timestamp": now}
            found.append((self._encoded("customers", data, part.command_id), part))
        for event in unit.events:
            part = Part(unit.member_id, "event", [event.item_id])
            part.command_id = f"e{event.item_id}"
            data = {
                "customer_ids": ids,
                "event_type": event.name,
                "timestamp": unix_seconds(event.occurred_at),
                "properties": event.properties,
            }
            found.append((self._encoded("customers/events", data, part.command_id), part))
        return found

    @staticmethod
    def _encoded(name: str, data: dict[str, Any], command_id: str) -> bytes:
        return orjson.dumps({"name": name, "data": data, "command_id": command_id})

    def pack(self, units: list[MemberUnit]) -> list[PreparedRequest]:
        now = time.time()

        def cost(commands: Any) -> tuple[int, int]:
            return len(commands), sum(len(encoded) + 1 for encoded, _ in commands)

        def fits(total: tuple[int, ...]) -> bool:
            return total[0] <= self.max_objects and total[1] + ENVELOPE_BYTES < MESSAGE_MAX_BYTES

        requests: list[PreparedRequest] = []
        smallest = [(1, SMALL_COMMAND_BYTES)]
        for group in pack_members([self._commands(unit, now) for unit in units], cost, fits, smallest):
            for position, (_, part) in enumerate(group):
                part.index = position
            body = b'{"commands":[' + b",".join(encoded for encoded, _ in group) + b"]}"
            parts = [part for _, part in group]
            requests.append(PreparedRequest("POST", f"{self._track}/batch", self._headers(), body, parts))
        return requests

    def classify(self, request: PreparedRequest, response: httpx.Response) -> Verdict:
        retry_after = header_float(response, "retry-after")
        rate = RateInfo(retry_after_s=retry_after)
        try:
            body = response.json()
        except ValueError:
            body = {}
        text = _errors_text(body)
        status = response.status_code
        if status == 400 and any(marker in text.lower() for marker in AUTH_ERRORS):
            return Verdict("pause", f"Bloomreach refused the project token or key: {text}", rate=rate)
        shared = status_verdict(response, text)
        if shared is not None:
            shared.rate = rate
            return shared
        if status != 200 or not isinstance(body, dict):
            return Verdict("permanent", f"HTTP {status}: {text or response.text[:200]}", rate=rate)
        results = body.get("results")
        if not isinstance(results, list):
            if body.get("success") is False:
                return Verdict("permanent", text or "Bloomreach refused the batch", rate=rate)
            return Verdict("ok", rate=rate)
        by_command = {p.command_id: i for i, p in enumerate(request.parts)}
        part_errors: dict[int, str] = {}
        for position, result in enumerate(results):
            if not isinstance(result, dict) or result.get("success") is True:
                continue
            index = by_command.get(str(result.get("command_id")), position)
            if index < len(request.parts):
                part_errors[index] = _errors_text(result) or "refused by Bloomreach"
        return Verdict("ok", rate=rate, part_errors=part_errors)

    def check_connection(self, client: httpx.Client) -> None:
        """A batch with one system/time command: it needs valid credentials and token, and writes nothing."""
        body = orjson.dumps({"commands": [{"name": "system/time", "data": {}}]})
        try:
            response = client.post(f"{self._track}/batch", headers=self._headers(), content=body)
        except httpx.HTTPError as exc:
            raise ConnectionCheckFailed(
                f"cannot reach Bloomreach at {self.base_url}: {type(exc).__name__}", code="unreachable"
            ) from exc
        try:
            payload = response.json()
        except ValueError:
            payload = {}
        text = _errors_text(payload)
        status = response.status_code
        if status == 404:
            raise ConnectionCheckFailed(
                f"{self.base_url} has no Tracking API (404): check the base URL", code="wrong_instance"
            )
        if "invalid project id" in text.lower():
            raise ConnectionCheckFailed(
                "Bloomreach does not know this project token", code="invalid_project_token"
            )
        if status == 401:
            raise ConnectionCheckFailed(f"Bloomreach refused the API key ID: {text}", code="invalid_api_key")
        if status == 403 and "secret" in text.lower():
            raise ConnectionCheckFailed(
                f"Bloomreach refused the API secret of this key ID: {text}", code="invalid_api_secret"
            )
        if status == 403:
            raise ConnectionCheckFailed(
                "Bloomreach denied the API key access to this project (403): give its API group the Get "
                f"and Set permissions for customer properties and events: {text}",
                code="missing_permission",
            )
        if status != 200 or not isinstance(payload, dict) or payload.get("success") is not True:
            raise ConnectionCheckFailed(
                f"Bloomreach answered HTTP {status} to a test call: {text}", code="unexpected_response"
            )
