"""Worker processes: a worker killed mid-sync loses nothing, and several workers deliver nothing twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from perkflow.core.context import AppContext
from perkflow.core.settings import Settings
from perkflow.sync.tables import outbox
from tests.conftest import event

pytestmark = [pytest.mark.usefixtures("demo"), pytest.mark.slow]


def start_worker(settings: Settings, threads: int = 1) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PERKFLOW_DATABASE_URL": settings.database_url,
        "PERKFLOW_SECRET_KEY_FILE": str(settings.secret_key_file),
        "PERKFLOW_DELIVERY_LEASE_S": "3",
        "PERKFLOW_SETTLE_INTERVAL_S": "3600",
        "PERKFLOW_LOG_LEVEL": "warning",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "perkflow", "worker", "--threads", str(threads)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def status_counts(ctx: AppContext) -> Counter[str]:
    with ctx.uow(write=False) as uow:
        rows = uow.conn.execute(select(outbox.c.status, func.count()).group_by(outbox.c.status)).all()
    return Counter({status: int(count) for status, count in rows})


def wait_until(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def prepare(api: TestClient, braze: Any, members: int) -> set[str]:
    """A Braze integration and a burst of opt-ins: an attributes object and two events per member."""
    connected = api.post(
        "/api/v1/integrations/braze",
        json={
            "instance_url": braze.url,
            "api_key": "braze-key",
            "events": [{"type": "opt_in"}, {"type": "tier_up"}],
            "settings": {"flush_age_ms": 0},
        },
    )
    assert connected.status_code == 201, connected.text
    api.put(
        f"/api/v1/integrations/{connected.json()['id']}/fields",
        json={
            "fields": [
                {"loyalty_field": "tier", "remote_field": "loyalty_tier"},
                {"loyalty_field": "points_balance", "remote_field": "loyalty_points"},
            ]
        },
    )
    expected: set[str] = set()
    for start in range(0, members, 500):
        body = {"events": [event(f"m{i:04d}", "opt_in") for i in range(start, min(members, start + 500))]}
        response = api.post("/api/v1/events/bulk", json=body).json()
        assert response["accepted"] == len(body["events"])
        expected |= {r["event"]["id"] for r in response["results"]}
    return expected


def received_event_ids(braze: Any) -> Counter[str]:
    return Counter(e["properties"]["perkflow_event_id"] for e in braze.events() if e["name"] == "opt_in")


def check_profiles(braze: Any, members: int) -> None:
    for i in range(members):
        user = braze.user(f"m{i:04d}")
        assert user is not None, f"m{i:04d} never reached Braze"
        assert user["attributes"] == {"loyalty_tier": "Bronze", "loyalty_points": 5}


def test_a_worker_killed_mid_sync_loses_nothing(
    api: TestClient, braze: Any, ctx: AppContext, settings: Settings
) -> None:
    members = 400
    expected = prepare(api, braze, members)
    braze.set_faults(slow_ms=150)
    worker = start_worker(settings)
    try:
        wait_until(lambda: braze.stats()["accepted_requests"] >= 3, 60, "the first deliveries")
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
    finally:
        if worker.poll() is None:
            worker.kill()
    interrupted = status_counts(ctx)
    assert interrupted["delivered"] < sum(interrupted.values()), "the kill came after the sync had finished"
    braze.set_faults(slow_ms=0)
    restarted = start_worker(settings)
    try:
        wait_until(
            lambda: set(status_counts(ctx)) <= {"delivered"}, 90, "the queue to drain after the restart"
        )
    finally:
        restarted.send_signal(signal.SIGTERM)
        restarted.wait(30)
    assert status_counts(ctx)["delivered"] == sum(status_counts(ctx).values())
    got = received_event_ids(braze)
    assert set(got) == expected  # every opt-in arrived; a request cut by the kill may have arrived twice
    check_profiles(braze, members)


def test_several_workers_never_deliver_an_item_twice(
    api: TestClient, braze: Any, ctx: AppContext, settings: Settings
) -> None:
    members = 600
    expected = prepare(api, braze, members)
    braze.set_faults(slow_ms=20)
    workers = [start_worker(settings, threads=2) for _ in range(3)]
    try:
        wait_until(lambda: set(status_counts(ctx)) <= {"delivered"}, 120, "three workers to drain the queue")
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        for worker in workers:
            worker.wait(30)
    got = received_event_ids(braze)
    assert set(got) == expected
    assert max(got.values()) == 1, "an event was delivered twice"
    tier_ups = Counter(e["properties"]["perkflow_event_id"] for e in braze.events() if e["name"] == "tier_up")
    assert len(tier_ups) == members and max(tier_ups.values()) == 1
    check_profiles(braze, members)
    assert sum(1 for r in braze.recent_requests(500) if r["status"] == 201) >= 3
