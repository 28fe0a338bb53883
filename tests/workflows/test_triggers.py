"""Triggers other than plain events: segment entered / left, and workflows scoped to a program."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import insert

from perkflow.activity.stream import ActivityLog
from perkflow.core.context import AppContext
from perkflow.members.repository import MemberRepository
from perkflow.segments.tables import segments
from tests.workflows.conftest import chain, create, join, node, on, points, runs, send

pytestmark = pytest.mark.usefixtures("demo")


def add_segment(ctx: AppContext, segment_id: str, name: str) -> None:
    # The segments code owns this table; a row is all a segment trigger needs to refer to.
    with ctx.uow() as uow:
        uow.conn.execute(
            insert(segments).values(
                id=segment_id, name=name, kind="static", created_at=uow.now, updated_at=uow.now
            )
        )
        uow.commit()


def record_segment_change(
    ctx: AppContext, member_id: str, activity_type: str, segment_id: str, name: str
) -> None:
    """What the segments code records, in its own unit of work, when membership changes."""
    with ctx.uow() as uow:
        member = uow.component(MemberRepository).get_for_update(member_id)
        assert member is not None
        uow.component(ActivityLog).record(
            type=activity_type,
            member_id=member_id,
            program_id=None,
            chain=member,
            data={"segment_id": segment_id, "segment_name": name},
            source="segments",
        )
        uow.commit()


def test_segment_entered_and_left_trigger_the_workflows_of_that_segment(
    api: TestClient, ctx: AppContext
) -> None:
    add_segment(ctx, "seg_vip", "VIP")
    add_segment(ctx, "seg_other", "Other")
    welcome: dict[str, Any] = chain(
        node("in", "trigger.segment_entered", segment="seg_vip"),
        node("gift", "action.add_points", points=50, reason="welcome to {{ event.segment_name }}"),
    )
    entered = create(api, welcome)
    goodbye = create(
        api,
        chain(
            node("out", "trigger.segment_left", segment="seg_vip"),
            node(
                "mark", "action.modify_field", field="favourite_store", value="left {{ event.segment_name }}"
            ),
        ),
    )
    unknown = api.post(
        "/api/v1/workflows",
        json={"name": "x", "graph": chain(node("in", "trigger.segment_entered", segment="seg_nope"))},
    )
    assert unknown.status_code == 422 and "segment 'seg_nope' does not exist" in unknown.json()["message"]
    join(api, "ana")
    record_segment_change(ctx, "ana", "segment_entered", "seg_other", "Other")
    assert runs(api, entered["id"]) == []
    record_segment_change(ctx, "ana", "segment_entered", "seg_vip", "VIP")
    [run] = runs(api, entered["id"])
    assert run["trigger"] == {
        "kind": "segment_entered",
        "activity": run["trigger"]["activity"],
        "type": "segment_entered",
        "segment_id": "seg_vip",
    }
    assert points(api, "ana")["balance"] == 5 + 50
    record_segment_change(ctx, "ana", "segment_left", "seg_vip", "VIP")
    assert runs(api, goodbye["id"])[0]["status"] == "completed"
    assert api.get("/api/v1/members/ana").json()["fields"]["favourite_store"] == "left VIP"
    assert len(runs(api, entered["id"])) == 1


def test_a_workflow_of_one_program_ignores_the_activity_of_another(api: TestClient) -> None:
    second = api.post(
        "/api/v1/programs",
        json={"id": "club", "name": "Club", "currency": "EUR", "earning_rules": [], "tiers": []},
    )
    assert second.status_code == 201, second.text
    create(api, chain(on("opt_in"), node("gift", "action.add_points", points=7)), program_id="club")
    join(api, "ana")  # the demo program (the default)
    assert points(api, "ana")["balance"] == 5
    response = api.post(
        "/api/v1/events", json={"customer": "ana", "action": "opt_in", "program": "club", "data": {}}
    )
    assert response.status_code == 201, response.text
    club = next(p for p in api.get("/api/v1/members/ana").json()["programs"] if p["program_id"] == "club")
    assert club["points"]["balance"] == 7


def test_several_event_types_trigger_one_workflow(api: TestClient) -> None:
    workflow = create(
        api, chain(on(["checkout", "review_written"]), node("p", "action.add_points", points=1))
    )
    join(api, "ana")
    send(api, "ana", "checkout", transaction_id="T1", total=100)
    send(api, "ana", "review_written", product_id="p", rating=3)
    assert sorted(r["trigger"]["type"] for r in runs(api, workflow["id"])) == ["checkout", "review_written"]
