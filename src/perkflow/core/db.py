"""Database access: engine set-up and the few places where SQLite and PostgreSQL differ.

Everything dialect-specific (write locking, row locks, id allocation, bulk writes, upserts, the
order in which a stream can be followed) lives here so that domain services are written once for
both databases.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import (
    Connection,
    Engine,
    Select,
    Table,
    any_,
    bindparam,
    cast,
    create_engine,
    event,
    func,
    literal,
    literal_column,
    select,
    text,
    tuple_,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from perkflow.core.errors import PerkflowError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: SQLite's own busy handling only
    fcntl = None  # type: ignore[assignment]


# The advisory lock that keeps coupon and voucher writers apart on PostgreSQL ("PERK" in ASCII).
CODE_NAMESPACE_LOCK = 0x5045524B


def json_dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def normalize_url(url: str) -> str:
    """Accept the URLs people paste (postgresql://, postgres://) and pick the psycopg 3 driver."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


class DatabaseBusy(PerkflowError):
    status = 503
    code = "database_busy"


class Database:
    """One engine plus the dialect-specific operations the services need."""

    def __init__(self, url: str, *, busy_timeout_s: float = 10.0, pool: bool = True) -> None:
        self.url = normalize_url(url)
        parsed = make_url(self.url)
        self.dialect_name = parsed.get_backend_name()
        if self.dialect_name not in ("sqlite", "postgresql"):
            raise ValueError(f"unsupported database {self.dialect_name!r}: use sqlite:/// or postgresql://")
        self.is_sqlite = self.dialect_name == "sqlite"
        self.busy_timeout_s = busy_timeout_s
        # SQLite has one writer at a time. Threads of this process queue on this lock instead of
        # polling the file lock, which keeps latency flat; other processes still use busy_timeout.
        self._write_lock = threading.Lock() if self.is_sqlite else None
        self._threads_waiting = 0  # threads blocked on _write_lock, counted under _waiting_lock
        self._waiting_lock = threading.Lock()
        database = parsed.database or ""
        self._writer_queue = (
            WriterQueue(database + "-writer.lock")
            if self.is_sqlite and database and database != ":memory:" and fcntl is not None
            else None
        )
        self._compiled: dict[str, tuple[str, Any]] = {}
        # Write transactions this process committed (see `change_token`).
        self.commits = 0
        self.engine = self._create_engine(parsed, pool)

    # -- engine ---------------------------------------------------------------------------------

    def _create_engine(self, parsed: Any, pool: bool) -> Engine:
        if self.is_sqlite:
            database = parsed.database or ""
            if database and database != ":memory:":
                Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
            kwargs: dict[str, Any] = {
                "connect_args": {"check_same_thread": False, "timeout": self.busy_timeout_s},
                "json_serializer": json_dumps,
                "json_deserializer": orjson.loads,
            }
            if pool:
                kwargs.update(pool_size=8, max_overflow=32, pool_timeout=60)
            else:
                kwargs["poolclass"] = NullPool
            engine = create_engine(self.url, **kwargs)
            busy_ms = int(self.busy_timeout_s * 1000)

            @event.listens_for(engine, "connect")
            def _configure_sqlite(dbapi_connection: Any, _record: Any) -> None:
                # Transactions are begun explicitly below so that writers can take the lock up front.
                dbapi_connection.isolation_level = None
                cursor = dbapi_connection.cursor()
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=NORMAL")
                cursor.execute("PRAGMA foreign_keys=ON")
                cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
                cursor.execute("PRAGMA cache_size=-65536")
                cursor.execute("PRAGMA temp_store=MEMORY")
                cursor.execute("PRAGMA wal_autocheckpoint=10000")
                cursor.close()

            @event.listens_for(engine, "begin")
            def _begin_sqlite(conn: Connection) -> None:
                # A writer takes the write lock at BEGIN; a deferred BEGIN that later writes can fail
                # with SQLITE_BUSY when another connection committed in between.
                immediate = conn.get_execution_options().get("perkflow_write", False)
                conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

            return engine

        kwargs = {"json_serializer": json_dumps, "json_deserializer": orjson.loads}
        if pool:
            kwargs.update(pool_size=10, max_overflow=20, pool_timeout=60, pool_pre_ping=True)
        else:
            kwargs["poolclass"] = NullPool
        return create_engine(self.url, **kwargs)

    def dispose(self) -> None:
        self.engine.dispose()

    # -- transactions -----------------------------------------------------------------------------

    @contextmanager
    def connect(self, *, write: bool, long: bool = False) -> Iterator[Connection]:
        """A connection inside a transaction; writers on SQLite hold the write lock of all processes.

        `long` marks a bulk writer, which pauses for a moment after releasing the lock so that writers
        waiting in other processes get their turn instead of being starved by back-to-back batches.
        """
        lock = self._write_lock if write else None
        if lock is not None:
            with self._waiting_lock:
                self._threads_waiting += 1
            try:
                if not lock.acquire(timeout=self.busy_timeout_s):
                    raise DatabaseBusy(
                        "the database is busy; try again", details={"waited_s": self.busy_timeout_s}
                    )
            finally:
                with self._waiting_lock:
                    self._threads_waiting -= 1
        queued = self._writer_queue is not None and write
        try:
            if queued:
                self._writer_queue.acquire()  # type: ignore[union-attr]
            with self.engine.connect() as conn:
                if write:
                    conn = conn.execution_options(perkflow_write=True)
                yield conn
        finally:
            if queued:
                self._writer_queue.release()  # type: ignore[union-attr]
            if lock is not None:
                lock.release()
            # Only a writer that someone waits for needs to step aside; an idle pause would cost a
            # bulk load 2 ms per batch for nothing.
            if queued and long and (self._threads_waiting or self._writer_queue.others_waiting()):  # type: ignore[union-attr]
                time.sleep(0.002)

    def note_commit(self) -> None:
        self.commits += 1

    def change_token(self, conn: Connection) -> tuple[Any, int, int] | None:
        """A value that stays equal, between write transactions of this process on `conn`, exactly
        as long as nobody else committed anything to the database in between; None on PostgreSQL.

        SQLite's `PRAGMA data_version` changes when any other connection (of any process) commits;
        the commit counter covers this process's own other units of work. Read it after BEGIN
        IMMEDIATE, when no other writer can slip in. A process cache stamped with the token of the
        transaction that filled it is valid in a later transaction that reads the same token.
        """
        if not self.is_sqlite:
            return None
        dbapi = conn.connection.dbapi_connection
        cursor = dbapi.cursor()  # type: ignore[union-attr]
        try:
            version = cursor.execute("PRAGMA data_version").fetchone()[0]
        finally:
            cursor.close()
        return (dbapi, int(version), self.commits)

    # -- dialect differences ----------------------------------------------------------------------

    @property
    def groups_commits(self) -> bool:
        """Whether concurrent small writes should share transactions (see perkflow.core.groupcommit).

        SQLite runs one writer at a time, so grouping removes a lock hand-over and a commit per request
        and loses no parallelism; PostgreSQL runs writers in parallel, and one slow item would hold
        the row locks of the whole group.
        """
        return self.is_sqlite

    def hold_code_namespace(self, conn: Connection, *, exclusive: bool) -> None:
        """Keep writers of reward coupons and writers of vouchers apart until this transaction ends.

        The two tables are unique on their own, and each writer checks the other table before
        inserting; on PostgreSQL two transactions could each check before the other committed.
        Voucher writers share the lock (they still run side by side), coupon writers take it alone,
        so a coupon upload sees every voucher committed before it and the reverse. SQLite needs
        nothing: its single writer already serialises them.
        """
        if self.is_sqlite:
            return
        function = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
        conn.execute(text(f"SELECT {function}(:key)"), {"key": CODE_NAMESPACE_LOCK})

    def for_update(self, stmt: Select[Any], *, skip_locked: bool = False) -> Select[Any]:
        """Lock the selected rows until commit. SQLite needs nothing: the writer holds the database."""
        if self.is_sqlite:
            return stmt
        return stmt.with_for_update(skip_locked=skip_locked)

    def pick_first(self, column: Any, *conditions: Any) -> Select[Any]:
        """The lowest `column` among the rows matching `conditions`, claimed for this transaction.

        PostgreSQL: ORDER BY column LIMIT 1 FOR UPDATE SKIP LOCKED, so concurrent pickers each get a
        different row without waiting. SQLite: min(column), which its single writer makes safe and
        which, unlike LIMIT (compiled as `LIMIT ? OFFSET ?`), has no hidden parameters, so the
        statement can be precompiled with `fetch_tuples`. Use it as a scalar subquery.
        """
        if self.is_sqlite:
            return select(func.min(column)).where(*conditions)
        return (
            select(column)
            .where(*conditions)
            .order_by(column)
            .limit(literal_column("1"))
            .with_for_update(skip_locked=True)
        )

    def in_list(self, column: Any, name: str) -> Any:
        """`column IN <list>` taking the whole list as one parameter (see `list_param`).

        SQLAlchemy's expanding IN compiles one bind parameter per value, which dominates the cost of
        loading a thousand rows by key; one JSON (SQLite) or array (PostgreSQL) parameter does not.
        """
        if self.is_sqlite:
            listed: Select[Any] = select(literal_column("value")).select_from(func.json_each(bindparam(name)))
            return column.in_(listed.scalar_subquery())
        return column == any_(bindparam(name))

    def list_param(self, values: Sequence[Any]) -> Any:
        return json_dumps(list(values)) if self.is_sqlite else list(values)

    def json_key_equals(self, column: Any, key: str, value: Any) -> Any:
        """`column[key] = value` compared as JSON values (None: the key is absent), alike on both.

        PostgreSQL compares jsonb to jsonb, so 3 matches 3 and 3.0 but never "3"; SQLite's
        json_extract yields typed SQL values with the same outcome (booleans as 1 and 0).
        """
        if self.is_sqlite:
            extracted = func.json_extract(column, literal(f'$."{key}"'))
            if value is None:
                return extracted.is_(None)
            return extracted == (int(value) if isinstance(value, bool) else value)
        element = column.op("->")(literal(key))
        if value is None:
            return element.is_(None)
        return element == cast(literal(json_dumps(value)), JSONB)

    def upsert(
        self, table: Table, rows: list[dict[str, Any]], *, keys: Sequence[str], update: Sequence[str]
    ) -> Any:
        """INSERT ... ON CONFLICT (keys) DO UPDATE SET the `update` columns from the new row."""
        if self.is_sqlite:
            from sqlalchemy.dialects.sqlite import insert as dialect_insert
        else:
            from sqlalchemy.dialects.postgresql import insert as dialect_insert  # type: ignore[assignment]
        stmt = dialect_insert(table).values(rows)
        return stmt.on_conflict_do_update(
            index_elements=list(keys), set_={name: getattr(stmt.excluded, name) for name in update}
        )

    def upsert_add(self, table: Table, values: dict[str, Any], *, keys: Sequence[str], add: str) -> Any:
        """INSERT the row, or add its `add` column to the existing row's (a counter)."""
        if self.is_sqlite:
            from sqlalchemy.dialects.sqlite import insert as dialect_insert
        else:
            from sqlalchemy.dialects.postgresql import insert as dialect_insert  # type: ignore[assignment]
        stmt = dialect_insert(table).values(**values)
        return stmt.on_conflict_do_update(
            index_elements=list(keys), set_={add: table.c[add] + stmt.excluded[add]}
        )

    def insert_ignore(self, table: Table, values: dict[str, Any], *, conflict_columns: Sequence[str]) -> Any:
        """INSERT that does nothing when a row with the same unique key exists."""
        if self.is_sqlite:
            from sqlalchemy.dialects.sqlite import insert as sqlite_insert

            return (
                sqlite_insert(table)
                .values(**values)
                .on_conflict_do_nothing(index_elements=list(conflict_columns))
            )
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table).values(**values).on_conflict_do_nothing(index_elements=list(conflict_columns))

    def sequence(self, conn: Connection, *, sequence: str, table: str, column: str) -> SequenceBlock:
        """Hands out increasing ids for `table.column` inside the caller's write transaction."""
        return SequenceBlock(self, conn, sequence=sequence, table=table, column=column)

    # -- following a stream in commit order ------------------------------------------------------

    def stream_after(self, txid: Any, seq: Any, position: tuple[int, int]) -> tuple[list[Any], list[Any]]:
        """Conditions and ORDER BY that page a stream past `position` = (txid, seq) so that no row a
        later page could have missed is ever served early.

        SQLite: one writer at a time takes max(seq)+1 under its lock, so seq order is commit order
        and `seq > position` is exact (txid stays NULL there). PostgreSQL: seq values are handed out
        in blocks and transactions commit in any order, so a row with a lower seq can become visible
        after a higher one was served. Each row records its writing transaction's id (`txid`, see
        WRITER_TXID_DEFAULT); only rows of transactions older than every transaction still running
        are served, in (txid, seq) order. No transaction below that horizon can commit anything
        later, so a position, once passed, has nothing left behind it. The horizon is an uncorrelated
        subquery: PostgreSQL evaluates it once, from the statement's own snapshot, as an index bound.
        """
        after_txid, after_seq = position
        if self.is_sqlite:
            return [seq > after_seq], [seq]
        return [
            txid.is_not(None),
            tuple_(txid, seq) > tuple_(after_txid, after_seq),
            txid < _PG_HORIZON,
        ], [txid, seq]

    def stream_position_after_seq(
        self, conn: Connection, txid: Any, seq: Any, after_seq: int
    ) -> tuple[int, int]:
        """A position from which `stream_after` serves every row with a seq above `after_seq`.

        Exact on SQLite. On PostgreSQL seq order is not commit order, so the position starts at the
        oldest transaction that can still hold such a row: rows of that transaction and younger ones
        with a lower seq are served again (at least once, never lost).
        """
        if self.is_sqlite or after_seq <= 0:
            return (0, max(after_seq, 0))
        oldest = conn.execute(
            select(func.least(func.min(txid), _PG_HORIZON)).where(seq > after_seq, txid.is_not(None))
        ).scalar_one()
        oldest = int(oldest)
        # Rows written before transaction ids were recorded carry 0 and were in seq order.
        return (0, after_seq) if oldest == 0 else (oldest, 0)

    # -- raw reads for hot paths -------------------------------------------------------------------

    def fetch_tuples(
        self, conn: Connection, key: str, build: Any, params: dict[str, Any]
    ) -> list[tuple[Any, ...]]:
        """Run a Core statement through the DBAPI cursor and return plain tuples.

        The statement is compiled once per `key`; values come back as the driver returns them (no
        SQLAlchemy type processing), so callers select only columns whose raw form they can use.
        """
        cached = self._compiled.get(key)
        if cached is None:
            compiled = build().compile(dialect=self.engine.dialect)
            cached = self._compiled[key] = (str(compiled), compiled.positiontup)
        sql, positions = cached
        args: Any = tuple(params[name] for name in positions) if positions else params
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute(sql, args)
            return list(cursor.fetchall())
        finally:
            cursor.close()

    # -- fast bulk writes ---------------------------------------------------------------------------

    def bulk_insert(
        self,
        conn: Connection,
        table: Table,
        columns: Sequence[str],
        rows: list[tuple[Any, ...]],
        *,
        on_conflict_do_nothing: bool = False,
    ) -> None:
        """executemany with rows already in database form (see `param_datetime` / `param_json`).

        With `on_conflict_do_nothing`, rows that would break a unique index are skipped.
        """
        if rows:
            sql = self._insert_sql(table, tuple(columns))
            conn.exec_driver_sql(sql + " ON CONFLICT DO NOTHING" if on_conflict_do_nothing else sql, rows)

    def bulk_update(
        self,
        conn: Connection,
        table: Table,
        set_columns: Sequence[str],
        key_columns: Sequence[str],
        rows: list[tuple[Any, ...]],
    ) -> None:
        """executemany UPDATE; each row is the SET values followed by the key values."""
        if rows:
            conn.exec_driver_sql(self._update_sql(table, tuple(set_columns), tuple(key_columns)), rows)

    @lru_cache(maxsize=256)  # noqa: B019 - a Database lives as long as the process
    def _insert_sql(self, table: Table, columns: tuple[str, ...]) -> str:
        marks = ", ".join([self._mark] * len(columns))
        return f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({marks})"  # noqa: S608 - metadata names

    def bulk_upsert(
        self,
        conn: Connection,
        table: Table,
        columns: Sequence[str],
        keys: Sequence[str],
        rows: list[tuple[Any, ...]],
    ) -> None:
        """executemany INSERT ... ON CONFLICT (keys) DO UPDATE (same syntax on SQLite and PostgreSQL)."""
        if rows:
            conn.exec_driver_sql(self._upsert_sql(table, tuple(columns), tuple(keys)), rows)

    @lru_cache(maxsize=256)  # noqa: B019
    def _upsert_sql(self, table: Table, columns: tuple[str, ...], keys: tuple[str, ...]) -> str:
        updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in keys)
        return f"{self._insert_sql(table, columns)} ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {updates}"

    @lru_cache(maxsize=256)  # noqa: B019
    def _update_sql(self, table: Table, set_columns: tuple[str, ...], key_columns: tuple[str, ...]) -> str:
        sets = ", ".join(f"{c} = {self._mark}" for c in set_columns)
        keys = " AND ".join(f"{c} = {self._mark}" for c in key_columns)
        return f"UPDATE {table.name} SET {sets} WHERE {keys}"  # noqa: S608 - metadata names

    @property
    def _mark(self) -> str:
        return "?" if self.is_sqlite else "%s"

    def param_datetime(self, value: datetime | None) -> Any:
        """A datetime in the form the driver stores for a UTCDateTime column."""
        if value is None:
            return None
        if self.is_sqlite:
            return value.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")
        return value

    def param_json(self, value: Any) -> Any:
        if value is None:
            return None
        if self.is_sqlite:
            return json_dumps(value)
        from psycopg.types.json import Jsonb

        return Jsonb(value, dumps=json_dumps)


# On PostgreSQL, the writing transaction's id, as a stream column's server default: it costs the insert
# a function call and nothing in Python (the migration that adds such a column sets it).
WRITER_TXID_DEFAULT = "pg_current_xact_id()::text::bigint"

# Every transaction with a lower id has ended: nothing below it can still become visible.
_PG_HORIZON = select(
    literal_column("pg_snapshot_xmin(pg_current_snapshot())::text::bigint")
).scalar_subquery()


class WriterQueue:
    """Writers of every process using one SQLite file take turns through a lock file next to it.

    SQLite makes a writer that finds the database locked sleep and poll (from 1 ms up to 100 ms), so a
    process that commits and begins again at once can starve writers in other processes for seconds.
    A blocking flock wakes the next waiter as soon as the lock is released.

    A writer that has to wait also holds a shared lock on a second file while it waits, so the
    writer before it can tell (`others_waiting`) whether it should pause before its next turn.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None
        self._waiting_fd: int | None = None
        self._pid = 0

    def _handles(self) -> tuple[int, int]:
        if self._fd is None or self._waiting_fd is None or self._pid != os.getpid():
            # A forked child needs descriptors of its own: flock belongs to the open file.
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            self._waiting_fd = os.open(self.path + ".waiting", os.O_RDWR | os.O_CREAT, 0o600)
            self._pid = os.getpid()
        return self._fd, self._waiting_fd

    def acquire(self) -> None:
        assert fcntl is not None
        fd, waiting_fd = self._handles()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        fcntl.flock(waiting_fd, fcntl.LOCK_SH)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        finally:
            fcntl.flock(waiting_fd, fcntl.LOCK_UN)

    def release(self) -> None:
        assert fcntl is not None
        fcntl.flock(self._handles()[0], fcntl.LOCK_UN)

    def others_waiting(self) -> bool:
        """Whether a writer of another process is blocked in `acquire` right now."""
        assert fcntl is not None
        waiting_fd = self._handles()[1]
        try:
            fcntl.flock(waiting_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(waiting_fd, fcntl.LOCK_UN)
        return False


class SequenceBlock:
    """Ids known before the row is written, so related rows and chains can point at it in one flush.

    SQLite: the caller holds the only write transaction, so max()+1 is safe, gap-free and in commit
    order. PostgreSQL: values come from a real sequence in blocks, so concurrent writers never collide
    (commit order may then differ from id order, as with any PostgreSQL sequence).
    """

    def __init__(self, db: Database, conn: Connection, *, sequence: str, table: str, column: str) -> None:
        self._db = db
        self._conn = conn
        self._sequence = sequence
        self._table = table
        self._column = column
        self._next: int | None = None
        self._pool: list[int] = []

    def reserve(self, count: int) -> None:
        """Fetch enough PostgreSQL sequence values for `count` upcoming takes in one round trip."""
        if not self._db.is_sqlite and len(self._pool) < count:
            self._refill(count - len(self._pool))

    def _refill(self, count: int) -> None:
        rows = self._conn.execute(
            text(f"SELECT nextval('{self._sequence}') FROM generate_series(1, :n)"),  # noqa: S608 - a fixed name
            {"n": max(count, 16)},
        ).scalars()
        self._pool = sorted((int(v) for v in rows), reverse=True) + self._pool

    def take(self, hint: int = 1) -> int:
        if self._db.is_sqlite:
            if self._next is None:
                current = self._conn.exec_driver_sql(
                    f"SELECT COALESCE(MAX({self._column}), 0) FROM {self._table}"  # noqa: S608 - fixed names
                ).scalar_one()
                self._next = int(current) + 1
            value = self._next
            self._next += 1
            return value
        if not self._pool:
            self._refill(hint)
        return self._pool.pop()
