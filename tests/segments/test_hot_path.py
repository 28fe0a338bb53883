"""What segments cost the ingestion hot path, counted in SQL statements on both databases: nothing
without rule segments, and with them a fixed number per transaction, whatever the batch size."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event as sa_event

from perkflow.core.context import AppContext
from tests.conftest import event
from tests.segments.conftest import enrol, make_segment, members_of, rule, send

pytestmark = pytest.mark.usefixtures("demo")


# Configuration that subscribers cache for a second (rule segments, integrations, distributions,
# workflows): when they refresh depends on timing, so their queries are left out of the counts.
CACHED = ("FROM segments", "FROM integrations", "FROM field_mappings", "FROM distributions", "FROM workflow")


@contextmanager
def statements(ctx: AppContext) -> Iterator[list[str]]:
    """Every statement the API sends while the block runs, except configuration cache refreshes."""
    seen: list[str] = []

    def record(_conn: object, _cursor: object, sql: str, *_args: object) -> None:
        if not any(name in sql for name in CACHED):
            seen.append(sql)

    sa_event.listen(ctx.db.engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        sa_event.remove(ctx.db.engine, "before_cursor_execute", record)


def checkouts(members: list[str], prefix: str, total: int = 5000) -> list[dict[str, object]]:
    return [event(m, "checkout", transaction_id=f"{prefix}-{m}", total=total) for m in members]


def test_without_rule_segments_ingestion_never_reads_memberships(api: TestClient, ctx: AppContext) -> None:
    members = [f"m{n}" for n in range(30)]
    enrol(api, *members)
    make_segment(api, {"name": "VIP"})  # static segments cost nothing either
    with statements(ctx) as seen:
        send(api, *checkouts(members, "T"))
    assert [s for s in seen if "segment" in s] == []


def test_with_rule_segments_the_cost_per_batch_does_not_grow_with_its_size(
    api: TestClient, ctx: AppContext
) -> None:
    small = [f"s{n}" for n in range(3)]
    large = [f"l{n}" for n in range(40)]
    enrol(api, *small, *large)
    rich = make_segment(api, {"name": "Rich", "rules": {"conditions": [rule("points_balance", "gte", 50)]}})
    make_segment(api, {"name": "Lyon", "rules": {"conditions": [rule("favourite_store", "eq", "Lyon")]}})
    make_segment(api, {"name": "Gold", "rules": {"conditions": [rule("tier", "eq", "Gold")]}})
    with statements(ctx) as few:
        send(api, *checkouts(small, "A"))  # every member enters Rich and Gold
    with statements(ctx) as many:
        send(api, *checkouts(large, "A"))
    assert len(members_of(api, rich["id"])) == 43
    # PostgreSQL hands out activity numbers in blocks: a small batch may live on the last block's
    # leftovers where a large one needs one more round trip, but never one per activity.
    refills = [s for s in many if "nextval" in s]
    assert len(refills) <= 2
    others = [s for s in many if "nextval" not in s]
    assert len(others) == len([s for s in few if "nextval" not in s]), "\n".join(many)
    # The membership read is one query per transaction; nobody changes here, so nothing is written.
    with statements(ctx) as unchanged:
        send(api, *checkouts(large, "B", total=100))
    assert len([s for s in unchanged if "segment_members" in s]) == 1
    # A profile-only segment is not evaluated for a checkout: members are not even loaded for it.
    assert not any("FROM members" in s and "segment" not in s for s in unchanged)
