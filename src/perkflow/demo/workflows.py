"""The demo's workflows: the five seed templates, installed and activated before the day starts."""

from __future__ import annotations

from typing import Any

from perkflow.core.uow import UnitOfWork
from perkflow.workflows.service import activate, list_runs, list_workflows
from perkflow.workflows.templates import install_template

# The birthday run is at noon so that it finds Chloé, who joins in the morning.
DEMO_TEMPLATES: dict[str, dict[str, Any]] = {
    "welcome": {},
    "birthday_reward": {"reward": "rew_coffee", "hour": 12},
    "reward_claim": {},
    "tier_upgrade": {"tier": "Gold"},
    "last_purchase": {},
}


def install_demo_workflows(uow: UnitOfWork) -> list[dict[str, Any]]:
    return [
        activate(uow, install_template(uow, name, params)["id"]) for name, params in DEMO_TEMPLATES.items()
    ]


def workflow_report(uow: UnitOfWork) -> list[dict[str, Any]]:
    """Per installed template: the workflow, how many runs of each status, and the latest run."""
    report = []
    for workflow in list_workflows(uow, limit=100)[0]:
        if workflow["template"] is None:
            continue
        recent, _ = list_runs(uow, workflow_id=workflow["id"], limit=1000)
        statuses: dict[str, int] = {}
        for run in recent:
            statuses[run["status"]] = statuses.get(run["status"], 0) + 1
        report.append({"workflow": workflow, "runs": statuses, "latest": recent[0] if recent else None})
    return report
