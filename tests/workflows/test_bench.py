"""`perkflow bench workflows` runs both ingests, checks its results and prints one JSON line last."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from perkflow.bench.workflows import workflow_specs
from perkflow.workflows.graph import parse_graph


def test_the_workflow_mix_is_what_the_benchmark_says() -> None:
    specs = workflow_specs(1000, 10)
    graphs = [parse_graph(s["graph"]) for s in specs]
    on_checkout = [g for g in graphs if g.trigger_keys == ["checkout"]]
    firing = [g for g in on_checkout if g.gate is None]
    indexed = [g for g in on_checkout if g.discriminator is not None]
    thresholds = [g for g in on_checkout if g.gate is not None and g.discriminator is None]
    assert len(graphs) == 1000 and len(firing) == 10
    # 990 that never fire: 297 on checkout (288 found by index lookups, 9 gates evaluated per event),
    # the others on activity types the stream does not record.
    assert (len(on_checkout), len(indexed), len(thresholds)) == (307, 288, 9)
    assert all("point_add" not in g.trigger_keys for g in graphs)  # the bonuses must not trigger others


def test_bench_workflows_prints_one_json_line_last() -> None:
    env = {**os.environ, "PERKFLOW_DATABASE_URL": "sqlite:///unused.db"}
    command = [sys.executable, "-m", "perkflow", "bench", "workflows", "--events", "1000", "--members", "100"]
    done = subprocess.run(
        [*command, "--workflows", "100", "--matching", "5"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert {"events_per_s_without", "events_per_s_with", "ratio"} <= set(result)
    assert result["runs_recorded"] == 5 * 1000 and result["events"] == 1000
