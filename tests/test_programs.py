"""Programs: earning rules, expiry policies and tier ladders, including several programs side by side."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from perkflow.core.clock import ManualClock
from perkflow.programs.rules import EarningRule, ExpiryPolicy, plan_earning
from perkflow.tiers.domain import TierDef, TierLadder
from tests.conftest import event


@pytest.mark.parametrize(
    ("policy", "earned", "expires"),
    [
        (ExpiryPolicy("none"), datetime(2026, 3, 14, 9, tzinfo=UTC), None),
        (
            ExpiryPolicy("rolling", days=30),
            datetime(2026, 3, 14, 23, 59, tzinfo=UTC),
            datetime(2026, 4, 14, tzinfo=UTC),
        ),
        (
            ExpiryPolicy("end_of_period", period="month"),
            datetime(2026, 12, 31, 23, tzinfo=UTC),
            datetime(2027, 1, 1, tzinfo=UTC),
        ),
        (
            ExpiryPolicy("end_of_period", period="quarter"),
            datetime(2026, 5, 2, tzinfo=UTC),
            datetime(2026, 7, 1, tzinfo=UTC),
        ),
        (
            ExpiryPolicy("end_of_period", period="year", periods_after=1),
            datetime(2026, 5, 2, tzinfo=UTC),
            datetime(2028, 1, 1, tzinfo=UTC),
        ),
    ],
)
def test_expiry_policies(policy: ExpiryPolicy, earned: datetime, expires: datetime | None) -> None:
    assert policy.expires_at(earned) == expires
    epoch = policy.expires_epoch(int(earned.timestamp()))
    assert epoch == (int(expires.timestamp()) if expires else None)


def test_earning_rules_add_up_and_pending_rules_hold_the_whole_earning() -> None:
    rules = [
        EarningRule("a", "base", "checkout", "per_amount", 1, amount_unit=100),
        EarningRule(
            "b",
            "online",
            "checkout",
            "per_amount",
            1,
            amount_unit=500,
            pending_days=14,
            conditions={"channel": "online"},
        ),
        EarningRule("c", "big baskets", "checkout", "fixed", 50, min_amount=10_000),
        EarningRule("d", "off", "checkout", "fixed", 999, active=False),
    ]
    store = plan_earning(rules, "checkout", {"total": 12_345, "channel": "store"})
    assert (store.points, store.pending_days, store.rule_ids) == (123 + 50, 0, ("a", "c"))
    online = plan_earning(rules, "checkout", {"total": 600, "channel": "online"})
    assert (online.points, online.pending_days) == (7, 14)
    assert plan_earning(rules, "checkout", {"total": "12"}).points == 0


def test_tier_ladder_moves_both_ways() -> None:
    ladder = TierLadder([TierDef("g", "Gold", 50), TierDef("b", "Bronze", 0), TierDef("s", "Silver", 10)])
    assert ladder.evaluate(None, 0).to_tier.name == "Bronze"  # type: ignore[union-attr]
    up = ladder.evaluate("b", 60)
    assert up is not None and up.direction == "tier_up" and up.to_tier.name == "Gold"  # type: ignore[union-attr]
    down = ladder.evaluate("g", 12)
    assert down is not None and down.direction == "tier_down" and down.to_tier.name == "Silver"  # type: ignore[union-attr]
    assert ladder.evaluate("s", 49) is None


def create_program(api: TestClient, body: dict[str, Any]) -> dict[str, Any]:
    response = api.post("/api/v1/programs", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def test_programs_are_validated(api: TestClient) -> None:
    bad = api.post(
        "/api/v1/programs", json={"name": "X", "currency": "EUR", "expiry_policy": {"kind": "rolling"}}
    )
    assert bad.status_code == 422 and "days" in bad.text
    rule = {"name": "r", "event": "checkout", "kind": "per_amount", "points": 1}
    bad_rule = api.post("/api/v1/programs", json={"name": "X", "currency": "EUR", "earning_rules": [rule]})
    assert bad_rule.status_code == 422 and "amount_unit" in bad_rule.text
    create_program(api, {"name": "X", "currency": "EUR"})
    assert (
        api.post("/api/v1/programs", json={"name": "X", "currency": "EUR"}).json()["code"] == "program_exists"
    )


def test_two_programs_keep_separate_points_and_tiers(api: TestClient) -> None:
    create_program(
        api,
        {
            "id": "coffee",
            "name": "Coffee club",
            "currency": "EUR",
            "is_default": True,
            "earning_rules": [{"name": "cup", "event": "checkout", "kind": "fixed", "points": 1}],
            "tiers": [{"name": "Regular", "threshold": 0}, {"name": "Barista", "threshold": 3}],
        },
    )
    create_program(
        api,
        {
            "id": "books",
            "name": "Book club",
            "currency": "GBP",
            "earning_rules": [
                {
                    "name": "per pound",
                    "event": "checkout",
                    "kind": "per_amount",
                    "points": 2,
                    "amount_unit": 100,
                }
            ],
        },
    )
    api.post("/api/v1/events", json=event("m", "opt_in"))
    api.post("/api/v1/events", json={"program": "books", **event("m", "opt_in")})
    for tx in ("a", "b", "c"):
        api.post("/api/v1/events", json=event("m", "checkout", transaction_id=tx, total=500))
    api.post(
        "/api/v1/events", json={"program": "books", **event("m", "checkout", transaction_id="a", total=500)}
    )
    standings = {p["program_id"]: p for p in api.get("/api/v1/members/m").json()["programs"]}
    assert standings["coffee"]["points"]["balance"] == 3 and standings["coffee"]["tier"] == "Barista"
    assert standings["books"]["points"]["balance"] == 10 and standings["books"]["tier"] is None


def test_replacing_the_ladder_moves_members_to_their_new_tier(api: TestClient) -> None:
    create_program(
        api,
        {
            "id": "p",
            "name": "P",
            "currency": "EUR",
            "tiers": [{"name": "Base", "threshold": 0}, {"name": "Star", "threshold": 100}],
        },
    )
    api.post("/api/v1/events", json=event("m", "opt_in"))
    api.post("/api/v1/events", json=event("m", "point_add", points=60))
    assert api.get("/api/v1/members/m").json()["programs"][0]["tier"] == "Base"
    response = api.put(
        "/api/v1/programs/p/tiers",
        json={"tiers": [{"name": "Base", "threshold": 0}, {"name": "Star", "threshold": 50}]},
    )
    assert response.status_code == 200, response.text
    assert api.get("/api/v1/members/m").json()["programs"][0]["tier"] == "Star"
    activity = api.get("/api/v1/members/m/activities", params={"type": "tier_up"}).json()["data"][0]
    assert activity["data"]["to_tier"] == "Star"


def test_rolling_window_tiers_fall_back_when_points_age_out(api: TestClient, clock: ManualClock) -> None:
    create_program(
        api,
        {
            "id": "p",
            "name": "P",
            "currency": "EUR",
            "tier_window_days": 30,
            "tiers": [{"name": "Base", "threshold": 0}, {"name": "Star", "threshold": 100}],
        },
    )
    api.post("/api/v1/events", json=event("m", "opt_in"))
    api.post("/api/v1/events", json=event("m", "point_add", points=120))
    assert api.get("/api/v1/members/m").json()["programs"][0]["tier"] == "Star"
    clock.advance(timedelta(days=31))
    assert api.post("/api/v1/jobs/settle").json()["accounts_settled"] == 1
    standing = api.get("/api/v1/members/m").json()["programs"][0]
    assert standing["tier"] == "Base" and standing["points"]["balance"] == 120
    down = api.get("/api/v1/members/m/activities", params={"type": "tier_down"}).json()["data"][0]
    assert (down["data"]["from_tier"], down["data"]["to_tier"]) == ("Star", "Base")


def test_rules_can_be_switched_off_and_removed(api: TestClient) -> None:
    create_program(
        api,
        {
            "id": "p",
            "name": "P",
            "currency": "EUR",
            "earning_rules": [{"id": "r1", "name": "r", "event": "checkout", "kind": "fixed", "points": 7}],
        },
    )
    api.post("/api/v1/events", json=event("m", "opt_in"))
    assert (
        api.post("/api/v1/events", json=event("m", "checkout", transaction_id="1", total=1)).json()[
            "points_delta"
        ]
        == 7
    )
    assert api.patch("/api/v1/programs/p/earning-rules/r1", json={"active": False}).status_code == 200
    assert (
        api.post("/api/v1/events", json=event("m", "checkout", transaction_id="2", total=1)).json()[
            "points_delta"
        ]
        == 0
    )
    assert api.delete("/api/v1/programs/p/earning-rules/r1").status_code == 204
    assert api.delete("/api/v1/programs/p/earning-rules/r1").status_code == 404
