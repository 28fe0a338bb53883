"""The command line as a newcomer runs it: the demo, CSV imports and the ingest benchmark."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from perkflow.core.clock import ManualClock
from tests.conftest import event


def perkflow(*args: str, database_url: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PERKFLOW_DATABASE_URL": database_url, "COLUMNS": "160"}
    return subprocess.run(
        [sys.executable, "-m", "perkflow", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def test_demo_once_replays_the_day_and_exits_zero(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'var' / 'demo.db'}"
    done = perkflow("demo", "--once", database_url=url)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "All 20 steps did what was expected" in done.stdout
    assert "FAIL" not in done.stdout
    assert "What Braze received" in done.stdout and "What Bloomreach received" in done.stdout
    assert "loyalty_tier=Silver" in done.stdout and "ana@example.com" in done.stdout
    again = perkflow("demo", "--once", database_url=url)
    assert again.returncode == 1 and "already holds the demo" in again.stdout
    reset = perkflow("demo", "--once", "--reset", database_url=url)
    assert reset.returncode == 0, reset.stdout + reset.stderr


@pytest.mark.usefixtures("demo")
def test_import_members_streams_rows_and_reports_rejects(
    tmp_path: Path, database_url: str, api: TestClient
) -> None:
    csv = tmp_path / "members.csv"
    csv.write_text(
        "id,email,first_name,birth_date,newsletter,favourite_store,external_source,external_source_id,opt_in\n"
        "m-1,m1@example.com,Ana,1990-01-02,true,Lyon,customer_id,1001,true\n"
        "m-2,not-an-email,Ben,,false,,,,false\n"
        "m-3,m3@example.com,Chloé,1992-13-01,,,,,\n"
        ",nobody@example.com,,,,,,,\n"
        "m-4,m4@example.com,Dan,,maybe,,,,\n"
        "m-5,m5@example.com,Eve,,yes,Paris,customer_id,1001,\n"
        "m-6,m6@example.com,Fay,,,,,,true\n",
        encoding="utf-8",
    )
    rejects = tmp_path / "rejects.csv"
    done = perkflow("import", "members", str(csv), "--rejects", str(rejects), database_url=database_url)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "imported 2 new and 0 updated members, 5 rejected" in done.stdout
    lines = rejects.read_text().splitlines()
    assert lines[0] == "line,reason"
    reasons = dict(line.split(",", 1) for line in lines[1:])
    assert set(reasons) == {"3", "4", "5", "6", "7"}
    assert "email" in reasons["3"] and "birth_date" in reasons["4"] and "id" in reasons["5"]
    assert "newsletter" in reasons["6"] and "1001" in reasons["7"]
    member = api.get("/api/v1/members/m-1").json()
    assert member["fields"] == {"newsletter": True, "favourite_store": "Lyon"}
    assert member["programs"][0]["opted_in"] is True
    assert api.get("/api/v1/members/m-6").json()["programs"][0]["points"]["balance"] == 5
    csv.write_text("id,last_name\nm-1,Lopez\n", encoding="utf-8")
    again = perkflow("import", "members", str(csv), database_url=database_url)
    assert again.returncode == 0 and "0 new and 1 updated" in again.stdout
    assert api.get("/api/v1/members/m-1").json()["last_name"] == "Lopez"


def test_bench_ingest_prints_one_json_line_last(tmp_path: Path) -> None:
    done = perkflow(
        "bench", "ingest", "--events", "2000", "--members", "200", database_url="sqlite:///unused.db"
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["events"] == 2000
    assert result["events_per_s"] > 0 and result["raw_events_per_s"] > 0
    # The ratio is printed to 3 decimals and the rates as whole numbers, so allow for that rounding.
    assert result["ratio"] == pytest.approx(result["events_per_s"] / result["raw_events_per_s"], abs=0.001)


@pytest.mark.usefixtures("demo")
def test_deliveries_status_and_replay_from_the_command_line(
    database_url: str, api: TestClient, clock: ManualClock
) -> None:
    from perkflow.sandbox.server import ServerThread
    from tests.sync.receiver import Receiver

    receiver = Receiver(statuses=[200, 400])  # the ping passes, the first delivery is refused for good
    with ServerThread(receiver.app()) as server:
        created = api.post(
            "/api/v1/integrations/webhook",
            json={"url": server.url + "/hook", "secret": "s" * 20, "events": [{"type": "opt_in"}]},
        )
        assert created.status_code == 201
        api.post("/api/v1/events", json=event("ana", "opt_in"))
        from perkflow.sync.worker import DeliveryWorker

        worker = DeliveryWorker(api.app.state.ctx)
        worker.drain()
        status = perkflow("deliveries", "status", database_url=database_url)
        assert status.returncode == 0 and "webhook" in status.stdout
        refused = perkflow("deliveries", "replay", database_url=database_url)
        assert refused.returncode == 2 and "name an integration" in refused.stderr
        replayed = perkflow(
            "deliveries", "replay", "--integration", created.json()["id"], database_url=database_url
        )
        assert replayed.returncode == 0 and "replayed 1" in replayed.stdout
        clock.set(datetime.now(UTC) + timedelta(minutes=1))  # the command line runs on the system clock
        worker.drain()
        worker.close()
    assert [b["event_type"] for b in receiver.bodies()].count("opt_in") == 2
