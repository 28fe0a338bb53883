"""Members as the unit of work sees them: loaded once, changed in memory, written back at flush."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import bindparam, insert, select

from perkflow.core.clock import isoformat_z
from perkflow.core.uow import UnitOfWork
from perkflow.members.tables import members


@dataclass(slots=True)
class Member:
    pk: int
    id: str
    email: str | None
    first_name: str | None
    last_name: str | None
    birth_date: date | None
    status: str
    fields: dict[str, Any]
    last_activity_seq: int | None
    created_at: datetime
    updated_at: datetime
    dirty: bool = False
    locked: bool = False

    def mark_dirty(self) -> None:
        # Only a member read under lock may be written back, or a concurrent change would be lost.
        if not self.locked:
            raise RuntimeError(f"member {self.id} was changed without being locked")
        self.dirty = True

    def note_activity(self, activity_type: str, occurred_epoch: int) -> None:
        """Members keep no activity statistics; program accounts do."""

    @property
    def active(self) -> bool:
        return self.status == "active"

    def profile(self) -> dict[str, Any]:
        """The member's attributes as workflows, segments and CEP sync read them."""
        return {
            "id": self.id,
            "email": self.email,
            "first_name": self.first_name,
            "last_name": self.last_name,
            "birth_date": self.birth_date.isoformat() if self.birth_date else None,
            "status": self.status,
            **self.fields,
        }

    def to_public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "email": self.email,
            "first_name": self.first_name,
            "last_name": self.last_name,
            "birth_date": self.birth_date.isoformat() if self.birth_date else None,
            "status": self.status,
            "fields": self.fields,
            "created_at": isoformat_z(self.created_at),
            "updated_at": isoformat_z(self.updated_at),
        }

    @classmethod
    def from_row(cls, row: Any) -> Member:
        return cls(
            pk=row.pk,
            id=row.id,
            email=row.email,
            first_name=row.first_name,
            last_name=row.last_name,
            birth_date=row.birth_date,
            status=row.status,
            fields=row.fields or {},
            last_activity_seq=row.last_activity_seq,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )


UPDATE_COLUMNS = (
    "email",
    "first_name",
    "last_name",
    "birth_date",
    "status",
    "fields",
    "last_activity_seq",
    "updated_at",
)


# Loading one member is on the publish and event hot paths, where building a select and computing
# its cache key cost more than running it: the statements are built once per database kind.
_STATEMENTS: dict[tuple[str, bool, bool], Any] = {}


def _load_statement(db: Any, *, lock: bool, single: bool) -> Any:
    key = (db.dialect_name, lock, single)
    stmt = _STATEMENTS.get(key)
    if stmt is None:
        where = (
            members.c.id == bindparam("id") if single else members.c.id.in_(bindparam("ids", expanding=True))
        )
        stmt = select(members).where(where).order_by(members.c.id)
        if lock:
            stmt = db.for_update(stmt)
        _STATEMENTS[key] = stmt
    return stmt


class MemberRepository:
    """Unit-of-work component: an identity map of members with deferred, batched updates."""

    def __init__(self, uow: UnitOfWork) -> None:
        self.uow = uow
        self._by_id: dict[str, Member | None] = {}

    def statuses(self) -> dict[str, str]:
        """The status of every member this unit of work has loaded, by member id."""
        return {m.id: m.status for m in self._by_id.values() if m is not None}

    def get(self, member_id: str) -> Member | None:
        if member_id not in self._by_id:
            self.load_many([member_id])
        return self._by_id[member_id]

    def get_for_update(self, member_id: str) -> Member | None:
        """The member, locked until commit so it may be changed."""
        cached = self._by_id.get(member_id)
        if cached is not None and cached.locked:
            return cached
        self.load_many([member_id], lock=True)
        return self._by_id[member_id]

    def load_many(self, member_ids: Iterable[str], *, lock: bool = False) -> dict[str, Member | None]:
        lock = lock and self.uow.write
        wanted = sorted(
            m for m in set(member_ids) if m not in self._by_id or (lock and not self._is_locked(m))
        )
        if wanted:
            single = len(wanted) == 1
            stmt = _load_statement(self.uow.db, lock=lock, single=single)
            params = {"id": wanted[0]} if single else {"ids": wanted}
            found = {row.id: Member.from_row(row) for row in self.uow.conn.execute(stmt, params)}
            for member_id in wanted:
                member = found.get(member_id)
                if member is not None:
                    member.locked = lock or self.uow.db.is_sqlite
                    cached = self._by_id.get(member_id)
                    if cached is not None:
                        # Refresh in place: callers may already hold this object.
                        for name in Member.__slots__:
                            setattr(cached, name, getattr(member, name))
                        member = cached
                self._by_id[member_id] = member
        return self._by_id

    def _is_locked(self, member_id: str) -> bool:
        cached = self._by_id.get(member_id)
        return cached is not None and cached.locked

    def add(
        self,
        member_id: str,
        *,
        email: str | None = None,
        first_name: str | None = None,
        last_name: str | None = None,
        birth_date: date | None = None,
        status: str = "active",
        fields: dict[str, Any] | None = None,
    ) -> Member:
        """Insert a member now (other rows reference it by foreign key)."""
        now = self.uow.now
        values = {
            "id": member_id,
            "email": email,
            "first_name": first_name,
            "last_name": last_name,
            "birth_date": birth_date,
            "status": status,
            "fields": fields or {},
            "last_activity_seq": None,
            "created_at": now,
            "updated_at": now,
        }
        pk = self.uow.conn.execute(insert(members).values(**values).returning(members.c.pk)).scalar_one()
        member = Member(pk=pk, locked=True, **values)  # type: ignore[arg-type]
        self._by_id[member_id] = member
        return member

    def before_commit(self) -> bool:
        return False

    def flush(self) -> None:
        dirty = [m for m in self._by_id.values() if m is not None and m.dirty]
        if not dirty:
            return
        db = self.uow.db
        rows = []
        for m in dirty:
            m.dirty = False
            rows.append(
                (
                    m.email,
                    m.first_name,
                    m.last_name,
                    m.birth_date.isoformat() if (m.birth_date and db.is_sqlite) else m.birth_date,
                    m.status,
                    db.param_json(m.fields),
                    m.last_activity_seq,
                    db.param_datetime(m.updated_at),
                    m.id,
                )
            )
        db.bulk_update(self.uow.conn, members, UPDATE_COLUMNS, ("id",), rows)
