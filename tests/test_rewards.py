"""Rewards: the catalogue, coupon pools, claiming, and claims and spends racing on one member."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from perkflow.bootstrap import build_context
from perkflow.core import transactions
from perkflow.core.context import AppContext
from perkflow.core.errors import PerkflowError
from perkflow.events.service import ingest
from perkflow.ledger.accounts import AccountRepository
from perkflow.rewards.service import claim_reward
from perkflow.rewards.tables import coupons
from tests.conftest import event


def setup_member(ctx: AppContext, member: str, points: int) -> None:
    outcomes = transactions.run(
        ctx, lambda uow: ingest(uow, [event(member, "opt_in"), event(member, "point_add", points=points - 5)])
    )
    assert [o.status for o in outcomes] == ["accepted", "accepted"]


def make_reward(api: TestClient, *, cost: int, coupons_count: int) -> str:
    reward = api.post(
        "/api/v1/rewards", json={"name": "Tote bag", "description": "Canvas", "points_cost": cost}
    )
    assert reward.status_code == 201, reward.text
    reward_id = reward.json()["id"]
    made = api.post(
        f"/api/v1/rewards/{reward_id}/coupons/generate",
        json={"count": coupons_count, "pattern": "BAG-#####", "value": 1500},
    )
    assert made.status_code == 201, made.text
    return reward_id


@pytest.mark.usefixtures("demo")
def test_claim_spends_points_and_assigns_one_coupon(api: TestClient, ctx: AppContext) -> None:
    setup_member(ctx, "ana", 100)
    reward_id = make_reward(api, cost=40, coupons_count=3)
    claim = api.post(f"/api/v1/members/ana/rewards/{reward_id}/claim")
    assert claim.status_code == 201, claim.text
    body = claim.json()
    assert body["type"] == "reward_claim" and body["points_delta"] == -40
    data = body["data"]
    assert data["reward_name"] == "Tote bag" and data["reward_description"] == "Canvas"
    assert (
        data["coupon_code"].startswith("BAG-")
        and data["coupon_value"] == 1500
        and data["coupon_currency"] == "EUR"
    )
    assert data["coupon_expires_at"] is None
    listed = api.get(f"/api/v1/rewards/{reward_id}").json()
    assert listed["coupons"] == {"available": 2, "assigned": 1}


@pytest.mark.usefixtures("demo")
def test_claims_refused_without_points_stock_or_membership(api: TestClient, ctx: AppContext) -> None:
    setup_member(ctx, "ana", 50)
    reward_id = make_reward(api, cost=40, coupons_count=1)
    assert api.post(f"/api/v1/members/ana/rewards/{reward_id}/claim").status_code == 201
    poor = api.post(f"/api/v1/members/ana/rewards/{reward_id}/claim")
    assert poor.status_code == 422 and poor.json()["code"] == "insufficient_points"
    free = api.post(f"/api/v1/members/ana/rewards/{reward_id}/claim", json={"free": True})
    assert free.status_code == 409 and free.json()["code"] == "reward_out_of_stock"
    assert (
        api.get("/api/v1/members/ana/points").json()["points"]["balance"] == 10
    )  # the refusals took nothing
    assert api.post(f"/api/v1/members/bob/rewards/{reward_id}/claim").json()["code"] == "member_not_found"
    assert api.post("/api/v1/members/ana/rewards/nope/claim").json()["code"] == "reward_not_found"


@pytest.mark.usefixtures("demo")
def test_idempotency_key_makes_a_retried_claim_return_the_first(api: TestClient, ctx: AppContext) -> None:
    setup_member(ctx, "ana", 100)
    reward_id = make_reward(api, cost=40, coupons_count=3)
    headers = {"Idempotency-Key": "claim-1"}
    first = api.post(f"/api/v1/members/ana/rewards/{reward_id}/claim", headers=headers).json()
    again = api.post(f"/api/v1/members/ana/rewards/{reward_id}/claim", headers=headers).json()
    assert again == first
    assert api.get("/api/v1/members/ana/points").json()["points"]["balance"] == 60


@pytest.mark.usefixtures("demo")
def test_coupon_uploads_refuse_codes_already_used(api: TestClient) -> None:
    reward_id = make_reward(api, cost=1, coupons_count=0 + 1)
    ok = api.post(f"/api/v1/rewards/{reward_id}/coupons", json={"coupons": [{"code": "A1", "value": 100}]})
    assert ok.status_code == 201
    again = api.post(
        f"/api/v1/rewards/{reward_id}/coupons", json={"coupons": [{"code": "A1"}, {"code": "A2"}]}
    )
    assert again.status_code == 409 and again.json()["details"]["codes"] == ["A1"]
    repeated = api.post(
        f"/api/v1/rewards/{reward_id}/coupons", json={"coupons": [{"code": "B"}, {"code": "B"}]}
    )
    assert repeated.status_code == 422
    too_many = api.post(
        f"/api/v1/rewards/{reward_id}/coupons/generate",
        json={"count": 11, "pattern": "X#", "charset": "numbers"},
    )
    assert too_many.status_code == 422 and too_many.json()["code"] == "pattern_too_small"


# -- concurrency --------------------------------------------------------------------------------------


def _attempt(ctx: AppContext, member: str, reward_id: str, index: int) -> tuple[str, Any]:
    """One racing operation: even indexes claim the reward, odd ones spend 15 points."""
    try:
        if index % 2 == 0:
            activity = transactions.run(
                ctx, lambda uow: claim_reward(uow, member_id=member, reward_id=reward_id)
            )
            return "claim", activity.data["coupon_code"]
        outcome = transactions.run(
            ctx, lambda uow: ingest(uow, [event(member, "point_subtract", points=15)])
        )[0]
        if outcome.error is not None:
            raise outcome.error
        return "spend", 15
    except PerkflowError as exc:
        return "refused", exc.code


def _attempt_in_process(url: str, member: str, reward_id: str, indexes: list[int]) -> list[tuple[str, Any]]:
    ctx = build_context(database_url=url)
    try:
        return [_attempt(ctx, member, reward_id, i) for i in indexes]
    finally:
        ctx.close()


def _check_books(
    ctx: AppContext, results: list[tuple[str, Any]], *, start: int, cost: int, pool: int
) -> None:
    codes = [value for kind, value in results if kind == "claim"]
    spends = [value for kind, value in results if kind == "spend"]
    refusals = {value for kind, value in results if kind == "refused"}
    assert refusals <= {"insufficient_points", "reward_out_of_stock"}, refusals
    assert len(codes) == len(set(codes)), "a coupon was handed out twice"
    assert len(codes) <= pool
    with ctx.uow(write=False) as uow:
        account = uow.component(AccountRepository).get("racer", "demo")
        assert account is not None
        assigned = uow.conn.execute(select(func.count()).where(coupons.c.member_id == "racer")).scalar_one()
        ledger = uow.conn.exec_driver_sql(
            "SELECT COALESCE(SUM(points_delta), 0) FROM activities WHERE member_id = 'racer'"
        ).scalar_one()
    assert assigned == len(codes)
    expected = start - cost * len(codes) - sum(spends)
    assert account.points.balance == expected >= 0, "points were spent twice or went negative"
    assert ledger == expected


@pytest.mark.usefixtures("demo")
def test_parallel_claims_and_spends_never_double_spend_or_double_assign(
    api: TestClient, ctx: AppContext
) -> None:
    setup_member(ctx, "racer", 500)
    reward_id = make_reward(api, cost=40, coupons_count=6)
    with ThreadPoolExecutor(max_workers=12) as pool:
        results = list(pool.map(lambda i: _attempt(ctx, "racer", reward_id, i), range(48)))
    _check_books(ctx, results, start=500, cost=40, pool=6)
    assert sum(1 for kind, _ in results if kind == "claim") == 6  # enough points for every coupon


@pytest.mark.usefixtures("demo")
def test_parallel_processes_never_double_spend_or_double_assign(
    api: TestClient, ctx: AppContext, database_url: str
) -> None:
    setup_member(ctx, "racer", 300)
    reward_id = make_reward(api, cost=40, coupons_count=10)
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=4, mp_context=spawn) as pool:
        chunks = [list(range(w, 40, 4)) for w in range(4)]
        results = [
            r
            for part in pool.map(
                _attempt_in_process, [database_url] * 4, ["racer"] * 4, [reward_id] * 4, chunks
            )
            for r in part
        ]
    _check_books(ctx, results, start=300, cost=40, pool=10)
    assert any(kind == "refused" for kind, _ in results)  # the points ran out before the operations did
