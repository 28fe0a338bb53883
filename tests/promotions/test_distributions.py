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
from tests.promotions.conftest import create_campaign, publish, redeem

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


def test_every_automatic_trigger_writes_its_code_into_braze(
    api: TestClient, ctx: AppContext, demo: AppContext, braze: Any, worker: DeliveryWorker
) -> None:
    """Voucherify's automatic distribution triggers, each as the activity that reports it."""
    from perkflow.activity.stream import ActivityLog
    from perkflow.members.repository import MemberRepository

    integration = connect(api, braze)
    pool = create_campaign(api, name="Pool", vouchers_count=40)
    thanks = create_campaign(api, name="Thanks", vouchers_count=5)
    gift = create_campaign(
        api, name="Gift", campaign_type="GIFT_VOUCHERS", discount=None, gift_amount=5000, vouchers_count=3
    )
    club = api.post("/v1/loyalties", json={"name": "Club"}).json()

    def segments_vip(uow: UnitOfWork) -> None:
        for segment_id, name in (("vip", "VIP"), ("other", "Other")):
            uow.conn.execute(
                insert(segments).values(
                    id=segment_id, name=name, kind="static", created_at=uow.now, updated_at=uow.now
                )
            )

    transactions.run(ctx, segments_vip)
    triggers = {
        # trigger: (campaign, attribute prefix, segment)
        "voucher_published": (pool, "published", None),
        "checkout": (pool, "ordered", None),
        "checkout_accept": (pool, "accepted", None),
        "checkout_reject": (pool, "rejected", None),
        "refund": (pool, "refunded", None),
        "gift_credits_added": (gift, "gift", None),
        "loyalty_points_added": (club, "card", None),
        "voucher_redeemed": (thanks, "thanks", None),
        "redemption_rolled_back": (pool, "sorry", None),
        "reward_claim": (pool, "reward", None),
        "segment_entered": (pool, "welcome", "vip"),
        "segment_left": (pool, "goodbye", "vip"),
    }
    for trigger, (campaign, prefix, segment) in triggers.items():
        created = api.post(
            "/api/v1/distributions",
            json={
                "integration_id": integration,
                "campaign_id": campaign["id"],
                "trigger": trigger,
                "segment_id": segment,
                "attributes": {"code": f"{prefix}_code", "value": f"{prefix}_value"},
            },
        )
        assert created.status_code == 201, created.text
    other = api.post(
        "/api/v1/distributions",
        json={
            "integration_id": integration,
            "campaign_id": pool["id"],
            "trigger": "segment_entered",
            "segment_id": "other",
            "attributes": {"code": "other_code"},
        },
    )
    assert other.status_code == 201

    def event(customer: str, action: str, **data: Any) -> None:
        response = api.post("/api/v1/events", json={"customer": customer, "action": action, "data": data})
        assert response.status_code == 201, response.text

    published = publish(api, pool["id"], "pub").json()["voucher"]["code"]
    for member in ("o1", "o2", "o3", "o4"):
        event(member, "opt_in")
    event("o1", "checkout", transaction_id="T1", total=2000)
    event("o2", "checkout", transaction_id="T2", total=2000, channel="online")
    event("o2", "checkout_accept", transaction_id="T2")
    event("o3", "checkout", transaction_id="T3", total=2000, channel="online")
    event("o3", "checkout_reject", transaction_id="T3")
    event("o4", "checkout", transaction_id="T4", total=2000)
    event("o4", "refund", transaction_id="T4", amount=1000)
    card = publish(api, gift["id"], "g").json()["voucher"]["code"]
    assert api.post(f"/v1/vouchers/{card}/balance", json={"amount": 100}).status_code == 200
    loyalty = api.post(f"/v1/loyalties/{club['id']}/members", json={"customer": "l"}).json()["code"]
    assert api.post(f"/v1/loyalties/members/{loyalty}/balance", json={"points": 10}).status_code == 200
    spent = publish(api, pool["id"], "r").json()["voucher"]["code"]
    assert redeem(api, spent, "r").status_code == 200
    undone = publish(api, pool["id"], "rb").json()["voucher"]["code"]
    redemption = redeem(api, undone, "rb").json()["redemptions"][0]["id"]
    assert api.post(f"/v1/redemptions/{redemption}/rollback").status_code == 200
    member_card = api.post(f"/v1/loyalties/{club['id']}/members", json={"customer": "rw"}).json()["code"]
    api.post(f"/v1/loyalties/members/{member_card}/balance", json={"points": 50})
    mug = api.post("/v1/rewards", json={"name": "Mug", "parameters": {}}).json()
    api.post(
        f"/v1/loyalties/{club['id']}/rewards",
        json=[{"reward": mug["id"], "parameters": {"loyalty": {"points": 20}}}],
    )
    claimed = api.post(f"/v1/loyalties/members/{member_card}/redemption", json={"reward": {"id": mug["id"]}})
    assert claimed.status_code == 200, claimed.text
    assert api.post("/api/v1/members", json={"id": "s"}).status_code == 201

    def segment_activity(kind: str) -> Any:
        # Segment membership changes are reported as these activities (the segments API records them).
        def work(uow: UnitOfWork) -> None:
            member = uow.component(MemberRepository).get_for_update("s")
            assert member is not None
            uow.component(ActivityLog).record(
                type=kind,
                member_id="s",
                program_id=None,
                chain=member,
                data={"segment_id": "vip", "segment_name": "VIP"},
                source="system",
            )

        transactions.run(ctx, work)

    segment_activity("segment_entered")
    worker.drain()
    entered = braze.user("s")["attributes"]
    assert "welcome_code" in entered and "goodbye_code" not in entered and "other_code" not in entered
    segment_activity("segment_left")
    worker.drain()

    def attributes(member: str) -> dict[str, Any]:
        profile = braze.user(member)
        assert profile is not None, member
        return profile["attributes"]  # type: ignore[no-any-return]

    def pool_code(member: str, prefix: str, campaign: dict[str, Any] = pool) -> str:
        found = attributes(member)
        assert found[f"{prefix}_value"] == 500, (member, found)
        code = found[f"{prefix}_code"]
        shown = api.get(f"/v1/vouchers/{code}").json()
        assert shown["campaign_id"] == campaign["id"] and shown["holder_id"] == member, (member, shown)
        return str(code)

    assert pool_code("pub", "published") == published
    for member, prefix in (("o1", "ordered"), ("o2", "accepted"), ("o3", "rejected"), ("o4", "refunded")):
        pool_code(member, prefix)
    assert attributes("g")["gift_code"] == card and attributes("g")["gift_value"] == 5100
    assert attributes("l")["card_code"] == loyalty and attributes("l")["card_value"] == 10
    pool_code("r", "thanks", thanks)  # a new code from the campaign the distribution gives
    assert pool_code("rb", "sorry") == undone  # a code of the distribution's own campaign: its new state
    pool_code("rw", "reward")
    assert pool_code("s", "welcome") != pool_code("s", "goodbye")
    assert "other_code" not in attributes("s")
