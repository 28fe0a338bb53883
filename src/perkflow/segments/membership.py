"""Membership lookups other parts use (promotion validation rules, distributions)."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select

from perkflow.core.uow import UnitOfWork
from perkflow.segments.tables import segment_members


def is_member(uow: UnitOfWork, segment_id: str, member_id: str) -> bool:
    found = uow.conn.execute(
        select(segment_members.c.member_id).where(
            segment_members.c.segment_id == segment_id, segment_members.c.member_id == member_id
        )
    ).first()
    return found is not None


def segments_of(uow: UnitOfWork, member_id: str) -> set[str]:
    return set(
        uow.conn.execute(select(segment_members.c.segment_id).where(segment_members.c.member_id == member_id))
        .scalars()
        .all()
    )


def members_of(uow: UnitOfWork, segment_id: str, *, after: str = "", limit: int = 1000) -> list[str]:
    """A page of a segment's members in id order (for manual distributions and exports)."""
    rows: Iterable[str] = uow.conn.execute(
        select(segment_members.c.member_id)
        .where(segment_members.c.segment_id == segment_id, segment_members.c.member_id > after)
        .order_by(segment_members.c.member_id)
        .limit(limit)
    ).scalars()
    return list(rows)
