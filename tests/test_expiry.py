"""Expiry through the whole stack: spending order, the settlement job, and what it records."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from perkflow.core.clock import ManualClock
from perkflow.core.context import AppContext
from perkflow.ledger.service import settle_due_accounts
from tests.conftest import event

pytestmark = pytest.mark.usefixtures("demo")


def test_spends_use_soonest_expiring_points_and_the_job_expires_the_rest(
    api: TestClient, ctx: AppContext, clock: ManualClock
) -> None:
    api.post("/api/v1/events", json=event("m", "opt_in"))  # 5 points, expire in 365 days
    api.post("/api/v1/events", json=event("m", "point_add", points=20, expires_in_days=10))
    api.post("/api/v1/events", json=event("m", "point_add", points=30, expires_in_days=5))
    spent = api.post("/api/v1/events", json=event("m", "point_subtract", points=40)).json()
    lots = {lot for lot, _ in spent["effects"]["lots"]}
    assert [amount for _, amount in spent["effects"]["lots"]] == [
        30,
        10,
    ]  # the 5-day lot first, then the 10-day
    assert len(lots) == 2
    clock.advance(timedelta(days=11))
    view = api.get("/api/v1/members/m/points").json()
    assert view["points"]["balance"] == 5  # the view already leaves out what has expired
    assert settle_due_accounts(ctx) == 1
    assert settle_due_accounts(ctx) == 0  # nothing left to do: the job is idempotent
    expired = api.get("/api/v1/members/m/activities", params={"type": "points_expired"}).json()["data"]
    assert len(expired) == 1 and expired[0]["points_delta"] == -10
    standing = api.get("/api/v1/members/m/points").json()["points"]
    assert (standing["balance"], standing["expired"], standing["earned"]) == (5, 10, 55)


def test_touching_an_account_settles_what_is_due_before_the_change(
    api: TestClient, clock: ManualClock
) -> None:
    api.post("/api/v1/events", json=event("m", "opt_in"))
    api.post("/api/v1/events", json=event("m", "point_add", points=50, expires_in_days=1))
    clock.advance(timedelta(days=2))
    refused = api.post("/api/v1/events", json=event("m", "point_subtract", points=50))
    assert refused.status_code == 422 and refused.json()["details"]["available"] == 5
    api.post("/api/v1/events", json=event("m", "point_add", points=1))
    types = [a["type"] for a in api.get("/api/v1/members/m/activities").json()["data"]]
    assert types[:2] == ["point_add", "points_expired"]


def test_backdated_points_that_already_expired_expire_with_the_job(
    api: TestClient, ctx: AppContext, clock: ManualClock
) -> None:
    long_ago = (clock.now() - timedelta(days=400)).isoformat()
    api.post("/api/v1/events", json={**event("m", "opt_in"), "occurred_at": long_ago})
    assert settle_due_accounts(ctx) == 1
    standing = api.get("/api/v1/members/m/points").json()["points"]
    assert (standing["balance"], standing["expired"]) == (0, 5)
    future = (clock.now() + timedelta(hours=1)).isoformat()
    response = api.post("/api/v1/events", json={**event("m", "point_add", points=1), "occurred_at": future})
    assert response.status_code == 422
