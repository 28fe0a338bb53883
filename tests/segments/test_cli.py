"""`perkflow segments ...` as an operator runs it from a shell or cron, on a real database."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from perkflow.core.context import AppContext
from tests.segments.conftest import checkout, enrol, make_segment, members_of, rule
from tests.test_cli import perkflow


@pytest.mark.usefixtures("demo")
def test_evaluate_list_and_sweep_from_the_command_line(
    api: TestClient, ctx: AppContext, database_url: str
) -> None:
    ctx.settings.segment_batch_size = 2
    enrol(api, "ana", "ben", "cleo")
    checkout(api, "ben", 1500, "T-1")
    segment = make_segment(
        api, {"id": "silver", "name": "Silver", "rules": {"conditions": [rule("tier", "eq", "Silver")]}}
    )
    assert segment["evaluation"]["status"] == "pending"  # three members do not fit one batch of two
    listed = perkflow("segments", "list", database_url=database_url)
    assert listed.returncode == 0, listed.stderr
    assert "silver" in listed.stdout and "pending" in listed.stdout
    done = perkflow("segments", "evaluate", "silver", database_url=database_url)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {
        "segment_id": "silver",
        "evaluated": 3,
        "entered": 1,
        "left": 0,
    }
    assert members_of(api, "silver") == ["ben"]
    swept = perkflow("segments", "sweep", "--force", database_url=database_url)
    assert swept.returncode == 0, swept.stderr
    line = json.loads(swept.stdout.strip().splitlines()[-1])
    assert line["segment_id"] == "silver" and line["status"] == "ready" and line["entered"] == 0
    missing = perkflow("segments", "evaluate", "nope", database_url=database_url)
    assert missing.returncode == 2 and "does not exist" in missing.stderr


def test_bench_segments_agrees_with_a_full_recomputation_and_prints_one_json_line() -> None:
    """The benchmark fails when the incrementally kept membership differs from a recomputation."""
    done = perkflow(
        "bench",
        "segments",
        "--events",
        "1500",
        "--members",
        "150",
        "--batch",
        "500",
        database_url="sqlite://",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["events"] == 1500 and result["segments"] == 20 and result["memberships"] > 150
    assert result["events_per_s_with"] > 0 and result["ratio"] > 0 and result["cpu_ratio"] > 0
