"""Durable background code generation: a campaign's generation survives the process that ran it.

The processes here are real: `perkflow codes generate` is killed with SIGKILL or interrupted with
SIGINT half-way, and BackgroundJobs (what `perkflow serve` and `perkflow worker` run) or `perkflow
codes resume` finish the job with exactly the requested number of codes.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from perkflow.bootstrap import build_context
from perkflow.core import transactions
from perkflow.core.context import AppContext
from perkflow.core.settings import Settings
from perkflow.promotions import service
from perkflow.promotions.tables import campaigns, code_generation_jobs, vouchers
from perkflow.runtime import BackgroundJobs
from tests.promotions.conftest import create_campaign

# The killed processes hold short leases, so the test need not wait long for them to run out; the
# processes that resume hold long ones (a lease must outlast a chunk, or the job changes hands).
LEASE_S = 1.0


@pytest.fixture
def live_ctx(settings: Settings) -> Iterator[AppContext]:
    """The test's database with the real clock, as another process of the installation sees it
    (leases written by the subprocesses are in real time)."""
    found = build_context(settings.model_copy(update={"generation_lease_s": 60.0}))
    yield found
    found.close()


# `perkflow` as started from a terminal: Ctrl-C enabled even when the test runner was started in
# the background, whose children inherit an ignored SIGINT.
TERMINAL = (
    "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "sys.argv = ['perkflow', *sys.argv[1:]]; runpy.run_module('perkflow', run_name='__main__')"
)


def cli(ctx: AppContext, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", TERMINAL, "codes", *args],
        env={
            "PERKFLOW_DATABASE_URL": ctx.settings.database_url,
            "PERKFLOW_GENERATION_LEASE_S": str(LEASE_S),
            "PATH": "/usr/bin:/bin",
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def job_of(ctx: AppContext, campaign_id: str) -> Any:
    with ctx.uow(write=False) as uow:
        return uow.conn.execute(
            select(code_generation_jobs)
            .where(code_generation_jobs.c.campaign_id == campaign_id)
            .order_by(code_generation_jobs.c.created_at.desc())
            .limit(1)
        ).first()


def wait_for(condition: Any, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def codes_in(ctx: AppContext, campaign_id: str) -> tuple[int, int]:
    with ctx.uow(write=False) as uow:
        pk = uow.conn.execute(select(campaigns.c.pk).where(campaigns.c.id == campaign_id)).scalar_one()
        return tuple(  # type: ignore[return-value]
            uow.conn.execute(
                select(func.count(), func.count(func.distinct(vouchers.c.code))).where(
                    vouchers.c.campaign_pk == pk
                )
            ).one()
        )


def generation(api: TestClient, campaign_id: str) -> dict[str, Any]:
    return api.get(f"/api/v1/campaigns/{campaign_id}").json()["generation"]  # type: ignore[no-any-return]


def test_a_killed_generator_is_finished_by_the_background_jobs(
    api: TestClient, ctx: AppContext, live_ctx: AppContext
) -> None:
    campaign = create_campaign(api, name="Big", vouchers_count=0, code_config={"length": 12})
    process = cli(ctx, "generate", "Big", "--count", "40000", "--chunk", "500")
    wait_for(lambda: (job := job_of(ctx, campaign["id"])) is not None and job.generated >= 500)
    process.kill()  # SIGKILL: no cleanup of any kind
    process.wait(timeout=30)
    stuck = job_of(ctx, campaign["id"])
    assert stuck.status == "RUNNING" and 0 < stuck.generated < 40_000 and stuck.lease_owner is not None
    assert generation(api, campaign["id"])["status"] == "IN_PROGRESS"
    assert codes_in(ctx, campaign["id"]) == (stuck.generated, stuck.generated)
    refused = api.post(f"/api/v1/campaigns/{campaign['id']}/codes/generate", json={"count": 5})
    assert refused.status_code == 400 and refused.json()["code"] == "multiple_requests"

    # A restarted installation: its first round of background jobs finds the dead lease.
    wait_for(lambda: stuck.lease_until <= live_ctx.clock.now())
    jobs = BackgroundJobs(live_ctx, delivery_threads=0)
    jobs.start()
    try:
        wait_for(lambda: generation(api, campaign["id"])["status"] != "IN_PROGRESS")
    finally:
        jobs.stop()
    assert generation(api, campaign["id"]) == {
        "status": "DONE",
        "requested": 40_000,
        "generated": 40_000,
        "error": None,
    }
    assert codes_in(ctx, campaign["id"]) == (40_000, 40_000)
    done = job_of(ctx, campaign["id"])
    assert (done.status, done.generated, done.attempts, done.lease_owner) == ("DONE", 40_000, 2, None)
    again = api.post(f"/api/v1/campaigns/{campaign['id']}/codes/generate", json={"count": 5})
    assert again.status_code == 202, again.text


def test_ctrl_c_releases_the_job_and_codes_resume_finishes_it(api: TestClient, ctx: AppContext) -> None:
    campaign = create_campaign(api, name="Interrupted", vouchers_count=0, code_config={"length": 12})
    process = cli(ctx, "generate", "Interrupted", "--count", "30000", "--chunk", "500")
    wait_for(lambda: (job := job_of(ctx, campaign["id"])) is not None and job.generated >= 500)
    process.send_signal(signal.SIGINT)  # Ctrl-C: the current chunk commits, then the job is handed back
    _out, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "stopping after the current chunk" in err and "perkflow codes resume" in err
    released = job_of(ctx, campaign["id"])
    assert released.status == "RUNNING" and released.lease_owner is None and released.lease_until is None
    assert released.attempts == 0  # an orderly stop is not a failed attempt
    assert codes_in(ctx, campaign["id"])[0] == released.generated < 30_000

    resumed = cli(ctx, "resume", "Interrupted", "--chunk", "10000")
    out, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err
    assert f"generated {30_000 - released.generated} codes" in out
    assert codes_in(ctx, campaign["id"]) == (30_000, 30_000)
    assert generation(api, campaign["id"])["status"] == "DONE"
    assert service.finish_generation(ctx, campaign["id"]) == []  # nothing left to resume


def test_a_campaign_whose_process_stopped_before_generating_is_resumed(
    api: TestClient, ctx: AppContext, live_ctx: AppContext
) -> None:
    # The API queued the job and committed, then its process went away before the thread ran it.
    campaign = transactions.run(
        live_ctx,
        lambda uow: service.create_campaign(
            uow,
            {
                "name": "Queued",
                "discount": {"type": "AMOUNT", "amount_off": 100},
                "vouchers_count": service.SYNC_GENERATION_LIMIT + 1000,
            },
        ),
    )
    assert generation(api, campaign.id)["status"] == "IN_PROGRESS"
    jobs = BackgroundJobs(live_ctx, delivery_threads=0)
    jobs.start()
    try:
        wait_for(lambda: generation(api, campaign.id)["status"] != "IN_PROGRESS")
    finally:
        jobs.stop()
    assert generation(api, campaign.id)["generated"] == service.SYNC_GENERATION_LIMIT + 1000
    assert codes_in(ctx, campaign.id)[1] == service.SYNC_GENERATION_LIMIT + 1000


def test_a_job_that_keeps_dying_fails_with_a_reason_and_can_be_retried(
    api: TestClient, ctx: AppContext, live_ctx: AppContext
) -> None:
    campaign = create_campaign(api, name="Doomed", vouchers_count=0)
    transactions.run(ctx, lambda uow: service.request_codes(uow, campaign["id"], 50))
    # Claimed and lost as often as allowed, the last lease long expired.
    transactions.run(
        ctx,
        lambda uow: uow.conn.execute(
            update(code_generation_jobs).values(
                attempts=service.GENERATION_MAX_ATTEMPTS, lease_owner="dead:1", lease_until=uow.now
            )
        ),
    )
    assert service.finish_generation(live_ctx, campaign["id"]) == []
    failed = generation(api, campaign["id"])
    assert failed["status"] == "FAILED" and "interrupted 5 times" in failed["error"]
    retried = api.post(f"/api/v1/campaigns/{campaign['id']}/codes/generate", json={"count": 50})
    assert retried.status_code == 202, retried.text
    wait_for(lambda: generation(api, campaign["id"])["status"] != "IN_PROGRESS", timeout=30)
    assert generation(api, campaign["id"]) == {
        "status": "DONE",
        "requested": 100,
        "generated": 50,
        "error": None,
    }
