"""The checks a campaign gets on both APIs (the Voucherify-compatible one has no schema of its own),
the loyalty card routes scoped to their campaign, and point expiry given on a balance update."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import insert

from perkflow.core import transactions
from perkflow.core.clock import ManualClock
from perkflow.core.context import AppContext
from perkflow.core.uow import UnitOfWork
from perkflow.segments.tables import segments
from tests.promotions.conftest import create_campaign

DISCOUNT = {"type": "DISCOUNT_VOUCHER", "discount": {"type": "AMOUNT", "amount_off": 5}}


def v1_campaign(api: TestClient, **body: Any) -> Any:
    return api.post("/v1/campaigns", json={"name": "Spring", "voucher": DISCOUNT, **body})


def test_the_compatible_api_checks_what_the_native_schema_checks(api: TestClient) -> None:
    for body in (
        {"name": "Club", "perkflow": {"currency": "euro"}},
        {"name": "Club", "perkflow": {"currency": 5}},
        {"name": "Club", "perkflow": {"program_id": 5}},
    ):
        refused = api.post("/v1/loyalties", json=body)
        assert refused.status_code == 400 and refused.json()["key"] == "invalid_campaign", (
            body,
            refused.text,
        )
    for body in (
        {"voucher": {**DISCOUNT, "code_config": {"length": 1.5}}},
        {"voucher": {**DISCOUNT, "code_config": ["length", 8]}},
        {"description": 5},
        {"join_once": "yes"},
        {"campaign_type": ["DISCOUNT_COUPONS"]},
        {"campaign_type": "REFERRAL_PROGRAM", "perkflow": {"referral": "x"}},
        {"campaign_type": "REFERRAL_PROGRAM", "perkflow": {"referral": {"campaign_id": 5}}},
        {"campaign_type": "REFERRAL_PROGRAM", "perkflow": {"referral": {"points": 10**12}}},
        {"start_date": "0001-01-01T00:00:00+05:00"},
        {"expiration_date": "9999-12-31T23:59:59-05:00"},
        {"perkflow": {"max_redemptions": 10**13}},
        {"voucher": {**DISCOUNT, "redemption": {"quantity": 2**63}}},
    ):
        refused = v1_campaign(api, **body)
        assert refused.status_code in (400, 404), (body, refused.text)
        assert refused.json()["key"] in ("invalid_campaign", "invalid_code_config", "invalid_payload"), body
    assert api.get("/api/v1/campaigns").json()["data"] == []
    made = api.post("/v1/loyalties", json={"name": "Club", "perkflow": {"currency": "USD"}}).json()
    program = api.get(f"/api/v1/programs/{made['program_id']}").json()
    assert program["currency"] == "USD"
    native = api.post(
        "/api/v1/campaigns",
        json={
            "name": "Old",
            "discount": {"type": "AMOUNT", "amount_off": 5},
            "start_date": "0001-01-01T00:00:00+05:00",
        },
    )
    assert native.status_code == 400 and native.json()["code"] == "invalid_payload", native.text


def test_a_segment_rule_must_name_an_existing_segment(api: TestClient, ctx: AppContext) -> None:
    unknown = api.post(
        "/api/v1/campaigns",
        json={"name": "VIP", "discount": {"type": "AMOUNT", "amount_off": 5}, "segment_id": "vip"},
    )
    assert unknown.status_code == 404 and unknown.json()["details"]["resource_type"] == "segment"
    compatible = v1_campaign(api, perkflow={"segment_id": "vip"})
    assert compatible.status_code == 404 and compatible.json()["resource_type"] == "segment"
    assert v1_campaign(api, perkflow={"segment_id": 5}).status_code == 400
    assert api.get("/api/v1/campaigns").json()["data"] == []

    def vip(uow: UnitOfWork) -> None:
        uow.conn.execute(
            insert(segments).values(
                id="vip", name="VIP", kind="static", created_at=uow.now, updated_at=uow.now
            )
        )

    transactions.run(ctx, vip)
    campaign = create_campaign(api, name="VIP", segment_id="vip")
    patched = api.patch(f"/api/v1/campaigns/{campaign['id']}", json={"segment_id": "gold"})
    assert patched.status_code == 404
    assert api.get(f"/api/v1/campaigns/{campaign['id']}").json()["rules"]["segment_id"] == "vip"


def test_loyalty_member_routes_are_scoped_to_their_campaign(api: TestClient) -> None:
    club = api.post("/v1/loyalties", json={"name": "Club"}).json()
    other = api.post("/v1/loyalties", json={"name": "Other club"}).json()
    card = api.post(f"/v1/loyalties/{club['id']}/members", json={"customer": "ana"}).json()["code"]
    elsewhere = api.post(f"/v1/loyalties/{other['id']}/members/{card}/balance", json={"points": 10})
    assert elsewhere.status_code == 404 and elsewhere.json()["resource_type"] == "loyalty_card"
    assert api.post(f"/v1/loyalties/nope/members/{card}/balance", json={"points": 10}).status_code == 404
    assert api.get(f"/v1/loyalties/members/{card}").json()["loyalty_card"]["balance"] == 0
    added = api.post(f"/v1/loyalties/{club['id']}/members/{card}/balance", json={"points": 10})
    assert added.status_code == 200 and added.json()["balance"] == 10
    reward = api.post("/v1/rewards", json={"name": "Mug", "parameters": {}}).json()
    api.post(
        f"/v1/loyalties/{club['id']}/rewards",
        json=[{"reward": reward["id"], "parameters": {"loyalty": {"points": 5}}}],
    )
    wrong = api.post(
        f"/v1/loyalties/{other['id']}/members/{card}/redemption", json={"reward": {"id": reward["id"]}}
    )
    assert wrong.status_code == 404
    right = api.post(
        f"/v1/loyalties/{club['id']}/members/{card}/redemption", json={"reward": {"id": reward["id"]}}
    )
    assert right.status_code == 200, right.text


def test_balance_updates_honour_their_expiration_date(api: TestClient, clock: ManualClock) -> None:
    club = api.post("/v1/loyalties", json={"name": "Club"}).json()
    card = api.post(f"/v1/loyalties/{club['id']}/members", json={"customer": "ana"}).json()["code"]
    soon = clock.now() + timedelta(days=3)
    added = api.post(
        f"/v1/loyalties/members/{card}/balance",
        json={"points": 40, "expiration_date": soon.isoformat().replace("+00:00", "Z")},
    )
    assert added.status_code == 200, added.text
    api.post(f"/v1/loyalties/members/{card}/balance", json={"points": 60})
    lots = api.get("/api/v1/members/ana/points", params={"program": club["program_id"]}).json()["lots"]
    assert any(
        lot["remaining"] == 40 and str(lot["expires_at"]).startswith(soon.date().isoformat()) for lot in lots
    ), lots
    for body in (
        {"points": 5, "expiration_date": (clock.now() - timedelta(days=1)).isoformat()},
        {"points": -5, "expiration_date": soon.isoformat()},
        {"points": 5, "expiration_date": "soon"},
        {"points": 5, "expiration_date": "0001-01-01T00:00:00+05:00"},
    ):
        refused = api.post(f"/v1/loyalties/members/{card}/balance", json=body)
        assert refused.status_code == 400 and refused.json()["key"] == "invalid_payload", (body, refused.text)
    clock.advance(timedelta(days=4))
    assert api.get(f"/v1/loyalties/members/{card}").json()["loyalty_card"]["balance"] == 60
