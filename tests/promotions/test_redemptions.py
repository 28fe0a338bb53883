"""Validation and redemption of each kind of code, rollback restoring exactly what was taken, stacked
redemptions, one-use races, and the referral reward."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import httpx
from fastapi.testclient import TestClient
from sqlalchemy import insert

from perkflow.core import transactions
from perkflow.core.clock import ManualClock
from perkflow.core.context import AppContext
from perkflow.core.uow import UnitOfWork
from perkflow.sandbox.server import ServerThread
from perkflow.segments.tables import segment_members, segments
from tests.promotions.conftest import app_headers, create_campaign, publish, redeem


def validate(api: TestClient, code: str, customer: str = "ana", amount: int = 10_000) -> dict[str, Any]:
    response = api.post(
        "/v1/validations",
        json={
            "redeemables": [{"object": "voucher", "id": code}],
            "customer": customer,
            "order": {"amount": amount},
        },
    )
    assert response.status_code == 200, response.text
    return response.json()


def reason(api: TestClient, code: str, **kwargs: Any) -> str | None:
    found = validate(api, code, **kwargs)
    if found["valid"]:
        return None
    return found["inapplicable_redeemables"][0]["result"]["error"]["key"]


def code_for(api: TestClient, campaign: dict[str, Any], customer: str = "ana") -> str:
    response = publish(api, campaign["id"], customer)
    assert response.status_code == 200, response.text
    return response.json()["voucher"]["code"]


def test_unknown_codes_validate_as_inapplicable(api: TestClient) -> None:
    found = validate(api, "NO-SUCH-CODE")
    assert found["valid"] is False and found["stacking_rules"]["redeemables_limit"] == 30
    assert found["redeemables"][0]["status"] == "INAPPLICABLE"
    assert found["redeemables"][0]["result"]["error"]["key"] == "not_found"
    missing = redeem(api, "NO-SUCH-CODE", "ana")
    assert missing.status_code == 404 and missing.json()["key"] == "not_found"


def test_each_validation_rule(api: TestClient, ctx: AppContext, clock: ManualClock) -> None:
    start = clock.now() + timedelta(days=1)
    later = create_campaign(api, name="Later", start_date=start.isoformat())
    assert reason(api, code_for(api, later)) == "voucher_not_active"
    ending = create_campaign(
        api, name="Ending", expiration_date=(clock.now() + timedelta(hours=1)).isoformat()
    )
    code = code_for(api, ending)
    assert reason(api, code) is None
    clock.advance(timedelta(hours=2))
    assert reason(api, code) == "voucher_expired"
    minimum = create_campaign(api, name="Minimum", min_order_amount=5000)
    code = code_for(api, minimum)
    assert reason(api, code, amount=4999) == "order_rules_violated"
    assert reason(api, code, amount=5000) is None
    once_each = create_campaign(api, name="Once each", max_redemptions_per_customer=1)
    first, second = code_for(api, once_each), code_for(api, once_each)
    assert redeem(api, first, "ana").status_code == 200
    assert reason(api, second) == "redemption_rules_violated"
    assert reason(api, second, customer="ben") is None
    budget = create_campaign(api, name="Budget", max_redemptions=1)
    one, two = code_for(api, budget), code_for(api, budget, "ben")
    assert redeem(api, one, "ana").status_code == 200
    refused = redeem(api, two, "ben")
    assert refused.status_code == 400 and refused.json()["key"] == "redemption_rules_violated"
    single = create_campaign(api, name="Single use", redemption_quantity=1)
    code = code_for(api, single)
    assert redeem(api, code, "ana").status_code == 200
    assert reason(api, code) == "quantity_exceeded"
    disabled = create_campaign(api, name="Disabled")
    code = code_for(api, disabled)
    assert api.patch(f"/api/v1/campaigns/{disabled['id']}", json={"active": False}).status_code == 200
    assert reason(api, code) == "voucher_disabled"

    def vip_segment(uow: UnitOfWork) -> None:
        uow.conn.execute(
            insert(segments).values(
                id="vip", name="VIP", kind="static", created_at=uow.now, updated_at=uow.now
            )
        )
        uow.conn.execute(
            insert(segment_members).values(segment_id="vip", member_id="ana", source="api", added_at=uow.now)
        )

    transactions.run(ctx, vip_segment)
    vip = create_campaign(api, name="VIP only", segment_id="vip")
    code = code_for(api, vip, "ana")
    assert reason(api, code, customer="ana") is None
    assert reason(api, code, customer="ben") == "customer_rules_violated"


def test_discount_redemption_and_rollback(api: TestClient) -> None:
    campaign = create_campaign(api, discount={"type": "PERCENT", "percent_off": 20, "amount_limit": 1500})
    code = code_for(api, campaign)
    found = validate(api, code, amount=5000)
    assert found["valid"] and found["order"]["total_discount_amount"] == 1000
    redeemed = redeem(api, code, "ana", amount=10_000).json()
    redemption = redeemed["redemptions"][0]
    assert redemption["amount"] == 1500 and redeemed["order"]["total_amount"] == 8500
    rolled = api.post(f"/v1/redemptions/{redemption['id']}/rollback?reason=refund", content=b"")
    assert rolled.status_code == 200, rolled.text
    assert rolled.json()["voucher"]["redemption"]["redeemed_quantity"] == 0
    again = api.post(f"/v1/redemptions/{redemption['id']}/rollback")
    assert again.status_code == 400 and again.json()["key"] == "already_rolled_back"
    assert api.post("/v1/redemptions/r_nope/rollback").status_code == 404
    types = [a["type"] for a in api.get("/api/v1/members/ana/activities").json()["data"]]
    assert "voucher_redeemed" in types and "redemption_rolled_back" in types


def test_gift_card_partial_redemptions_credits_and_rollback(api: TestClient) -> None:
    campaign = create_campaign(
        api, name="Gift", campaign_type="GIFT_VOUCHERS", discount=None, gift_amount=5000
    )
    code = code_for(api, campaign)
    first = redeem(api, code, "ana", amount=3000).json()["redemptions"][0]
    assert first["gift"]["amount"] == 3000 and first["voucher"]["gift"]["balance"] == 2000
    partial = api.post(
        "/v1/redemptions",
        json={
            "redeemables": [{"object": "voucher", "id": code, "gift": {"credits": 500}}],
            "customer": "ana",
            "order": {"amount": 4000},
        },
    ).json()["redemptions"][0]
    assert partial["amount"] == 500 and partial["voucher"]["gift"]["balance"] == 1500
    too_much = api.post(
        "/v1/redemptions",
        json={
            "redeemables": [{"object": "voucher", "id": code, "gift": {"credits": 9000}}],
            "customer": "ana",
        },
    )
    assert too_much.status_code == 400 and too_much.json()["key"] == "gift_amount_exceeded"
    credited = api.post(f"/v1/vouchers/{code}/balance", json={"amount": 1000}).json()
    assert credited["balance"] == 2500 and credited["type"] == "gift_voucher"
    api.post(f"/v1/redemptions/{first['id']}/rollback")
    assert api.get(f"/v1/vouchers/{code}").json()["gift"]["balance"] == 5500
    types = [a["type"] for a in api.get("/api/v1/members/ana/activities").json()["data"]]
    assert types.count("voucher_redeemed") == 2 and "gift_credits_added" in types


def test_loyalty_reward_redemption_rollback_restores_the_points(api: TestClient) -> None:
    program = api.post(
        "/v1/loyalties",
        json={"name": "Club", "voucher": {"type": "LOYALTY_CARD", "loyalty_card": {"points": 0}}},
    ).json()
    card = api.post(f"/v1/loyalties/{program['id']}/members", json={"customer": "ana"}).json()
    api.post(f"/v1/loyalties/members/{card['code']}/balance", json={"points": 300})
    reward = api.post("/v1/rewards", json={"name": "Mug", "parameters": {}}).json()
    api.post(
        f"/v1/loyalties/{program['id']}/rewards",
        json=[{"reward": reward["id"], "parameters": {"loyalty": {"points": 120}}}],
    )
    redeemed = api.post(
        "/v1/redemptions",
        json={
            "redeemables": [{"object": "voucher", "id": card["code"], "reward": {"id": reward["id"]}}],
            "customer": "ana",
        },
    )
    assert redeemed.status_code == 200, redeemed.text
    redemption = redeemed.json()["redemptions"][0]
    assert redemption["loyalty_card"]["points"] == 120
    assert api.get(f"/v1/vouchers/{card['code']}").json()["loyalty_card"]["balance"] == 180
    account = api.get("/api/v1/members/ana/points", params={"program": program["program_id"]})
    assert (
        account.status_code == 200 and account.json()["points"]["balance"] == 180
    )  # the ledger is the balance
    api.post(f"/v1/redemptions/{redemption['id']}/rollback")
    assert api.get(f"/v1/vouchers/{card['code']}").json()["loyalty_card"]["balance"] == 300
    no_reward = redeem(api, card["code"], "ana")
    assert no_reward.status_code == 400 and no_reward.json()["key"] == "missing_reward"
    for _ in range(2):  # a long source_id is still one idempotency key (and no 500 on PostgreSQL)
        added = api.post(
            f"/v1/loyalties/members/{card['code']}/balance", json={"points": 5, "source_id": "s" * 300}
        )
        assert added.status_code == 200 and added.json()["balance"] == 305, added.text


def test_stacked_redemption_rolls_back_through_its_parent(api: TestClient) -> None:
    a = create_campaign(api, name="A", discount={"type": "AMOUNT", "amount_off": 1000})
    b = create_campaign(api, name="B", discount={"type": "PERCENT", "percent_off": 10})
    codes = [code_for(api, a), code_for(api, b)]
    body = {
        "redeemables": [{"object": "voucher", "id": c} for c in codes],
        "customer": "ana",
        "order": {"amount": 6000},
    }
    done = api.post("/v1/redemptions", json=body).json()
    assert [r["amount"] for r in done["redemptions"]] == [1000, 500]
    parent, child = done["parent_redemption"]["id"], done["redemptions"][0]["id"]
    assert api.post(f"/v1/redemptions/{child}/rollback").json()["key"] == "invalid_redemption_parent"
    assert api.post(f"/v1/redemptions/{parent}/rollback").json()["key"] == "invalid_redemption"
    rolled = api.post(f"/v1/redemptions/{parent}/rollbacks")
    assert rolled.status_code == 200 and len(rolled.json()["rollbacks"]) == 2
    duplicated = api.post(
        "/v1/redemptions", json={**body, "redeemables": [{"id": codes[0]}, {"id": codes[0]}]}
    )
    assert duplicated.json()["key"] == "duplicated_redeemables"


def test_referral_rewards_the_referrer(api: TestClient, demo: AppContext) -> None:
    api.post("/api/v1/events", json={"customer": "ana", "action": "opt_in", "data": {}})
    campaign = create_campaign(
        api, name="Refer a friend", campaign_type="REFERRAL_PROGRAM", referral={"points": 50}
    )
    code = code_for(api, campaign, "ana")
    own = redeem(api, code, "ana")
    assert own.status_code == 400 and own.json()["key"] == "customer_rules_violated"
    before = api.get("/api/v1/members/ana/points").json()["points"]["balance"]
    assert redeem(api, code, "ben").status_code == 200
    after = api.get("/api/v1/members/ana/points").json()["points"]["balance"]
    assert after == before + 50


def test_one_use_left_exactly_one_concurrent_redemption_wins(
    api: TestClient, server: ServerThread, admin_key: str
) -> None:
    campaign = create_campaign(api, redemption_quantity=1)
    code = code_for(api, campaign)
    statuses: list[int] = []
    lock = threading.Lock()

    def attempt(n: int) -> None:
        with httpx.Client(base_url=server.url, headers=app_headers(admin_key), timeout=30) as client:
            response = client.post(
                "/v1/redemptions",
                json={
                    "redeemables": [{"object": "voucher", "id": code}],
                    "customer": f"c{n}",
                    "order": {"amount": 100},
                },
            )
        with lock:
            statuses.append(response.status_code)

    threads = [threading.Thread(target=attempt, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [200] + [400] * 7
    assert api.get(f"/v1/vouchers/{code}").json()["redemption"]["redeemed_quantity"] == 1


def test_customer_rules_hold_when_the_request_names_no_customer(api: TestClient, demo: AppContext) -> None:
    # Without `customer` the redeemer is the code's holder, and the rules about customers apply to them.
    once = create_campaign(api, name="Once each", max_redemptions_per_customer=1)
    code = code_for(api, once, "ana")
    anonymous = {"redeemables": [{"object": "voucher", "id": code}], "order": {"amount": 1000}}
    first = api.post("/v1/redemptions", json=anonymous)
    assert first.status_code == 200 and first.json()["redemptions"][0]["customer_id"] == "ana"
    second = api.post("/v1/redemptions", json=anonymous)
    assert second.status_code == 400 and second.json()["key"] == "redemption_rules_violated"
    checked = api.post("/v1/validations", json=anonymous).json()
    assert checked["valid"] is False
    assert checked["redeemables"][0]["result"]["error"]["key"] == "redemption_rules_violated"
    assert api.get(f"/v1/vouchers/{code}").json()["redemption"]["redeemed_quantity"] == 1
    # A code nobody holds cannot be counted against anyone: the customer is required.
    free = api.get(f"/api/v1/campaigns/{once['id']}/codes.csv", params={"unpublished": True}).text.split()[0]
    unknown = api.post(
        "/v1/validations", json={"redeemables": [{"id": free}], "order": {"amount": 1000}}
    ).json()
    assert unknown["redeemables"][0]["result"]["error"]["key"] == "missing_customer"

    api.post("/api/v1/events", json={"customer": "ana", "action": "opt_in", "data": {}})
    referral = create_campaign(
        api, name="Refer a friend", campaign_type="REFERRAL_PROGRAM", referral={"points": 50}
    )
    own_code = code_for(api, referral, "ana")
    before = api.get("/api/v1/members/ana/points").json()["points"]["balance"]
    own = api.post("/v1/redemptions", json={"redeemables": [{"id": own_code}], "order": {"amount": 1000}})
    assert own.status_code == 400 and own.json()["key"] == "customer_rules_violated"
    assert api.get("/api/v1/members/ana/points").json()["points"]["balance"] == before
    assert api.get(f"/v1/vouchers/{own_code}").json()["redemption"]["redeemed_quantity"] == 0


def test_gift_credits_source_id_is_an_idempotency_key(
    api: TestClient, server: ServerThread, admin_key: str
) -> None:
    campaign = create_campaign(
        api, name="Gift", campaign_type="GIFT_VOUCHERS", discount=None, gift_amount=5000
    )
    code = code_for(api, campaign)
    topup = {"amount": 1000, "source_id": "topup-1"}
    assert api.post(f"/v1/vouchers/{code}/balance", json=topup).json()["balance"] == 6000
    assert api.post(f"/v1/vouchers/{code}/balance", json=topup).json()["balance"] == 6000
    native = api.post(f"/api/v1/vouchers/{code}/credits", json=topup)
    assert native.status_code == 200 and native.json()["gift"]["balance"] == 6000
    other = api.post(f"/v1/vouchers/{code}/balance", json={"amount": 999, "source_id": "topup-1"})
    assert other.status_code == 400 and other.json()["key"] == "duplicate_source_id"
    long_source = "s" * 300  # with the code it exceeds the dedup key's 300 characters
    for _ in range(2):
        response = api.post(f"/api/v1/vouchers/{code}/credits", json={"amount": 10, "source_id": long_source})
        assert response.status_code == 200 and response.json()["gift"]["balance"] == 6010, response.text

    statuses: list[int] = []
    lock = threading.Lock()

    def credit() -> None:
        with httpx.Client(base_url=server.url, headers=app_headers(admin_key), timeout=30) as client:
            response = client.post(f"/v1/vouchers/{code}/balance", json={"amount": 500, "source_id": "raced"})
        with lock:
            statuses.append(response.status_code)

    threads = [threading.Thread(target=credit) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [200] * 6
    card = api.get(f"/v1/vouchers/{code}").json()["gift"]
    assert card == {**card, "balance": 6510, "amount": 6510}
    types = [a["type"] for a in api.get("/api/v1/members/ana/activities").json()["data"]]
    assert types.count("gift_credits_added") == 3


def test_rollback_takes_back_the_referrers_reward(api: TestClient, demo: AppContext) -> None:
    api.post("/api/v1/events", json={"customer": "ana", "action": "opt_in", "data": {}})
    prizes = create_campaign(api, name="Prizes", vouchers_count=5)
    campaign = create_campaign(
        api,
        name="Refer a friend",
        campaign_type="REFERRAL_PROGRAM",
        referral={"points": 50, "campaign_id": prizes["id"]},
    )
    code = code_for(api, campaign, "ana")

    def points() -> int:
        return int(api.get("/api/v1/members/ana/points").json()["points"]["balance"])

    def prize_codes() -> list[str]:
        found = api.get("/v1/vouchers", params={"customer": "ana", "campaign": prizes["id"]}).json()
        return [v["code"] for v in found["vouchers"]]

    before = points()
    first = redeem(api, code, "ben").json()["redemptions"][0]
    assert points() == before + 50 and len(prize_codes()) == 1
    prize = prize_codes()[0]
    assert api.post(f"/v1/redemptions/{first['id']}/rollback").status_code == 200
    assert points() == before
    assert api.get(f"/v1/vouchers/{prize}").json()["active"] is False
    assert reason(api, prize, customer="ana") == "voucher_disabled"
    revoked = next(
        a
        for a in api.get("/api/v1/members/ana/activities").json()["data"]
        if a["type"] == "referral_reward_revoked"
    )
    assert revoked["points_delta"] == -50 and revoked["data"]["reward_code"] == {
        "code": prize,
        "revoked": True,
    }

    # A reward already used stays used: the spent points cannot be taken back below zero, the
    # redeemed prize code stays as it is, and the shortfall is on record.
    second = redeem(api, code, "cleo").json()["redemptions"][0]
    latest = next(c for c in prize_codes() if c != prize)
    assert redeem(api, latest, "ana").status_code == 200
    spend = api.post(
        "/api/v1/events", json={"customer": "ana", "action": "point_subtract", "data": {"points": points()}}
    )
    assert spend.status_code == 201, spend.text
    assert api.post(f"/v1/redemptions/{second['id']}/rollback").status_code == 200
    assert points() == 0
    assert api.get(f"/v1/vouchers/{latest}").json()["active"] is True
    revocations = [
        a
        for a in api.get("/api/v1/members/ana/activities").json()["data"]
        if a["type"] == "referral_reward_revoked"
    ]
    assert revocations[0]["effects"]["points_unrecovered"] == 50
    assert revocations[0]["data"]["reward_code"]["revoked"] is False


def test_a_gift_card_is_refused_without_an_order_to_pay(api: TestClient) -> None:
    campaign = create_campaign(
        api, name="Gift", campaign_type="GIFT_VOUCHERS", discount=None, gift_amount=5000
    )
    code = code_for(api, campaign)
    for order, key in (
        (None, "missing_amount"),
        ({}, "missing_amount"),
        ({"amount": 0}, "invalid_amount"),
        ({"items": [{"price": 0, "quantity": 3}]}, "invalid_amount"),
    ):
        body: dict[str, Any] = {"redeemables": [{"id": code, "gift": {"credits": 300}}], "customer": "ana"}
        if order is not None:
            body["order"] = order
        refused = api.post("/v1/redemptions", json=body)
        assert refused.status_code == 400 and refused.json()["key"] == key, (order, refused.text)
        checked = api.post("/v1/validations", json=body).json()
        assert checked["redeemables"][0]["result"]["error"]["key"] == key
    # Another code already paid for the whole order: nothing is left for the card.
    full = create_campaign(api, name="Everything", discount={"type": "PERCENT", "percent_off": 100})
    stacked = api.post(
        "/v1/redemptions",
        json={
            "redeemables": [{"id": code_for(api, full)}, {"id": code}],
            "customer": "ana",
            "order": {"amount": 1000},
        },
    )
    assert stacked.status_code == 400 and stacked.json()["key"] == "invalid_amount"
    voucher = api.get(f"/v1/vouchers/{code}").json()
    assert voucher["redemption"]["redeemed_quantity"] == 0 and voucher["gift"]["balance"] == 5000
    assert redeem(api, code, "ana", amount=700).json()["redemptions"][0]["amount"] == 700
