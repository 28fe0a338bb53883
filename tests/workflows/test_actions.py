"""Every workflow action, run by real events: loyalty changes commit with the event, platform and
webhook actions go through the outbox to the sandboxes, waits survive a restart, interrupts reject."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from perkflow.activity.tables import activities
from perkflow.bootstrap import build_context
from perkflow.core.clock import ManualClock
from perkflow.core.context import AppContext
from perkflow.core.security import verify_signature
from perkflow.core.settings import Settings
from perkflow.sync.tables import outbox
from perkflow.sync.worker import DeliveryWorker
from perkflow.workflows.scheduler import resume_waiting_runs
from tests.sync.receiver import Receiver
from tests.workflows.conftest import (
    chain,
    connect_bloomreach,
    connect_braze,
    create,
    join,
    node,
    on,
    points,
    runs,
    send,
    where,
)

pytestmark = pytest.mark.usefixtures("demo")


def count(ctx: AppContext, table: Any, *where_: Any) -> int:
    with ctx.uow(write=False) as uow:
        return int(uow.conn.execute(select(func.count()).select_from(table).where(*where_)).scalar_one())


def test_add_and_subtract_points_with_templates_and_the_fail_branch(api: TestClient) -> None:
    graph = {
        "nodes": [
            on("checkout"),
            node("bonus", "action.add_points", points="{{ event.total // 1000 }}", reason="1 per 10 euros"),
            node("fee", "action.subtract_points", points=500, reason="too much"),
            node("note", "action.modify_field", field="favourite_store", value="fee refused"),
        ],
        "edges": [
            {"from": "trigger", "to": "bonus"},
            {"from": "bonus", "to": "fee"},
            {"from": "fee", "to": "note", "branch": "fail"},
        ],
    }
    workflow = create(api, graph)
    join(api, "ana")
    send(api, "ana", "checkout", transaction_id="T1", total=4250)
    assert points(api, "ana")["balance"] == 5 + 42 + 4
    [run] = runs(api, workflow["id"])
    assert run["status"] == "failed" and run["path"] == ["trigger", "bonus", "fee", "note"]
    assert run["results"]["fee"]["code"] == "insufficient_points"
    assert api.get("/api/v1/members/ana").json()["fields"]["favourite_store"] == "fee refused"
    timeline = api.get("/api/v1/members/ana/activities?limit=10").json()["data"]
    bonus = next(a for a in timeline if a["type"] == "point_add")
    assert bonus["source"] == "workflow" and bonus["data"]["workflow_id"] == workflow["id"]
    assert bonus["data"]["reason"] == "1 per 10 euros" and bonus["points_delta"] == 4


def test_points_actions_move_the_tier_in_the_same_transaction(api: TestClient) -> None:
    create(api, chain(on("checkout"), node("bonus", "action.add_points", points=60)))
    join(api, "ana")
    response = send(api, "ana", "checkout", transaction_id="T1", total=100)
    assert response["effects"]["tier"] == "Bronze"  # the event's own effect, before workflows ran
    member = api.get("/api/v1/members/ana").json()["programs"][0]
    assert member["tier"] == "Gold" and member["points"]["balance"] == 66


def test_reward_claim_paid_and_for_free_hands_the_coupon_to_later_nodes(
    api: TestClient, braze: Any, worker: DeliveryWorker
) -> None:
    connect_braze(api, braze)
    graph = chain(
        on("review_written"),
        node("gift", "action.reward_claim", reward="rew_coffee", free=True),
        node(
            "tell",
            "action.sync_event",
            integration="braze",
            name="coffee_gift",
            properties={
                "code": "{{ coupon.code }}",
                "value": "{{ coupon.value }}",
                "reward": "{{ reward.name }}",
            },
        ),
    )
    workflow = create(api, graph)
    join(api, "ana")
    send(api, "ana", "review_written", product_id="p", rating=5)
    [run] = runs(api, workflow["id"])
    coupon = run["results"]["gift"]["coupon"]
    assert run["status"] == "completed" and coupon["code"].startswith("COFFEE-") and coupon["value"] == 350
    assert points(api, "ana")["balance"] == 5 + 5  # free: nothing spent
    worker.drain()
    [gift] = [e for e in braze.user("ana")["events"] if e["name"] == "coffee_gift"]
    assert gift["properties"]["code"] == coupon["code"] and gift["properties"]["reward"] == "Free coffee"
    paid = chain(on("checkout"), node("buy", "action.reward_claim", reward="rew_coffee"))
    paying = create(api, paid)
    send(api, "ana", "checkout", transaction_id="T1", total=1000)  # 10 points: not enough for 30
    assert runs(api, paying["id"])[0]["results"]["buy"]["code"] == "insufficient_points"
    send(api, "ana", "checkout", transaction_id="T2", total=3000)
    assert runs(api, paying["id"])[0]["status"] == "completed"
    assert points(api, "ana")["balance"] == 10 + 10 + 30 - 30


def test_reward_claim_from_an_empty_pool_takes_the_fail_output(api: TestClient, ctx: AppContext) -> None:
    from perkflow.rewards.tables import coupons

    with ctx.uow() as uow:
        uow.conn.execute(coupons.update().values(status="assigned"))
        uow.commit()
    graph = {
        "nodes": [
            on("opt_in"),
            node("gift", "action.reward_claim", reward="rew_coffee", free=True),
            node("sorry", "action.add_points", points=3, reason="no coffee left"),
        ],
        "edges": [{"from": "trigger", "to": "gift"}, {"from": "gift", "to": "sorry", "branch": "fail"}],
    }
    workflow = create(api, graph)
    join(api, "ana")
    [run] = runs(api, workflow["id"])
    assert run["results"]["gift"]["code"] == "reward_out_of_stock" and run["path"][-1] == "sorry"
    assert points(api, "ana")["balance"] == 5 + 3


def test_set_tier_and_assign_coupon(api: TestClient) -> None:
    graph = chain(
        on("review_written"),
        node("vip", "action.set_tier", tier="Platinum", reason="great reviewer"),
        node("voucher", "action.assign_coupon", reward="rew_voucher10"),
        node("remember", "action.modify_field", field="favourite_store", value="{{ coupon.code }}"),
    )
    workflow = create(api, graph)
    join(api, "ana")
    send(api, "ana", "review_written", product_id="p", rating=5)
    member = api.get("/api/v1/members/ana").json()
    assert member["programs"][0]["tier"] == "Platinum"
    [run] = runs(api, workflow["id"])
    code = run["results"]["voucher"]["coupon"]["code"]
    assert code.startswith("TEN-") and member["fields"]["favourite_store"] == code
    types = [a["type"] for a in api.get("/api/v1/members/ana/activities?limit=20").json()["data"]]
    assert "coupon_assigned" in types and "tier_up" in types
    stock = api.get("/api/v1/rewards/rew_voucher10").json()["coupons"]
    assert stock == {"available": 19, "assigned": 1}


def test_modify_field_refuses_values_the_field_cannot_hold(api: TestClient) -> None:
    graph = chain(
        on("checkout"), node("set", "action.modify_field", field="newsletter", value="{{ event.total }}")
    )
    workflow = create(api, graph)
    join(api, "ana")
    send(api, "ana", "checkout", transaction_id="T1", total=100)
    [run] = runs(api, workflow["id"])
    assert run["status"] == "failed" and run["results"]["set"]["code"] == "invalid_value"
    assert "newsletter" not in api.get("/api/v1/members/ana").json()["fields"]


def test_sync_fields_and_events_reach_both_platforms_through_the_outbox(
    api: TestClient, ctx: AppContext, braze: Any, bloomreach: Any, worker: DeliveryWorker
) -> None:
    connect_braze(api, braze)
    connect_bloomreach(api, bloomreach)
    graph = chain(
        on("checkout"),
        node(
            "fields",
            "action.sync_fields",
            fields={
                "vip_since": "{{ event.occurred_at }}",
                "basket_eur": "{{ event.total / 100 }}",
                "flag": True,
            },
        ),
        node(
            "event",
            "action.sync_event",
            name="big_basket",
            properties={"total": "{{ event.total }}", "name": "{{ customer.first_name }}"},
        ),
    )
    workflow = create(api, graph)
    join(api, "ana", first_name="Ana")
    send(api, "ana", "checkout", transaction_id="T1", total=4250)
    assert count(ctx, outbox, outbox.c.kind == "attributes") == 2
    assert braze.user("ana") is None  # nothing is sent inside the transaction
    worker.drain()
    attributes = braze.user("ana")["attributes"]
    assert attributes["basket_eur"] == 42.5 and attributes["flag"] is True
    assert attributes["vip_since"] == "2026-03-14T09:00:00.000Z"  # Braze's time format
    [event] = [e for e in braze.user("ana")["events"] if e["name"] == "big_basket"]
    assert event["properties"]["total"] == 4250 and event["properties"]["name"] == "Ana"
    customer = bloomreach.customer("ana@example.com")
    assert customer["properties"]["basket_eur"] == 42.5
    [bloom] = [e for e in customer["events"] if e["event_type"] == "big_basket"]
    assert bloom["properties"]["total"] == 4250
    sent = runs(api, workflow["id"])[0]["results"]["event"]["sent"]
    assert sorted(s["kind"] for s in sent) == ["bloomreach", "braze"]


def test_webhook_actions_are_signed_by_the_webhook_connector(
    api: TestClient, receiver: Receiver, worker: DeliveryWorker
) -> None:
    secret = "0123456789abcdef0123"
    hook = api.post(
        "/api/v1/integrations/webhook",
        json={"url": receiver.url, "secret": secret, "events": [{"type": "tier_down"}]},
    ).json()
    graph = chain(
        on("checkout"),
        node(
            "notify",
            "action.webhook",
            integration=hook["id"],
            event_type="big_order",
            payload={"order": "{{ event.transaction_id }}", "total": "{{ event.total }}"},
        ),
    )
    create(api, graph)
    join(api, "ana")
    send(api, "ana", "checkout", transaction_id="T1", total=9900)
    worker.drain()
    [delivery] = [r for r in receiver.received if b"big_order" in r.body]
    assert verify_signature(secret, delivery.body, delivery.headers["x-perkflow-signature"])
    [body] = [b for b in receiver.bodies() if b["event_type"] == "big_order"]
    assert body["payload"]["data"] == {"order": "T1", "total": 9900} and body["member"]["id"] == "ana"


def test_a_wait_is_durable_and_the_run_continues_on_its_version(
    api: TestClient, settings: Settings, clock: ManualClock
) -> None:
    graph = chain(
        on("opt_in"),
        node("later", "action.wait", days=2),
        node("nudge", "action.add_points", points="{{ event.points * 2 }}", reason="second-day bonus"),
    )
    workflow = create(api, graph)
    join(api, "ana")
    [run] = runs(api, workflow["id"])
    assert run["status"] == "waiting" and run["resume_at"] == "2026-03-16T09:00:00Z"
    api.patch(f"/api/v1/workflows/{workflow['id']}", json={"graph": chain(on("opt_in"))})
    # A new process: nothing in memory survives, the run continues from what was stored.
    clock.advance(timedelta(days=1))
    restarted = build_context(settings, clock=clock)
    try:
        assert resume_waiting_runs(restarted) == 0
        clock.advance(timedelta(days=1, minutes=1))
        assert resume_waiting_runs(restarted) == 1
        assert resume_waiting_runs(restarted) == 0
    finally:
        restarted.close()
    [run] = runs(api, workflow["id"])
    assert (
        run["status"] == "completed" and run["version"] == 1 and run["path"] == ["trigger", "later", "nudge"]
    )
    assert run["results"]["nudge"]["points"] == 10 and run["results"]["later"]["resumed_at"]
    assert points(api, "ana")["balance"] == 5 + 10


def test_archiving_cancels_waiting_runs(api: TestClient, ctx: AppContext, clock: ManualClock) -> None:
    workflow = create(
        api,
        chain(on("opt_in"), node("later", "action.wait", hours=1), node("p", "action.add_points", points=1)),
    )
    join(api, "ana")
    api.delete(f"/api/v1/workflows/{workflow['id']}")
    clock.advance(timedelta(hours=2))
    assert resume_waiting_runs(ctx) == 0
    assert runs(api, workflow["id"])[0]["status"] == "cancelled"
    assert points(api, "ana")["balance"] == 5


def interrupting(code: Any = "store_closed") -> dict[str, Any]:
    return {
        "nodes": [
            on("checkout"),
            where("closed", "event", ("store", "eq", "Closed store")),
            node(
                "stop", "action.interrupt", code=code, message="this store no longer takes loyalty purchases"
            ),
            node("bonus", "action.add_points", points=1),
        ],
        "edges": [
            {"from": "trigger", "to": "closed", "branch": "modifier"},
            {"from": "closed", "to": "stop"},
            {"from": "trigger", "to": "bonus"},
        ],
    }


def test_interrupt_rejects_the_event_with_the_workflows_code_and_writes_nothing_of_it(
    api: TestClient, ctx: AppContext
) -> None:
    workflow = create(api, interrupting())
    join(api, "ana")
    before = count(ctx, activities)
    response = api.post(
        "/api/v1/events",
        json={
            "customer": "ana",
            "action": "checkout",
            "data": {"transaction_id": "T1", "total": 999, "store": "Closed store"},
        },
    )
    assert response.status_code == 422
    body = response.json()
    assert (
        body["code"] == "store_closed" and body["message"] == "this store no longer takes loyalty purchases"
    )
    assert body["details"]["interrupted_by"] == {"workflow_id": workflow["id"], "version": 1, "node": "stop"}
    assert count(ctx, activities) == before and points(api, "ana")["balance"] == 5
    [run] = runs(api, workflow["id"])
    assert run["status"] == "interrupted" and run["trigger"]["kind"] == "modifier"
    ok = send(api, "ana", "checkout", transaction_id="T1", total=999, store="Lyon")
    assert ok["data"]["transaction_id"] == "T1" and points(api, "ana")["balance"] == 5 + 9 + 1


def test_interrupt_in_a_bulk_request_rejects_only_that_event(api: TestClient) -> None:
    create(api, interrupting(40001))
    join(api, "ana")
    response = api.post(
        "/api/v1/events/bulk",
        json={
            "events": [
                {"customer": "ana", "action": "checkout", "data": {"transaction_id": "A", "total": 1000}},
                {
                    "customer": "ana",
                    "action": "checkout",
                    "data": {"transaction_id": "B", "total": 1000, "store": "Closed store"},
                },
                {"customer": "ana", "action": "checkout", "data": {"transaction_id": "C", "total": 1000}},
            ]
        },
    ).json()
    assert (response["accepted"], response["rejected"]) == (2, 1)
    assert response["results"][1]["error"]["code"] == "40001"
    assert points(api, "ana")["balance"] == 5 + 2 * (10 + 1)


def test_a_workflow_does_not_feed_on_its_own_activity(api: TestClient) -> None:
    echo = create(api, chain(on("point_add"), node("again", "action.add_points", points=1)))
    join(api, "ana")
    send(api, "ana", "point_add", points=1)
    assert [r["status"] for r in runs(api, echo["id"])] == ["completed"]
    assert points(api, "ana")["balance"] == 5 + 1 + 1


def test_workflows_answering_each_other_are_stopped_before_they_multiply(api: TestClient) -> None:
    echoes = [
        create(api, chain(on("point_add"), node("again", "action.add_points", points=1))) for _ in range(6)
    ]
    join(api, "ana")
    send(api, "ana", "point_add", points=1)
    statuses = [r["status"] for w in echoes for r in runs(api, w["id"], limit=500)]
    # 6 runs for the event itself, then 100 runs of the cascade its bonuses start, then a stop.
    assert statuses.count("completed") == 6 + 100 and statuses.count("failed") == 1
    failed = next(r for w in echoes for r in runs(api, w["id"], status="failed"))
    assert "triggered each other" in failed["results"]["trigger"]["error"]
    assert points(api, "ana")["balance"] == 5 + 1 + 106


def test_a_waiting_run_that_cannot_continue_does_not_hold_up_the_others(
    api: TestClient, ctx: AppContext, clock: ManualClock
) -> None:
    from sqlalchemy import update

    from perkflow.workflows.tables import workflow_runs

    workflow = create(
        api,
        chain(
            on("opt_in"), node("later", "action.wait", minutes=5), node("p", "action.add_points", points=1)
        ),
    )
    join(api, "ana")
    join(api, "ben")
    broken = runs(api, workflow["id"], member="ana")[0]["id"]
    with ctx.uow() as uow:  # as a run stored by a buggy version would look
        uow.conn.execute(
            update(workflow_runs).where(workflow_runs.c.id == broken).values(context={"pending": "x"})
        )
        uow.commit()
    clock.advance(timedelta(minutes=6))
    assert resume_waiting_runs(ctx) == 1
    assert runs(api, workflow["id"], member="ana")[0]["status"] == "failed"
    assert runs(api, workflow["id"], member="ben")[0]["status"] == "completed"
    assert points(api, "ben")["balance"] == 6 and points(api, "ana")["balance"] == 5
