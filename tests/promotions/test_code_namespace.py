"""Coupons and vouchers share one code namespace also when their writers race (both databases)."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from fastapi.testclient import TestClient

from perkflow.core import transactions
from perkflow.core.context import AppContext
from perkflow.core.errors import Conflict
from perkflow.promotions.service import get_campaign, insert_codes
from perkflow.rewards.service import add_coupons
from tests.promotions.conftest import create_campaign

pytestmark = pytest.mark.usefixtures("demo")


@pytest.fixture
def campaign(api: TestClient) -> str:
    created = api.post(
        "/api/v1/rewards", json={"id": "rew_pool", "name": "Pool", "points_cost": 1, "uses_coupons": True}
    )
    assert created.status_code == 201, created.text
    return str(create_campaign(api, vouchers_count=1)["id"])


def _in_thread(work: Any) -> tuple[threading.Thread, dict[str, Any]]:
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = work()
        except Exception as exc:  # the test inspects it
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def test_a_coupon_upload_waits_for_an_open_voucher_writer_then_sees_its_code(
    ctx: AppContext, campaign: str
) -> None:
    with ctx.uow(write=True) as uow:
        assert insert_codes(uow, get_campaign(uow, campaign), ["SAME-1"]) == 1
        upload = lambda: transactions.run(  # noqa: E731
            ctx, lambda other: add_coupons(other, "rew_pool", [{"code": "SAME-1"}])
        )
        thread, outcome = _in_thread(upload)
        thread.join(0.5)
        assert thread.is_alive(), outcome  # it waits for the voucher writer instead of checking now
        uow.commit()
    thread.join(30)
    error = outcome.get("error")
    assert isinstance(error, Conflict) and error.code == "codes_taken", outcome


def test_a_voucher_writer_waits_for_an_open_coupon_upload_then_skips_its_code(
    ctx: AppContext, campaign: str
) -> None:
    with ctx.uow(write=True) as uow:
        assert add_coupons(uow, "rew_pool", [{"code": "SAME-2"}]) == 1
        generate = lambda: transactions.run(  # noqa: E731
            ctx, lambda other: insert_codes(other, get_campaign(other, campaign), ["SAME-2", "OTHER-2"])
        )
        thread, outcome = _in_thread(generate)
        thread.join(0.5)
        assert thread.is_alive(), outcome
        uow.commit()
    thread.join(30)
    assert outcome == {"result": 1}  # OTHER-2 only: SAME-2 is a coupon
