"""The activity feed (`GET /api/v1/activities`): a consumer that follows next_cursor gets every
activity exactly once, on PostgreSQL too, where transactions commit out of seq order."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from perkflow.core.context import AppContext
from perkflow.events.service import ingest
from perkflow.sandbox.server import ServerThread
from tests.conftest import PG_URL, event

pytestmark = pytest.mark.usefixtures("demo")

postgres_only = [
    pytest.mark.skipif(not PG_URL, reason="concurrent writers need PostgreSQL"),
    pytest.mark.parametrize("database_url", ["postgres"], indirect=True),
]


@pytest.fixture
def client(ctx: AppContext, admin_key: str) -> Iterator[httpx.Client]:
    """Perkflow served by uvicorn on loopback, so requests run while a test holds a transaction."""
    from perkflow.api.app import create_app

    with (
        ServerThread(create_app(ctx)) as server,
        httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {admin_key}"}, timeout=30
        ) as http,
    ):
        yield http


def page(client: httpx.Client, cursor: str | None = None, **params: Any) -> dict[str, Any]:
    if cursor is not None:
        params["cursor"] = cursor
    response = client.get("/api/v1/activities", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def follow(client: httpx.Client, cursor: str | None, *, until: int, limit: int = 2) -> tuple[list[str], str]:
    """Page from `cursor` until `until` activities came (or 30 s passed), as a consumer would.

    The PostgreSQL server is shared: another database's transaction that is still open holds the
    feed's horizon back for a moment, so an empty page means "not yet", never "the end".
    """
    seen: list[str] = []
    deadline = time.monotonic() + 30
    while len(seen) < until and time.monotonic() < deadline:
        body = page(client, cursor, limit=limit)
        seen += [a["id"] for a in body["data"]]
        cursor = body["next_cursor"]
        if not body["data"]:
            time.sleep(0.05)
    assert cursor is not None
    return seen, cursor


def post(client: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/api/v1/events", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def all_ids(ctx: AppContext) -> list[str]:
    with ctx.uow(write=False) as uow:
        return [
            f"act_{seq}"
            for seq in uow.conn.execute(text("SELECT seq FROM activities ORDER BY seq")).scalars()
        ]


def test_following_the_cursor_delivers_every_activity_once_in_pages(
    ctx: AppContext, client: httpx.Client
) -> None:
    for member in ("ana", "ben", "cy"):
        post(client, event(member, "opt_in"))
    seen, cursor = follow(client, None, until=9)
    assert len(seen) == len(set(seen)) == 9
    assert sorted(seen) == sorted(all_ids(ctx))
    post(client, event("ana", "checkout", total=2500, transaction_id="t1"))
    more, _ = follow(client, cursor, until=1)
    assert set(more) == set(all_ids(ctx)) - set(seen) and more
    # Filters apply within the same order; the cursor still moves past what was served.
    checkout = page(client, type="checkout")
    assert [a["type"] for a in checkout["data"]] == ["checkout"]
    assert page(client, checkout["next_cursor"], type="checkout")["data"] == []


@pytest.mark.parametrize(
    "params",
    [
        {"cursor": "not base64 at all!"},
        {"cursor": "bm90IGpzb24"},  # "not json"
        {"cursor": "WzEsMiwzXQ"},  # [1,2,3]
        {"cursor": "Wy0xLDBd"},  # [-1,0]
        {"cursor": "Wzk5OTk5OTk5OTk5OTk5OTk5OTk5LDBd"},  # beyond BIGINT
        {"cursor": "WzEuNSwwXQ"},  # [1.5,0]
        {"cursor": "WzAsMF0", "after": "3"},  # both forms at once
    ],
)
def test_a_cursor_the_api_did_not_return_is_a_clean_4xx(client: httpx.Client, params: dict[str, str]) -> None:
    response = client.get("/api/v1/activities", params=params)
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "invalid_cursor"
    assert set(response.json()) == {"code", "message", "details"}


def test_the_old_after_seq_form(ctx: AppContext, client: httpx.Client) -> None:
    for member in ("ana", "ben"):
        post(client, event(member, "opt_in"))
    ids = all_ids(ctx)
    first = int(ids[2].removeprefix("act_"))
    response = client.get("/api/v1/activities", params={"after": first})
    if ctx.db.is_sqlite:
        # Seq order is commit order on SQLite, so the old form stays exact there.
        assert response.status_code == 200, response.text
        assert [a["id"] for a in response.json()["data"]] == ids[3:]
        return
    # On PostgreSQL paging by seq loses activities: refused, with a cursor that resumes safely.
    assert response.status_code == 400, response.text
    error = response.json()
    assert error["code"] == "cursor_required"
    resumed, _ = follow(client, error["details"]["cursor"], until=len(ids) - 3, limit=100)
    assert set(ids[3:]) <= set(resumed)
    assert page(client, after=0)["data"], "after=0, the start, is still accepted"


@pytest.mark.parametrize("slow_goes_first", [True, False], ids=["lower-seq-late", "lower-txid-late"])
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
@pytest.mark.skipif(not PG_URL, reason="concurrent writers need PostgreSQL")
def test_an_activity_committed_late_is_not_skipped(
    ctx: AppContext, client: httpx.Client, slow_goes_first: bool
) -> None:
    """One transaction records an activity and stays open while another records later ones and
    commits; a consumer pages the feed in between and again after the first commits."""
    post(client, event("zed", "opt_in"))
    start, cursor = follow(client, None, until=3)
    with ctx.uow() as slow:
        if slow_goes_first:
            # The open transaction holds the lower seq values (the reported case).
            ingest(slow, [event("ana", "opt_in")])
            slow.flush()
            post(client, event("ben", "opt_in"))
        else:
            # The open transaction started writing first (lower transaction id) but takes its seq
            # values after the other transaction has committed higher ones.
            slow.conn.execute(text("UPDATE programs SET updated_at = updated_at WHERE false"))
            slow.conn.execute(text("SELECT pg_current_xact_id()"))
            post(client, event("ben", "opt_in"))
            ingest(slow, [event("ana", "opt_in")])
            slow.flush()
        during = page(client, cursor, limit=100)
        # Nothing of the other transaction is served while the open one could still commit
        # activities that belong before it.
        assert during["data"] == []
        slow.commit()
    rest, _ = follow(client, during["next_cursor"], until=6)
    seen = start + rest
    assert len(seen) == len(set(seen)), f"delivered twice: {seen}"
    assert sorted(seen) == sorted(all_ids(ctx)), f"missed: {set(all_ids(ctx)) - set(seen)}"


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
@pytest.mark.skipif(not PG_URL, reason="PostgreSQL only")
def test_rows_from_before_the_txid_column_come_first_in_seq_order(
    ctx: AppContext, client: httpx.Client
) -> None:
    post(client, event("ana", "opt_in"))
    with ctx.uow() as uow:
        # What the migration leaves on rows written before it: 0.
        uow.conn.execute(text("UPDATE activities SET txid = 0 WHERE seq <= 2"))
        uow.conn.commit()
    post(client, event("ben", "opt_in"))
    seen, _ = follow(client, None, until=6, limit=1)
    assert seen[:2] == ["act_1", "act_2"] and sorted(seen) == sorted(all_ids(ctx))


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
@pytest.mark.skipif(not PG_URL, reason="PostgreSQL only")
def test_the_feed_query_uses_the_txid_seq_index(ctx: AppContext) -> None:
    from sqlalchemy import select

    from perkflow.activity.tables import activities

    conditions, order = ctx.db.stream_after(activities.c.txid, activities.c.seq, (5, 7))
    stmt = select(activities).where(*conditions).order_by(*order).limit(100)
    with ctx.uow(write=False) as uow:
        # On a near-empty table any plan is cheap; forbid the ones that would not use the order.
        for setting in ("enable_seqscan", "enable_bitmapscan", "enable_sort"):
            uow.conn.execute(text(f"SET LOCAL {setting} = off"))
        compiled = stmt.compile(dialect=uow.conn.dialect)
        plan = "\n".join(
            uow.conn.exec_driver_sql("EXPLAIN " + str(compiled), compiled.params).scalars()  # type: ignore[arg-type]
        )
    assert "Index Scan using ix_activities_txid_seq" in plan, plan
    assert "Sort" not in plan, plan


def test_a_consumer_following_concurrent_writers_gets_every_activity_once(
    ctx: AppContext, client: httpx.Client
) -> None:
    """Writers in several threads, each its own HTTP connection and transaction per request, while a
    consumer follows the feed; on PostgreSQL their seq blocks commit out of order."""
    import threading

    writers, per_writer = 4, 12
    failures: list[str] = []

    def write(n: int) -> None:
        with httpx.Client(base_url=client.base_url, headers=client.headers, timeout=30) as own:
            for i in range(per_writer):
                body = (
                    event(f"w{n}-{i}", "opt_in")
                    if i % 3 == 0
                    else event(f"w{n}-0", "checkout", total=900, transaction_id=f"w{n}-t{i}")
                )
                response = own.post("/api/v1/events", json=body)
                if response.status_code != 201:
                    failures.append(response.text)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    seen: list[str] = []
    cursor = None
    while any(thread.is_alive() for thread in threads):
        body = page(client, cursor, limit=5)
        seen += [a["id"] for a in body["data"]]
        cursor = body["next_cursor"]
    for thread in threads:
        thread.join()
    assert failures == []
    expected = all_ids(ctx)
    rest, _ = follow(client, cursor, until=len(expected) - len(seen), limit=50)
    seen += rest
    assert len(seen) == len(set(seen)), "an activity was delivered twice"
    assert sorted(seen) == sorted(expected), f"missed: {sorted(set(expected) - set(seen))}"
