"""Segments and workflows together, end to end: the activities the segments code records when members
enter or leave a rule or static segment start the workflows listening to that segment."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.workflows.conftest import chain, create, join, node, points, runs, send

pytestmark = pytest.mark.usefixtures("demo")


def test_a_rule_segment_starts_its_workflows_when_members_enter_and_leave(api: TestClient) -> None:
    made = api.post(
        "/api/v1/segments",
        json={
            "name": "Gold",
            "rules": {"conditions": [{"attribute": "tier", "operator": "eq", "value": "Gold"}]},
        },
    )
    assert made.status_code == 201, made.text
    gold = made.json()["id"]
    welcome = create(
        api,
        chain(
            node("in", "trigger.segment_entered", segment=gold),
            node("gift", "action.add_points", points=7, reason="welcome to {{ event.segment_name }}"),
        ),
    )
    farewell = create(
        api,
        chain(
            node("out", "trigger.segment_left", segment=gold),
            node(
                "mark", "action.modify_field", field="favourite_store", value="left {{ event.segment_name }}"
            ),
        ),
    )
    join(api, "ana")
    join(api, "ben")
    send(api, "ana", "checkout", transaction_id="T-1", total=4500)  # 5 + 45 = 50 points: Gold
    send(api, "ben", "checkout", transaction_id="T-2", total=1000)  # Silver: not in the segment
    [run] = runs(api, welcome["id"])
    assert run["member_id"] == "ana" and run["status"] == "completed"
    assert points(api, "ana")["balance"] == 57  # the workflow's bonus, in the same transaction
    assert points(api, "ben")["balance"] == 15
    assert runs(api, farewell["id"]) == []

    send(api, "ana", "checkout", transaction_id="T-3", total=6000)  # Platinum: leaves Gold
    [left] = runs(api, farewell["id"])
    assert left["member_id"] == "ana"
    profile = api.get("/api/v1/members/ana").json()
    assert profile["fields"]["favourite_store"] == "left Gold"
    assert len(runs(api, welcome["id"])) == 1


def test_a_static_segment_filled_by_webhook_starts_its_workflow(api: TestClient) -> None:
    made = api.post("/api/v1/segments", json={"name": "Braze VIP"})
    assert made.status_code == 201, made.text
    vip = made.json()["id"]
    welcome = create(
        api,
        chain(
            node("in", "trigger.segment_entered", segment=vip),
            node("gift", "action.add_points", points=20, reason="VIP"),
        ),
    )
    join(api, "ana")
    added = api.post(f"/api/v1/segments/{vip}/members", json={"user_id": "ana"})
    assert added.status_code in (200, 201), added.text
    [run] = runs(api, welcome["id"])
    assert run["member_id"] == "ana"
    assert points(api, "ana")["balance"] == 25
    again = api.post(f"/api/v1/segments/{vip}/members", json={"user_id": "ana"})
    assert again.status_code == 200
    assert len(runs(api, welcome["id"])) == 1  # already a member: no second entry, no second run
