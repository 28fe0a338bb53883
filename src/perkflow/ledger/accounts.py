"""Points accounts as the unit of work sees them: loaded (and locked) once, written back at flush.

Bulk ingestion touches about one account per event, so loading and writing accounts is the hot
path: loads read only the columns processing needs (plus the member's status, joined), and flushes
write only the column groups that changed.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Text, bindparam, cast, select

from perkflow.core.clock import from_epoch, isoformat_z, to_epoch
from perkflow.core.uow import UnitOfWork
from perkflow.ledger.domain import Lot, PointsAccount
from perkflow.ledger.tables import accounts
from perkflow.members.tables import members


@dataclass(slots=True)
class Account:
    id: int
    member_id: str
    program_id: str
    status: str
    tier_id: str | None
    points: PointsAccount
    last_activity_seq: int | None
    member_status: str
    # Dates of the membership; loaded only when `dates_loaded` (views), always written when changed.
    opted_in_at: datetime | None = None
    opted_out_at: datetime | None = None
    tier_since: datetime | None = None
    dates_loaded: bool = False
    # activity_stats as stored (JSON text or dict), decoded on first use.
    stats_raw: Any = None
    _stats: dict[str, list[int]] | None = None
    dirty: bool = False
    membership_changed: bool = False
    tier_changed: bool = False

    def mark_dirty(self) -> None:
        self.dirty = True

    @property
    def activity_stats(self) -> dict[str, list[int]]:
        """Activity type -> [how many, when the latest occurred (epoch seconds)]."""
        if self._stats is None:
            raw = self.stats_raw
            self._stats = (orjson.loads(raw) if isinstance(raw, str | bytes) else dict(raw)) if raw else {}
        return self._stats

    def note_activity(self, activity_type: str, occurred_epoch: int) -> None:
        stats = self.activity_stats
        found = stats.get(activity_type)
        if found is None:
            stats[activity_type] = [1, occurred_epoch]
        else:
            found[0] += 1
            if occurred_epoch > found[1]:
                found[1] = occurred_epoch

    @property
    def opted_in(self) -> bool:
        return self.status == "opted_in"

    def opt_in(self, moment: datetime) -> None:
        assert self.dates_loaded, "load the account with its dates before changing the membership"
        self.status = "opted_in"
        self.opted_in_at = moment
        self.opted_out_at = None
        self.membership_changed = self.dirty = True

    def opt_out(self, moment: datetime) -> None:
        assert self.dates_loaded, "load the account with its dates before changing the membership"
        self.status = "opted_out"
        self.opted_out_at = moment
        self.membership_changed = self.dirty = True

    def move_to_tier(self, tier_id: str | None, moment: datetime) -> None:
        self.tier_id = tier_id
        self.tier_since = moment
        self.tier_changed = self.dirty = True

    def view(self, now: datetime, tier_name: str | None, window_days: int | None) -> dict[str, Any]:
        """The account as of `now`: due releases and expiries applied to a copy, nothing written."""
        points = copy.deepcopy(self.points)
        epoch = to_epoch(now)
        points.settle(epoch, window_days=window_days)
        upcoming = sorted(
            (lot for lot in points.lots if lot.expires_at is not None and not lot.pending),
            key=Lot.spend_key,
        )
        next_expiry = None
        if upcoming:
            first = upcoming[0].expires_at
            assert first is not None
            next_expiry = {
                "points": sum(lot.remaining for lot in upcoming if lot.expires_at == first),
                "at": isoformat_z(from_epoch(first)),
            }
        return {
            "program_id": self.program_id,
            "status": self.status,
            "opted_in": self.opted_in,
            "opted_in_at": isoformat_z(self.opted_in_at) if self.opted_in_at else None,
            "opted_out_at": isoformat_z(self.opted_out_at) if self.opted_out_at else None,
            "tier": tier_name,
            "tier_id": self.tier_id,
            "tier_since": isoformat_z(self.tier_since) if self.tier_since else None,
            "points": {
                "balance": points.balance,
                "pending": points.pending,
                "earned": points.earned,
                "expired": points.expired,
                "spent": points.spent,
                "qualifying": points.qualifying(window_days, epoch // 86400),
                "next_expiry": next_expiry,
            },
        }


HOT_COLUMNS = [
    accounts.c.id,
    accounts.c.member_id,
    accounts.c.program_id,
    accounts.c.status,
    accounts.c.tier_id,
    accounts.c.points_balance,
    accounts.c.points_pending,
    accounts.c.points_earned,
    accounts.c.points_spent,
    accounts.c.points_expired,
    cast(accounts.c.lots, Text).label("lots_json"),
    accounts.c.earned_by_day,
    accounts.c.next_due_epoch,
    accounts.c.last_activity_seq,
    members.c.status.label("member_status"),
    cast(accounts.c.activity_stats, Text).label("stats_json"),
]
DATE_COLUMNS = [accounts.c.opted_in_at, accounts.c.opted_out_at, accounts.c.tier_since]

POINTS_UPDATE = (
    "points_balance",
    "points_pending",
    "points_earned",
    "points_spent",
    "points_expired",
    "lots",
    "earned_by_day",
    "last_activity_seq",
    "activity_stats",
    "updated_at",
)
# Indexed columns are written only when they change: SQLite rewrites the entries of every index whose
# columns appear in the SET list, which costs about as much as the rest of the row update.
TIER_UPDATE = ("tier_id", "tier_since")
DUE_UPDATE = ("next_due_epoch",)
MEMBERSHIP_UPDATE = ("status", "opted_in_at", "opted_out_at")


def _account_from_tuple(row: tuple[Any, ...]) -> Account:
    """Build an account from a raw HOT_COLUMNS tuple (driver values, no type processing)."""
    (
        id_,
        member_id,
        program_id,
        status,
        tier_id,
        balance,
        pending,
        earned,
        spent,
        expired,
        lots_json,
        earned_by_day,
        next_due,
        last_seq,
        member_status,
        stats_json,
    ) = row
    if isinstance(earned_by_day, str):
        earned_by_day = orjson.loads(earned_by_day)
    return Account(
        id=id_,
        member_id=member_id,
        program_id=program_id,
        status=status,
        tier_id=tier_id,
        points=PointsAccount(
            balance,
            pending,
            earned,
            spent,
            expired,
            earned_by_day={int(day): pts for day, pts in earned_by_day.items()} if earned_by_day else {},
            encoded_lots=lots_json,
            stored_due=next_due,
        ),
        last_activity_seq=last_seq,
        member_status=member_status,
        stats_raw=stats_json,
    )


def _account_from_row(row: Any, with_dates: bool) -> Account:
    earned_by_day = row.earned_by_day
    if isinstance(earned_by_day, str):
        earned_by_day = orjson.loads(earned_by_day)
    points = PointsAccount(
        balance=row.points_balance,
        pending=row.points_pending,
        earned=row.points_earned,
        spent=row.points_spent,
        expired=row.points_expired,
        earned_by_day={int(day): pts for day, pts in earned_by_day.items()} if earned_by_day else {},
        encoded_lots=row.lots_json,
        stored_due=row.next_due_epoch,
    )
    account = Account(
        id=row.id,
        member_id=row.member_id,
        program_id=row.program_id,
        status=row.status,
        tier_id=row.tier_id,
        points=points,
        last_activity_seq=row.last_activity_seq,
        member_status=row.member_status,
        stats_raw=row.stats_json,
    )
    if with_dates:
        account.opted_in_at = row.opted_in_at
        account.opted_out_at = row.opted_out_at
        account.tier_since = row.tier_since
        account.dates_loaded = True
    return account


def _fill_dates(account: Account, row: Any) -> None:
    """Give a loaded account its dates without touching anything else it holds."""
    account.opted_in_at = row.opted_in_at
    account.opted_out_at = row.opted_out_at
    if not account.tier_changed:
        account.tier_since = row.tier_since
    account.dates_loaded = True


class AccountCache:
    """This process's copy of the accounts as its last SQLite write transaction left them.

    Bulk ingestion touches the same accounts batch after batch, and reading them back (and decoding
    their lots) was about an eighth of its time. The copy may be used only by a write transaction that
    reads the same `Database.change_token` as the one that filled it, i.e. when nothing at all was
    committed by anyone else in between; any other write clears it. While a transaction uses the
    copy it is marked unusable, so a transaction that fails cannot leave changed objects behind.
    PostgreSQL has concurrent writers and row locks to take, so it always reads the rows.
    """

    # About 1.2 KB each in memory (60 MB in all); past this the earliest cached are dropped first.
    MAX_ACCOUNTS = 50_000

    def __init__(self) -> None:
        self.accounts: dict[tuple[str, str], Account] = {}
        self.token: tuple[Any, int, int] | None = None

    def checkout(self, token: tuple[Any, int, int]) -> dict[tuple[str, str], Account]:
        """The cached accounts if `token` proves them current (emptied otherwise); marks the copy
        in use until `store`."""
        if token != self.token:
            self.accounts.clear()
        self.token = None
        return self.accounts

    def store(self, accounts: Iterable[Account], token: tuple[Any, int, int]) -> None:
        found = self.accounts
        for account in accounts:
            found[(account.member_id, account.program_id)] = account
        while len(found) > self.MAX_ACCOUNTS:
            del found[next(iter(found))]
        self.token = token


def account_cache(uow: UnitOfWork) -> AccountCache:
    found = uow.ctx.caches.get("ledger.accounts")
    if found is None:
        found = uow.ctx.caches["ledger.accounts"] = AccountCache()
    return found


class AccountRepository:
    """Unit-of-work component: an identity map of accounts, locked when loaded for writing.

    On SQLite a write unit of work starts from the process's `AccountCache` when it is current and
    hands its accounts back to it when it commits.
    """

    def __init__(self, uow: UnitOfWork) -> None:
        self.uow = uow
        self._by_key: dict[tuple[str, str], Account | None] = {}
        self._cached: dict[tuple[str, str], Account] = {}
        token = uow.db.change_token(uow.conn) if uow.write else None
        if token is not None:
            cache = account_cache(uow)
            self._cached = cache.checkout(token)
            uow.on_commit(lambda: self._store(cache, token))

    def _store(self, cache: AccountCache, started: tuple[Any, int, int]) -> None:
        from perkflow.members.repository import MemberRepository

        loaded = [a for a in self._by_key.values() if a is not None]
        statuses = (
            self.uow.component(MemberRepository).statuses()
            if self.uow.has_component(MemberRepository)
            else {}
        )
        if statuses:
            # A member's status may have changed in this transaction; the accounts carry it.
            for account in loaded:
                status = statuses.get(account.member_id)
                if status is not None:
                    account.member_status = status
        for key, maybe in self._by_key.items():
            if maybe is None:
                cache.accounts.pop(key, None)
        # Our own commit does not change data_version on our connection; the counter moved by one.
        cache.store(loaded, (started[0], started[1], self.uow.db.commits))

    def get(self, member_id: str, program_id: str) -> Account | None:
        key = (member_id, program_id)
        if key not in self._by_key:
            self.load([key])
        return self._by_key[key]

    def _select(self, with_dates: bool) -> Any:
        columns: list[Any] = [*HOT_COLUMNS, *DATE_COLUMNS] if with_dates else list(HOT_COLUMNS)
        return select(*columns).select_from(accounts.join(members, members.c.id == accounts.c.member_id))

    def load(self, keys: Iterable[tuple[str, str]], *, with_dates: bool = False) -> None:
        wanted: dict[str, set[str]] = {}
        cached = self._cached
        for key in keys:
            if key not in self._by_key:
                account = cached.get(key)
                if account is not None and (account.dates_loaded or not with_dates):
                    self._by_key[key] = account
                else:
                    wanted.setdefault(key[1], set()).add(key[0])
        db = self.uow.db
        lock = self.uow.write

        def build() -> Any:
            stmt = (
                self._select(with_dates)
                .where(accounts.c.program_id == bindparam("program"), db.in_list(accounts.c.member_id, "ids"))
                .order_by(accounts.c.id)
            )
            return stmt.with_for_update(of=accounts) if lock and not db.is_sqlite else stmt

        for program_id, member_ids in wanted.items():
            params = {"program": program_id, "ids": db.list_param(sorted(member_ids))}
            found = {}
            if with_dates:
                for row in self.uow.conn.execute(build(), params):
                    found[row.member_id] = _account_from_row(row, True)
            else:
                for raw in db.fetch_tuples(self.uow.conn, f"accounts.load.{lock}", build, params):
                    found[raw[1]] = _account_from_tuple(raw)
            for member_id in member_ids:
                self._by_key[(member_id, program_id)] = found.get(member_id)

    def for_member(self, member_id: str) -> list[Account]:
        """Every account of a member, with dates (for views)."""
        rows = self.uow.conn.execute(
            self._select(True).where(accounts.c.member_id == member_id).order_by(accounts.c.id)
        )
        found = []
        for row in rows:
            key = (row.member_id, row.program_id)
            cached = self._by_key.get(key)
            if cached is None:
                cached = self._by_key[key] = _account_from_row(row, True)
            elif not cached.dates_loaded:
                _fill_dates(cached, row)
            found.append(cached)
        return found

    def get_with_dates(self, member_id: str, program_id: str) -> Account | None:
        key = (member_id, program_id)
        cached = self._by_key.get(key)
        if cached is None:
            self._by_key.pop(key, None)
            self.load([key], with_dates=True)
        elif not cached.dates_loaded:
            # Only the dates are read: the cached account may hold changes not yet flushed.
            row = self.uow.conn.execute(select(*DATE_COLUMNS).where(accounts.c.id == cached.id)).one()
            _fill_dates(cached, row)
        return self._by_key[key]

    def load_dates(self, keys: Iterable[tuple[str, str]]) -> None:
        """Give loaded accounts their membership dates in one query (segment rules on dates read
        many accounts at once, where `get_with_dates` would cost a query each)."""
        pending = {}
        for key in keys:
            account = self._by_key.get(key)
            if account is not None and not account.dates_loaded:
                pending[account.id] = account
        if not pending:
            return
        db = self.uow.db
        rows = self.uow.conn.execute(
            select(accounts.c.id, *DATE_COLUMNS).where(db.in_list(accounts.c.id, "ids")),
            {"ids": db.list_param(sorted(pending))},
        )
        for row in rows:
            _fill_dates(pending[row.id], row)

    def create(self, member_id: str, program_id: str) -> Account:
        """Insert an account now, or lock and return the one a concurrent request created first."""
        now = self.uow.now
        db = self.uow.db
        stmt = db.insert_ignore(
            accounts,
            {
                "member_id": member_id,
                "program_id": program_id,
                "status": "opted_out",
                "points_balance": 0,
                "points_pending": 0,
                "points_earned": 0,
                "points_spent": 0,
                "points_expired": 0,
                "lots": [],
                "earned_by_day": {},
                "activity_stats": {},
                "created_at": now,
                "updated_at": now,
            },
            conflict_columns=("member_id", "program_id"),
        )
        self.uow.conn.execute(stmt)
        self._by_key.pop((member_id, program_id), None)
        account = self.get_with_dates(member_id, program_id)
        assert account is not None
        return account

    def cached(self) -> list[Account]:
        return [a for a in self._by_key.values() if a is not None]

    def before_commit(self) -> bool:
        return False

    def flush(self) -> None:
        dirty = [a for a in self._by_key.values() if a is not None and a.dirty]
        if not dirty:
            return
        from perkflow.programs.service import ProgramCatalog

        db = self.uow.db
        conn = self.uow.conn
        now_param = db.param_datetime(self.uow.now)
        json = db.param_json
        programs = self.uow.component(ProgramCatalog).programs
        no_days = json({})
        # One executemany per shape of SET list: (tier changed, next due moment changed).
        shaped: dict[tuple[bool, bool], list[tuple[Any, ...]]] = {}
        membership_rows = []
        for a in dirty:
            a.dirty = False
            p = a.points
            program = programs.get(a.program_id)
            row: tuple[Any, ...] = (
                p.balance,
                p.pending,
                p.earned,
                p.spent,
                p.expired,
                p.encode_lots() if db.is_sqlite else json(orjson.loads(p.encode_lots())),
                json({str(day): pts for day, pts in p.earned_by_day.items()}) if p.earned_by_day else no_days,
                a.last_activity_seq,
                a.stats_raw if a._stats is None and db.is_sqlite else json(a.activity_stats),
                now_param,
            )
            tier_changed = a.tier_changed
            if tier_changed:
                a.tier_changed = False
                row += (a.tier_id, db.param_datetime(a.tier_since))
            due = p.next_due(program.tier_window_days if program else None)
            due_changed = p.mark_due_stored(due)
            if due_changed:
                row += (due,)
            shaped.setdefault((tier_changed, due_changed), []).append((*row, a.id))
            if a.membership_changed:
                a.membership_changed = False
                membership_rows.append(
                    (a.status, db.param_datetime(a.opted_in_at), db.param_datetime(a.opted_out_at), a.id)
                )
        for (tier_changed, due_changed), rows in shaped.items():
            columns = POINTS_UPDATE + (TIER_UPDATE if tier_changed else ())
            columns += DUE_UPDATE if due_changed else ()
            db.bulk_update(conn, accounts, columns, ("id",), rows)
        db.bulk_update(conn, accounts, MEMBERSHIP_UPDATE, ("id",), membership_rows)
