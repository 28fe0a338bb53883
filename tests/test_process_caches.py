"""The process caches behind bulk ingestion (accounts, program configuration) never serve stale data.

Each test fills a cache with a committed batch, changes the data some other way (another
connection, another process, another unit of work of this process, a transaction that fails or
that changes the data itself), then ingests again and checks what the batch saw.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from perkflow.bootstrap import build_context
from perkflow.core import transactions
from perkflow.core.context import AppContext
from perkflow.core.uow import UnitOfWork
from perkflow.events.service import EventOutcome, ingest
from perkflow.ledger.accounts import AccountCache, AccountRepository
from perkflow.members.service import update_member
from perkflow.programs.service import set_rule_active
from tests.conftest import event

pytestmark = pytest.mark.usefixtures("demo")


def bulk(ctx: AppContext, *events: dict[str, Any]) -> list[EventOutcome]:
    return transactions.run(ctx, partial(ingest, raw_events=list(events)), bulk=True)


def checkout(member: str, tx: str, total: int) -> dict[str, Any]:
    return event(member, "checkout", transaction_id=tx, total=total, channel="store")


def stored_balance(ctx: AppContext, member: str) -> int:
    with ctx.uow(write=False) as uow:
        return int(
            uow.conn.exec_driver_sql(
                "SELECT points_balance FROM accounts WHERE member_id = ?"
                if uow.db.is_sqlite
                else "SELECT points_balance FROM accounts WHERE member_id = %s",
                (member,),
            ).scalar_one()
        )


def balance_after(outcome: EventOutcome) -> int:
    assert outcome.status == "accepted", outcome.to_public()
    assert outcome.activity is not None
    return int(outcome.activity.effects["balance"])


@pytest.fixture
def member(ctx: AppContext) -> str:
    # opt_in earns 5 points; a 10-euro store checkout earns 10.
    bulk(ctx, event("ana", "opt_in"))
    assert balance_after(bulk(ctx, checkout("ana", "T1", 1000))[0]) == 15
    return "ana"


def test_consecutive_batches_start_from_the_cached_accounts(ctx: AppContext, member: str) -> None:
    cache = account_cache_of(ctx)
    if not ctx.db.is_sqlite:
        assert cache is None or not cache.accounts  # PostgreSQL always reads (and locks) the rows
        return
    assert cache is not None and (member, "demo") in cache.accounts
    cached = cache.accounts[(member, "demo")]
    assert balance_after(bulk(ctx, checkout(member, "T2", 1000))[0]) == 25
    assert cache.accounts[(member, "demo")] is cached
    assert stored_balance(ctx, member) == 25


def account_cache_of(ctx: AppContext) -> Any:
    return ctx.caches.get("ledger.accounts")


def test_a_write_through_another_connection_is_seen(ctx: AppContext, member: str) -> None:
    other = build_context(ctx.settings, clock=ctx.clock)
    try:
        bulk(other, event(member, "point_add", points=100))
    finally:
        other.close()
    assert balance_after(bulk(ctx, checkout(member, "T2", 1000))[0]) == 125
    assert stored_balance(ctx, member) == 125


def test_a_write_by_another_process_is_seen(ctx: AppContext, member: str, tmp_path: Path) -> None:
    script = (
        "from perkflow.bootstrap import build_context\n"
        "from perkflow.core import transactions\n"
        "from perkflow.events.service import ingest\n"
        "ctx = build_context()\n"
        "raw = [{'customer': 'ana', 'action': 'point_add', 'data': {'points': 100}}]\n"
        "out = transactions.run(ctx, lambda uow: ingest(uow, raw))\n"
        "assert out[0].status == 'accepted', out[0].to_public()\n"
    )
    env = {
        **os.environ,
        "PERKFLOW_DATABASE_URL": str(ctx.settings.database_url),
        "PERKFLOW_SECRET_KEY_FILE": str(tmp_path / "other.key"),
    }
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60, env=env, cwd=tmp_path)
    assert balance_after(bulk(ctx, checkout(member, "T2", 1000))[0]) == 125
    assert stored_balance(ctx, member) == 125


def test_another_unit_of_work_of_this_process_invalidates_the_cache(ctx: AppContext, member: str) -> None:
    transactions.run(ctx, lambda uow: update_member(uow, member, {"status": "blocked"}))
    outcome = bulk(ctx, checkout(member, "T2", 1000))[0]
    assert outcome.status == "rejected" and outcome.error is not None
    assert outcome.error.code == "member_not_active"
    assert stored_balance(ctx, member) == 15


def test_a_member_blocked_in_the_batch_that_fills_the_cache_stays_blocked(
    ctx: AppContext, member: str
) -> None:
    def block_then_ingest(uow: UnitOfWork) -> list[EventOutcome]:
        outcomes = ingest(uow, [checkout(member, "T2", 1000)])
        update_member(uow, member, {"status": "blocked"})
        return outcomes

    assert balance_after(transactions.run(ctx, block_then_ingest, bulk=True)[0]) == 25
    outcome = bulk(ctx, checkout(member, "T3", 1000))[0]
    assert outcome.status == "rejected" and outcome.error is not None
    assert outcome.error.code == "member_not_active"


def test_a_batch_that_fails_leaves_nothing_in_the_cache(ctx: AppContext, member: str) -> None:
    class Boom(Exception):
        pass

    def ingest_then_fail(uow: UnitOfWork) -> None:
        outcomes = ingest(uow, [event(member, "point_add", points=1000)])
        assert balance_after(outcomes[0]) == 1015
        uow.flush()  # the rows are written, then rolled back with the transaction
        raise Boom

    with pytest.raises(Boom):
        transactions.run(ctx, ingest_then_fail, bulk=True)
    assert stored_balance(ctx, member) == 15
    assert balance_after(bulk(ctx, checkout(member, "T2", 1000))[0]) == 25
    assert stored_balance(ctx, member) == 25


def test_the_cache_holds_at_most_its_limit_dropping_the_earliest(ctx: AppContext, member: str) -> None:
    cache = AccountCache()
    cache.MAX_ACCOUNTS = 2
    with ctx.uow(write=False) as uow:
        account = uow.component(AccountRepository).get(member, "demo")
    assert account is not None
    copies = [dataclasses.replace(account, member_id=f"m{i}") for i in range(3)]
    cache.store(copies, ("conn", 1, 1))
    assert list(cache.accounts) == [("m1", "demo"), ("m2", "demo")]
    assert cache.checkout(("conn", 1, 1)) is cache.accounts and len(cache.accounts) == 2
    assert cache.token is None  # in use until handed back
    assert cache.checkout(("conn", 1, 1)) == {}  # and so not current for anyone else meanwhile


# -- the programs' configuration, cached the same way ------------------------------------------------


def store_checkout_points(outcome: EventOutcome) -> int:
    assert outcome.status == "accepted", outcome.to_public()
    assert outcome.activity is not None
    return int(outcome.activity.effects["points"])


def test_a_rule_changed_through_another_connection_applies_to_the_next_batch(
    ctx: AppContext, member: str
) -> None:
    other = build_context(ctx.settings, clock=ctx.clock)
    try:
        transactions.run(other, lambda uow: set_rule_active(uow, "demo", "rule_purchase", False))
    finally:
        other.close()
    assert store_checkout_points(bulk(ctx, checkout(member, "T2", 1000))[0]) == 0


def test_a_rule_changed_by_this_process_applies_to_the_next_batch(ctx: AppContext, member: str) -> None:
    transactions.run(ctx, lambda uow: set_rule_active(uow, "demo", "rule_purchase", False))
    assert store_checkout_points(bulk(ctx, checkout(member, "T2", 1000))[0]) == 0


def test_a_batch_that_also_changes_a_rule_does_not_leave_the_old_rules_cached(
    ctx: AppContext, member: str
) -> None:
    def ingest_then_change(uow: UnitOfWork) -> list[EventOutcome]:
        outcomes = ingest(uow, [checkout(member, "T2", 1000)])
        set_rule_active(uow, "demo", "rule_purchase", False)
        return outcomes

    assert store_checkout_points(transactions.run(ctx, ingest_then_change, bulk=True)[0]) == 10
    assert store_checkout_points(bulk(ctx, checkout(member, "T3", 1000))[0]) == 0
