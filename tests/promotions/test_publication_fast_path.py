"""The publication hot path: group commit (one transaction for concurrent publications, one failing
item not failing the others, nothing of an interrupted batch written) and the ASGI fast path for
`POST /v1/publications`, which must answer exactly as the FastAPI route does."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from perkflow.activity.tables import activities
from perkflow.api.app import create_app
from perkflow.core.context import AppContext
from perkflow.core.groupcommit import GroupCommitter, Job, committer
from perkflow.core.uow import UnitOfWork
from perkflow.promotions.service import PromotionError, publish
from perkflow.promotions.tables import publications, vouchers
from perkflow.sandbox.server import ServerThread
from tests.conftest import key_with
from tests.promotions.conftest import app_headers, create_campaign


def _publisher(campaign: str, customer: str, source_id: str) -> Any:
    def work(uow: UnitOfWork) -> str:
        return publish(uow, campaign_ref=campaign, customer_id=customer, source_id=source_id).voucher.code

    return work


def _count(ctx: AppContext, table: Any) -> int:
    with ctx.uow(write=False) as uow:
        return int(uow.conn.execute(select(func.count()).select_from(table)).scalar_one())


def test_concurrent_publications_share_one_transaction_and_a_failure_stays_its_own(
    api: TestClient, ctx: AppContext
) -> None:
    campaign = create_campaign(api, vouchers_count=10)["id"]
    group = GroupCommitter(ctx)
    works = [_publisher(campaign, f"c{n}", f"s{n}") for n in range(2)]
    works.append(_publisher("no-such-campaign", "c9", "s9"))
    works += [_publisher(campaign, f"c{n}", f"s{n}") for n in range(2, 5)]
    works.append(_publisher(campaign, "c0", "s0"))  # a duplicate of the first, in the same batch

    async def submit_all() -> list[Any]:
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in works]

        def deliverer(future: asyncio.Future[Any]) -> Any:
            def deliver(job: Job) -> None:
                outcome = job.error if job.error is not None else job.result
                loop.call_soon_threadsafe(future.set_result, outcome)

            return deliver

        group.submit([Job(w, deliver=deliverer(f)) for w, f in zip(works, futures, strict=True)])
        return await asyncio.gather(*futures)

    try:
        outcomes = asyncio.run(submit_all())
    finally:
        group.close()
    failed = outcomes.pop(2)
    assert isinstance(failed, PromotionError) and failed.status == 404
    assert all(isinstance(code, str) for code in outcomes), outcomes
    assert outcomes[-1] == outcomes[0]  # the same source_id got the same code within the batch
    assert len(set(outcomes)) == 5
    # The items before the failure committed together, the failure alone and uncommitted, the rest
    # together: two transactions for six publications instead of six.
    assert (group.batches, group.items) == (2, 6)
    assert _count(ctx, publications) == 5
    with ctx.uow(write=False) as uow:
        held = uow.conn.execute(select(func.count()).where(vouchers.c.holder_id.is_not(None))).scalar_one()
        published = uow.conn.execute(
            select(func.count()).where(activities.c.type == "voucher_published")
        ).scalar_one()
    assert held == 5 and published == 5


def test_run_many_raises_the_failure_after_the_others_are_committed(api: TestClient, ctx: AppContext) -> None:
    campaign = create_campaign(api, vouchers_count=2)["id"]
    group = committer(ctx)
    works = [_publisher(campaign, f"c{n}", f"s{n}") for n in range(3)]  # the pool holds two codes
    with pytest.raises(PromotionError) as refused:
        asyncio.run(group.run_many(works))
    assert refused.value.code == "no_voucher_suitable_for_publication"
    assert _count(ctx, publications) == 2
    assert asyncio.run(group.run(_publisher(campaign, "c0", "s0"))) is not None  # a replay still works


CRASHING_BATCH = """
import os, sys
from perkflow.bootstrap import build_context
from perkflow.core.groupcommit import GroupCommitter, Job
from perkflow.core.settings import Settings
from perkflow.promotions.service import publish

ctx = build_context(Settings(database_url=sys.argv[1], secret_key_file=sys.argv[2]))
campaign = sys.argv[3]

def publisher(n):
    return lambda uow: publish(uow, campaign_ref=campaign, customer_id=f"c{n}", source_id=f"s{n}")

def crash(uow):
    os._exit(7)  # the process dies with two publications applied in the open transaction

def delivered(job):
    print("delivered", flush=True)

GroupCommitter(ctx).apply([Job(w, deliver=delivered) for w in (publisher(1), publisher(2), crash)])
"""


def test_a_batch_interrupted_by_a_crash_leaves_nothing_behind(
    api: TestClient, ctx: AppContext, tmp_path: Path
) -> None:
    campaign = create_campaign(api, vouchers_count=5)["id"]
    script = tmp_path / "crash.py"
    script.write_text(textwrap.dedent(CRASHING_BATCH))
    done = subprocess.run(
        [sys.executable, str(script), ctx.settings.database_url, str(tmp_path / "k.key"), campaign],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 7, done.stderr
    assert "delivered" not in done.stdout  # nobody was told of a code that was never committed
    assert _count(ctx, publications) == 0
    with ctx.uow(write=False) as uow:
        held = uow.conn.execute(select(func.count()).where(vouchers.c.holder_id.is_not(None))).scalar_one()
        assert held == 0
        assert uow.conn.execute(select(func.count()).select_from(activities)).scalar_one() == 0


# -- the fast path answers as the route does ---------------------------------------------------------


def _comparable(response: httpx.Response) -> tuple[int, str, Any]:
    body = response.json()
    if isinstance(body, dict):
        body.pop("request_id", None)
        if isinstance(body.get("voucher"), dict):
            body = {"voucher_code_present": bool(body["voucher"].get("code")), "keys": sorted(body)}
    return response.status_code, response.headers["content-type"], body


def test_the_fast_path_answers_like_the_route(api: TestClient, ctx: AppContext) -> None:
    campaign = create_campaign(api, vouchers_count=40)
    publisher = app_headers(key_with(ctx, "publications:write"))
    reader = app_headers(key_with(ctx, "vouchers:read"))
    good = {"campaign": campaign["id"], "customer": "ana", "channel": "Braze"}
    cases: list[tuple[dict[str, str], Any]] = [
        ({}, json.dumps(good)),  # no key
        ({"X-App-Id": publisher["X-App-Id"], "X-App-Token": "wrong"}, json.dumps(good)),
        ({"Authorization": "Basic abc"}, json.dumps(good)),
        ({"Authorization": "Bearer nodot"}, json.dumps(good)),
        (reader, json.dumps(good)),  # a key without the scope
        (publisher, b'{"campaign": '),  # bad JSON
        (publisher, b'{"campaign": 1e999}'),
        (publisher, b"[1, 2]"),
        (publisher, b"\xff\xfe"),
        (publisher, b"not a body"),
        (publisher, b""),
        (publisher, json.dumps({**good, "campaign": "no-such-campaign"})),
        (publisher, json.dumps({**good, "customer": {"name": "no id"}})),
        (publisher, json.dumps({**good, "metadata": "x"})),
        (publisher, json.dumps({**good, "campaign": {"id": campaign["id"], "count": 3}})),
        (publisher, json.dumps({**good, "source_id": "x" * 301})),
        (publisher, json.dumps({**good, "customer": "a\u0000b"})),
        (publisher, "campaign=" + campaign["id"] + "&customer=ben&channel=Braze"),
        (publisher, json.dumps(good)),
    ]
    routed = create_app(ctx, fast_paths=False)
    fast = create_app(ctx)
    with TestClient(routed) as slow_client, TestClient(fast) as fast_client:
        for n, (headers, body) in enumerate(cases):
            sent = {**headers, "Content-Type": "application/json"}
            query = f"?cache_id=c{n}"  # ignored, as Braze's is
            expected = slow_client.post(f"/v1/publications{query}", headers=sent, content=body)
            got = fast_client.post(f"/v1/publications{query}", headers=sent, content=body)
            assert _comparable(got) == _comparable(expected), (n, expected.text, got.text)
        gets: list[tuple[dict[str, str], dict[str, str]]] = [
            ({}, {"campaign": campaign["id"], "customer": "gia"}),
            (reader, {"campaign": campaign["id"], "customer": "gia"}),
            (publisher, {"campaign": "no-such-campaign", "customer": "gia"}),
            (publisher, {"campaign": campaign["id"]}),
            (publisher, {"campaign": campaign["id"], "customer[source_id]": "gia", "source_id": "g1"}),
            (publisher, {"campaign": campaign["name"], "customer": "gia", "source_id": "g1", "c": "1"}),
            (publisher, {"campaign": campaign["id"], "customer": "hal", "join_once": "true"}),
        ]
        for n, (headers, params) in enumerate(gets):
            expected = slow_client.get("/v1/publications/create", headers=headers, params=params)
            got = fast_client.get("/v1/publications/create", headers=headers, params=params)
            assert _comparable(got) == _comparable(expected), (n, expected.text, got.text)
        too_big = b'{"campaign": "' + b"x" * (ctx.settings.max_body_bytes + 10) + b'"}'
        sent = {**publisher, "Content-Type": "application/json"}
        expected = slow_client.post("/v1/publications", headers=sent, content=too_big)
        got = fast_client.post("/v1/publications", headers=sent, content=too_big)
        assert got.status_code == expected.status_code == 413
        assert _comparable(got) == _comparable(expected)
        # join_once in the query string, as on the route.
        once = {"campaign": campaign["id"], "customer": "joe"}
        first = fast_client.post("/v1/publications", headers=publisher, json=once).json()["voucher"]["code"]
        again = fast_client.post("/v1/publications?join_once=true", headers=publisher, json=once)
        assert again.json()["voucher"]["code"] == first
        # Other methods and paths are left to FastAPI.
        assert fast_client.get("/v1/publications", headers=reader).status_code == 400
        assert fast_client.put("/v1/publications", headers=publisher).status_code == 405
    spec = api.get("/openapi.json").json()
    assert "post" in spec["paths"]["/v1/publications"]


def test_the_fast_path_replays_a_source_id_over_http(ctx: AppContext, api: TestClient) -> None:
    campaign = create_campaign(api, vouchers_count=5)["id"]
    headers = {**app_headers(key_with(ctx, "publications:write")), "Content-Type": "application/json"}
    body = json.dumps({"campaign": campaign, "customer": "ana", "channel": "Braze", "source_id": "s1"})
    with ServerThread(create_app(ctx)) as server:
        first = httpx.post(f"{server.url}/v1/publications?cache_id=1", headers=headers, content=body)
        again = httpx.post(f"{server.url}/v1/publications?cache_id=2", headers=headers, content=body)
    assert first.status_code == again.status_code == 200, (first.text, again.text)
    assert first.json()["id"] == again.json()["id"]
    assert first.json()["voucher"]["code"] == again.json()["voucher"]["code"]
    assert _count(ctx, publications) == 1
