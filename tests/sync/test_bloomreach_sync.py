"""Syncing into the Bloomreach sandbox: hard IDs, properties with Unix times, events, per-command
errors, synchronous pushes and their fallback to the queue, and credential checks."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from perkflow.core.clock import ManualClock
from perkflow.sync.worker import DeliveryWorker
from tests.conftest import event

pytestmark = pytest.mark.usefixtures("demo")


def connect(api: TestClient, bloomreach: Any, **extra: Any) -> dict[str, Any]:
    body = {
        "base_url": bloomreach.url,
        "project_token": "test-project",
        "api_key_id": "key-id",
        "api_secret": "key-secret",
        **extra,
    }
    response = api.post("/api/v1/integrations/bloomreach", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def map_fields(api: TestClient, integration_id: str, rows: list[tuple[str, str]]) -> None:
    response = api.put(
        f"/api/v1/integrations/{integration_id}/fields",
        json={"fields": [{"loyalty_field": lf, "remote_field": rf} for lf, rf in rows]},
    )
    assert response.status_code == 200, response.text


def test_connect_reports_each_credential_problem(api: TestClient, bloomreach: Any) -> None:
    base = {
        "base_url": bloomreach.url,
        "project_token": "test-project",
        "api_key_id": "key-id",
        "api_secret": "key-secret",
    }
    bloomreach.config.api_keys["no-access"] = "its-secret"
    bloomreach.config.keys_without_access = {"no-access"}
    cases = [
        ({"api_key_id": "no-access", "api_secret": "its-secret"}, "missing_permission"),
        ({"project_token": "nope"}, "invalid_project_token"),
        ({"api_key_id": "unknown"}, "invalid_api_key"),
        ({"api_secret": "wrong"}, "invalid_api_secret"),
        ({"base_url": "http://127.0.0.1:1"}, "unreachable"),
        ({"hard_id_field": "shoe_size"}, "invalid_hard_id_field"),
    ]
    for change, code in cases:
        response = api.post("/api/v1/integrations/bloomreach", json={**base, **change})
        assert response.status_code == 422, (code, response.text)
        assert response.json()["code"] == code
    assert api.get("/api/v1/integrations").json()["data"] == []
    created = connect(api, bloomreach)
    assert created["config"]["hard_id"] == "registered" and "key-secret" not in str(created)


def test_properties_and_events_reach_the_customer_under_the_lower_cased_email(
    api: TestClient, bloomreach: Any, worker: DeliveryWorker
) -> None:
    integration = connect(
        api, bloomreach, events=[{"type": "opt_in", "name": "loyalty_opt_in"}, {"type": "tier_up"}]
    )
    map_fields(
        api,
        integration["id"],
        [
            ("tier", "loyalty_tier"),
            ("points_balance", "loyalty_points"),
            ("opted_in_at", "loyalty_joined_at"),
            ("birth_date", "birthday"),
            ("newsletter", "newsletter"),
        ],
    )
    api.post(
        "/api/v1/events",
        json=event("ana", "opt_in", email="Ana@Example.com", birth_date="1990-04-01", newsletter=False),
    )
    checkout = api.post("/api/v1/events", json=event("ana", "checkout", transaction_id="T1", total=5000))
    assert bloomreach.customers() == []  # asynchronous synchronisation (the default): only the queue
    worker.drain()
    customer = bloomreach.customer("ana@example.com")
    assert customer is not None
    props = customer["properties"]
    assert props["loyalty_tier"] == "Gold" and props["loyalty_points"] == 55 and props["newsletter"] is False
    assert props["loyalty_joined_at"] == 1773478800  # 2026-03-14T09:00:00Z in Unix seconds
    assert props["birthday"] == 638928000
    types = [e["event_type"] for e in customer["events"]]
    assert types.count("loyalty_opt_in") == 1 and types.count("tier_up") == 2  # Bronze, then Gold
    opt_in = next(e for e in customer["events"] if e["event_type"] == "loyalty_opt_in")
    assert opt_in["timestamp"] == 1773478800 and opt_in["properties"]["points"] == 5
    ids = [e["properties"]["perkflow_event_id"] for e in customer["events"]]
    assert len(set(ids)) == 3 and all(i.startswith("act_") for i in ids)  # stable, for deduplication
    gold = [e for e in customer["events"] if e["event_type"] == "tier_up"][-1]
    assert gold["properties"]["to_tier"] == "Gold" and checkout.status_code == 201


def test_a_member_without_the_hard_id_is_dead_lettered_with_the_reason(
    api: TestClient, bloomreach: Any, worker: DeliveryWorker
) -> None:
    integration = connect(api, bloomreach)
    map_fields(api, integration["id"], [("tier", "loyalty_tier")])
    api.post("/api/v1/events", json=event("ghost", "opt_in"))
    worker.drain()
    dead = api.get("/api/v1/deliveries/dead").json()["data"]
    assert len(dead) == 1 and "hard ID" in dead[0]["error"]


def test_the_hard_id_is_fixed_once_set(api: TestClient, bloomreach: Any) -> None:
    integration = connect(api, bloomreach, hard_id="email_id")
    changed = api.patch(f"/api/v1/integrations/{integration['id']}/settings", json={"hard_id": "registered"})
    assert changed.status_code == 409 and changed.json()["code"] == "hard_id_immutable"
    rotated = api.put(
        f"/api/v1/integrations/{integration['id']}/credentials",
        json={
            "config": {"hard_id_field": "member_id"},
            "secrets": {"api_key_id": "key-id", "api_secret": "key-secret"},
        },
    )
    assert rotated.status_code == 409
    same = api.put(
        f"/api/v1/integrations/{integration['id']}/credentials",
        json={"secrets": {"api_key_id": "key-id", "api_secret": "key-secret"}},
    )
    assert same.status_code == 200 and same.json()["config"]["hard_id"] == "email_id"


def test_permission_denials_are_reported_per_item(
    api: TestClient, bloomreach: Any, worker: DeliveryWorker
) -> None:
    from perkflow.sandbox.bloomreach import Permissions

    integration = connect(api, bloomreach, events=[{"type": "opt_in"}])
    map_fields(api, integration["id"], [("tier", "loyalty_tier")])
    bloomreach.config.permissions = Permissions(properties={"loyalty_tier"}, event_types=set())
    api.post("/api/v1/events", json=event("ana", "opt_in", email="ana@example.com"))
    worker.drain()
    assert bloomreach.customer("ana@example.com")["properties"]["loyalty_tier"] == "Bronze"
    dead = api.get("/api/v1/deliveries/dead").json()["data"]
    assert len(dead) == 1 and dead[0]["kind"] == "event" and "authorized" in dead[0]["error"]


def test_synchronous_mode_pushes_within_the_request_and_falls_back_to_the_queue(
    api: TestClient, bloomreach: Any, worker: DeliveryWorker, clock: ManualClock
) -> None:
    integration = connect(api, bloomreach, async_sync=False)
    map_fields(api, integration["id"], [("points_balance", "loyalty_points")])
    api.post("/api/v1/events", json=event("ana", "opt_in", email="ana@example.com"))
    assert bloomreach.customer("ana@example.com")["properties"]["loyalty_points"] == 5  # no worker ran
    bloomreach.set_faults(queue=[500])
    api.post("/api/v1/events", json=event("ana", "point_add", points=10))
    assert bloomreach.customer("ana@example.com")["properties"]["loyalty_points"] == 5
    queued = api.get("/api/v1/deliveries").json()["data"][0]
    assert queued["failed"] == 1
    clock.advance(timedelta(seconds=2))  # past the retry's backoff
    worker.drain()
    assert bloomreach.customer("ana@example.com")["properties"]["loyalty_points"] == 15


def test_rate_limited_batches_are_resent(
    api: TestClient, bloomreach: Any, worker: DeliveryWorker, clock: ManualClock
) -> None:
    integration = connect(api, bloomreach, settings={"backoff_base_s": 0.0, "backoff_max_s": 0.0})
    map_fields(api, integration["id"], [("points_balance", "loyalty_points")])
    bloomreach.set_faults(queue=[429])
    api.post("/api/v1/events", json=event("ana", "opt_in", email="ana@example.com"))
    worker.run_once(force=True)
    assert bloomreach.customer("ana@example.com") is None  # a 429 drops the data: it must be resent
    clock.advance(timedelta(seconds=2))
    worker.drain()
    assert bloomreach.customer("ana@example.com")["properties"]["loyalty_points"] == 5


def test_batches_hold_at_most_50_commands(api: TestClient, bloomreach: Any, worker: DeliveryWorker) -> None:
    integration = connect(api, bloomreach, events=[{"type": "opt_in"}])
    map_fields(api, integration["id"], [("points_balance", "loyalty_points")])
    bulk = {"events": [event(f"m{i:02d}", "opt_in", email=f"m{i:02d}@example.com") for i in range(60)]}
    assert api.post("/api/v1/events/bulk", json=bulk).json()["accepted"] == 60
    worker.drain()
    batches = [r for r in bloomreach.requests(20) if r["path"].endswith("/batch") and r["commands"]]
    # 60 customer updates and 60 events, plus the system/time command that checked the credentials
    assert sum(r["commands"] for r in batches) == 121
    assert max(r["commands"] for r in batches) == 50 and all(r["status"] == 200 for r in batches)
    assert len(bloomreach.customers()) == 60 and len(bloomreach.events("opt_in")) == 60


def test_a_synchronous_push_gives_up_within_its_bound_and_leaves_the_change_queued(
    api: TestClient, bloomreach: Any, worker: DeliveryWorker, clock: ManualClock
) -> None:
    integration = connect(api, bloomreach, async_sync=False, settings={"sync_push_timeout_s": 1.0})
    map_fields(api, integration["id"], [("points_balance", "loyalty_points")])
    bloomreach.set_faults(queue=["slow:4000"])
    response = api.post("/api/v1/events", json=event("ana", "opt_in", email="ana@example.com"))
    assert response.status_code == 201
    queued = api.get("/api/v1/deliveries").json()["data"][0]
    assert (queued["failed"], queued["delivered"]) == (1, 0)
    assert "Timeout" in queued["recent_errors"][0]["error"]  # cut off at 1 s, not after 4 s
    clock.advance(timedelta(seconds=5))
    worker.drain()
    assert bloomreach.customer("ana@example.com")["properties"]["loyalty_points"] == 5


def test_settings_toggle_asynchronous_synchronisation(
    api: TestClient, bloomreach: Any, worker: DeliveryWorker
) -> None:
    integration = connect(api, bloomreach)
    map_fields(api, integration["id"], [("points_balance", "loyalty_points")])
    api.post("/api/v1/events", json=event("ana", "opt_in", email="ana@example.com"))
    assert bloomreach.customer("ana@example.com") is None
    worker.drain()
    changed = api.patch(f"/api/v1/integrations/{integration['id']}/settings", json={"async_sync": False})
    assert changed.status_code == 200 and changed.json()["settings"]["async_sync"] is False
    api.post("/api/v1/events", json=event("ana", "point_add", points=7))
    assert bloomreach.customer("ana@example.com")["properties"]["loyalty_points"] == 12
