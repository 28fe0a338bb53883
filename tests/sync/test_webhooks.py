"""Outbound webhooks: signed envelopes for selected activity types, retried like every destination."""

from __future__ import annotations

import hashlib
import hmac
from datetime import timedelta

import orjson
import pytest
from fastapi.testclient import TestClient

from perkflow.core.clock import ManualClock
from perkflow.core.security import verify_signature
from perkflow.sync.worker import DeliveryWorker
from tests.conftest import event
from tests.sync.receiver import Receiver

pytestmark = pytest.mark.usefixtures("demo")
SECRET = "s3cret-s3cret-s3cret"


def connect(api: TestClient, receiver: Receiver, **extra: object) -> dict[str, object]:
    response = api.post(
        "/api/v1/integrations/webhook",
        json={
            "url": receiver.url,
            "secret": SECRET,
            "events": [{"type": "tier_up"}, {"type": "checkout"}],
            **extra,
        },
    )
    assert response.status_code == 201, response.text
    return response.json()


def test_connecting_sends_a_signed_ping_and_keeps_the_secret_to_itself(
    api: TestClient, receiver: Receiver
) -> None:
    body = connect(api, receiver)
    assert "secret" not in body and SECRET not in str(body)
    ping = receiver.received[0]
    assert verify_signature(SECRET, ping.body, ping.headers["x-perkflow-signature"])
    assert receiver.bodies()[0]["event_type"] == "ping"
    listed = api.get("/api/v1/integrations").text
    assert SECRET not in listed


def test_a_receiver_that_refuses_the_ping_is_not_connected(api: TestClient, receiver: Receiver) -> None:
    receiver.statuses = [500]
    response = api.post(
        "/api/v1/integrations/webhook",
        json={"url": receiver.url, "secret": SECRET, "events": [{"type": "tier_up"}]},
    )
    assert response.status_code == 422 and response.json()["code"] == "receiver_refused"
    assert api.get("/api/v1/integrations").json()["data"] == []


def test_selected_activities_arrive_signed_with_a_stable_id(
    api: TestClient, receiver: Receiver, worker: DeliveryWorker, clock: ManualClock
) -> None:
    connect(api, receiver)
    api.post("/api/v1/events", json=event("ana", "opt_in", email="ana@example.com"))
    api.post("/api/v1/events", json=event("ana", "checkout", transaction_id="T1", total=4250))
    receiver.statuses = [503]  # the first delivery fails and is retried later
    worker.drain()
    clock.advance(timedelta(minutes=1))
    worker.drain()
    deliveries = [r for r in receiver.received if b'"ping"' not in r.body]
    for delivery in deliveries:  # what a receiver computes: HMAC-SHA256 of the raw body, hex
        expected = hmac.new(SECRET.encode(), delivery.body, hashlib.sha256).hexdigest()
        assert delivery.headers["x-perkflow-signature"] == f"sha256={expected}"
        assert delivery.headers["x-perkflow-event-id"] == orjson.loads(delivery.body)["id"]
    bodies = [b for b in receiver.bodies() if b["event_type"] != "ping"]
    assert len(bodies) == 4  # three events, one of them sent twice
    first_attempt, retry = bodies[0], bodies[1]
    assert first_attempt == retry  # the same envelope, the same id: receivers can deduplicate
    # The member's later events waited behind the retried one: they arrive in the order they happened.
    assert [b["event_type"] for b in bodies] == ["tier_up", "tier_up", "checkout", "tier_up"]
    sequence = [int(b["id"].removeprefix("act_")) for b in bodies[1:]]
    assert sequence == sorted(sequence)
    assert sorted({(b["event_name"], b["event_type"]) for b in bodies}) == [
        ("purchases", "checkout"),
        ("tiers", "tier_up"),
    ]
    assert len({b["id"] for b in bodies if b["event_type"] == "tier_up"}) == 2  # Bronze, then Silver
    checkout = next(b for b in bodies if b["event_type"] == "checkout")
    assert checkout["member"] == {"id": "ana", "email": "ana@example.com"}
    assert checkout["payload"]["data"]["transaction_id"] == "T1" and checkout["payload"]["points_delta"] == 42
    assert set(checkout) == {"id", "event_name", "event_type", "occurred_at", "member", "payload"}
    assert api.get("/api/v1/deliveries").json()["data"][0]["delivered"] == 3


def test_a_webhook_that_keeps_failing_ends_in_the_dead_letters_and_can_be_replayed(
    api: TestClient, receiver: Receiver, worker: DeliveryWorker
) -> None:
    integration = connect(
        api, receiver, settings={"max_attempts": 2, "backoff_base_s": 0.0, "backoff_max_s": 0.0}
    )
    api.post("/api/v1/events", json=event("ana", "opt_in"))
    receiver.statuses = [500, 500]
    worker.drain()
    worker.drain()
    dead = api.get("/api/v1/deliveries/dead").json()["data"]
    assert len(dead) == 1 and "gave up after 2 attempts" in dead[0]["error"]
    stats = api.get("/api/v1/deliveries").json()["data"][0]
    assert (stats["dead"], stats["queued"]) == (1, 0)
    assert api.post("/api/v1/deliveries/replay", json={"integration_id": integration["id"]}).json() == {
        "replayed": 1
    }
    worker.drain()
    assert api.get("/api/v1/deliveries").json()["data"][0]["dead"] == 0
    assert [b["event_type"] for b in receiver.bodies()][-1] == "tier_up"
