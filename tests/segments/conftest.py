"""Helpers for segment tests: creating segments, sending events, reading membership activity."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from tests.conftest import event

SEGMENT_TYPES = ["segment_entered", "segment_left"]


def rule(attribute: str, operator: str, value: Any = None) -> dict[str, Any]:
    out: dict[str, Any] = {"attribute": attribute, "operator": operator}
    if value is not None:
        out["value"] = value
    return out


def make_segment(api: TestClient, body: dict[str, Any], status: int = 201) -> dict[str, Any]:
    response = api.post("/api/v1/segments", json=body)
    assert response.status_code == status, response.text
    return response.json()


def send(api: TestClient, *events: dict[str, Any]) -> None:
    response = api.post("/api/v1/events/bulk", json={"events": list(events)})
    assert response.status_code == 200, response.text
    rejected = [r for r in response.json()["results"] if r["status"] == "rejected"]
    assert not rejected, rejected


def enrol(api: TestClient, *members: str, **data: Any) -> None:
    send(api, *(event(m, "opt_in", **data) for m in members))


def checkout(api: TestClient, member: str, total: int, transaction: str, **data: Any) -> None:
    send(api, event(member, "checkout", transaction_id=transaction, total=total, **data))


def membership_activity(api: TestClient, member: str) -> list[tuple[str, str, str]]:
    """(type, segment id, segment name) of the member's segment activities, oldest first."""
    response = api.get(f"/api/v1/members/{member}/activities", params={"type": SEGMENT_TYPES, "limit": 200})
    assert response.status_code == 200, response.text
    found = [(a["type"], a["data"]["segment_id"], a["data"]["segment_name"]) for a in response.json()["data"]]
    for a in response.json()["data"]:
        assert set(a["data"]) == {"segment_id", "segment_name"}
    return list(reversed(found))


def members_of(api: TestClient, segment_id: str) -> list[str]:
    found: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        response = api.get(f"/api/v1/segments/{segment_id}/members", params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        found.extend(m["member_id"] for m in page["data"])
        cursor = page["next_cursor"]
        if cursor is None:
            return found
