"""How delivery behaves against the Braze sandbox: the outbox shares the change's transaction, batches
flush by size or age, each member's events stay in order through retries, oversized requests are
split without resending anything, dead profile items replay safely, and the status API reports all."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from perkflow.core import transactions
from perkflow.core.clock import ManualClock
from perkflow.core.context import AppContext
from perkflow.core.uow import UnitOfWork
from perkflow.events.service import ingest
from perkflow.sync.tables import outbox
from perkflow.sync.worker import DeliveryWorker, backoff_s, claim
from tests.conftest import event

pytestmark = pytest.mark.usefixtures("demo")


def connect(api: TestClient, braze: Any, **extra: Any) -> dict[str, Any]:
    response = api.post(
        "/api/v1/integrations/braze", json={"instance_url": braze.url, "api_key": "braze-key", **extra}
    )
    assert response.status_code == 201, response.text
    return response.json()


def map_points(api: TestClient, integration_id: str) -> None:
    response = api.put(
        f"/api/v1/integrations/{integration_id}/fields",
        json={"fields": [{"loyalty_field": "points_balance", "remote_field": "loyalty_points"}]},
    )
    assert response.status_code == 200, response.text


def rows(ctx: AppContext) -> list[Any]:
    with ctx.uow(write=False) as uow:
        return list(uow.conn.execute(select(outbox).order_by(outbox.c.id)))


def event_sequence(events: list[dict[str, Any]]) -> list[int]:
    return [int(e["properties"]["perkflow_event_id"].removeprefix("act_")) for e in events]


class FailsAfterEveryWrite:
    """A unit-of-work component whose flush runs last and fails: the commit never happens."""

    def __init__(self, uow: UnitOfWork) -> None:
        self.uow = uow
        self.seen: tuple[int, int] | None = None

    def before_commit(self) -> bool:
        return False

    def flush(self) -> None:
        conn = self.uow.conn
        activities = conn.exec_driver_sql("SELECT COUNT(*) FROM activities").scalar_one()
        items = conn.execute(select(func.count()).select_from(outbox)).scalar_one()
        self.seen = (int(activities), int(items))
        raise RuntimeError("the transaction fails after the change and its outbox item were written")


def test_the_outbox_item_is_written_in_the_transaction_of_the_change(
    api: TestClient, braze: Any, ctx: AppContext
) -> None:
    from perkflow.sync.outbox import OutboxWriter

    connect(api, braze, events=[{"type": "opt_in"}])
    failing: list[FailsAfterEveryWrite] = []

    def change_then_fail(uow: UnitOfWork) -> None:
        ingest(uow, [event("ana", "opt_in")])
        uow.component(OutboxWriter)  # flushes before the failing component
        failing.append(uow.component(FailsAfterEveryWrite))
        uow.commit()

    with pytest.raises(RuntimeError):
        transactions.run(ctx, change_then_fail)
    activities, items = failing[0].seen or (0, 0)
    assert activities > 0 and items > 0  # both were written, in one transaction
    assert rows(ctx) == []  # and both rolled back together
    assert api.get("/api/v1/members/ana").status_code == 404
    transactions.run(ctx, lambda uow: ingest(uow, [event("ana", "opt_in")]))
    assert [r.kind for r in rows(ctx)] == ["event"]


def test_batches_flush_when_full_or_when_the_oldest_item_is_old_enough(
    api: TestClient, braze: Any, worker: DeliveryWorker, clock: ManualClock
) -> None:
    integration = connect(api, braze, settings={"flush_age_ms": 60_000, "braze_max_objects": 3})
    map_points(api, integration["id"])
    api.post("/api/v1/events/bulk", json={"events": [event("a", "opt_in"), event("b", "opt_in")]})
    assert worker.run_once() == 0  # two objects waiting, three fit a request, and they are new
    api.post("/api/v1/events", json=event("c", "opt_in"))
    assert worker.run_once() == 3  # a full request
    assert {u["external_id"] for u in braze.users()} == {"a", "b", "c"}
    api.post("/api/v1/events", json=event("d", "opt_in"))
    clock.advance(timedelta(seconds=59))
    assert worker.run_once() == 0
    clock.advance(timedelta(seconds=2))
    assert worker.run_once() == 1  # part-full, but its oldest item waited past flush_age_ms
    assert braze.user("d") is not None


def test_a_members_later_events_wait_behind_an_earlier_event_being_retried(
    api: TestClient, braze: Any, worker: DeliveryWorker, clock: ManualClock
) -> None:
    connect(api, braze, events=[{"type": "point_add"}], settings={"backoff_base_s": 10, "backoff_max_s": 10})
    api.post("/api/v1/events/bulk", json={"events": [event("ana", "opt_in"), event("ben", "opt_in")]})
    api.post("/api/v1/events", json=event("ana", "point_add", points=1))
    braze.set_faults(queue=[503])
    worker.run_once(force=True)
    api.post("/api/v1/events", json=event("ana", "point_add", points=2))
    api.post("/api/v1/events", json=event("ben", "point_add", points=3))
    worker.run_once(force=True)
    assert braze.events("ana") == []  # the second event did not overtake the first
    assert [e["properties"]["points"] for e in braze.events("ben")] == [3]  # others are not held up
    clock.advance(timedelta(seconds=20))
    worker.drain()
    sent = braze.events("ana")
    assert [e["properties"]["points"] for e in sent] == [1, 2]
    assert event_sequence(sent) == sorted(event_sequence(sent))


def test_a_member_with_more_events_than_a_request_holds_keeps_them_in_order_through_a_retry(
    api: TestClient, braze: Any, worker: DeliveryWorker, clock: ManualClock
) -> None:
    connect(api, braze, events=[{"type": "point_add"}], settings={"backoff_base_s": 10, "backoff_max_s": 10})
    api.post("/api/v1/events", json=event("ana", "opt_in"))
    bulk = {"events": [event("ana", "point_add", points=1 + i % 5) for i in range(100)]}
    assert api.post("/api/v1/events/bulk", json=bulk).json()["accepted"] == 100
    braze.set_faults(queue=[503])
    before = braze.stats()["requests"]
    worker.run_once(force=True)
    assert braze.stats()["requests"] == before + 1  # the second request (events 76-100) was held back
    attempts = Counter(r.attempts for r in rows(ctx=worker.ctx) if r.status == "pending")
    assert attempts == {1: 75, 0: 25}
    worker.run_once(force=True)
    assert braze.events("ana") == []
    clock.advance(timedelta(seconds=20))
    worker.drain()
    sent = braze.events("ana")
    assert len(sent) == 100 and event_sequence(sent) == sorted(event_sequence(sent))


def test_a_request_too_large_for_braze_is_split_and_nothing_is_sent_twice(
    api: TestClient, braze: Any, worker: DeliveryWorker
) -> None:
    braze.config.max_body_bytes = 4000
    integration = connect(api, braze, events=[{"type": "opt_in"}])
    map_points(api, integration["id"])
    bulk = {"events": [event(f"m{i:02d}", "opt_in") for i in range(40)]}
    assert api.post("/api/v1/events/bulk", json=bulk).json()["accepted"] == 40
    worker.drain()
    statuses = Counter(r["status"] for r in braze.recent_requests(100))
    assert statuses[413] >= 1 and statuses[201] >= 2
    received = Counter(e["properties"]["perkflow_event_id"] for e in braze.events())
    assert len(received) == 40 and set(received.values()) == {1}
    assert len(braze.users()) == 40
    assert {r.status for r in rows(worker.ctx)} == {"delivered"}


def test_replaying_dead_profile_items_keeps_one_waiting_item_per_member(
    api: TestClient, braze: Any, worker: DeliveryWorker
) -> None:
    integration = connect(api, braze)
    map_points(api, integration["id"])
    for change in (event("ana", "opt_in"), event("ana", "point_add", points=1)):
        braze.set_faults(queue=[415])
        api.post("/api/v1/events", json=change)
        worker.drain()
    api.post("/api/v1/events", json=event("ben", "opt_in"))
    braze.set_faults(queue=[415])
    worker.drain()
    api.post("/api/v1/events", json=event("ben", "point_add", points=4))  # waits, not yet sent
    dead = api.get("/api/v1/deliveries/dead").json()["data"]
    assert Counter(d["member_id"] for d in dead) == {"ana": 2, "ben": 1}
    replayed = api.post("/api/v1/deliveries/replay", json={"integration_id": integration["id"]})
    assert replayed.status_code == 200 and replayed.json() == {"replayed": 3}
    waiting = Counter(r.member_id for r in rows(worker.ctx) if r.status == "pending")
    assert waiting == {"ana": 1, "ben": 1}
    worker.drain()
    assert braze.user("ana")["attributes"]["loyalty_points"] == 6
    assert braze.user("ben")["attributes"]["loyalty_points"] == 9
    assert api.get("/api/v1/deliveries/dead").json()["data"] == []


def test_delivery_status_reports_every_state(
    api: TestClient, braze: Any, worker: DeliveryWorker, ctx: AppContext, clock: ManualClock
) -> None:
    integration = connect(api, braze, settings={"backoff_base_s": 60, "backoff_max_s": 60})
    map_points(api, integration["id"])
    api.post("/api/v1/events", json=event("a", "opt_in"))
    worker.drain()  # a: delivered
    braze.set_faults(queue=[503])
    api.post("/api/v1/events", json=event("b", "opt_in"))
    worker.run_once(force=True)  # b: failed, waiting for its retry
    braze.set_faults(queue=[415])
    api.post("/api/v1/events", json=event("c", "opt_in"))
    worker.run_once(force=True)  # c: dead
    api.post("/api/v1/events", json=event("d", "opt_in"))
    assert [i.member_id for i in claim(ctx, integration["id"], "another-worker")] == ["d"]  # in flight
    api.post("/api/v1/events", json=event("e", "opt_in"))  # queued
    clock.advance(timedelta(seconds=10))
    [stats] = api.get("/api/v1/deliveries").json()["data"]
    assert stats["integration_id"] == integration["id"] and stats["kind"] == "braze"
    assert (stats["queued"], stats["in_flight"], stats["delivered"], stats["failed"], stats["dead"]) == (
        2,
        1,
        1,
        1,
        1,
    )
    assert stats["oldest_lag_s"] == pytest.approx(10, abs=0.5)  # b has waited since before the advance
    errors = {e["member_id"]: e for e in stats["recent_errors"]}
    assert set(errors) == {"b", "c"}
    assert "503" in errors["b"]["error"] and errors["b"]["status"] == "pending"
    assert "415" in errors["c"]["error"] and errors["c"]["status"] == "dead" and errors["c"]["attempts"] == 1
    assert stats["totals"]["requests"] == 3 and stats["totals"]["objects"] == 1
    metrics = api.get("/metrics").text
    labels = f'integration="{integration["id"]}",kind="braze"'
    for name, value in (("queued", 2), ("in_flight", 1), ("dead", 1)):
        assert f"perkflow_sync_{name}{{{labels}}} {value}.0" in metrics
    assert f"perkflow_sync_oldest_lag_seconds{{{labels}}} 10.0" in metrics
    assert f'perkflow_sync_items_total{{{labels},result="dead"}} 1.0' in metrics


def test_backoff_grows_exponentially_with_jitter_up_to_the_cap() -> None:
    for attempts, middle in ((1, 1.0), (2, 2.0), (3, 4.0), (6, 32.0)):
        samples = [backoff_s(attempts, 1.0, 300.0) for _ in range(200)]
        assert middle * 0.5 <= min(samples) and max(samples) <= middle * 1.5
        assert len(set(samples)) > 100  # jittered, so retries of many items do not stampede
    assert max(backoff_s(30, 1.0, 60.0) for _ in range(100)) <= 90.0


def test_a_renewed_lease_keeps_items_and_an_expired_one_loses_them_to_another_worker(
    api: TestClient, braze: Any, ctx: AppContext, clock: ManualClock
) -> None:
    from perkflow.sync.worker import Lease

    integration = connect(api, braze)
    map_points(api, integration["id"])
    api.post("/api/v1/events/bulk", json={"events": [event("a", "opt_in"), event("b", "opt_in")]})
    mine = claim(ctx, integration["id"], "w1")
    assert len(mine) == 2
    # A step as long as the lease forces a renewal at every check.
    lease = Lease(ctx, "w1", [i.id for i in mine], step_s=ctx.settings.delivery_lease_s)
    clock.advance(timedelta(seconds=50))
    assert lease.keep([mine[0].id]) == {mine[0].id}  # renewed for both items
    clock.advance(timedelta(seconds=20))  # past the first lease, inside the renewed one
    assert claim(ctx, integration["id"], "w2") == []
    clock.advance(timedelta(seconds=61))  # w1 stalled past the renewed lease: w2 takes over
    assert {i.id for i in claim(ctx, integration["id"], "w2")} == {i.id for i in mine}
    assert lease.keep([i.id for i in mine]) == set()  # so w1 must not send them
