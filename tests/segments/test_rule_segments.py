"""Rule-based segments on both databases: membership follows members as they change, in the same
transaction, with segment_entered / segment_left activity; rules that change with time are
re-evaluated by the periodic job; creating or changing rules computes membership for everyone."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from perkflow.core.clock import ManualClock
from perkflow.core.context import AppContext
from perkflow.segments.runs import run_due
from tests.conftest import event
from tests.segments.conftest import checkout, enrol, make_segment, members_of, membership_activity, rule, send

pytestmark = pytest.mark.usefixtures("demo")


def test_a_tier_segment_is_computed_at_creation_and_followed_as_members_move(api: TestClient) -> None:
    enrol(api, "ana", "ben", "cleo")
    checkout(api, "ana", 6000, "T-1")  # 60 points: Gold
    gold = make_segment(api, {"name": "Gold members", "rules": {"conditions": [rule("tier", "eq", "Gold")]}})
    assert gold["kind"] == "rule" and gold["program_id"] == "demo"
    assert gold["member_count"] == 1 and gold["evaluation"]["status"] == "ready"
    assert gold["evaluation"]["entered"] == 1 and gold["evaluation"]["evaluated"] == 3
    assert members_of(api, gold["id"]) == ["ana"]
    checkout(api, "ben", 4500, "T-2")  # 5 + 45 = 50 points: Gold
    checkout(api, "cleo", 1000, "T-3")  # Silver only
    assert members_of(api, gold["id"]) == ["ana", "ben"]
    assert membership_activity(api, "ben") == [("segment_entered", gold["id"], "Gold members")]
    assert membership_activity(api, "cleo") == []
    checkout(api, "ana", 5000, "T-4")  # Platinum: leaves Gold
    assert membership_activity(api, "ana") == [
        ("segment_entered", gold["id"], "Gold members"),
        ("segment_left", gold["id"], "Gold members"),
    ]
    assert members_of(api, gold["id"]) == ["ben"]
    left = api.get("/api/v1/members/ana/activities", params={"type": "segment_left"}).json()["data"][0]
    assert left["program_id"] is None and left["source"] == "system" and left["effects"] == {"via": "rules"}


def test_points_segments_follow_balance_pending_and_lifetime_points(api: TestClient) -> None:
    enrol(api, "ana", "ben")
    rich = make_segment(api, {"name": "Rich", "rules": {"conditions": [rule("points_balance", "gte", 40)]}})
    waiting = make_segment(
        api, {"name": "Waiting", "rules": {"conditions": [rule("points_pending", "gt", 0)]}}
    )
    loyal = make_segment(api, {"name": "Loyal", "rules": {"conditions": [rule("points_earned", "gte", 100)]}})
    checkout(api, "ana", 4000, "T-1")  # 45 points
    checkout(api, "ben", 5000, "T-2", channel="online")  # 60 points pending until accepted
    assert members_of(api, rich["id"]) == ["ana"]
    assert members_of(api, waiting["id"]) == ["ben"]
    send(api, event("ben", "checkout_accept", transaction_id="T-2"))
    assert members_of(api, rich["id"]) == ["ana", "ben"]
    assert members_of(api, waiting["id"]) == []
    send(api, event("ana", "point_subtract", points=10, reason="correction"))
    assert members_of(api, rich["id"]) == ["ben"]
    checkout(api, "ben", 5000, "T-3")
    assert members_of(api, loyal["id"]) == ["ben"]
    assert [t for t, _, _ in membership_activity(api, "ana")] == ["segment_entered", "segment_left"]


def test_custom_field_and_profile_rules_follow_profile_changes(api: TestClient) -> None:
    enrol(api, "ana", "ben", favourite_store="Paris")
    lyon = make_segment(
        api,
        {
            "name": "Lyon newsletter",
            "rules": {
                "match": "all",
                "conditions": [rule("favourite_store", "eq", "Lyon"), rule("newsletter", "eq", True)],
            },
        },
    )
    assert lyon["program_id"] is None and lyon["member_count"] == 0
    response = api.patch(
        "/api/v1/members/ana", json={"fields": {"favourite_store": "Lyon", "newsletter": True}}
    )
    assert response.status_code == 200, response.text
    assert members_of(api, lyon["id"]) == ["ana"]
    send(api, event("ben", "profile", favourite_store="Lyon", newsletter=True))
    assert members_of(api, lyon["id"]) == ["ana", "ben"]
    api.patch("/api/v1/members/ana", json={"fields": {"newsletter": None}})
    assert members_of(api, lyon["id"]) == ["ben"]
    created = api.post(
        "/api/v1/members", json={"id": "cleo", "fields": {"favourite_store": "Lyon", "newsletter": True}}
    )
    assert created.status_code == 201, created.text
    assert members_of(api, lyon["id"]) == ["ben", "cleo"]


def test_activity_statistics_and_nested_groups(api: TestClient, clock: ManualClock, ctx: AppContext) -> None:
    enrol(api, "ana", "ben", "cleo")
    regulars = make_segment(
        api, {"name": "Regulars", "rules": {"conditions": [rule("activity.checkout.count", "gte", 2)]}}
    )
    lapsed = make_segment(
        api,
        {
            "name": "Lapsed or never bought",
            "rules": {
                "match": "any",
                "conditions": [
                    rule("activity.checkout.last_at", "before", "now-30d"),
                    rule("activity.checkout.last_at", "exists", False),
                ],
            },
        },
    )
    assert lapsed["time_relative"] is True and lapsed["member_count"] == 3
    checkout(api, "ana", 1000, "T-1")
    checkout(api, "ana", 1000, "T-2")
    checkout(api, "ben", 1000, "T-3")
    assert members_of(api, regulars["id"]) == ["ana"]
    assert members_of(api, lapsed["id"]) == ["cleo"]
    clock.advance(timedelta(days=20))
    checkout(api, "ben", 1000, "T-4")
    clock.advance(timedelta(days=11))
    # Nothing happened to ana, yet she is lapsed now: only the periodic job can notice.
    assert members_of(api, lapsed["id"]) == ["cleo"]
    results = run_due(ctx)
    assert results[lapsed["id"]]["status"] == "ready" and results[lapsed["id"]]["reason"] == "sweep"
    assert results[lapsed["id"]]["entered"] == 1
    assert members_of(api, lapsed["id"]) == ["ana", "cleo"]
    # A month passed: the statistics segment is reconciled too, and it was right all along.
    assert results[regulars["id"]]["reason"] == "reconcile"
    assert (results[regulars["id"]]["entered"], results[regulars["id"]]["left"]) == (0, 0)
    assert run_due(ctx) == {}  # nothing is due right after a sweep
    checkout(api, "ana", 1000, "T-5")
    assert members_of(api, lapsed["id"]) == ["cleo"]


def test_birthdays_and_membership_dates(api: TestClient, clock: ManualClock, ctx: AppContext) -> None:
    enrol(api, "ana", birth_date="1990-03-15")
    enrol(api, "ben", birth_date="1985-07-01")
    birthday = make_segment(
        api, {"name": "Birthday today", "rules": {"conditions": [rule("birth_date", "in_date", "today")]}}
    )
    newcomers = make_segment(
        api, {"name": "Joined this week", "rules": {"conditions": [rule("opted_in_at", "after", "now-7d")]}}
    )
    assert birthday["member_count"] == 0 and newcomers["member_count"] == 2
    clock.advance(timedelta(days=1))
    run_due(ctx)
    assert members_of(api, birthday["id"]) == ["ana"]
    clock.advance(timedelta(days=7))
    enrol(api, "cleo")
    assert members_of(api, newcomers["id"]) == ["ana", "ben", "cleo"]  # cleo at once; the others wait
    run_due(ctx)
    assert members_of(api, birthday["id"]) == []
    assert members_of(api, newcomers["id"]) == ["cleo"]


def test_changing_rules_recomputes_membership_and_renames_carry_the_new_name(api: TestClient) -> None:
    enrol(api, "ana", "ben")
    checkout(api, "ana", 2000, "T-1")
    segment = make_segment(api, {"name": "Big", "rules": {"conditions": [rule("points_balance", "gte", 20)]}})
    assert members_of(api, segment["id"]) == ["ana"]
    response = api.patch(
        f"/api/v1/segments/{segment['id']}",
        json={"rules": {"conditions": [rule("points_balance", "lt", 20)]}},
    )
    assert response.status_code == 200, response.text
    changed = response.json()
    assert changed["version"] == 2 and changed["evaluation"]["reason"] == "rules_changed"
    assert changed["evaluation"]["entered"] == 1 and changed["evaluation"]["left"] == 1
    assert members_of(api, segment["id"]) == ["ben"]
    renamed = api.patch(f"/api/v1/segments/{segment['id']}", json={"name": "Small"}).json()
    assert renamed["version"] == 3 and renamed["evaluation"]["reason"] == "rules_changed"  # no new run
    checkout(api, "ben", 3000, "T-2")
    assert membership_activity(api, "ben")[-1] == ("segment_left", segment["id"], "Small")


def test_large_member_bases_are_computed_in_bounded_batches_with_progress(
    api: TestClient, ctx: AppContext
) -> None:
    ctx.settings.segment_batch_size = 3
    enrol(api, *(f"m{n}" for n in range(8)))
    for n in range(0, 8, 2):
        checkout(api, f"m{n}", 1000, f"T-{n}")
    segment = make_segment(api, {"name": "Silver", "rules": {"conditions": [rule("tier", "eq", "Silver")]}})
    assert segment["evaluation"]["status"] == "pending" and segment["member_count"] == 0
    first = api.post(f"/api/v1/segments/{segment['id']}/evaluate", params={"max_seconds": 0.001})
    assert first.status_code == 202, first.text
    progress = first.json()["evaluation"]
    assert progress["status"] == "running" and progress["evaluated"] == 3 and progress["total"] == 8
    read = api.get(f"/api/v1/segments/{segment['id']}").json()
    assert read["evaluation"]["evaluated"] == 3 and read["member_count"] == 2
    # New rules restart the run from the first member.
    api.patch(
        f"/api/v1/segments/{segment['id']}", json={"rules": {"conditions": [rule("tier", "eq", "Bronze")]}}
    )
    results = run_due(ctx)
    done = results[segment["id"]]
    assert done["status"] == "ready" and done["evaluated"] == 8 and done["reason"] == "rules_changed"
    assert members_of(api, segment["id"]) == ["m1", "m3", "m5", "m7"]
    again = api.post(f"/api/v1/segments/{segment['id']}/evaluate")
    assert again.status_code == 200 and again.json()["evaluation"]["entered"] == 0


def test_preview_counts_without_saving(api: TestClient) -> None:
    enrol(api, "ana", "ben", "cleo")
    checkout(api, "ben", 1500, "T-1")
    body = {"rules": {"conditions": [rule("points_balance", "gte", 10)]}, "sample_size": 5}
    response = api.post("/api/v1/segments/preview", json=body)
    assert response.status_code == 200, response.text
    found = response.json()
    assert found["count"] == 1 and found["sample"] == ["ben"] and found["complete"] is True
    assert found["evaluated"] == 3 and found["program_id"] == "demo"
    assert api.get("/api/v1/segments").json()["data"] == []
    capped = api.post("/api/v1/segments/preview", json={**body, "max_members": 2}).json()
    assert capped["evaluated"] == 2 and capped["complete"] is False
    bad = api.post("/api/v1/segments/preview", json={"rules": {"conditions": [rule("nope", "eq", 1)]}})
    assert bad.status_code == 422 and bad.json()["details"]["where"] == "rules.conditions[0].attribute"


def test_bad_definitions_are_refused_with_nothing_written(api: TestClient) -> None:
    def refused(body: dict[str, object], status: int, code: str) -> None:
        response = api.post("/api/v1/segments", json=body)
        assert response.status_code == status, response.text
        assert response.json()["code"] == code and set(response.json()) == {"code", "message", "details"}

    gold = {"conditions": [rule("tier", "eq", "Gold")]}
    refused({"name": "X", "rules": {"conditions": [rule("shoe_size", "gt", 40)]}}, 422, "invalid_rules")
    refused({"name": "X", "rules": {"conditions": [rule("segments", "contains", "a")]}}, 422, "invalid_rules")
    refused({"name": "X", "kind": "rule"}, 422, "invalid_rules")
    refused({"name": "X", "kind": "static", "rules": gold}, 422, "invalid_rules")
    refused({"name": "X", "rules": gold, "program_id": "nope"}, 404, "program_not_found")
    refused({"name": "X", "rules": gold, "id": "bad id"}, 422, "invalid_input")
    refused({"name": ""}, 422, "invalid_input")
    assert api.get("/api/v1/segments").json()["data"] == []
    make_segment(api, {"id": "gold", "name": "Gold", "rules": gold})
    refused({"name": "Gold", "rules": gold}, 409, "segment_name_taken")
    refused({"id": "gold", "name": "Other", "rules": gold}, 409, "segment_exists")
    static = make_segment(api, {"name": "VIP"})
    assert static["kind"] == "static" and static["evaluation"] is None
    response = api.patch(f"/api/v1/segments/{static['id']}", json={"rules": gold})
    assert response.status_code == 422 and response.json()["code"] == "segment_not_rule"
    response = api.patch("/api/v1/segments/gold", json={"name": "VIP"})
    assert response.status_code == 409 and response.json()["code"] == "segment_name_taken"
    assert api.get("/api/v1/segments/nope").status_code == 404
    assert api.get("/api/v1/segments/gold").json()["name"] == "Gold"


def test_deleting_a_segment_removes_its_members_unless_a_distribution_uses_it(api: TestClient) -> None:
    enrol(api, "ana")
    segment = make_segment(api, {"name": "Everyone", "rules": {"conditions": [rule("opted_in", "eq", True)]}})
    assert segment["member_count"] == 1
    assert api.get("/api/v1/members/ana/segments").json()["data"][0]["segment_id"] == segment["id"]
    assert api.delete(f"/api/v1/segments/{segment['id']}").status_code == 204
    assert api.get("/api/v1/members/ana/segments").json()["data"] == []
    assert api.get(f"/api/v1/segments/{segment['id']}").status_code == 404
    checkout(api, "ana", 1000, "T-1")  # the deleted segment's rules no longer apply anywhere
    assert membership_activity(api, "ana") == [("segment_entered", segment["id"], "Everyone")]


def test_segments_read_the_standing_in_their_own_program(api: TestClient) -> None:
    created = api.post(
        "/api/v1/programs",
        json={
            "id": "cafe",
            "name": "Cafe club",
            "currency": "EUR",
            "earning_rules": [
                {
                    "name": "1 per euro",
                    "event": "checkout",
                    "kind": "per_amount",
                    "points": 1,
                    "amount_unit": 100,
                }
            ],
        },
    )
    assert created.status_code == 201, created.text
    enrol(api, "ana")
    send(api, {"customer": "ana", "action": "opt_in", "program": "cafe", "data": {}})
    cafe = make_segment(
        api,
        {
            "name": "Cafe regulars",
            "program_id": "cafe",
            "rules": {"conditions": [rule("points_balance", "gte", 20)]},
        },
    )
    demo = make_segment(
        api, {"name": "Demo rich", "rules": {"conditions": [rule("points_balance", "gte", 20)]}}
    )
    assert (cafe["program_id"], demo["program_id"]) == ("cafe", "demo")
    checkout(api, "ana", 3000, "T-1")  # demo points only
    assert (members_of(api, cafe["id"]), members_of(api, demo["id"])) == ([], ["ana"])
    send(
        api,
        {
            "customer": "ana",
            "action": "checkout",
            "program": "cafe",
            "data": {"transaction_id": "C-1", "total": 2500},
        },
    )
    assert members_of(api, cafe["id"]) == ["ana"]
    changed = api.patch(
        f"/api/v1/segments/{cafe['id']}", json={"rules": {"conditions": [rule("points_balance", "gte", 30)]}}
    )
    assert changed.json()["program_id"] == "cafe" and changed.json()["evaluation"]["left"] == 1
    static = make_segment(api, {"name": "Static"})
    response = api.post(f"/api/v1/segments/{static['id']}/evaluate")
    assert response.status_code == 409 and response.json()["code"] == "segment_not_rule"


def test_the_background_jobs_finish_pending_evaluations(api: TestClient, ctx: AppContext) -> None:
    from perkflow.runtime import BackgroundJobs

    ctx.settings.segment_batch_size = 2
    ctx.settings.segment_jobs_interval_s = 0.05
    enrol(api, "ana", "ben", "cleo", "dan", "eve")
    segment = make_segment(api, {"name": "Everyone", "rules": {"conditions": [rule("opted_in", "eq", True)]}})
    assert segment["evaluation"]["status"] == "pending"
    jobs = BackgroundJobs(ctx, delivery_threads=0)
    jobs.start()
    try:
        deadline = time.monotonic() + 30
        while api.get(f"/api/v1/segments/{segment['id']}").json()["evaluation"]["status"] != "ready":
            assert time.monotonic() < deadline, "the background jobs did not evaluate the segment"
            time.sleep(0.05)
    finally:
        jobs.stop()
    assert members_of(api, segment["id"]) == ["ana", "ben", "cleo", "dan", "eve"]


def test_a_member_keeps_the_segments_its_activity_could_not_change(api: TestClient) -> None:
    """In one batch, ana's tier moves (tier segments are evaluated for her) while ben only earns a
    few points: ben must stay in his tier segment, which nobody evaluated for him."""
    enrol(api, "ana", "ben")
    checkout(api, "ben", 1000, "T-0")  # Silver
    silver = make_segment(api, {"name": "Silver", "rules": {"conditions": [rule("tier", "eq", "Silver")]}})
    bronze = make_segment(api, {"name": "Bronze", "rules": {"conditions": [rule("tier", "eq", "Bronze")]}})
    make_segment(api, {"name": "Some points", "rules": {"conditions": [rule("points_balance", "gt", 0)]}})
    send(
        api,
        event("ana", "checkout", transaction_id="T-1", total=1000),
        event("ben", "checkout", transaction_id="T-2", total=100),
    )
    assert members_of(api, silver["id"]) == ["ana", "ben"]
    assert members_of(api, bronze["id"]) == []
    assert [t for t, _, _ in membership_activity(api, "ben")] == ["segment_entered", "segment_entered"]


def test_a_segment_that_campaigns_or_live_workflows_use_cannot_be_deleted(api: TestClient) -> None:
    from tests.promotions.conftest import create_campaign

    static = make_segment(api, {"name": "VIP"})
    campaign = create_campaign(api, name="VIP only", segment_id=static["id"])
    refused = api.delete(f"/api/v1/segments/{static['id']}")
    assert refused.status_code == 409, refused.text
    assert refused.json()["code"] == "segment_in_use"
    assert refused.json()["details"] == {"campaigns": [campaign["id"]]}
    assert api.delete(f"/v1/campaigns/{campaign['id']}").status_code in (200, 204)

    trigger = {"id": "in", "type": "trigger.segment_entered", "params": {"segment": static["id"]}}
    gift = {"id": "gift", "type": "action.add_points", "params": {"points": 5, "reason": "VIP"}}
    graph = {"nodes": [trigger, gift], "edges": [{"from": "in", "to": "gift"}]}
    workflow = api.post("/api/v1/workflows", json={"name": "VIP gift", "graph": graph}).json()
    refused = api.delete(f"/api/v1/segments/{static['id']}")
    assert refused.status_code == 409 and refused.json()["details"] == {"workflows": [workflow["id"]]}
    assert api.get(f"/api/v1/segments/{static['id']}").status_code == 200  # nothing was deleted
    assert api.delete(f"/api/v1/workflows/{workflow['id']}").status_code in (200, 204)  # archived
    assert api.delete(f"/api/v1/segments/{static['id']}").status_code == 204
