"""Distributions into the Braze sandbox over HTTP: a manual run for a segment, and automatic ones
triggered by publications and by other activity, writing code, value, expiry and wallet link."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import insert

from perkflow.core import transactions
from perkflow.core.context import AppContext
from perkflow.core.uow import UnitOfWork
from perkflow.segments.tables import segment_members, segments
from perkflow.sync.worker import DeliveryWorker
from tests.promotions.conftest import create_campaign, publish

ATTRIBUTES = {"code": "promo_code", "value": "promo_value", "expiry": "promo_expiry", "wallet_url": "wallet"}


def connect(api: TestClient, braze: Any) -> str:
    response = api.post(
        "/api/v1/integrations/braze", json={"instance_url": braze.url, "api_key": "braze-key"}
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def test_manual_distribution_writes_a_code_to_each_segment_member(
    api: TestClient, ctx: AppContext, braze: Any, worker: DeliveryWorker
) -> None:
    integration = connect(api, braze)
    campaign = create_campaign(api, vouchers_count=10, expiration_date="2026-12-31T23:59:59Z")

    for member in ("ana", "ben"):
        assert api.post("/api/v1/members", json={"id": member}).status_code == 201

    def segment(uow: UnitOfWork) -> None:
        now = uow.now
        uow.conn.execute(
            insert(segments).values(id="vip", name="VIP", kind="static", created_at=now, updated_at=now)
        )
        for member in ("ana", "ben"):
            uow.conn.execute(
                insert(segment_members).values(segment_id="vip", member_id=member, source="api", added_at=now)
            )

    transactions.run(ctx, segment)
    created = api.post(
        "/api/v1/distributions",
        json={
            "integration_id": integration,
            "campaign_id": campaign["id"],
            "trigger": "manual",
            "segment_id": "vip",
            "attributes": ATTRIBUTES,
        },
    )
    assert created.status_code == 201, created.text
    run = api.post(f"/api/v1/distributions/{created.json()['id']}/run").json()
    assert (run["members"], run["published"], run["queued"]) == (2, 2, 2)
    again = api.post(f"/api/v1/distributions/{created.json()['id']}/run").json()
    assert again["published"] == 0  # one code per member: a re-run sends the same codes
    worker.drain()
    for member in ("ana", "ben"):
        profile = braze.user(member)
        assert profile is not None, member
        attributes = profile["attributes"]
        code = attributes["promo_code"]
        assert api.get(f"/v1/vouchers/{code}").json()["holder_id"] == member
        assert attributes["promo_value"] == 500
        assert attributes["wallet"] == f"https://wallet.example.com/members/{member}"
        assert str(attributes["promo_expiry"]).startswith("2026-12-31")


def test_automatic_distributions_follow_publications_and_redemptions(
    api: TestClient, braze: Any, worker: DeliveryWorker
) -> None:
    integration = connect(api, braze)
    coupons = create_campaign(api, vouchers_count=10)
    thanks = create_campaign(
        api, name="Thank you", vouchers_count=10, discount={"type": "PERCENT", "percent_off": 15}
    )
    for trigger, campaign, names in (
        ("voucher_published", coupons, {"code": "last_code"}),
        ("voucher_redeemed", thanks, {"code": "thanks_code", "value": "thanks_percent"}),
    ):
        response = api.post(
            "/api/v1/distributions",
            json={
                "integration_id": integration,
                "campaign_id": campaign["id"],
                "trigger": trigger,
                "attributes": names,
            },
        )
        assert response.status_code == 201, response.text
    code = publish(api, coupons["id"], "ana", "send-1").json()["voucher"]["code"]
    worker.drain()
    assert braze.user("ana")["attributes"]["last_code"] == code
    redeemed = api.post(
        "/v1/redemptions", json={"redeemables": [{"id": code}], "customer": "ana", "order": {"amount": 2000}}
    )
    assert redeemed.status_code == 200, redeemed.text
    worker.drain()
    attributes = braze.user("ana")["attributes"]
    assert attributes["thanks_percent"] == 15 and attributes["thanks_code"] != code
    assert api.get(f"/v1/vouchers/{attributes['thanks_code']}").json()["campaign_id"] == thanks["id"]
    bad = api.post(
        "/api/v1/distributions",
        json={
            "integration_id": integration,
            "campaign_id": coupons["id"],
            "trigger": "never",
            "attributes": {"code": "c"},
        },
    )
    assert bad.status_code == 400
