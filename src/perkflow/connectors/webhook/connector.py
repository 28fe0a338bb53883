"""The webhook connector: envelopes signed with HMAC-SHA256 of the raw body."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

import httpx
import orjson

from perkflow import __version__
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
    status_verdict,
)
from perkflow.core.clock import isoformat_z
from perkflow.core.security import sign

SIGNATURE_HEADER = "X-Perkflow-Signature"

EVENT_GROUPS = {
    "opt_in": "members",
    "opt_out": "members",
    "profile": "members",
    "checkout": "purchases",
    "checkout_accept": "purchases",
    "checkout_reject": "purchases",
    "refund": "purchases",
    "point_add": "points",
    "point_subtract": "points",
    "points_expired": "points",
    "points_released": "points",
    "birthday": "points",
    "tier_up": "tiers",
    "tier_down": "tiers",
    "reward_claim": "rewards",
    "coupon_assigned": "rewards",
    "segment_entered": "segments",
    "segment_left": "segments",
    "voucher_published": "promotions",
    "voucher_redeemed": "promotions",
    "redemption_rolled_back": "promotions",
    "gift_credits_added": "promotions",
    "loyalty_points_added": "promotions",
}


def envelope(
    event_id: str, event_type: str, occurred_at: datetime, member: dict[str, Any], payload: dict[str, Any]
) -> dict[str, Any]:
    """The JSON every webhook receives; `id` is stable across retries so receivers can deduplicate."""
    return {
        "id": event_id,
        "event_name": EVENT_GROUPS.get(event_type, "custom"),
        "event_type": event_type,
        "occurred_at": isoformat_z(occurred_at),
        "member": member,
        "payload": payload,
    }


def signed_headers(secret: str, body: bytes, event_id: str) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "User-Agent": f"Perkflow/{__version__}",
        SIGNATURE_HEADER: "sha256=" + sign(secret, body),
        "X-Perkflow-Event-Id": event_id,
    }


class WebhookConnector(Connector):
    kind: ClassVar[str] = "webhook"
    max_objects = 1

    def __init__(self, config: dict[str, Any], secrets: dict[str, Any], settings: dict[str, Any]) -> None:
        super().__init__(config, secrets, settings)
        self.url: str = config["url"]

    def identity_fields(self) -> set[str]:
        return {"email"}

    def identify(self, member_id: str, values: dict[str, Any]) -> dict[str, Any]:
        return {"id": member_id, "email": values.get("email")}

    def encode(self, field_type: str, value: Any) -> Any:
        raise FieldError("webhooks carry events only; map fields to Braze or Bloomreach")

    def check_name(self, remote_field: str) -> None:
        raise FieldError("webhooks carry events only; field mappings do not apply")

    def pack(self, units: list[MemberUnit]) -> list[PreparedRequest]:
        requests = []
        for unit in units:
            for event in unit.events:
                body = orjson.dumps(
                    envelope(event.event_id, event.name, event.occurred_at, unit.identity, event.properties)
                )
                requests.append(
                    PreparedRequest(
                        "POST",
                        self.url,
                        signed_headers(self.secrets["secret"], body, event.event_id),
                        body,
                        [Part(unit.member_id, "event", [event.item_id])],
                    )
                )
        return requests

    def classify(self, request: PreparedRequest, response: httpx.Response) -> Verdict:
        rate = RateInfo(retry_after_s=header_float(response, "retry-after"))
        shared = status_verdict(response, response.text[:200])
        if shared is not None:
            shared.rate = rate
            return shared
        if 200 <= response.status_code < 300:
            return Verdict("ok", rate=rate)
        return Verdict("permanent", f"HTTP {response.status_code}: {response.text[:200]}", rate=rate)

    def check_connection(self, client: httpx.Client) -> None:
        """A signed ping the receiver must answer with 2xx."""
        event_id = f"ping_{int(datetime.now(UTC).timestamp())}"
        body = orjson.dumps(
            envelope(event_id, "ping", datetime.now(UTC), {}, {"message": "Perkflow test call"})
        )
        try:
            response = client.post(
                self.url, headers=signed_headers(self.secrets["secret"], body, event_id), content=body
            )
        except httpx.HTTPError as exc:
            raise ConnectionCheckFailed(
                f"cannot reach {self.url}: {type(exc).__name__}", code="unreachable"
            ) from exc
        if not 200 <= response.status_code < 300:
            raise ConnectionCheckFailed(
                f"the webhook receiver answered HTTP {response.status_code} to a signed test call",
                code="receiver_refused",
                details={"status": response.status_code},
            )
