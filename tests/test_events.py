"""The events API: each built-in action, idempotent replays, bulk requests and bad input."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from perkflow.core.clock import ManualClock
from perkflow.core.context import AppContext
from tests.conftest import event

pytestmark = pytest.mark.usefixtures("demo")


def post(api: TestClient, body: dict[str, Any], status: int = 201) -> dict[str, Any]:
    response = api.post("/api/v1/events", json=body)
    assert response.status_code == status, response.text
    return response.json()


def points(api: TestClient, member: str) -> dict[str, Any]:
    response = api.get(f"/api/v1/members/{member}")
    assert response.status_code == 200, response.text
    return response.json()["programs"][0]


def test_opt_in_creates_the_member_with_welcome_points_and_the_base_tier(api: TestClient) -> None:
    body = post(
        api,
        event(
            "ana",
            "opt_in",
            email="Ana@Example.com",
            first_name="Ana",
            birth_date="1990-04-01",
            favourite_store="Lyon",
        ),
    )
    assert body["type"] == "opt_in" and body["points_delta"] == 5
    assert body["effects"]["tier"] == "Bronze" and body["effects"]["balance"] == 5
    member = api.get("/api/v1/members/ana").json()
    assert member["email"] == "ana@example.com"
    assert member["birth_date"] == "1990-04-01"
    assert member["fields"] == {"favourite_store": "Lyon"}
    standing = member["programs"][0]
    assert standing["opted_in"] is True and standing["tier"] == "Bronze"
    assert standing["opted_in_at"] == "2026-03-14T09:00:00Z"
    activity_types = [a["type"] for a in api.get("/api/v1/members/ana/activities").json()["data"]]
    assert activity_types == ["tier_up", "opt_in", "profile"]


def test_opting_in_twice_is_refused(api: TestClient) -> None:
    post(api, event("ana", "opt_in"))
    error = post(api, event("ana", "opt_in"), status=409)
    assert error["code"] == "already_opted_in"


def test_opt_out_then_back_in_does_not_repeat_the_welcome_bonus(api: TestClient) -> None:
    post(api, event("ana", "opt_in"))
    post(api, event("ana", "opt_out"))
    assert points(api, "ana")["opted_in"] is False
    assert (
        post(api, event("ana", "checkout", transaction_id="T1", total=1000), status=409)["code"]
        == "not_opted_in"
    )
    again = post(api, event("ana", "opt_in"))
    assert again["points_delta"] == 0
    assert points(api, "ana")["points"]["balance"] == 5


def test_profile_updates_fields_and_rejects_unknown_or_mistyped_ones(api: TestClient) -> None:
    post(api, event("ana", "opt_in"))
    body = post(api, event("ana", "profile", last_name="Lopez", newsletter=True))
    assert body["data"] == {"last_name": "Lopez", "newsletter": True}
    error = post(api, event("ana", "profile", newsletter="yes", shoe_size=42), status=422)
    assert error["code"] == "invalid_fields"
    assert set(error["details"]) == {"newsletter", "shoe_size"}
    member = api.get("/api/v1/members/ana").json()
    assert member["last_name"] == "Lopez" and member["fields"] == {"newsletter": True}


def test_checkout_earns_by_the_earning_rules_and_moves_tiers(api: TestClient) -> None:
    post(api, event("ana", "opt_in"))
    body = post(api, event("ana", "checkout", transaction_id="T-1", total=4250, channel="store"))
    assert body["points_delta"] == 42 and body["pending_delta"] == 0
    assert body["effects"]["tier"] == "Silver" and body["effects"]["tier_change"] == "tier_up"
    assert body["effects"]["expires_at"] == "2027-03-15T00:00:00Z"  # rolling 365 days, end of day
    tier_up = api.get("/api/v1/members/ana/activities", params={"type": "tier_up"}).json()["data"][0]
    assert tier_up["data"]["from_tier"] == "Bronze" and tier_up["data"]["to_tier"] == "Silver"


def test_a_repeated_transaction_id_returns_the_original_result(api: TestClient) -> None:
    post(api, event("ana", "opt_in"))
    first = post(api, event("ana", "checkout", transaction_id="T-1", total=4250))
    replay = api.post("/api/v1/events", json=event("ana", "checkout", transaction_id="T-1", total=4250))
    assert replay.status_code == 200 and replay.headers["idempotent-replayed"] == "true"
    assert replay.json() == first
    assert points(api, "ana")["points"]["balance"] == 47
    other = post(api, event("ben", "opt_in"))
    assert other["member_id"] == "ben"
    clash = post(api, event("ben", "checkout", transaction_id="T-1", total=10), status=409)
    assert clash["code"] == "transaction_exists"


def test_a_repeated_event_id_returns_the_original_result_and_a_reused_one_conflicts(api: TestClient) -> None:
    post(api, event("ana", "opt_in"))
    body = {"id": "evt-1", **event("ana", "point_add", points=10)}
    first = post(api, body)
    assert api.post("/api/v1/events", json=body).json() == first
    assert points(api, "ana")["points"]["balance"] == 15
    reused = post(api, {"id": "evt-1", **event("ana", "point_subtract", points=1)}, status=409)
    assert reused["code"] == "event_id_reused"


def test_pending_points_confirmed_by_checkout_accept(api: TestClient) -> None:
    post(api, event("ben", "opt_in"))
    body = post(api, event("ben", "checkout", transaction_id="W-1", total=6000, channel="online"))
    assert (body["points_delta"], body["pending_delta"], body["effects"]["pending"]) == (0, 72, True)
    standing = points(api, "ben")["points"]
    assert (standing["balance"], standing["pending"]) == (5, 72)
    accepted = post(api, event("ben", "checkout_accept", transaction_id="W-1"))
    assert (accepted["points_delta"], accepted["pending_delta"]) == (72, -72)
    assert accepted["effects"]["tier"] == "Gold"
    assert (
        api.post("/api/v1/events", json=event("ben", "checkout_accept", transaction_id="W-1")).status_code
        == 200
    )
    standing = points(api, "ben")["points"]
    assert (standing["balance"], standing["pending"]) == (77, 0)
    error = post(api, event("ben", "checkout_reject", transaction_id="W-1"), status=409)
    assert error["code"] == "checkout_not_pending"


def test_checkout_reject_cancels_pending_points(api: TestClient) -> None:
    post(api, event("ben", "opt_in"))
    post(api, event("ben", "checkout", transaction_id="W-1", total=6000, channel="online"))
    rejected = post(api, event("ben", "checkout_reject", transaction_id="W-1"))
    assert rejected["pending_delta"] == -72
    standing = points(api, "ben")["points"]
    assert (standing["balance"], standing["pending"]) == (5, 0)
    assert post(api, event("ben", "refund", transaction_id="W-1"), status=409)["code"] == "checkout_rejected"
    missing = post(api, event("ben", "checkout_accept", transaction_id="nope"), status=404)
    assert missing["code"] == "transaction_not_found"


def test_pending_points_are_released_by_the_settlement_job(api: TestClient, clock: ManualClock) -> None:
    post(api, event("ben", "opt_in"))
    post(api, event("ben", "checkout", transaction_id="W-1", total=6000, channel="online"))
    clock.advance(timedelta(days=14, seconds=1))
    assert points(api, "ben")["points"]["balance"] == 77  # the view applies what is due
    assert api.post("/api/v1/jobs/settle").json() == {"accounts_settled": 1}
    released = api.get("/api/v1/members/ben/activities", params={"type": "points_released"}).json()["data"]
    assert released[0]["points_delta"] == 72 and released[0]["pending_delta"] == -72


def test_refund_claws_back_the_points_of_the_refunded_amount(api: TestClient) -> None:
    post(api, event("ana", "opt_in"))
    post(api, event("ana", "checkout", transaction_id="T-1", total=10000))  # 100 points -> Platinum
    first = post(api, event("ana", "refund", transaction_id="T-1", amount=2500))
    assert first["points_delta"] == -25 and first["effects"]["refunded_total"] == 2500
    second = post(api, event("ana", "refund", transaction_id="T-1"))  # the rest
    assert second["points_delta"] == -75 and second["effects"]["points_clawed_total"] == 100
    assert second["effects"]["tier"] == "Bronze"
    standing = points(api, "ana")
    assert standing["points"]["balance"] == 5 and standing["points"]["earned"] == 5
    too_much = post(api, event("ana", "refund", transaction_id="T-1", amount=1), status=422)
    assert too_much["code"] == "refund_exceeds_total"


def test_refund_after_the_points_were_spent_recovers_what_it_can(api: TestClient) -> None:
    post(api, event("ana", "opt_in"))
    post(api, event("ana", "checkout", transaction_id="T-1", total=5000))
    post(api, event("ana", "point_subtract", points=50))
    body = post(api, event("ana", "refund", transaction_id="T-1"))
    assert body["points_delta"] == -5 and body["effects"]["points_unrecovered"] == 45
    assert points(api, "ana")["points"]["balance"] == 0


def test_point_add_and_subtract(api: TestClient) -> None:
    post(api, event("ana", "opt_in"))
    added = post(api, event("ana", "point_add", points=30, reason="goodwill", expires_in_days=10))
    assert added["effects"]["expires_at"] == "2026-03-24T09:00:00Z"
    subtracted = post(api, event("ana", "point_subtract", points=33, reason="correction"))
    assert subtracted["points_delta"] == -33
    refused = post(api, event("ana", "point_subtract", points=3), status=422)
    assert refused["code"] == "insufficient_points"
    assert refused["details"] == {"available": 2, "required": 3}
    assert post(api, event("ana", "point_add", points=0), status=422)["code"] == "invalid_event_data"


def test_birthday_earns_once_a_year(api: TestClient) -> None:
    post(api, event("chloe", "opt_in"))
    assert post(api, event("chloe", "birthday"))["points_delta"] == 25
    assert post(api, event("chloe", "birthday"))["points_delta"] == 0
    assert points(api, "chloe")["points"]["balance"] == 30


def test_custom_event_types_are_validated_and_earn(api: TestClient) -> None:
    post(api, event("ana", "opt_in"))
    body = post(api, event("ana", "review_written", product_id="beans", rating=5))
    assert body["points_delta"] == 5
    error = post(api, event("ana", "review_written", product_id="beans", rating="five"), status=422)
    assert error["code"] == "invalid_event_data" and "rating" in error["details"]
    unknown = post(api, event("ana", "danced"), status=422)
    assert unknown["code"] == "unknown_action"
    created = api.post("/api/v1/event-types", json={"name": "danced", "attributes": {"minutes": "integer"}})
    assert created.status_code == 201
    assert post(api, event("ana", "danced", minutes=3))["type"] == "danced"
    reserved = api.post("/api/v1/event-types", json={"name": "tier_up"})
    assert reserved.status_code == 409 and reserved.json()["code"] == "event_type_reserved"


def test_reward_claim_through_the_events_api(api: TestClient) -> None:
    post(api, event("ana", "opt_in"))
    post(api, event("ana", "checkout", transaction_id="T-1", total=4000))
    body = post(api, event("ana", "reward_claim", reward_id="rew_coffee"))
    assert body["points_delta"] == -30
    assert body["data"]["coupon_code"].startswith("COFFEE-") and body["data"]["coupon_value"] == 350
    assert body["data"]["reward_name"] == "Free coffee"


def test_events_for_unknown_members_and_programs_are_refused(api: TestClient) -> None:
    assert (
        post(api, event("ghost", "checkout", transaction_id="T", total=1), status=404)["code"]
        == "member_not_found"
    )
    post(api, event("ana", "opt_in"))
    body = {"program": "nope", **event("ana", "point_add", points=1)}
    assert post(api, body, status=404)["code"] == "program_not_found"


def test_bulk_returns_one_result_per_event_and_applies_them_in_order(api: TestClient) -> None:
    events = [
        event("ana", "opt_in"),
        event("ana", "checkout", transaction_id="T-1", total=2000),
        event("ana", "checkout", transaction_id="T-1", total=2000),
        event("ana", "point_subtract", points=1000),
        {"customer": "ana"},
        "not an object",
        event("ana", "checkout_accept", transaction_id="T-1"),
    ]
    response = api.post("/api/v1/events/bulk", json={"events": events})
    assert response.status_code == 200, response.text
    body = response.json()
    assert [r["status"] for r in body["results"]] == [
        "accepted",
        "accepted",
        "duplicate",
        "rejected",
        "rejected",
        "rejected",
        "accepted",
    ]
    assert (body["accepted"], body["duplicates"], body["rejected"]) == (3, 1, 3)
    assert body["results"][2]["event"] == body["results"][1]["event"]
    assert body["results"][3]["error"]["code"] == "insufficient_points"
    assert body["results"][4]["error"]["code"] == "invalid_event"
    assert points(api, "ana")["points"]["balance"] == 25


def test_a_bulk_request_keeps_earlier_changes_when_a_later_event_reads_the_membership(
    api: TestClient,
) -> None:
    """opt_out reads the account's membership dates; the checkout before it must not be lost."""
    post(api, event("ana", "opt_in"))
    response = api.post(
        "/api/v1/events/bulk",
        json={
            "events": [event("ana", "checkout", transaction_id="T-9", total=5000), event("ana", "opt_out")]
        },
    )
    assert [r["status"] for r in response.json()["results"]] == ["accepted", "accepted"]
    standing = points(api, "ana")
    assert standing["status"] == "opted_out"
    assert standing["points"]["balance"] == 5 + 50


def test_bulk_over_the_limit_is_refused_whole(api: TestClient, ctx: AppContext) -> None:
    events = [event(f"m{i}", "opt_in") for i in range(ctx.settings.bulk_max_events + 1)]
    response = api.post("/api/v1/events/bulk", json={"events": events})
    assert response.status_code == 413
    assert response.json()["code"] == "batch_too_large"
    assert api.get("/api/v1/members", params={"limit": 1}).json()["data"] == []


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{not json", 400, "invalid_json"),
        (b'{"customer": "ana"}', 422, "invalid_input"),
        (b'{"customer": "ana", "action": "checkout", "data": []}', 422, "invalid_input"),
        (b'{"customer": "a b", "action": "checkout"}', 422, "invalid_event"),
        (b'{"customer": "ana", "action": "checkout", "surprise": 1}', 422, "invalid_input"),
    ],
)
def test_malformed_events_get_a_clear_error(api: TestClient, body: bytes, status: int, code: str) -> None:
    response = api.post("/api/v1/events", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == status, response.text
    error = response.json()
    assert error["code"] == code and error["message"] and "details" in error


def test_checkout_validation_names_the_field(api: TestClient) -> None:
    post(api, event("ana", "opt_in"))
    error = post(api, event("ana", "checkout", transaction_id="T", total=12.5), status=422)
    assert error["details"] == {"field": "total"} and "minor units" in error["message"]
    assert post(api, event("ana", "checkout", total=100), status=422)["details"] == {
        "field": "transaction_id"
    }
    wrong_currency = post(
        api, event("ana", "checkout", transaction_id="T", total=1, currency="USD"), status=422
    )
    assert wrong_currency["code"] == "currency_mismatch"
