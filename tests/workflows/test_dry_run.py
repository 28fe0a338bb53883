"""Dry runs: the path a sample event and member take and the exact payloads, with nothing written."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from perkflow.bootstrap import import_all_tables
from perkflow.core.context import AppContext
from perkflow.core.schema import metadata
from tests.workflows.conftest import (
    chain,
    connect_bloomreach,
    connect_braze,
    create,
    join,
    node,
    on,
    where,
)

pytestmark = pytest.mark.usefixtures("demo")


def row_counts(ctx: AppContext) -> dict[str, int]:
    import_all_tables()
    with ctx.uow(write=False) as uow:
        return {
            t.name: int(uow.conn.execute(select(func.count()).select_from(t)).scalar_one())
            for t in metadata.sorted_tables
        }


def big_basket() -> dict[str, Any]:
    return chain(
        on("checkout"),
        where("big", "event", ("total", "gte", 5000)),
        node("gift", "action.reward_claim", reward="rew_coffee", free=True),
        node("bonus", "action.add_points", points="{{ event.total // 1000 }}"),
        node(
            "tell",
            "action.sync_event",
            name="big_basket",
            properties={
                "total": "{{ event.total }}",
                "coupon": "{{ coupon.code }}",
                "tier": "{{ customer.tier }}",
            },
        ),
    )


def test_a_dry_run_shows_the_path_and_the_requests_and_writes_nothing(
    api: TestClient, ctx: AppContext, braze: Any, bloomreach: Any
) -> None:
    connect_braze(api, braze)
    connect_bloomreach(api, bloomreach)
    join(api, "ana", first_name="Ana")
    workflow = create(api, big_basket(), activate=False)
    before = row_counts(ctx)
    requests_before = (len(braze.recent_requests(1000)), len(bloomreach.requests(1000)))
    response = api.post(
        f"/api/v1/workflows/{workflow['id']}/test",
        json={
            "member_id": "ana",
            "event": {"action": "checkout", "data": {"transaction_id": "X", "total": 6400}},
        },
    )
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["dry_run"] is True and result["status"] == "completed"
    assert result["path"] == ["trigger", "big", "gift", "bonus", "tell"]
    assert result["results"]["big"]["conditions"] == [
        {"attribute": "total", "operator": "gte", "value": 5000, "actual": 6400, "passed": True}
    ]
    coupon = result["results"]["gift"]["coupon"]["code"]
    assert coupon.startswith("COFFEE-") and result["results"]["bonus"]["points"] == 6
    sent = {s["kind"]: s for s in result["results"]["tell"]["sent"]}
    braze_body = sent["braze"]["request"]["body"]
    assert (
        sent["braze"]["request"]["url"].endswith("/users/track") and "headers" not in sent["braze"]["request"]
    )
    [event] = braze_body["events"]
    assert event["external_id"] == "ana" and event["name"] == "big_basket"
    assert event["properties"]["total"] == 6400 and event["properties"]["coupon"] == coupon
    assert event["properties"]["tier"] == "Silver"  # the bonus before it lifted her from Bronze
    bloom = sent["bloomreach"]["request"]["body"]
    assert "big_basket" in str(bloom) and "ana@example.com" in str(bloom)
    assert row_counts(ctx) == before
    assert (len(braze.recent_requests(1000)), len(bloomreach.requests(1000))) == requests_before
    assert braze.user("ana") is None
    stock = api.get("/api/v1/rewards/rew_coffee").json()["coupons"]
    assert stock["assigned"] == 0
    failing = api.post(
        f"/api/v1/workflows/{workflow['id']}/test",
        json={"member_id": "ana", "event": {"action": "checkout", "data": {"total": 100}}},
    ).json()
    assert failing["status"] == "filtered" and failing["path"] == ["trigger", "big"]
    assert failing["results"]["big"]["passed"] is False


def test_a_dry_run_can_use_a_version_and_a_new_sample_member(api: TestClient, ctx: AppContext) -> None:
    workflow = create(api, chain(on("opt_in"), node("p", "action.add_points", points=10)))
    api.patch(
        f"/api/v1/workflows/{workflow['id']}",
        json={"graph": chain(on("opt_in"), node("p", "action.add_points", points=20))},
    )
    before = row_counts(ctx)
    body = {"member_id": "zoe", "member": {"email": "zoe@example.com", "first_name": "Zoé"}, "version": 1}
    result = api.post(f"/api/v1/workflows/{workflow['id']}/test", json=body).json()
    assert result["version"] == 1 and result["results"]["p"]["points"] == 10
    assert row_counts(ctx) == before
    assert api.get("/api/v1/members/zoe").status_code == 404


def test_a_dry_run_of_a_modifier_branch_shows_the_rejection(api: TestClient) -> None:
    graph = {
        "nodes": [
            on("checkout"),
            where("blocked", "event", ("store", "eq", "closed")),
            node("stop", "action.interrupt", code="store_closed", message="closed"),
            node("bonus", "action.add_points", points=1),
        ],
        "edges": [
            {"from": "trigger", "to": "blocked", "branch": "modifier"},
            {"from": "blocked", "to": "stop"},
            {"from": "trigger", "to": "bonus"},
        ],
    }
    workflow = create(api, graph)
    join(api, "ana")
    url = f"/api/v1/workflows/{workflow['id']}/test"
    rejected = api.post(
        url, json={"member_id": "ana", "event": {"data": {"store": "closed", "total": 1}}}
    ).json()
    assert rejected["status"] == "interrupted" and rejected["rejection"] == {
        "code": "store_closed",
        "message": "closed",
    }
    assert rejected["modifier"]["path"] == ["trigger", "blocked", "stop"]
    passed = api.post(url, json={"member_id": "ana", "event": {"data": {"store": "open", "total": 1}}}).json()
    assert passed["status"] == "completed" and passed["modifier"]["results"]["blocked"]["passed"] is False


def test_a_dry_run_of_a_date_trigger_runs_as_of_the_given_moment(api: TestClient) -> None:
    graph = chain(
        node(
            "daily",
            "trigger.date",
            cron="0 8 * * *",
            prefilter={"conditions": [{"attribute": "opted_in", "operator": "eq", "value": True}]},
        ),
        where("birthday", "customer", ("birth_date", "in_date", "today")),
        node("gift", "action.reward_claim", reward="rew_coffee", free=True),
    )
    workflow = create(api, graph, activate=False)
    join(api, "ana", birth_date="1990-07-01")
    url = f"/api/v1/workflows/{workflow['id']}/test"
    on_birthday = api.post(url, json={"member_id": "ana", "at": "2026-07-01T08:00:00Z"}).json()
    assert on_birthday["prefilter"]["passed"] is True and on_birthday["status"] == "completed"
    assert on_birthday["occurs_at"] == "2026-07-01T08:00:00Z"
    other_day = api.post(url, json={"member_id": "ana", "at": "2026-07-02T08:00:00Z"}).json()
    assert other_day["status"] == "filtered"
    assert api.post(url, json={"member_id": "ana", "event": {"data": {}}}).status_code == 422


def test_dry_run_errors_are_clear(api: TestClient) -> None:
    workflow = create(api, chain(on("checkout"), node("p", "action.add_points", points=1)))
    url = f"/api/v1/workflows/{workflow['id']}/test"
    assert api.post(url, json={"member_id": "nobody"}).json()["code"] == "member_not_found"
    join(api, "ana")
    wrong = api.post(url, json={"member_id": "ana", "event": {"action": "opt_in"}})
    assert wrong.status_code == 422 and "triggered by checkout" in wrong.json()["message"]
    exists = api.post(url, json={"member_id": "ana", "member": {"email": "x@example.com"}})
    assert exists.status_code == 422
    assert api.post("/api/v1/workflows/wf_nope/test", json={"member_id": "ana"}).status_code == 404
    assert api.post(url, json={"member_id": "a b"}).status_code == 422
