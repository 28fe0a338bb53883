"""Deleting a campaign keeps what its codes did: codes and campaign stay (with deleted_at) for history
and rollback, leave every list and lookup, can no longer be published or redeemed, and their holders
get a `voucher_deleted` activity."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from perkflow.core import transactions
from perkflow.core.context import AppContext
from perkflow.promotions import service
from perkflow.promotions.tables import campaigns, code_generation_jobs, vouchers
from tests.promotions.conftest import create_campaign, publish, redeem


def test_a_deleted_campaign_keeps_its_history_and_stops_everything_else(
    api: TestClient, ctx: AppContext, braze: Any
) -> None:
    gift = create_campaign(
        api, name="Gift", campaign_type="GIFT_VOUCHERS", discount=None, gift_amount=5000, vouchers_count=3
    )
    card = publish(api, gift["id"], "ben", "send-ben").json()["voucher"]["code"]
    spent = redeem(api, card, "ben", amount=1200)
    assert spent.status_code == 200, spent.text
    redemption = spent.json()["redemptions"][0]["id"]
    integration = api.post(
        "/api/v1/integrations/braze", json={"instance_url": braze.url, "api_key": "braze-key"}
    ).json()["id"]
    distribution = api.post(
        "/api/v1/distributions",
        json={
            "integration_id": integration,
            "campaign_id": gift["id"],
            "trigger": "voucher_redeemed",
            "attributes": {"code": "gift_code"},
        },
    ).json()
    transactions.run(ctx, lambda uow: service.request_codes(uow, gift["id"], 10))  # queued, not run

    deleted = api.delete(f"/v1/campaigns/{gift['id']}")
    assert deleted.status_code == 200, deleted.text

    # Gone from every list and lookup, and unusable.
    assert api.get(f"/v1/campaigns/{gift['id']}").status_code == 404
    assert api.get(f"/api/v1/campaigns/{gift['id']}").status_code == 404
    assert gift["id"] not in [c["id"] for c in api.get("/api/v1/campaigns").json()["data"]]
    assert api.get(f"/v1/vouchers/{card}").status_code == 404
    assert api.get("/v1/vouchers", params={"customer": "ben"}).json()["total"] == 0
    assert api.get(f"/api/v1/campaigns/{gift['id']}/codes.csv").status_code == 404
    checked = api.post("/v1/validations", json={"redeemables": [{"id": card}], "order": {"amount": 100}})
    assert checked.json()["redeemables"][0]["result"]["error"]["key"] == "not_found"
    assert redeem(api, card, "ben", amount=100).status_code == 404
    assert publish(api, gift["id"], "cleo").status_code == 404
    assert publish(api, gift["name"], "cleo").status_code == 404
    assert api.post("/v1/publications", json={"voucher": card, "customer": "ben"}).status_code == 404
    assert (
        api.post(
            "/v1/publications", json={"campaign": gift["id"], "customer": "ben", "source_id": "send-ben"}
        ).status_code
        == 404
    )
    assert api.post(f"/v1/vouchers/{card}/balance", json={"amount": 100}).status_code == 404
    assert api.delete(f"/v1/campaigns/{gift['id']}").status_code == 404
    assert api.get(f"/api/v1/distributions/{distribution['id']}").json()["active"] is False
    job = transactions.run(
        ctx,
        lambda uow: uow.conn.execute(
            select(code_generation_jobs.c.status, code_generation_jobs.c.error).where(
                code_generation_jobs.c.campaign_id == gift["id"]
            )
        ).one(),
        write=False,
    )
    assert tuple(job) == ("FAILED", "the campaign was deleted")

    # History stays: the redemption still shows its code, and can still be rolled back.
    shown = api.get(f"/v1/redemptions/{redemption}")
    assert shown.status_code == 200 and shown.json()["voucher"]["code"] == card
    rolled = api.post(f"/v1/redemptions/{redemption}/rollback")
    assert rolled.status_code == 200, rolled.text
    with ctx.uow(write=False) as uow:
        kept = uow.conn.execute(
            select(vouchers.c.gift_balance, vouchers.c.holder_id, vouchers.c.deleted_at).where(
                vouchers.c.code == card
            )
        ).one()
        count = uow.conn.execute(
            select(func.count())
            .select_from(vouchers)
            .join(campaigns, campaigns.c.pk == vouchers.c.campaign_pk)
            .where(campaigns.c.id == gift["id"], vouchers.c.deleted_at.is_not(None))
        ).scalar_one()
    assert kept.gift_balance == 5000 and kept.holder_id == "ben" and kept.deleted_at is not None
    assert count == 3
    activity = next(
        a for a in api.get("/api/v1/members/ben/activities").json()["data"] if a["type"] == "voucher_deleted"
    )
    assert activity["data"]["code"] == card and activity["data"]["balance"] == 3800
    assert activity["data"]["reason"] == "campaign_deleted"

    # The name is free again.
    again = create_campaign(api, name="Gift", campaign_type="GIFT_VOUCHERS", discount=None, gift_amount=100)
    assert again["id"] != gift["id"]
    assert api.get("/v1/campaigns/Gift").json()["id"] == again["id"]


def test_a_campaign_that_rewards_another_cannot_be_deleted_from_under_it(api: TestClient) -> None:
    prizes = create_campaign(api, name="Prizes")
    create_campaign(
        api, name="Refer a friend", campaign_type="REFERRAL_PROGRAM", referral={"campaign_id": prizes["id"]}
    )
    refused = api.delete(f"/v1/campaigns/{prizes['id']}")
    assert refused.status_code == 409 and refused.json()["key"] == "campaign_in_use", refused.text
    native = api.delete(f"/api/v1/campaigns/{prizes['id']}")
    assert native.status_code == 409 and native.json()["details"]["used_by"] == ["Refer a friend"]
    assert api.get(f"/v1/campaigns/{prizes['id']}").status_code == 200
