"""Reading the activity stream: by id, by idempotency key, as a feed, and as a member's timeline."""

from __future__ import annotations

import base64
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Connection, bindparam, select, text

from perkflow.activity.stream import Activity
from perkflow.activity.tables import activities
from perkflow.core.db import Database
from perkflow.core.errors import InvalidCursor, NotFound
from perkflow.core.limits import INT64_MAX


def parse_activity_id(activity_id: str) -> int:
    raw = activity_id.removeprefix("act_")
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 19 or int(raw) > INT64_MAX:
        raise NotFound(f"activity {activity_id!r} does not exist", code="activity_not_found")
    return int(raw)


def get_activity(conn: Connection, activity_id: str) -> Activity:
    row = conn.execute(select(activities).where(activities.c.seq == parse_activity_id(activity_id))).first()
    if row is None:
        raise NotFound(f"activity {activity_id!r} does not exist", code="activity_not_found")
    return Activity.from_row(row)


def find_by_event_ids(conn: Connection, event_ids: Iterable[str]) -> dict[str, Activity]:
    ids = list(set(event_ids))
    if not ids:
        return {}
    stmt = select(activities).where(activities.c.event_id.in_(bindparam("ids", expanding=True)))
    return {row.event_id: Activity.from_row(row) for row in conn.execute(stmt, {"ids": ids})}


def existing_dedup_keys(db: Database, conn: Connection, keys: list[str]) -> list[str]:
    """Which of these idempotency keys are taken (a hot-path check: most keys are new)."""
    rows = db.fetch_tuples(
        conn,
        "activities.existing_dedup_keys",
        lambda: select(activities.c.dedup_key).where(db.in_list(activities.c.dedup_key, "keys")),
        {"keys": db.list_param(keys)},
    )
    return [row[0] for row in rows]


def find_by_dedup_keys(conn: Connection, keys: Iterable[str]) -> dict[str, Activity]:
    wanted = list(set(keys))
    if not wanted:
        return {}
    stmt = select(activities).where(activities.c.dedup_key.in_(bindparam("keys", expanding=True)))
    return {row.dedup_key: Activity.from_row(row) for row in conn.execute(stmt, {"keys": wanted})}


# A feed position: (writing transaction id, seq) of the last activity served; (0, 0) is the start.
FeedPosition = tuple[int, int]
FEED_START: FeedPosition = (0, 0)


@dataclass(frozen=True, slots=True)
class FeedPage:
    activities: list[Activity]
    position: FeedPosition  # where the next page continues: the cursor to hand back

    @property
    def cursor(self) -> str:
        return encode_feed_cursor(self.position)


def encode_feed_cursor(position: FeedPosition) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(list(position))).decode().rstrip("=")


def decode_feed_cursor(cursor: str) -> FeedPosition:
    try:
        value = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, orjson.JSONDecodeError) as exc:
        raise InvalidCursor() from exc
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not all(type(v) is int and 0 <= v <= INT64_MAX for v in value)
    ):
        raise InvalidCursor()
    return (value[0], value[1])


def feed_position_after_seq(db: Database, conn: Connection, after_seq: int) -> FeedPosition:
    """A position that serves every activity with a larger seq (on PostgreSQL some again, see
    `Database.stream_position_after_seq`)."""
    return db.stream_position_after_seq(conn, activities.c.txid, activities.c.seq, after_seq)


def feed(
    db: Database,
    conn: Connection,
    *,
    position: FeedPosition = FEED_START,
    types: list[str] | None = None,
    member_id: str | None = None,
    limit: int = 100,
) -> FeedPage:
    """Activities in stream order after a position: how a consumer pages through the stream.

    Following the returned positions delivers every activity exactly once, on PostgreSQL too,
    where activities commit out of seq order: see `Database.stream_after`.
    """
    conditions, order = db.stream_after(activities.c.txid, activities.c.seq, position)
    stmt = select(activities).where(*conditions)
    if types:
        stmt = stmt.where(activities.c.type.in_(types))
    if member_id:
        stmt = stmt.where(activities.c.member_id == member_id)
    rows = conn.execute(stmt.order_by(*order).limit(limit)).all()
    if rows:
        last = rows[-1]
        position = (last.txid or 0, last.seq)
    return FeedPage([Activity.from_row(row) for row in rows], position)


_CHAIN_SQL = text(
    """
    WITH RECURSIVE chain(seq, prev_seq, depth) AS (
        SELECT seq, prev_seq, 1 FROM activities WHERE seq = :head
        UNION ALL
        SELECT a.seq, a.prev_seq, c.depth + 1
        FROM activities a JOIN chain c ON a.seq = c.prev_seq
        WHERE c.depth < :depth
    )
    SELECT seq, prev_seq FROM chain
    """
)


def _walk(conn: Connection, head: int, depth: int) -> list[tuple[int, int | None]]:
    return [(row.seq, row.prev_seq) for row in conn.execute(_CHAIN_SQL, {"head": head, "depth": depth})]


def encode_cursor(positions: dict[str, int | None]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(positions)).decode().rstrip("=")


# A timeline cursor names a member's chains: "member" and one "account:<program>" per program.
MAX_CURSOR = 2_000
MAX_CURSOR_CHAINS = 50


def _chain_position(name: object, position: object) -> bool:
    if not isinstance(name, str) or not (name == "member" or name.startswith("account:")):
        return False
    if position is None:
        return True
    # bool is an int to Python, and a position past 64 bits reaches no database.
    return isinstance(position, int) and not isinstance(position, bool) and 0 <= position <= INT64_MAX


def decode_cursor(cursor: str) -> dict[str, int | None]:
    if len(cursor) > MAX_CURSOR:
        raise InvalidCursor()
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        value = orjson.loads(base64.urlsafe_b64decode(padded))
    except (ValueError, orjson.JSONDecodeError) as exc:
        raise InvalidCursor() from exc
    if (
        not isinstance(value, dict)
        or not 1 <= len(value) <= MAX_CURSOR_CHAINS
        or not all(_chain_position(k, v) for k, v in value.items())
    ):
        raise InvalidCursor()
    return value


def timeline(
    conn: Connection,
    heads: dict[str, int | None],
    *,
    limit: int = 50,
    types: set[str] | None = None,
    member_id: str | None = None,
    ledger_only: bool = False,
) -> tuple[list[Activity], dict[str, int | None] | None]:
    """Newest-first activities of one member, merged from its chains.

    `heads` maps a chain name ("member", "account:<program>") to where reading continues; the
    returned positions (None when every chain is exhausted) form the next page's cursor.
    """
    positions = dict(heads)
    collected: list[tuple[int, str]] = []
    next_of: dict[int, int | None] = {}
    # With a type filter a chain may need walking further than `limit` to fill the page.
    depth = limit + 1 if not (types or ledger_only) else max(limit * 4, 200)
    # Items below the last walked item of a chain that goes on cannot be ordered yet.
    floor = -1
    for chain, head in positions.items():
        if head is None:
            continue
        walked = _walk(conn, head, depth)
        for seq, prev in walked:
            collected.append((seq, chain))
            next_of[seq] = prev
        if len(walked) == depth and walked[-1][1] is not None:
            floor = max(floor, walked[-1][0])
    collected.sort(reverse=True)
    rows: dict[int, Any] = {}
    if collected:
        seqs = [seq for seq, _ in collected]
        stmt = select(activities).where(activities.c.seq.in_(bindparam("seqs", expanding=True)))
        rows = {row.seq: row for row in conn.execute(stmt, {"seqs": seqs})}
    page: list[Activity] = []
    for seq, chain in collected:
        if len(page) == limit or seq < floor:
            break
        positions[chain] = next_of[seq]
        row = rows[seq]
        if (types and row.type not in types) or (member_id is not None and row.member_id != member_id):
            continue
        if ledger_only and row.points_delta == 0 and row.pending_delta == 0:
            continue
        page.append(Activity.from_row(row))
    more = any(position is not None for position in positions.values())
    return page, positions if more else None
