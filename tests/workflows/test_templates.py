"""The five seed use cases, installed from their templates and run end to end against the Braze and
Bloomreach sandboxes; each test reads back what a marketer would see on both platforms."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from perkflow.core.clock import ManualClock
from perkflow.core.context import AppContext
from perkflow.sync.worker import DeliveryWorker
from perkflow.workflows.scheduler import run_date_triggers
from tests.workflows.conftest import connect_bloomreach, connect_braze, join, points, runs, send

pytestmark = pytest.mark.usefixtures("demo")


@pytest.fixture
def platforms(api: TestClient, braze: Any, bloomreach: Any) -> tuple[Any, Any]:
    connect_braze(api, braze)
    connect_bloomreach(api, bloomreach)
    return braze, bloomreach


def install(api: TestClient, name: str, **params: Any) -> dict[str, Any]:
    response = api.post(f"/api/v1/workflows/templates/{name}/install", json={"params": params})
    assert response.status_code == 201, response.text
    installed = response.json()
    assert installed["status"] == "inactive" and installed["template"] == name
    activated = api.post(f"/api/v1/workflows/{installed['id']}/activate")
    assert activated.status_code == 200, activated.text
    return installed


def braze_events(braze: Any, member_id: str, name: str) -> list[dict[str, Any]]:
    user = braze.user(member_id)
    return [e for e in (user["events"] if user else []) if e["name"] == name]


def bloomreach_events(bloomreach: Any, email: str, name: str) -> list[dict[str, Any]]:
    customer = bloomreach.customer(email)
    return [e for e in (customer["events"] if customer else []) if e["event_type"] == name]


def test_welcome_sends_the_opt_in_date_and_the_enrolment_points(
    api: TestClient, platforms: tuple[Any, Any], worker: DeliveryWorker
) -> None:
    braze, bloomreach = platforms
    install(api, "welcome")
    opted_in = join(api, "ana", first_name="Ana")
    worker.drain()
    [event] = braze_events(braze, "ana", "loyalty_welcome")
    assert event["properties"]["opted_in_at"] == opted_in["occurred_at"] == "2026-03-14T09:00:00Z"
    assert event["properties"]["points_added"] == 5 and event["properties"]["tier"] == "Bronze"
    [bloom] = bloomreach_events(bloomreach, "ana@example.com", "loyalty_welcome")
    assert bloom["properties"]["points_added"] == 5
    assert bloom["properties"]["opted_in_at"] == "2026-03-14T09:00:00Z"


def test_birthday_reward_gives_the_reward_for_free_on_the_day_and_tells_the_platforms(
    api: TestClient, ctx: AppContext, clock: ManualClock, platforms: tuple[Any, Any], worker: DeliveryWorker
) -> None:
    braze, bloomreach = platforms
    workflow = install(api, "birthday_reward", reward="rew_coffee")
    join(api, "ana", birth_date="1991-03-15")  # tomorrow
    join(api, "ben", birth_date="1991-06-01")
    clock.advance(timedelta(days=1))  # the daily run is at 08:00 UTC
    run_date_triggers(ctx)
    worker.drain()
    [event] = braze_events(braze, "ana", "loyalty_birthday_reward")
    code = event["properties"]["coupon_code"]
    assert code.startswith("COFFEE-") and event["properties"]["reward_name"] == "Free coffee"
    assert event["properties"]["coupon_value"] == 350 and event["properties"]["coupon_expires_at"]
    [bloom] = bloomreach_events(bloomreach, "ana@example.com", "loyalty_birthday_reward")
    assert bloom["properties"]["coupon_code"] == code
    assert points(api, "ana")["balance"] == 5  # given for free
    assert braze_events(braze, "ben", "loyalty_birthday_reward") == []
    assert [r["member_id"] for r in runs(api, workflow["id"])] == ["ana"]


def test_reward_claim_sends_the_reward_and_its_coupon(
    api: TestClient, platforms: tuple[Any, Any], worker: DeliveryWorker
) -> None:
    braze, bloomreach = platforms
    installed = install(api, "reward_claim")
    assert installed["kind"] == "campaign"
    join(api, "ana")
    send(api, "ana", "checkout", transaction_id="T1", total=5000)
    claim = api.post("/api/v1/members/ana/rewards/rew_coffee/claim")
    assert claim.status_code == 201, claim.text
    coupon = claim.json()["data"]
    worker.drain()
    [event] = braze_events(braze, "ana", "loyalty_reward_claimed")
    assert event["properties"] == {
        "reward_name": "Free coffee",
        "reward_description": "A coffee of your choice in any store",
        "coupon_code": coupon["coupon_code"],
        "coupon_value": 350,
        "coupon_expires_at": coupon["coupon_expires_at"],
        "points_spent": 30,
        "perkflow_event_id": event["properties"]["perkflow_event_id"],
    }
    [bloom] = bloomreach_events(bloomreach, "ana@example.com", "loyalty_reward_claimed")
    assert bloom["properties"]["coupon_code"] == coupon["coupon_code"]
    assert bloom["properties"]["reward_description"] == "A coffee of your choice in any store"


def test_tier_upgrade_announces_only_the_move_to_gold(
    api: TestClient, platforms: tuple[Any, Any], worker: DeliveryWorker
) -> None:
    braze, bloomreach = platforms
    install(api, "tier_upgrade")
    join(api, "ana")
    send(api, "ana", "checkout", transaction_id="T1", total=1000)  # 15 points: Silver
    send(api, "ana", "checkout", transaction_id="T2", total=4000)  # 55: Gold
    send(api, "ana", "checkout", transaction_id="T3", total=5000)  # 105: Platinum
    worker.drain()
    [event] = braze_events(braze, "ana", "loyalty_tier_upgrade")
    assert event["properties"]["tier"] == "Gold" and event["properties"]["previous_tier"] == "Silver"
    assert event["properties"]["points_balance"] == 55  # as it was when the move to Gold committed
    [bloom] = bloomreach_events(bloomreach, "ana@example.com", "loyalty_tier_upgrade")
    assert bloom["properties"]["tier"] == "Gold"


def test_last_purchase_writes_unmapped_attributes_on_both_platforms(
    api: TestClient, platforms: tuple[Any, Any], worker: DeliveryWorker, clock: ManualClock
) -> None:
    braze, bloomreach = platforms
    install(api, "last_purchase")
    join(api, "ana")
    items = [{"product_id": "beans", "quantity": 2}, {"product_id": "mug", "quantity": 1}]
    send(api, "ana", "checkout", transaction_id="T1", total=4250, store="Lyon", items=items)
    worker.drain()
    attributes = braze.user("ana")["attributes"]
    assert attributes["last_purchase_amount"] == 4250 and attributes["last_purchase_items_count"] == 3
    assert attributes["last_purchase_store"] == "Lyon"
    assert attributes["last_purchase_date"].startswith("2026-03-14T09:00:00")
    properties = bloomreach.customer("ana@example.com")["properties"]
    assert properties["last_purchase_amount"] == 4250 and properties["last_purchase_store"] == "Lyon"
    assert properties["last_purchase_items_count"] == 3
    clock.advance(timedelta(days=1))
    send(api, "ana", "checkout", transaction_id="T2", total=990, store="Paris")
    worker.drain()
    attributes = braze.user("ana")["attributes"]
    assert attributes["last_purchase_amount"] == 990 and attributes["last_purchase_store"] == "Paris"
    assert attributes["last_purchase_items_count"] == 0
    assert bloomreach.customer("ana@example.com")["properties"]["last_purchase_store"] == "Paris"


def test_templates_are_listed_installed_once_and_need_their_parameters(api: TestClient) -> None:
    listed = {t["name"]: t for t in api.get("/api/v1/workflows/templates").json()["data"]}
    assert set(listed) == {"welcome", "birthday_reward", "reward_claim", "tier_upgrade", "last_purchase"}
    assert [p["name"] for p in listed["birthday_reward"]["params"] if p["required"]] == ["reward"]
    missing = api.post("/api/v1/workflows/templates/birthday_reward/install")
    assert missing.status_code == 422 and missing.json()["code"] == "template_params_missing"
    bad = api.post(
        "/api/v1/workflows/templates/birthday_reward/install",
        json={"params": {"reward": "rew_coffee", "hour": "8"}},
    )
    assert bad.status_code == 422 and bad.json()["details"] == {"hour": "expected an hour from 0 to 23"}
    wrong_reward = api.post(
        "/api/v1/workflows/templates/birthday_reward/install", json={"params": {"reward": "nope"}}
    )
    assert wrong_reward.status_code == 422 and "does not exist" in wrong_reward.json()["message"]
    assert api.post("/api/v1/workflows/templates/nope/install").status_code == 404
    first = api.post(
        "/api/v1/workflows/templates/tier_upgrade/install", json={"params": {"tier": "Platinum"}}
    )
    assert first.status_code == 201 and first.json()["name"] == "Tier upgrade to Platinum"
    again = api.post("/api/v1/workflows/templates/tier_upgrade/install")
    assert again.status_code == 409 and again.json()["details"]["workflow_id"] == first.json()["id"]
    listed = {t["name"]: t for t in api.get("/api/v1/workflows/templates").json()["data"]}
    assert listed["tier_upgrade"]["installed_as"] == first.json()["id"]
    active = api.post("/api/v1/workflows/templates/welcome/install", json={"activate": True})
    assert active.json()["status"] == "active"


def test_one_command_installs_every_template(database_url: str, api: TestClient) -> None:
    env = {**os.environ, "PERKFLOW_DATABASE_URL": database_url, "COLUMNS": "200"}
    command = [sys.executable, "-m", "perkflow", "workflows", "install-templates", "--reward", "rew_coffee"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("installed ") == 5
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and again.stdout.count("already installed") == 5
    installed = api.get("/api/v1/workflows").json()["data"]
    assert sorted(w["template"] for w in installed) == [
        "birthday_reward",
        "last_purchase",
        "reward_claim",
        "tier_upgrade",
        "welcome",
    ]
    assert {w["status"] for w in installed} == {"inactive"}
    listed = subprocess.run(
        [sys.executable, "-m", "perkflow", "workflows", "list"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert listed.returncode == 0 and "Birthday reward" in listed.stdout
