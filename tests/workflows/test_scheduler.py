"""Date triggers: cron and one-time schedules, pre-filters, catching up after downtime, never running
an occurrence twice (also with two scheduler processes), taking over from a dead scheduler."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import insert, select

from perkflow.core.clock import ManualClock
from perkflow.core.context import AppContext
from perkflow.runtime import BackgroundJobs
from perkflow.workflows.scheduler import run_date_triggers
from perkflow.workflows.tables import workflow_occurrences, workflow_runs
from tests.workflows.conftest import chain, create, join, node, points, runs, where

pytestmark = pytest.mark.usefixtures("demo")


def daily(cron: str = "0 10 * * *", *after: dict[str, Any], **trigger: Any) -> dict[str, Any]:
    return chain(node("daily", "trigger.date", cron=cron, **trigger), *after)


def birthday_gift() -> dict[str, Any]:
    return daily(
        "0 10 * * *",
        where("birthday", "customer", ("birth_date", "in_date", "today")),
        node("gift", "action.add_points", points=25, reason="happy birthday"),
    )


def test_a_daily_schedule_runs_once_per_day_and_catches_up_after_downtime(
    api: TestClient, ctx: AppContext, clock: ManualClock
) -> None:
    join(api, "ana", birth_date="1990-03-14")  # today (the test clock starts on 14 March, 09:00)
    join(api, "ben", birth_date="1985-03-15")
    join(api, "chloe", birth_date="1992-03-16")
    join(api, "dan")
    workflow = create(api, birthday_gift())
    assert run_date_triggers(ctx) == 0  # 10:00 has not come yet
    clock.advance(timedelta(hours=1, minutes=5))
    assert run_date_triggers(ctx) == 4  # every member walked, only Ana passes the filter
    assert run_date_triggers(ctx) == 0
    assert [p["member_id"] for p in runs(api, workflow["id"])] == ["ana"]
    clock.advance(timedelta(days=2, minutes=30))  # down for two days: 15 and 16 March were missed
    assert run_date_triggers(ctx) == 8
    assert run_date_triggers(ctx) == 0
    by_member = {r["member_id"]: r["trigger"]["occurs_at"] for r in runs(api, workflow["id"])}
    assert by_member == {
        "ana": "2026-03-14T10:00:00Z",
        "ben": "2026-03-15T10:00:00Z",
        "chloe": "2026-03-16T10:00:00Z",
    }
    assert [points(api, m)["balance"] for m in ("ana", "ben", "chloe", "dan")] == [30, 30, 30, 5]
    occurrences = api.get(f"/api/v1/workflows/{workflow['id']}/occurrences").json()["data"]
    assert [(o["occurs_at"], o["status"], o["members_done"]) for o in occurrences] == [
        ("2026-03-16T10:00:00Z", "done", 4),
        ("2026-03-15T10:00:00Z", "done", 4),
        ("2026-03-14T10:00:00Z", "done", 4),
    ]


def test_inactive_time_is_not_caught_up(api: TestClient, ctx: AppContext, clock: ManualClock) -> None:
    join(api, "ana", birth_date="1990-03-15")
    workflow = create(api, birthday_gift())
    api.post(f"/api/v1/workflows/{workflow['id']}/deactivate")
    clock.advance(timedelta(days=2))
    assert run_date_triggers(ctx) == 0
    api.post(f"/api/v1/workflows/{workflow['id']}/activate")
    assert run_date_triggers(ctx) == 0  # 15 March passed while it was inactive
    assert runs(api, workflow["id"]) == []


def test_a_one_time_moment_with_a_pre_filter_runs_once_for_the_members_it_selects(
    api: TestClient, ctx: AppContext, clock: ManualClock
) -> None:
    join(api, "ana", favourite_store="Lyon")
    join(api, "ben", favourite_store="Paris")
    join(api, "chloe", favourite_store="Lyon")
    prefilter = {"conditions": [{"attribute": "favourite_store", "operator": "eq", "value": "Lyon"}]}
    past = chain(
        node("once", "trigger.date", at="2026-03-14T08:00:00Z", prefilter=prefilter),
        node("p", "action.add_points", points=2),
    )
    refused = api.post(f"/api/v1/workflows/{create(api, past, activate=False)['id']}/activate")
    assert refused.status_code == 422 and "has passed" in refused.json()["message"]
    graph = chain(
        node("once", "trigger.date", at="2026-03-14T12:00:00Z", prefilter=prefilter),
        node("p", "action.add_points", points=2, reason="Lyon reopening"),
    )
    workflow = create(api, graph, run_log="all")
    clock.advance(timedelta(hours=4))
    assert run_date_triggers(ctx) == 2
    clock.advance(timedelta(days=1))
    assert run_date_triggers(ctx) == 0
    assert sorted(r["member_id"] for r in runs(api, workflow["id"])) == ["ana", "chloe"]
    assert points(api, "ben")["balance"] == 5


def test_a_campaigns_schedule_runs_only_inside_its_dates(
    api: TestClient, ctx: AppContext, clock: ManualClock
) -> None:
    join(api, "ana")
    workflow = create(
        api,
        daily("0 10 * * *", node("p", "action.add_points", points=1)),
        kind="campaign",
        ends_at="2026-03-15T12:00:00Z",
    )
    clock.advance(timedelta(days=3))
    assert run_date_triggers(ctx) == 2  # 14 and 15 March, not 16 and 17
    assert len(runs(api, workflow["id"])) == 2


def test_an_occurrence_left_half_done_by_a_dead_scheduler_is_finished_by_another(
    api: TestClient, ctx: AppContext, clock: ManualClock
) -> None:
    for member in ("ana", "ben", "chloe", "dan"):
        join(api, member)
    workflow = create(api, daily("0 10 * * *", node("p", "action.add_points", points=1)))
    moment = datetime(2026, 3, 14, 10, 0, tzinfo=UTC)
    clock.advance(timedelta(hours=1, minutes=10))
    with ctx.uow() as uow:
        # As a scheduler that died after committing the batch of ana and ben would have left it.
        uow.conn.execute(
            insert(workflow_occurrences).values(
                workflow_id=workflow["id"],
                occurs_at=moment,
                version=1,
                status="running",
                members_done=2,
                last_member="ben",
                claimed_by="dead-host:1",
                lease_until=moment + timedelta(minutes=2),
                started_at=moment,
            )
        )
        uow.commit()
    assert run_date_triggers(ctx, worker="alive-host:2") == 2
    assert sorted(r["member_id"] for r in runs(api, workflow["id"])) == ["chloe", "dan"]
    occurrence = api.get(f"/api/v1/workflows/{workflow['id']}/occurrences").json()["data"][0]
    assert occurrence["status"] == "done" and occurrence["members_done"] == 4


def test_an_occurrence_held_by_a_live_scheduler_is_left_to_it(
    api: TestClient, ctx: AppContext, clock: ManualClock
) -> None:
    join(api, "ana")
    workflow = create(api, daily("0 10 * * *", node("p", "action.add_points", points=1)))
    clock.advance(timedelta(hours=1, minutes=1))
    moment = datetime(2026, 3, 14, 10, 0, tzinfo=UTC)
    with ctx.uow() as uow:
        uow.conn.execute(
            insert(workflow_occurrences).values(
                workflow_id=workflow["id"],
                occurs_at=moment,
                version=1,
                status="running",
                members_done=0,
                claimed_by="busy-host:1",
                lease_until=clock.now() + timedelta(minutes=1),
                started_at=moment,
            )
        )
        uow.commit()
    assert run_date_triggers(ctx, worker="other-host:2") == 0
    assert runs(api, workflow["id"]) == []


def test_the_background_jobs_run_the_schedules(api: TestClient, ctx: AppContext, clock: ManualClock) -> None:
    join(api, "ana")
    workflow = create(api, daily("0 10 * * *", node("p", "action.add_points", points=1)))
    clock.advance(timedelta(hours=2))
    jobs = BackgroundJobs(ctx, delivery_threads=0)
    jobs.start()
    try:
        deadline = time.monotonic() + 20
        while not runs(api, workflow["id"]) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        jobs.stop()
    assert len(runs(api, workflow["id"])) == 1


def test_two_scheduler_processes_never_run_an_occurrence_twice(
    api: TestClient, ctx: AppContext, clock: ManualClock, database_url: str
) -> None:
    # The processes use the real clock: the workflow was active for the last 20 minutes.
    clock.set(datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=20, seconds=30))
    members = [f"m{n:03d}" for n in range(40)]
    response = api.post(
        "/api/v1/events/bulk",
        json={"events": [{"customer": m, "action": "opt_in", "data": {}} for m in members]},
    )
    assert response.json()["accepted"] == 40
    workflow = create(api, daily("* * * * *", node("p", "action.add_points", points=1)))
    env = {**os.environ, "PERKFLOW_DATABASE_URL": database_url}
    command = [sys.executable, "-m", "perkflow", "jobs", "workflows", "--batch", "7"]
    processes = [
        subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=240) for p in processes]
    assert all(p.returncode == 0 for p in processes), outputs
    with ctx.uow(write=False) as uow:
        rows = uow.conn.execute(
            select(workflow_runs.c.member_id, workflow_runs.c.trigger).where(
                workflow_runs.c.workflow_id == workflow["id"]
            )
        ).all()
        occurrences = (
            uow.conn.execute(
                select(workflow_occurrences.c.status).where(
                    workflow_occurrences.c.workflow_id == workflow["id"]
                )
            )
            .scalars()
            .all()
        )
    per_run = Counter((member, trigger["occurs_at"]) for member, trigger in rows)
    assert 20 <= len(occurrences) <= 22 and set(occurrences) == {"done"}
    assert len(per_run) == len(occurrences) * 40 and set(per_run.values()) == {1}
    assert points(api, "m000")["balance"] == 5 + len(occurrences)
    # What each process ran adds up to the runs recorded (each prints its count).
    ran = [int(out.strip().splitlines()[-1].split('"date_runs": ')[1].split(",")[0]) for out, _ in outputs]
    assert sum(ran) == len(per_run), ran
