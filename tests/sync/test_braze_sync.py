"""Syncing into the Braze sandbox over loopback HTTP: connecting, every attribute type, both modes,
events, batching caps, partial errors, rate limits, retries, pauses, dead letters and replay."""

from __future__ import annotations

import time
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from perkflow.core import transactions
from perkflow.core.clock import ManualClock
from perkflow.core.context import AppContext
from perkflow.sync.integrations import get_integration
from perkflow.sync.outbox import enqueue_attributes
from perkflow.sync.worker import DeliveryWorker
from tests.conftest import event

pytestmark = pytest.mark.usefixtures("demo")

MAPPING = [
    ("email", "email"),
    ("first_name", "first_name"),
    ("birth_date", "loyalty_birth_date"),
    ("tier", "loyalty_tier"),
    ("points_balance", "loyalty_points"),
    ("points_pending", "loyalty_pending_points"),
    ("opted_in", "loyalty_member"),
    ("opted_in_at", "loyalty_joined_at"),
    ("favourite_store", "favourite_store"),
    ("newsletter", "newsletter"),
]


def connect(api: TestClient, braze: Any, *, key: str = "braze-key", **extra: Any) -> dict[str, Any]:
    response = api.post(
        "/api/v1/integrations/braze", json={"instance_url": braze.url, "api_key": key, **extra}
    )
    assert response.status_code == 201, response.text
    return response.json()


def map_fields(api: TestClient, integration_id: str, rows: list[tuple[str, str]] = MAPPING) -> None:
    response = api.put(
        f"/api/v1/integrations/{integration_id}/fields",
        json={"fields": [{"loyalty_field": lf, "remote_field": rf} for lf, rf in rows]},
    )
    assert response.status_code == 200, response.text


def define_fields(api: TestClient) -> None:
    for key, kind in (
        ("score", "float"),
        ("visits", "integer"),
        ("last_visit", "datetime"),
        ("tags", "array"),
        ("address", "object"),
        ("orders", "array_of_objects"),
    ):
        assert api.post("/api/v1/fields", json={"key": key, "type": kind}).status_code == 201


def test_connect_checks_the_key_and_saves_nothing_on_failure(api: TestClient, braze: Any) -> None:
    cases = [
        ({"instance_url": braze.url, "api_key": "wrong"}, "invalid_api_key"),
        ({"instance_url": braze.url, "api_key": "no-track"}, "missing_permission"),
        ({"instance_url": braze.url + "/nowhere", "api_key": "braze-key"}, "wrong_instance"),
        ({"instance_url": "http://127.0.0.1:1", "api_key": "braze-key"}, "unreachable"),
        ({"instance_url": "http://rest.iad-01.braze.com", "api_key": "braze-key"}, "invalid_url"),
    ]
    for body, code in cases:
        response = api.post("/api/v1/integrations/braze", json=body)
        assert response.status_code == 422, (code, response.text)
        assert response.json()["code"] == code
    assert api.get("/api/v1/integrations").json()["data"] == []
    created = connect(api, braze)
    assert created["status"] == "connected" and "braze-key" not in str(created)
    pasted = api.post(
        "/api/v1/integrations/braze",
        json={"instance_url": braze.url + "/users/track/", "api_key": "braze-key"},
    )
    assert pasted.json()["config"]["instance_url"] == braze.url


def test_every_attribute_type_reaches_the_profile(
    api: TestClient, braze: Any, worker: DeliveryWorker
) -> None:
    define_fields(api)
    integration = connect(api, braze)
    map_fields(
        api,
        integration["id"],
        [
            *MAPPING,
            ("score", "score"),
            ("visits", "visits"),
            ("last_visit", "last_visit"),
            ("tags", "tags"),
            ("address", "address"),
            ("orders", "orders"),
        ],
    )
    api.post(
        "/api/v1/events",
        json=event(
            "ana",
            "opt_in",
            email="ana@example.com",
            first_name="Ana",
            birth_date="1990-04-01",
            favourite_store="Lyon",
            newsletter=True,
            score=4,
            visits=12,
            last_visit="2026-03-01T10:00:00Z",
            tags=["vip", "eu"],
            address={"city": "Lyon", "since": "2020-01-01", "code": "2020-13-45"},
            orders=[{"id": 1, "total": 4250, "at": "2026-02-01T10:00:00+01:00"}],
        ),
    )
    worker.drain()
    user = braze.user("ana")
    assert user is not None
    assert braze.stats()["item_errors"] == 0
    attrs = user["attributes"]
    # Dates inside objects went as {"$time": ...}: Braze stored them as times, not as the strings sent;
    # the invalid date stayed a string (as a $time it would have made Braze drop every nested update).
    assert attrs["address"] == {"city": "Lyon", "since": "2020-01-01T00:00:00.000Z", "code": "2020-13-45"}
    assert attrs["orders"] == [{"id": 1, "total": 4250, "at": "2026-02-01T09:00:00.000Z"}]
    types = braze.attribute_types()
    assert {k: types[k] for k in ("score", "visits", "newsletter", "loyalty_tier")} == {
        "score": "float",
        "visits": "integer",
        "newsletter": "boolean",
        "loyalty_tier": "string",
    }
    assert types["last_visit"] == "time" and types["loyalty_joined_at"] == "time"
    assert (
        attrs["loyalty_tier"] == "Bronze" and attrs["loyalty_points"] == 5 and attrs["loyalty_member"] is True
    )
    assert attrs["score"] == 4.0 and isinstance(attrs["score"], float) and attrs["visits"] == 12
    assert attrs["tags"] == ["vip", "eu"]
    assert attrs["loyalty_joined_at"].startswith("2026-03-14T09:00:00")
    assert attrs["last_visit"].startswith("2026-03-01T10:00:00")
    assert attrs["loyalty_birth_date"].startswith("1990-04-01")
    assert user["standard"]["email"] == "ana@example.com" and user["standard"]["first_name"] == "Ana"
    assert "loyalty_pending_points" in attrs


def test_values_over_braze_limits_are_left_out_with_a_per_field_error(
    api: TestClient, braze: Any, worker: DeliveryWorker, ctx: AppContext
) -> None:
    for key, kind in (("motto", "string"), ("tags", "array")):
        assert api.post("/api/v1/fields", json={"key": key, "type": kind}).status_code == 201
    integration = connect(api, braze)
    map_fields(api, integration["id"], [("tier", "loyalty_tier"), ("motto", "motto"), ("tags", "tags")])
    api.post(
        "/api/v1/events",
        json=event("ana", "opt_in", motto="m" * 300, tags=[f"t{i}" for i in range(30)]),
    )
    worker.drain()
    assert braze.user("ana")["attributes"] == {"loyalty_tier": "Bronze"}  # the rest went through
    stats = braze.stats()
    assert stats["item_errors"] == 0 and stats["rejected_requests"] == 1  # only the connection check
    [item] = outbox_rows(ctx)
    assert item.status == "delivered"
    assert "motto: " in item.last_error and "255" in item.last_error
    assert "tags: " in item.last_error and "25 array items" in item.last_error
    recent = api.get("/api/v1/deliveries").json()["data"][0]["recent_errors"]
    assert recent[0]["status"] == "delivered" and "motto" in recent[0]["error"]


def test_delta_mode_sends_only_what_changed_and_full_mode_sends_everything(
    api: TestClient, braze: Any, worker: DeliveryWorker
) -> None:
    integration = connect(api, braze)
    map_fields(api, integration["id"])
    api.post("/api/v1/events", json=event("ana", "opt_in", email="ana@example.com", first_name="Ana"))
    worker.drain()
    before = braze.stats()["data_points"]
    api.post("/api/v1/events", json=event("ana", "point_add", points=3))
    worker.drain()
    sent = braze.recent_requests(1)[0]
    assert sent["attribute_objects"] == 1
    delta_points = braze.stats()["data_points"] - before
    assert delta_points == 1  # loyalty_points only: tier, email, names... are unchanged
    assert braze.user("ana")["attributes"]["loyalty_points"] == 8
    api.patch(f"/api/v1/integrations/{integration['id']}/settings", json={"mode": "full"})
    before = braze.stats()["data_points"]
    api.post("/api/v1/events", json=event("ana", "point_add", points=1))
    worker.drain()
    full_points = braze.stats()["data_points"] - before
    assert full_points >= len(MAPPING) - 2  # every mapped field that has a value
    assert full_points > delta_points


def test_selected_activities_become_custom_events_with_a_stable_id(
    api: TestClient, braze: Any, worker: DeliveryWorker
) -> None:
    connect(api, braze, events=[{"type": "tier_up", "name": "loyalty_tier_up"}, {"type": "checkout"}])
    api.post("/api/v1/events", json=event("ana", "opt_in"))
    checkout = api.post(
        "/api/v1/events", json=event("ana", "checkout", transaction_id="T1", total=4250)
    ).json()
    api.post("/api/v1/events", json=event("ana", "point_add", points=1))  # not selected
    worker.drain()
    events = braze.events("ana")
    assert [e["name"] for e in events] == ["loyalty_tier_up", "checkout", "loyalty_tier_up"]
    sent_checkout = events[1]
    assert sent_checkout["properties"]["perkflow_event_id"] == checkout["id"]
    assert (
        sent_checkout["properties"]["transaction_id"] == "T1" and sent_checkout["properties"]["points"] == 42
    )
    assert events[2]["properties"]["to_tier"] == "Silver"


@pytest.mark.parametrize("cap_mode", ["total", "per_array"])
def test_requests_respect_the_object_cap(
    api: TestClient, braze: Any, worker: DeliveryWorker, ctx: AppContext, cap_mode: str
) -> None:
    braze.config.cap_mode = cap_mode
    integration = connect(api, braze, events=[{"type": "opt_in"}], settings={"braze_cap_mode": cap_mode})
    map_fields(api, integration["id"], [("tier", "loyalty_tier"), ("points_balance", "loyalty_points")])
    response = api.post(
        "/api/v1/events/bulk", json={"events": [event(f"m{i}", "opt_in") for i in range(100)]}
    )
    assert response.json()["accepted"] == 100
    worker.drain()
    requests = [r for r in braze.recent_requests(50) if r["path"] == "/users/track" and r["status"] == 201]
    for r in requests:
        if cap_mode == "total":
            assert r["attribute_objects"] + r["event_objects"] <= 75
        else:
            assert r["attribute_objects"] <= 75 and r["event_objects"] <= 75
    assert sum(r["attribute_objects"] for r in requests) == 100
    assert sum(r["event_objects"] for r in requests) == 100
    assert len(braze.users()) == 100


def test_a_partial_failure_dead_letters_only_the_refused_item(
    api: TestClient, braze: Any, worker: DeliveryWorker, ctx: AppContext
) -> None:
    integration = connect(api, braze)
    api.post("/api/v1/events/bulk", json={"events": [event("a", "opt_in"), event("b", "opt_in")]})

    def queue(uow: Any) -> None:
        found = get_integration(uow, integration["id"])
        enqueue_attributes(uow, found, "a", {"lucky_number": 7})
        enqueue_attributes(uow, found, "b", {"lucky_number": 8})

    transactions.run(ctx, queue)
    worker.drain()
    transactions.run(
        ctx,
        lambda uow: enqueue_attributes(
            uow, get_integration(uow, integration["id"]), "a", {"lucky_number": "seven"}
        ),
    )
    transactions.run(
        ctx,
        lambda uow: enqueue_attributes(
            uow, get_integration(uow, integration["id"]), "b", {"lucky_number": 9}
        ),
    )
    worker.drain()
    assert braze.user("b")["attributes"]["lucky_number"] == 9
    assert braze.user("a")["attributes"]["lucky_number"] == 7
    dead = api.get("/api/v1/deliveries/dead").json()["data"]
    assert [d["member_id"] for d in dead] == ["a"]
    assert dead[0]["error"]


def test_item_errors_are_mapped_to_the_exact_object_of_each_array(
    api: TestClient, braze: Any, worker: DeliveryWorker, ctx: AppContext
) -> None:
    braze.config.external_id_max_bytes = 4  # "bella" is too long for this Braze, "ana" and "cid" are not
    integration = connect(api, braze, events=[{"type": "opt_in"}])
    map_fields(api, integration["id"], [("points_balance", "loyalty_points")])
    bulk = {"events": [event(m, "opt_in") for m in ("ana", "bella", "cid")]}
    assert api.post("/api/v1/events/bulk", json=bulk).json()["accepted"] == 3
    worker.drain()
    [request] = [r for r in braze.recent_requests(10) if r["status"] == 201]
    assert (request["attribute_objects"], request["event_objects"], request["item_errors"]) == (3, 3, 2)
    assert braze.user("ana")["attributes"]["loyalty_points"] == 5 and braze.user("cid") is not None
    assert len(braze.events("cid")) == 1
    dead = api.get("/api/v1/deliveries/dead").json()["data"]
    assert sorted((d["member_id"], d["kind"]) for d in dead) == [("bella", "event"), ("bella", "profile")]
    assert all("fewer than 5 bytes" in d["error"] for d in dead)
    assert Counter(r.status for r in outbox_rows(ctx)) == {"delivered": 4, "dead": 2}


def outbox_rows(ctx: AppContext) -> list[Any]:
    from sqlalchemy import select

    from perkflow.sync.tables import outbox

    with ctx.uow(write=False) as uow:
        return list(uow.conn.execute(select(outbox).order_by(outbox.c.id)))


def blocked_for_s(ctx: AppContext, integration_id: str) -> float:
    from sqlalchemy import select

    from perkflow.sync.tables import rate_buckets

    with ctx.uow(write=False) as uow:
        until = uow.conn.execute(
            select(rate_buckets.c.blocked_until_epoch).where(rate_buckets.c.integration_id == integration_id)
        ).scalar_one()
    return float(until) - time.time()


@pytest.mark.parametrize(
    ("header", "mau_mode", "fault"),
    [
        ("X-Ratelimit-Retry-After", True, 429),  # MAU plans: seconds to wait
        ("Retry-After", False, "429:retry-after"),  # not documented by Braze, honoured anyway
        ("X-RateLimit-Reset", False, 429),  # the trio, with Remaining 0 until the window resets
    ],
)
def test_each_rate_limit_header_holds_delivery_for_the_time_it_names(
    api: TestClient,
    braze: Any,
    worker: DeliveryWorker,
    ctx: AppContext,
    clock: ManualClock,
    header: str,
    mau_mode: bool,
    fault: Any,
) -> None:
    braze.config.mau_mode = mau_mode
    integration = connect(api, braze, settings={"backoff_base_s": 0.0, "backoff_max_s": 0.0})
    map_fields(api, integration["id"], [("points_balance", "loyalty_points")])
    braze.set_faults(queue=[fault], retry_after_s=3)
    api.post("/api/v1/events", json=event("ana", "opt_in"))
    worker.run_once(force=True)
    assert braze.user("ana") is None
    # A 429 naming no time holds the destination for 1 s; the header asked for 3 (Reset: 2-3 s).
    assert blocked_for_s(ctx, integration["id"]) > 1.5, f"{header} was ignored"
    [item] = outbox_rows(ctx)
    assert (item.status, item.attempts) == ("pending", 1) and "429" in item.last_error
    if header != "X-RateLimit-Reset":
        assert item.available_at >= clock.now() + timedelta(seconds=3)  # the retry itself waits too
    retried = api.get("/api/v1/deliveries").json()["data"][0]
    assert retried["failed"] == 1 and "429" in retried["recent_errors"][0]["error"]
    clock.advance(timedelta(seconds=3))
    requests_before = braze.stats()["requests"]
    worker.drain(timeout_s=20)
    assert braze.user("ana")["attributes"]["loyalty_points"] == 5
    assert braze.stats()["requests"] == requests_before + 1  # it waited instead of asking again early


def test_the_remaining_header_paces_requests_until_the_window_resets(
    api: TestClient, braze: Any, worker: DeliveryWorker
) -> None:
    braze.config.rate_limit = 2
    braze.config.rate_window_s = 1.0
    from perkflow.sandbox.braze.ratelimit import FixedWindowLimiter

    braze._limiter = FixedWindowLimiter(2, 1.0, braze.config.clock)
    integration = connect(api, braze, settings={"braze_max_objects": 1})
    map_fields(api, integration["id"], [("points_balance", "loyalty_points")])
    api.post("/api/v1/events/bulk", json={"events": [event(f"m{i}", "opt_in") for i in range(5)]})
    worker.drain(timeout_s=30)
    assert len(braze.users()) == 5
    assert braze.stats()["rate_limited"] <= 1  # X-RateLimit-Remaining: 0 holds requests until Reset


def test_a_burst_of_429s_is_ridden_out(
    api: TestClient, braze: Any, worker: DeliveryWorker, ctx: AppContext, clock: ManualClock
) -> None:
    integration = connect(api, braze, settings={"backoff_base_s": 0.0, "backoff_max_s": 0.0})
    map_fields(api, integration["id"], [("points_balance", "loyalty_points")])
    braze.set_faults(queue=["429:retry-after"] * 5, retry_after_s=0)
    api.post("/api/v1/events", json=event("ana", "opt_in"))
    for _ in range(6):
        worker.run_once(force=True)
        clock.advance(timedelta(seconds=1))
    assert braze.user("ana")["attributes"]["loyalty_points"] == 5
    [item] = outbox_rows(ctx)
    assert (item.status, item.attempts) == ("delivered", 5)
    assert Counter(r["status"] for r in braze.recent_requests(10))[429] == 5


def test_server_errors_are_retried_and_dropped_connections_too(
    api: TestClient, braze: Any, worker: DeliveryWorker, clock: ManualClock
) -> None:
    integration = connect(api, braze, settings={"backoff_base_s": 0.0, "backoff_max_s": 0.0})
    map_fields(api, integration["id"], [("points_balance", "loyalty_points")])
    braze.set_faults(queue=[503, "drop", 500])
    api.post("/api/v1/events", json=event("ana", "opt_in"))
    for _ in range(4):
        worker.run_once(force=True)
        clock.advance(timedelta(seconds=1))
    assert braze.user("ana")["attributes"]["loyalty_points"] == 5
    assert api.get("/api/v1/deliveries").json()["data"][0]["delivered"] >= 1


def test_a_timeout_is_retried(api: TestClient, braze: Any, ctx: AppContext, clock: ManualClock) -> None:
    integration = connect(api, braze, settings={"backoff_base_s": 1.0, "backoff_max_s": 1.0})
    map_fields(api, integration["id"], [("points_balance", "loyalty_points")])
    braze.set_faults(queue=["slow:1500"])
    api.post("/api/v1/events", json=event("ana", "opt_in"))
    impatient = DeliveryWorker(ctx, timeout_s=0.3)
    try:
        impatient.run_once(force=True)
        [item] = outbox_rows(ctx)
        assert (item.status, item.attempts) == ("pending", 1) and "Timeout" in item.last_error
        clock.advance(timedelta(seconds=2))
        impatient.drain()
    finally:
        impatient.close()
    assert braze.user("ana")["attributes"]["loyalty_points"] == 5
    assert [r.status for r in outbox_rows(ctx)] == ["delivered"]


def test_a_permanent_4xx_goes_to_the_dead_letters_and_replay_delivers_it(
    api: TestClient, braze: Any, worker: DeliveryWorker
) -> None:
    integration = connect(api, braze)
    map_fields(api, integration["id"], [("points_balance", "loyalty_points")])
    braze.set_faults(queue=[415])
    api.post("/api/v1/events", json=event("ana", "opt_in"))
    worker.drain()
    dead = api.get("/api/v1/deliveries/dead").json()["data"]
    assert len(dead) == 1 and "415" in dead[0]["error"]
    assert api.post("/api/v1/deliveries/replay", json={"item_ids": [dead[0]["id"]]}).json() == {"replayed": 1}
    worker.drain()
    assert braze.user("ana")["attributes"]["loyalty_points"] == 5


def test_too_many_attempts_end_in_the_dead_letters(
    api: TestClient, braze: Any, worker: DeliveryWorker, clock: ManualClock
) -> None:
    integration = connect(
        api, braze, settings={"max_attempts": 3, "backoff_base_s": 0.0, "backoff_max_s": 0.0}
    )
    map_fields(api, integration["id"], [("points_balance", "loyalty_points")])
    braze.set_faults(queue=[500, 502, 503])
    api.post("/api/v1/events", json=event("ana", "opt_in"))
    for _ in range(3):
        worker.run_once(force=True)
        clock.advance(timedelta(seconds=1))
    dead = api.get("/api/v1/deliveries/dead").json()["data"]
    assert len(dead) == 1 and dead[0]["attempts"] == 3
    assert braze.user("ana") is None


def test_a_revoked_key_pauses_delivery_without_losing_anything(
    api: TestClient, braze: Any, worker: DeliveryWorker
) -> None:
    integration = connect(api, braze)
    map_fields(api, integration["id"], [("points_balance", "loyalty_points")])
    braze.config.api_keys = {"new-key": frozenset({"users.track"})}
    api.post("/api/v1/events", json=event("ana", "opt_in"))
    worker.drain()
    status = api.get(f"/api/v1/integrations/{integration['id']}").json()
    assert status["status"] == "paused" and "401" in status["last_error"]
    assert status["deliveries"]["queued"] == 1 and status["deliveries"]["dead"] == 0
    wrong = api.put(
        f"/api/v1/integrations/{integration['id']}/credentials", json={"secrets": {"api_key": "bad"}}
    )
    assert wrong.status_code == 422
    fixed = api.put(
        f"/api/v1/integrations/{integration['id']}/credentials", json={"secrets": {"api_key": "new-key"}}
    )
    assert fixed.json()["status"] == "connected"
    worker.drain()
    assert braze.user("ana")["attributes"]["loyalty_points"] == 5


def test_mapping_rows_are_checked(api: TestClient, braze: Any) -> None:
    integration = connect(api, braze)
    response = api.put(
        f"/api/v1/integrations/{integration['id']}/fields",
        json={
            "fields": [
                {"loyalty_field": "shoe_size", "remote_field": "shoe"},
                {"loyalty_field": "tier", "remote_field": "$tier"},
                {"loyalty_field": "tier", "remote_field": "external_id"},
            ]
        },
    )
    assert response.status_code == 422
    assert set(response.json()["details"]) == {"shoe", "$tier", "external_id"}
    added = api.post(
        f"/api/v1/integrations/{integration['id']}/fields",
        json={"loyalty_field": "tier", "remote_field": "loyalty_tier"},
    )
    assert added.status_code == 201
    again = api.post(
        f"/api/v1/integrations/{integration['id']}/fields",
        json={"loyalty_field": "points_balance", "remote_field": "loyalty_tier"},
    )
    assert again.status_code == 409
    removed = api.delete(f"/api/v1/integrations/{integration['id']}/fields/loyalty_tier")
    assert removed.json()["data"] == []
    catalogue = {f["name"]: f["type"] for f in api.get("/api/v1/integrations/fields").json()["data"]}
    assert catalogue["points_balance"] == "integer" and catalogue["newsletter"] == "boolean"


def test_metrics_report_the_queue_and_requests(api: TestClient, braze: Any, worker: DeliveryWorker) -> None:
    integration = connect(api, braze)
    map_fields(api, integration["id"], [("points_balance", "loyalty_points")])
    api.post("/api/v1/events", json=event("ana", "opt_in"))
    before = api.get("/metrics").text
    assert f'perkflow_sync_queued{{integration="{integration["id"]}",kind="braze"}} 1.0' in before
    worker.drain()
    after = api.get("/metrics").text
    assert f'perkflow_sync_queued{{integration="{integration["id"]}",kind="braze"}} 0.0' in after
    assert "perkflow_sync_requests_total" in after and 'verdict="ok"' in after


def test_stored_credentials_are_encrypted(api: TestClient, braze: Any, ctx: AppContext) -> None:
    from sqlalchemy import select

    from perkflow.sync.tables import integrations

    connect(api, braze)
    with ctx.uow(write=False) as uow:
        stored = uow.conn.execute(select(integrations.c.secrets)).scalar_one()
    assert "braze-key" not in stored


def test_a_member_has_at_most_one_waiting_profile_item(
    api: TestClient, braze: Any, worker: DeliveryWorker, ctx: AppContext
) -> None:
    from sqlalchemy import func, select

    from perkflow.sync.tables import outbox

    integration = connect(api, braze)
    map_fields(api, integration["id"], [("points_balance", "loyalty_points")])
    api.post("/api/v1/events", json=event("ana", "opt_in"))
    for _ in range(5):
        api.post("/api/v1/events", json=event("ana", "point_add", points=1))
    with ctx.uow(write=False) as uow:
        waiting = uow.conn.execute(
            select(func.count()).where(outbox.c.kind == "profile", outbox.c.status == "pending")
        ).scalar_one()
    assert waiting == 1
    worker.drain()
    assert braze.user("ana")["attributes"]["loyalty_points"] == 10
    assert braze.recent_requests(1)[0]["attribute_objects"] == 1


def test_a_retried_profile_item_gives_way_to_a_newer_one(
    api: TestClient, braze: Any, ctx: AppContext, clock: ManualClock
) -> None:
    from perkflow.sync.worker import Outcome, claim, record

    integration = connect(api, braze)
    map_fields(api, integration["id"], [("points_balance", "loyalty_points")])
    api.post("/api/v1/events", json=event("ana", "opt_in"))
    items = claim(ctx, integration["id"], "w1")
    assert [i.kind for i in items] == ["profile"]
    api.post("/api/v1/events", json=event("ana", "point_add", points=1))  # a new waiting marker appears
    found = transactions.run(ctx, lambda uow: get_integration(uow, integration["id"]))
    record(ctx, found, items, Outcome(retry={items[0].id: ("HTTP 503", 30.0)}), "w1")
    stats = api.get("/api/v1/deliveries").json()["data"][0]
    assert (stats["queued"], stats["in_flight"]) == (1, 0)  # one marker left, carrying the backoff
    worker = DeliveryWorker(ctx)
    try:
        assert worker.run_once(force=True) == 0  # still backing off
        clock.advance(timedelta(seconds=31))
        worker.drain()
    finally:
        worker.close()
    assert braze.user("ana")["attributes"]["loyalty_points"] == 6
