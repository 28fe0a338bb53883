"""The members API: profiles, the field catalogue, external identities, listing and the timeline."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import event

pytestmark = pytest.mark.usefixtures("demo")


def create(api: TestClient, body: dict[str, Any], status: int = 201) -> dict[str, Any]:
    response = api.post("/api/v1/members", json=body)
    assert response.status_code == status, response.text
    return response.json()


def test_create_read_update_a_member_with_typed_fields(api: TestClient) -> None:
    api.post("/api/v1/fields", json={"key": "visits", "type": "integer"})
    api.post("/api/v1/fields", json={"key": "last_visit", "type": "datetime"})
    api.post("/api/v1/fields", json={"key": "tags", "type": "array"})
    api.post("/api/v1/fields", json={"key": "address", "type": "object"})
    api.post("/api/v1/fields", json={"key": "children", "type": "array_of_objects"})
    api.post("/api/v1/fields", json={"key": "score", "type": "float"})
    body = create(
        api,
        {
            "id": "m-1",
            "email": "M1@Example.com",
            "first_name": "Mia",
            "birth_date": "1991-02-03",
            "fields": {
                "visits": 3,
                "last_visit": "2026-03-01T10:00:00+01:00",
                "tags": ["vip", "eu"],
                "address": {"city": "Lyon"},
                "children": [{"name": "Léo"}],
                "score": 4,
                "newsletter": True,
            },
        },
    )
    assert body["email"] == "m1@example.com"
    assert body["fields"]["last_visit"] == "2026-03-01T09:00:00Z"
    assert body["fields"]["score"] == 4.0 and isinstance(body["fields"]["score"], float)
    assert body["programs"] == []
    updated = api.patch(
        "/api/v1/members/m-1", json={"last_name": "Roux", "fields": {"visits": 4, "tags": None}}
    )
    assert updated.status_code == 200, updated.text
    fields = updated.json()["fields"]
    assert fields["visits"] == 4 and "tags" not in fields
    assert updated.json()["last_name"] == "Roux"


def test_field_values_are_checked_against_the_catalogue(api: TestClient) -> None:
    api.post("/api/v1/fields", json={"key": "visits", "type": "integer"})
    error = create(api, {"id": "m-1", "fields": {"visits": "three", "unknown": 1}}, status=422)
    assert error["code"] == "invalid_fields"
    assert set(error["details"]) == {"visits", "unknown"}
    assert api.get("/api/v1/members/m-1").status_code == 404
    reserved = api.post("/api/v1/fields", json={"key": "email", "type": "string"})
    assert reserved.status_code == 409 and reserved.json()["code"] == "field_reserved"
    bad_type = api.post("/api/v1/fields", json={"key": "x", "type": "money"})
    assert bad_type.status_code == 422


def test_duplicate_member_ids_conflict(api: TestClient) -> None:
    create(api, {"id": "m-1"})
    assert create(api, {"id": "m-1"}, status=409)["code"] == "member_exists"


def test_external_identities_are_unique_per_pair(api: TestClient) -> None:
    create(
        api, {"id": "m-1", "identities": [{"external_source": "customer_id", "external_source_id": "5566"}]}
    )
    create(api, {"id": "m-2"})
    clash = api.post(
        "/api/v1/members/m-2/identities",
        json={"external_source": "customer_id", "external_source_id": "5566"},
    )
    assert clash.status_code == 409
    assert clash.json()["code"] == "identity_taken"
    assert "m-1" in clash.json()["message"]
    same_id_other_source = api.post(
        "/api/v1/members/m-2/identities", json={"external_source": "pos", "external_source_id": "5566"}
    )
    assert same_id_other_source.status_code == 201
    found = api.get(
        "/api/v1/members/lookup", params={"external_source": "customer_id", "external_source_id": "5566"}
    )
    assert found.json()["id"] == "m-1"
    assert found.json()["identities"] == [{"external_source": "customer_id", "external_source_id": "5566"}]
    create_clash = create(
        api,
        {"id": "m-3", "identities": [{"external_source": "pos", "external_source_id": "5566"}]},
        status=409,
    )
    assert create_clash["code"] == "identity_taken"
    assert api.get("/api/v1/members/m-3").status_code == 404  # nothing half-written
    removed = api.delete(
        "/api/v1/members/m-1/identities",
        params={"external_source": "customer_id", "external_source_id": "5566"},
    )
    assert removed.status_code == 204


def test_listing_pages_with_a_cursor_and_filters(api: TestClient) -> None:
    for i in range(7):
        create(
            api, {"id": f"m-{i}", "email": f"m{i}@example.com", "status": "blocked" if i == 3 else "active"}
        )
    for i in range(3):
        api.post("/api/v1/events", json=event(f"m-{i}", "opt_in"))
    api.post("/api/v1/events", json=event("m-0", "checkout", transaction_id="T", total=2000))
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        page = api.get("/api/v1/members", params=params).json()
        seen += [m["id"] for m in page["data"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == [f"m-{i}" for i in range(7)]

    def ids(**params: Any) -> list[str]:
        response = api.get("/api/v1/members", params=params)
        assert response.status_code == 200, response.text
        return [m["id"] for m in response.json()["data"]]

    assert ids(status="blocked") == ["m-3"]
    assert ids(email="M4@example.com") == ["m-4"]
    assert ids(program="demo", opted_in=True) == ["m-0", "m-1", "m-2"]
    assert ids(tier="Silver") == ["m-0"]
    assert api.get("/api/v1/members", params={"cursor": "garbage!"}).json()["code"] == "invalid_cursor"


def test_blocked_members_cannot_earn(api: TestClient) -> None:
    api.post("/api/v1/events", json=event("m-1", "opt_in"))
    api.patch("/api/v1/members/m-1", json={"status": "blocked"})
    response = api.post("/api/v1/events", json=event("m-1", "point_add", points=5))
    assert response.status_code == 409 and response.json()["code"] == "member_not_active"


def test_timeline_pages_through_member_and_program_activity(api: TestClient) -> None:
    api.post("/api/v1/events", json=event("m-1", "opt_in", email="a@b.co"))
    for i in range(5):
        api.post("/api/v1/events", json=event("m-1", "point_add", points=1 + i))
    api.post("/api/v1/events", json=event("m-1", "profile", first_name="Zed"))
    api.post("/api/v1/events", json=event("m-2", "opt_in"))  # someone else's activity in between
    types: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = api.get("/api/v1/members/m-1/activities", params=params).json()
        types += [a["type"] for a in page["data"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert types == [
        "profile",
        "point_add",
        "point_add",
        "tier_up",
        "point_add",
        "point_add",
        "point_add",
        "tier_up",
        "opt_in",
        "profile",
    ]
    ledger = api.get("/api/v1/members/m-1/ledger").json()["data"]
    assert [e["points_delta"] for e in ledger] == [5, 4, 3, 2, 1, 5]
    assert (
        sum(e["points_delta"] for e in ledger)
        == api.get("/api/v1/members/m-1/points").json()["points"]["balance"]
    )


def test_points_view_lists_lots_soonest_expiring_first(api: TestClient) -> None:
    api.post("/api/v1/events", json=event("m-1", "opt_in"))
    api.post("/api/v1/events", json=event("m-1", "point_add", points=7, expires_in_days=3))
    api.post("/api/v1/events", json=event("m-1", "point_add", points=9, expires_in_days=30))
    view = api.get("/api/v1/members/m-1/points").json()
    assert [lot["remaining"] for lot in view["lots"]] == [7, 9, 5]
    assert view["points"]["next_expiry"] == {"points": 7, "at": "2026-03-17T09:00:00Z"}
    assert api.get("/api/v1/members/nobody/points").status_code == 404
