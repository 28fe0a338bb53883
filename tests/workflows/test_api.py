"""The workflows API: create inactive, validate, version, activate, deactivate, archive, list runs."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from perkflow.core.clock import ManualClock
from perkflow.core.context import AppContext
from tests.conftest import key_with
from tests.workflows.conftest import chain, create, join, node, on, points, runs, send, where

pytestmark = pytest.mark.usefixtures("demo")


def bonus(points_: int = 10, *conditions: tuple[str, str, Any]) -> dict[str, Any]:
    nodes = [on("checkout")]
    if conditions:
        nodes.append(where("filter", "event", *conditions))
    nodes.append(node("bonus", "action.add_points", points=points_, reason="test bonus"))
    return chain(*nodes)


def test_workflows_are_created_inactive_and_run_only_once_activated(api: TestClient) -> None:
    join(api, "ana")
    created = create(api, bonus(10), activate=False, name="Bonus")
    assert created["status"] == "inactive" and created["version"] == 1 and created["active_version"] is None
    assert created["trigger"] == {"type": "event", "key": "checkout"}
    send(api, "ana", "checkout", transaction_id="T1", total=1000)
    assert points(api, "ana")["balance"] == 5 + 10 and runs(api, created["id"]) == []
    activated = api.post(f"/api/v1/workflows/{created['id']}/activate").json()
    assert activated["status"] == "active" and activated["active_version"] == 1
    send(api, "ana", "checkout", transaction_id="T2", total=1000)
    assert points(api, "ana")["balance"] == 15 + 10 + 10
    [run] = runs(api, created["id"])
    assert run["version"] == 1 and run["status"] == "completed" and run["path"] == ["trigger", "bonus"]
    assert run["trigger"]["type"] == "checkout" and run["results"]["bonus"]["points"] == 10
    assert api.get(f"/api/v1/workflows/{created['id']}").json()["runs"]["completed"] == 1
    assert api.post(f"/api/v1/workflows/{created['id']}/deactivate").json()["status"] == "inactive"
    send(api, "ana", "checkout", transaction_id="T3", total=1000)
    assert len(runs(api, created["id"])) == 1


def test_an_invalid_graph_is_refused_with_the_node_named_and_nothing_saved(api: TestClient) -> None:
    graph = chain(on("checkout"), node("claim", "action.reward_claim", reward="rew_missing"))
    response = api.post("/api/v1/workflows", json={"name": "bad", "graph": graph})
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "invalid_workflow" and "node 'claim'" in body["message"]
    assert body["details"]["errors"] == [
        {"node": "claim", "field": "params.reward", "message": "reward 'rew_missing' does not exist"}
    ]
    assert api.get("/api/v1/workflows").json()["data"] == []
    unknown_type = api.post("/api/v1/workflows", json={"name": "bad", "graph": chain(on("made_up"))})
    assert unknown_type.status_code == 422 and "unknown event type" in unknown_type.json()["message"]


def test_custom_event_types_are_triggers_and_their_attributes_are_checked(api: TestClient) -> None:
    graph = chain(
        on("review_written"),
        where("five_stars", "event", ("rating", "eq", 5)),
        node("bonus", "action.add_points", points=20),
    )
    workflow = create(api, graph)
    typo = chain(on("review_written"), where("f", "event", ("ratting", "eq", 5)))
    assert api.post("/api/v1/workflows", json={"name": "typo", "graph": typo}).status_code == 422
    join(api, "ana")
    send(api, "ana", "review_written", product_id="p1", rating=4)
    send(api, "ana", "review_written", product_id="p1", rating=5)
    assert points(api, "ana")["balance"] == 5 + 5 + 5 + 20
    assert len(runs(api, workflow["id"])) == 1


def test_editing_makes_versions_and_runs_use_the_version_active_when_they_started(api: TestClient) -> None:
    workflow = create(api, bonus(10), activate=False)
    edited = api.patch(f"/api/v1/workflows/{workflow['id']}", json={"graph": bonus(11)}).json()
    assert (
        edited["version"] == 1 and edited["graph"]["nodes"][1]["params"]["points"] == 11
    )  # never ran: in place
    api.post(f"/api/v1/workflows/{workflow['id']}/activate")
    join(api, "ana")
    send(api, "ana", "checkout", transaction_id="T1", total=100)
    edited = api.patch(f"/api/v1/workflows/{workflow['id']}", json={"graph": bonus(12), "name": "v2"}).json()
    assert edited["version"] == 2 and edited["active_version"] == 2 and edited["name"] == "v2"
    send(api, "ana", "checkout", transaction_id="T2", total=100)
    assert [(r["version"], r["results"]["bonus"]["points"]) for r in runs(api, workflow["id"])] == [
        (2, 12),
        (1, 11),
    ]
    versions = api.get(f"/api/v1/workflows/{workflow['id']}/versions").json()["data"]
    assert [(v["version"], v["active"]) for v in versions] == [(2, True), (1, False)]
    one = api.get(f"/api/v1/workflows/{workflow['id']}/versions/1").json()
    assert one["graph"]["nodes"][1]["params"]["points"] == 11
    assert api.get(f"/api/v1/workflows/{workflow['id']}/versions/9").status_code == 404
    bad = api.patch(f"/api/v1/workflows/{workflow['id']}", json={"graph": chain(on("nope"))})
    assert bad.status_code == 422
    assert api.get(f"/api/v1/workflows/{workflow['id']}").json()["version"] == 2
    api.post(f"/api/v1/workflows/{workflow['id']}/deactivate")
    edited = api.patch(f"/api/v1/workflows/{workflow['id']}", json={"graph": bonus(13)}).json()
    assert edited["version"] == 3 and edited["status"] == "inactive"


def test_archiving_stops_a_workflow_for_good_and_keeps_its_history(api: TestClient) -> None:
    workflow = create(api, bonus(10))
    join(api, "ana")
    send(api, "ana", "checkout", transaction_id="T1", total=100)
    assert api.delete(f"/api/v1/workflows/{workflow['id']}").status_code == 204
    assert api.get(f"/api/v1/workflows/{workflow['id']}").json()["status"] == "archived"
    assert api.get("/api/v1/workflows").json()["data"] == []
    assert [w["id"] for w in api.get("/api/v1/workflows?status=archived").json()["data"]] == [workflow["id"]]
    assert api.post(f"/api/v1/workflows/{workflow['id']}/activate").json()["code"] == "workflow_archived"
    assert api.patch(f"/api/v1/workflows/{workflow['id']}", json={"name": "x"}).status_code == 409
    send(api, "ana", "checkout", transaction_id="T2", total=100)
    assert len(runs(api, workflow["id"])) == 1
    assert api.delete("/api/v1/workflows/wf_none").status_code == 404


def test_campaigns_have_dates_and_general_workflows_do_not(api: TestClient, clock: ManualClock) -> None:
    now = clock.now()
    general = api.post(
        "/api/v1/workflows",
        json={"name": "x", "graph": bonus(), "ends_at": (now + timedelta(days=1)).isoformat()},
    )
    assert general.status_code == 422 and "only campaigns" in general.json()["message"]
    backwards = api.post(
        "/api/v1/workflows",
        json={
            "name": "x",
            "kind": "campaign",
            "graph": bonus(),
            "starts_at": now.isoformat(),
            "ends_at": (now - timedelta(days=1)).isoformat(),
        },
    )
    assert backwards.status_code == 422
    ended = create(
        api, bonus(), activate=False, kind="campaign", ends_at=(now - timedelta(hours=1)).isoformat()
    )
    refused = api.post(f"/api/v1/workflows/{ended['id']}/activate")
    assert refused.status_code == 409 and refused.json()["code"] == "campaign_ended"


def test_campaigns_run_only_between_their_dates(api: TestClient, clock: ManualClock) -> None:
    now = clock.now()
    campaign = create(
        api,
        bonus(10),
        kind="campaign",
        starts_at=(now + timedelta(days=1)).isoformat(),
        ends_at=(now + timedelta(days=2)).isoformat(),
    )
    join(api, "ana")
    send(api, "ana", "checkout", transaction_id="T1", total=100)  # before the start
    clock.advance(timedelta(days=1, hours=1))
    during = send(api, "ana", "checkout", transaction_id="T2", total=100)
    clock.advance(timedelta(days=1))
    send(api, "ana", "checkout", transaction_id="T3", total=100)  # after the end
    assert [r["trigger"]["activity"] for r in runs(api, campaign["id"])] == [during["id"]]
    assert points(api, "ana")["balance"] == 5 + 3 + 10


def test_a_campaign_caps_the_bonus_points_one_member_gets(api: TestClient) -> None:
    campaign = create(api, bonus(40), kind="campaign", bonus_cap=100)
    join(api, "ana")
    join(api, "ben")
    for n in range(4):
        send(api, "ana", "checkout", transaction_id=f"A{n}", total=100)
    send(api, "ben", "checkout", transaction_id="B1", total=100)
    results = [r["results"]["bonus"] for r in reversed(runs(api, campaign["id"], member="ana"))]
    assert [r.get("points") for r in results] == [40, 40, 20, None]
    assert results[2]["capped"] is True and results[3]["code"] == "campaign_cap"
    assert points(api, "ana")["balance"] == 5 + 4 + 100
    assert points(api, "ben")["balance"] == 5 + 1 + 40


def test_workflows_on_one_trigger_run_in_priority_order(api: TestClient) -> None:
    def set_store(value: str) -> dict[str, Any]:
        return chain(on("checkout"), node("set", "action.modify_field", field="favourite_store", value=value))

    late = create(api, set_store("Paris"), priority=10, name="late")
    early = create(api, set_store("Lyon"), priority=-5, name="early")
    join(api, "ana")
    send(api, "ana", "checkout", transaction_id="T1", total=100)
    assert api.get("/api/v1/members/ana").json()["fields"]["favourite_store"] == "Paris"
    assert runs(api, early["id"])[0]["id"] < runs(api, late["id"])[0]["id"]


def test_runs_are_listed_per_workflow_and_per_member_newest_first(api: TestClient) -> None:
    workflow = create(api, bonus(1, ("total", "gt", 500)), run_log="all")
    join(api, "ana")
    join(api, "ben")
    send(api, "ana", "checkout", transaction_id="T1", total=1000)
    send(api, "ana", "checkout", transaction_id="T2", total=100)
    send(api, "ben", "checkout", transaction_id="T3", total=1000)
    everything = runs(api, workflow["id"])
    assert [(r["member_id"], r["status"]) for r in everything] == [
        ("ben", "completed"),
        ("ana", "filtered"),
        ("ana", "completed"),
    ]
    assert everything[1]["path"] == ["trigger", "filter"]
    assert [r["status"] for r in runs(api, workflow["id"], status="filtered")] == ["filtered"]
    page = api.get(f"/api/v1/workflows/{workflow['id']}/runs?limit=2").json()
    assert len(page["data"]) == 2 and page["next_cursor"] == page["data"][-1]["id"]
    rest = api.get(f"/api/v1/workflows/{workflow['id']}/runs?limit=2&before={page['next_cursor']}").json()
    assert [r["member_id"] for r in rest["data"]] == ["ana"] and rest["next_cursor"] is None
    mine = api.get("/api/v1/members/ana/workflow-runs").json()["data"]
    assert {r["member_id"] for r in mine} == {"ana"} and len(mine) == 2
    one = api.get(f"/api/v1/workflow-runs/{mine[0]['id']}").json()
    assert one == mine[0]
    assert api.get("/api/v1/workflow-runs/999999").status_code == 404
    assert api.get("/api/v1/members/nobody/workflow-runs").json()["code"] == "member_not_found"


def test_runs_stopped_by_a_filter_are_not_stored_unless_asked(api: TestClient) -> None:
    quiet = create(api, bonus(1, ("total", "gt", 500)))
    join(api, "ana")
    send(api, "ana", "checkout", transaction_id="T1", total=100)
    assert runs(api, quiet["id"]) == []
    api.patch(f"/api/v1/workflows/{quiet['id']}", json={"run_log": "all"})
    send(api, "ana", "checkout", transaction_id="T2", total=100)
    assert [r["status"] for r in runs(api, quiet["id"])] == ["filtered"]


def test_scopes_separate_reading_from_writing(api: TestClient, ctx: AppContext) -> None:
    workflow = create(api, bonus(), activate=False)
    reader = {"Authorization": f"Bearer {key_with(ctx, 'workflows:read')}"}
    writer = {"Authorization": f"Bearer {key_with(ctx, 'workflows:write')}"}
    shop = {"Authorization": f"Bearer {key_with(ctx, 'events:write')}"}
    assert api.get(f"/api/v1/workflows/{workflow['id']}", headers=reader).status_code == 200
    refused = api.post(f"/api/v1/workflows/{workflow['id']}/activate", headers=reader)
    assert refused.status_code == 403 and refused.json()["code"] == "insufficient_scope"
    assert api.post(f"/api/v1/workflows/{workflow['id']}/activate", headers=writer).status_code == 200
    assert api.get("/api/v1/workflows", headers=shop).status_code == 403
    assert api.get("/api/v1/workflows", headers={"Authorization": "Bearer nope.nope"}).status_code == 401


def test_listing_filters_and_pages(api: TestClient) -> None:
    a = create(api, bonus(), name="a", id="wf_a")
    create(
        api,
        chain(node("d", "trigger.date", cron="0 9 * * *"), node("p", "action.add_points", points=1)),
        id="wf_b",
    )
    create(api, bonus(), activate=False, kind="campaign", id="wf_c")
    listed = api.get("/api/v1/workflows?limit=2").json()
    assert [w["id"] for w in listed["data"]] == ["wf_a", "wf_b"] and listed["next_cursor"] == "wf_b"
    assert [w["id"] for w in api.get("/api/v1/workflows?after=wf_b").json()["data"]] == ["wf_c"]
    assert [w["id"] for w in api.get("/api/v1/workflows?status=active&trigger=date").json()["data"]] == [
        "wf_b"
    ]
    assert [w["id"] for w in api.get("/api/v1/workflows?kind=campaign").json()["data"]] == ["wf_c"]
    assert [w["id"] for w in api.get("/api/v1/workflows?trigger=checkout").json()["data"]] == [
        a["id"],
        "wf_c",
    ]
    create(
        api, chain(on(["opt_in", "checkout", "refund"]), node("p", "action.add_points", points=1)), id="wf_d"
    )
    assert [w["id"] for w in api.get("/api/v1/workflows?trigger=checkout").json()["data"]][-1] == "wf_d"
    assert [w["id"] for w in api.get("/api/v1/workflows?trigger=refund").json()["data"]] == ["wf_d"]
    duplicate = api.post("/api/v1/workflows", json={"id": "wf_a", "name": "again", "graph": bonus()})
    assert duplicate.status_code == 409 and duplicate.json()["code"] == "workflow_exists"
    nodes = api.get("/api/v1/workflows/nodes").json()["data"]
    assert {"trigger.event", "action.interrupt", "filter.customer_attribute"} <= {n["type"] for n in nodes}


graph_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=10,
)
node_types = st.sampled_from(
    [
        "trigger.event",
        "trigger.date",
        "trigger.segment_entered",
        "filter.event_attribute",
        "filter.customer_attribute",
        "action.add_points",
        "action.sync_event",
        "action.sync_fields",
        "action.webhook",
        "action.wait",
        "action.interrupt",
        "action.modify_field",
        "nonsense",
    ]
)
param_keys = st.sampled_from(
    [
        "event",
        "events",
        "cron",
        "at",
        "conditions",
        "points",
        "name",
        "properties",
        "fields",
        "minutes",
        "code",
    ]
)
random_graphs = st.fixed_dictionaries(
    {
        "nodes": st.lists(
            st.fixed_dictionaries(
                {
                    "id": st.sampled_from(["t", "a", "b", "", "x" * 70]),
                    "type": node_types,
                    "params": st.dictionaries(param_keys, graph_values, max_size=3) | graph_values,
                }
            ),
            max_size=4,
        ),
        "edges": st.lists(
            st.fixed_dictionaries(
                {"from": st.sampled_from(["t", "a", "b"]), "to": st.sampled_from(["t", "a", "b", "z"])},
                optional={"branch": st.sampled_from(["success", "fail", "modifier", "other"])},
            ),
            max_size=4,
        ),
    }
)


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(graph=random_graphs)
def test_random_graphs_never_cause_a_500(api: TestClient, graph: dict[str, Any]) -> None:
    response = api.post("/api/v1/workflows", json={"name": "fuzz", "graph": graph})
    assert response.status_code in (201, 400, 422), response.text
    assert set(response.json()) >= ({"id"} if response.status_code == 201 else {"code", "message", "details"})
    if response.status_code == 201:
        activated = api.post(f"/api/v1/workflows/{response.json()['id']}/activate")
        assert activated.status_code in (200, 409, 422), activated.text


dry_run_bodies = st.fixed_dictionaries(
    {"member_id": st.sampled_from(["ana", "nobody", "", "a b"])},
    optional={
        "event": st.fixed_dictionaries(
            {},
            optional={
                "action": st.sampled_from(["checkout", "opt_in", "x", ""]),
                "data": st.dictionaries(
                    st.sampled_from(["total", "store", "items"]), graph_values, max_size=3
                ),
                "effects": st.dictionaries(st.sampled_from(["points", "tier"]), graph_values, max_size=2),
                "occurred_at": graph_values,
            },
        )
        | graph_values,
        "member": graph_values,
        "version": graph_values,
        "at": graph_values,
    },
)


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(
    body=dry_run_bodies,
    patch=st.dictionaries(
        st.sampled_from(["name", "kind", "priority", "graph", "ends_at", "bonus_cap", "run_log"]),
        graph_values,
        max_size=3,
    ),
)
def test_odd_dry_runs_and_edits_never_cause_a_500(
    api: TestClient, body: dict[str, Any], patch: dict[str, Any]
) -> None:
    if api.get("/api/v1/workflows/wf_fuzz").status_code == 404:
        graph = chain(
            on("checkout"),
            where("big", "event", ("total", "gt", 10)),
            node(
                "tell",
                "action.sync_event",
                name="x",
                properties={"t": "{{ event.total }}", "s": "{{ event.store }}"},
            ),
        )
        create(api, graph, id="wf_fuzz")
        join(api, "ana")
    response = api.post("/api/v1/workflows/wf_fuzz/test", json=body)
    assert response.status_code in (200, 400, 404, 422), response.text
    edited = api.patch("/api/v1/workflows/wf_fuzz", json=patch)
    assert edited.status_code in (200, 400, 409, 422), edited.text
