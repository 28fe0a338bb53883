"""Segment definitions, static membership by API and webhook, listings and previews.

Services take the unit of work first and never commit. Membership changes of both kinds go through
`evaluation.apply_changes`, so every one is a segment_entered / segment_left activity.
"""

from __future__ import annotations

import base64
import re
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from perkflow.conditions import ConditionError
from perkflow.core.clock import isoformat_z
from perkflow.core.context import AppContext
from perkflow.core.errors import Conflict, InvalidCursor, InvalidInput, NotFound
from perkflow.core.ids import new_id
from perkflow.core.security import random_secret
from perkflow.core.uow import UnitOfWork
from perkflow.members.repository import MemberRepository
from perkflow.members.service import FieldCatalog
from perkflow.members.tables import members
from perkflow.programs.service import ProgramCatalog
from perkflow.segments.evaluation import (
    RuleSegment,
    SegmentRef,
    apply_changes,
    current_memberships,
    decide,
    index_cache,
)
from perkflow.segments.rules import RuleSet, parse_rules
from perkflow.segments.runs import evaluate_batch, pending_state
from perkflow.segments.tables import segment_members, segments

SEGMENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,63}$")
KINDS = ("rule", "static")
MAX_BULK_MEMBERS = 1000


@dataclass(slots=True)
class Segment:
    id: str
    name: str
    description: str
    kind: str
    rules: dict[str, Any] | None
    program_id: str | None
    version: int
    evaluation: dict[str, Any] | None
    swept_at: datetime | None
    webhook_secret: str | None  # sealed
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: Any) -> Segment:
        return cls(
            id=row.id,
            name=row.name,
            description=row.description,
            kind=row.kind,
            rules=row.rules,
            program_id=row.program_id,
            version=row.version,
            evaluation=row.evaluation,
            swept_at=row.swept_at,
            webhook_secret=row.webhook_secret,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )

    @property
    def ref(self) -> SegmentRef:
        return SegmentRef(self.id, self.name)

    def to_public(self, member_count: int) -> dict[str, Any]:
        evaluation = None
        if self.evaluation:
            evaluation = {k: v for k, v in self.evaluation.items() if k not in ("after_pk", "version")}
        return {
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "kind": self.kind,
            "rules": self.rules,
            "program_id": self.program_id,
            "version": self.version,
            "member_count": member_count,
            "time_relative": parse_rules(self.rules, None).time_relative if self.rules else False,
            "evaluation": evaluation,
            "evaluated_at": isoformat_z(self.swept_at) if self.swept_at else None,
            "webhook": {
                "url": f"/api/v1/segments/{self.id}/members",
                "signature_header": "X-Perkflow-Signature",
                "secret_set": self.webhook_secret is not None,
            },
            "created_at": isoformat_z(self.created_at),
            "updated_at": isoformat_z(self.updated_at),
        }


def not_found(segment_id: str) -> NotFound:
    return NotFound(
        f"segment {segment_id!r} does not exist", code="segment_not_found", details={"segment_id": segment_id}
    )


def check_rules(uow: UnitOfWork, raw: Any) -> RuleSet:
    try:
        return parse_rules(raw, uow.component(FieldCatalog).fields)
    except ConditionError as exc:
        raise InvalidInput(
            f"invalid segment rules: {exc}",
            code="invalid_rules",
            details={"where": exc.where, "message": exc.message},
        ) from exc


def _program_for(uow: UnitOfWork, rules: RuleSet, program_id: str | None) -> str | None:
    """The program whose standing the rules read: the one named, else the default (kept on the
    segment, so a later change of the default program does not change what the segment means)."""
    catalog = uow.component(ProgramCatalog)
    if program_id is not None:
        return catalog.get(program_id).id
    if not rules.needs_program:
        return None
    return catalog.resolve(None).id


def get_segment(uow: UnitOfWork, segment_id: str, *, lock: bool = False) -> Segment:
    stmt = select(segments).where(segments.c.id == segment_id)
    row = uow.conn.execute(uow.db.for_update(stmt) if lock else stmt).first()
    if row is None:
        raise not_found(segment_id)
    return Segment.from_row(row)


def member_counts(uow: UnitOfWork, segment_ids: list[str]) -> dict[str, int]:
    if not segment_ids:
        return {}
    rows = uow.conn.execute(
        select(segment_members.c.segment_id, func.count())
        .where(uow.db.in_list(segment_members.c.segment_id, "ids"))
        .group_by(segment_members.c.segment_id),
        {"ids": uow.db.list_param(segment_ids)},
    )
    found = {row[0]: row[1] for row in rows}
    return {segment_id: found.get(segment_id, 0) for segment_id in segment_ids}


def public(uow: UnitOfWork, segment: Segment) -> dict[str, Any]:
    return segment.to_public(member_counts(uow, [segment.id])[segment.id])


def _member_total(uow: UnitOfWork) -> int:
    return int(uow.conn.execute(select(func.count()).select_from(members)).scalar_one())


def _compute_now_if_small(uow: UnitOfWork, segment_id: str) -> None:
    """Compute membership in this transaction when the member base fits in one batch; otherwise
    the run stays pending for the background jobs (or POST /segments/{id}/evaluate)."""
    total = _member_total(uow)
    if total <= uow.ctx.settings.segment_batch_size:
        evaluate_batch(uow, segment_id, total + 1)


def create_segment(uow: UnitOfWork, spec: dict[str, Any]) -> tuple[Segment, str | None]:
    """Create a segment; returns it and, when one was asked for, its webhook secret (shown once)."""
    segment_id = spec.get("id") or new_id("seg")
    if not SEGMENT_ID.match(segment_id):
        raise InvalidInput(
            "segment ids are letters, digits, '-' and '_' (at most 64)", code="invalid_segment_id"
        )
    raw_rules = spec.get("rules")
    kind = spec.get("kind") or ("rule" if raw_rules is not None else "static")
    if kind not in KINDS:
        raise InvalidInput("kind is rule or static", code="invalid_input")
    rules: RuleSet | None = None
    program_id = spec.get("program_id")
    if kind == "rule":
        if raw_rules is None:
            raise InvalidInput("a rule segment needs rules", code="invalid_rules")
        rules = check_rules(uow, raw_rules)
        program_id = _program_for(uow, rules, program_id)
    else:
        if raw_rules is not None:
            raise InvalidInput(
                "a static segment has no rules: its members are added by API", code="invalid_rules"
            )
        if program_id is not None:
            program_id = uow.component(ProgramCatalog).get(program_id).id
    secret = random_secret() if spec.get("generate_webhook_secret") else None
    now = uow.now
    values = {
        "id": segment_id,
        "name": spec["name"],
        "description": spec.get("description") or "",
        "kind": kind,
        "rules": rules.to_dict() if rules else None,
        "program_id": program_id,
        "webhook_secret": _seal(uow, secret) if secret else None,
        "version": 1,
        "evaluation": pending_state(1, "created", now) if kind == "rule" else None,
        "created_at": now,
        "updated_at": now,
    }
    _ensure_free(uow, segment_id, spec["name"])
    try:
        with uow.conn.begin_nested():
            uow.conn.execute(insert(segments).values(**values))
    except IntegrityError as exc:
        raise Conflict("a segment with this id or name already exists", code="segment_exists") from exc
    if kind == "rule":
        uow.after_commit(index_cache(uow.ctx).invalidate)
        _compute_now_if_small(uow, segment_id)
    return get_segment(uow, segment_id), secret


def _ensure_free(uow: UnitOfWork, segment_id: str | None, name: str | None) -> None:
    if (
        segment_id is not None
        and uow.conn.execute(select(segments.c.id).where(segments.c.id == segment_id)).first() is not None
    ):
        raise Conflict(
            f"segment {segment_id!r} already exists", code="segment_exists", details={"id": segment_id}
        )
    if name is not None:
        taken = uow.conn.execute(select(segments.c.id).where(segments.c.name == name)).scalar()
        if taken is not None:
            raise Conflict(
                f"segment {taken!r} already has the name {name!r}",
                code="segment_name_taken",
                details={"id": taken, "name": name},
            )


def list_segments(
    uow: UnitOfWork, *, limit: int = 100, after: str | None = None, kind: str | None = None
) -> tuple[list[dict[str, Any]], str | None]:
    stmt = select(segments).order_by(segments.c.id).limit(limit + 1)
    if after:
        stmt = stmt.where(segments.c.id > after)
    if kind:
        stmt = stmt.where(segments.c.kind == kind)
    found = [Segment.from_row(row) for row in uow.conn.execute(stmt)]
    more = len(found) > limit
    found = found[:limit]
    counts = member_counts(uow, [s.id for s in found])
    return [s.to_public(counts[s.id]) for s in found], (found[-1].id if more and found else None)


def update_segment(uow: UnitOfWork, segment_id: str, changes: dict[str, Any]) -> Segment:
    """Change a segment's name, description, rules or program. New rules (or program) start a new
    evaluation run; a rename does not, but later activities carry the new name."""
    segment = get_segment(uow, segment_id, lock=True)
    values: dict[str, Any] = {}
    if "name" in changes and changes["name"] != segment.name:
        _ensure_free(uow, None, changes["name"])
        values["name"] = changes["name"]
    if "description" in changes:
        values["description"] = changes["description"] or ""
    reevaluate = False
    if "rules" in changes or "program_id" in changes:
        if segment.kind != "rule":
            raise InvalidInput(
                "a static segment has no rules or program to change; create a rule segment instead",
                code="segment_not_rule",
            )
        rules = check_rules(uow, changes["rules"]) if "rules" in changes else parse_rules(segment.rules, None)
        # New rules keep the segment's program unless the change names another one.
        named = changes.get("program_id", segment.program_id)
        program_id = _program_for(uow, rules, named)
        if rules.to_dict() != segment.rules or program_id != segment.program_id:
            values["rules"] = rules.to_dict()
            values["program_id"] = program_id
            reevaluate = True
    if not values:
        return segment
    version = segment.version + 1
    values.update(version=version, updated_at=uow.now)
    if reevaluate:
        values["evaluation"] = pending_state(version, "rules_changed", uow.now)
    elif segment.evaluation:
        # The rules the run works for did not change: it continues under the new version.
        values["evaluation"] = {**segment.evaluation, "version": version}
    try:
        with uow.conn.begin_nested():
            uow.conn.execute(update(segments).where(segments.c.id == segment_id).values(**values))
    except IntegrityError as exc:
        raise Conflict("another segment has this name", code="segment_name_taken") from exc
    if segment.kind == "rule":
        uow.after_commit(index_cache(uow.ctx).invalidate)
    if reevaluate:
        _compute_now_if_small(uow, segment_id)
    return get_segment(uow, segment_id)


def delete_segment(uow: UnitOfWork, segment_id: str) -> None:
    """Delete a segment and its memberships (without segment_left activities: the segment is gone,
    not left). Refused while a distribution, a campaign's validation rules or a live workflow uses it,
    since each of them would silently stop doing what its owner set it up for."""
    segment = get_segment(uow, segment_id, lock=True)
    users = segment_users(uow, segment_id)
    if users:
        named = ", ".join(sorted(users))
        raise Conflict(
            f"segment {segment_id!r} is used by {named}; change or delete them first",
            code="segment_in_use",
            details=users,
        )
    uow.conn.execute(delete(segment_members).where(segment_members.c.segment_id == segment_id))
    uow.conn.execute(delete(segments).where(segments.c.id == segment_id))
    if segment.kind == "rule":
        uow.after_commit(index_cache(uow.ctx).invalidate)


def segment_users(uow: UnitOfWork, segment_id: str) -> dict[str, list[str]]:
    """What refers to a segment: distributions, campaigns (validation rule) and workflows that are not
    archived (a segment trigger in their latest or active version)."""
    from perkflow.promotions.tables import campaigns, distributions
    from perkflow.workflows.tables import workflow_versions, workflows

    found: dict[str, list[str]] = {}
    rows = uow.conn.execute(
        select(distributions.c.id)
        .where(distributions.c.segment_id == segment_id)
        .order_by(distributions.c.id)
    ).scalars()
    if listed := list(rows):
        found["distributions"] = listed
    live_campaigns = uow.conn.execute(
        select(campaigns.c.id, campaigns.c.rules)
        .where(campaigns.c.deleted_at.is_(None))
        .order_by(campaigns.c.id)
    )
    if listed := [row.id for row in live_campaigns if (row.rules or {}).get("segment_id") == segment_id]:
        found["campaigns"] = listed
    version_in_use = (workflow_versions.c.version == workflows.c.latest_version) | (
        workflow_versions.c.version == workflows.c.active_version
    )
    rows = uow.conn.execute(
        select(workflows.c.id)
        .distinct()
        .join(workflow_versions, workflow_versions.c.workflow_id == workflows.c.id)
        .where(
            workflows.c.status != "archived",
            version_in_use,
            workflow_versions.c.trigger_type.in_(("segment_entered", "segment_left")),
            workflow_versions.c.trigger_key == segment_id,
        )
        .order_by(workflows.c.id)
    ).scalars()
    if listed := list(rows):
        found["workflows"] = listed
    return found


# -- webhook secrets ----------------------------------------------------------------------------------------


def _seal(uow: UnitOfWork, secret: str) -> str:
    from perkflow.sync.integrations import vault

    return vault(uow.ctx).seal({"webhook_secret": secret})


def open_secret(uow: UnitOfWork, segment: Segment) -> str | None:
    if segment.webhook_secret is None:
        return None
    from perkflow.sync.integrations import vault

    return str(vault(uow.ctx).open(segment.webhook_secret)["webhook_secret"])


def rotate_webhook_secret(uow: UnitOfWork, segment_id: str) -> str:
    """A new signing secret for the segment's inbound webhook (the old one stops working now)."""
    get_segment(uow, segment_id, lock=True)
    secret = random_secret()
    uow.conn.execute(
        update(segments).where(segments.c.id == segment_id).values(webhook_secret=_seal(uow, secret))
    )
    return secret


def remove_webhook_secret(uow: UnitOfWork, segment_id: str) -> None:
    get_segment(uow, segment_id, lock=True)
    uow.conn.execute(update(segments).where(segments.c.id == segment_id).values(webhook_secret=None))


# -- static membership --------------------------------------------------------------------------------------


def find_member(uow: UnitOfWork, *, member_id: str | None = None, email: str | None = None) -> str:
    """The member an inbound request names by id (wins when both are given) or email; never creates."""
    if member_id is not None:
        if uow.component(MemberRepository).get(member_id) is None:
            raise NotFound(
                f"member {member_id!r} does not exist",
                code="member_not_found",
                details={"user_id": member_id},
            )
        return member_id
    assert email is not None
    normalized = email.strip().lower()
    found = (
        uow.conn.execute(select(members.c.id).where(members.c.email == normalized).limit(2)).scalars().all()
    )
    if not found:
        raise NotFound(
            f"no member has the email {normalized!r}", code="member_not_found", details={"email": normalized}
        )
    if len(found) > 1:
        raise Conflict(
            f"several members have the email {normalized!r}; send the user_id",
            code="email_ambiguous",
            details={"email": normalized},
        )
    return str(found[0])


def _static(uow: UnitOfWork, segment_id: str) -> Segment:
    segment = get_segment(uow, segment_id)
    if segment.kind != "static":
        raise Conflict(
            f"segment {segment_id!r} is rule-based: its members follow its rules",
            code="segment_not_static",
            details={"segment_id": segment_id},
        )
    return segment


def add_members(
    uow: UnitOfWork, segment_id: str, member_ids: list[str], *, via: str = "api"
) -> list[dict[str, Any]]:
    """Add existing members to a static segment. Already present members are reported as such
    (inbound webhooks are delivered at least once); unknown ones fail the whole request."""
    segment = _static(uow, segment_id)
    wanted = list(dict.fromkeys(member_ids))
    known = uow.component(MemberRepository).load_many(wanted)
    unknown = [m for m in wanted if known.get(m) is None]
    if unknown:
        raise NotFound(
            f"{len(unknown)} of these members do not exist; none was added",
            code="member_not_found",
            details={"unknown": unknown[:100]},
        )
    present = current_memberships(uow, wanted, [segment.id])
    new = [m for m in wanted if (segment.id, m) not in present]
    apply_changes(uow, [(segment.ref, m) for m in new], [], via=via)
    added = set(new)
    return [
        {"segment_id": segment.id, "member_id": m, "status": "added" if m in added else "already_member"}
        for m in wanted
    ]


def remove_members(uow: UnitOfWork, segment_id: str, member_ids: list[str]) -> list[dict[str, Any]]:
    segment = _static(uow, segment_id)
    wanted = list(dict.fromkeys(member_ids))
    present = current_memberships(uow, wanted, [segment.id])
    gone = [m for m in wanted if (segment.id, m) in present]
    apply_changes(uow, [], [(segment.ref, m) for m in gone], via="api")
    removed = set(gone)
    return [
        {"segment_id": segment.id, "member_id": m, "status": "removed" if m in removed else "not_member"}
        for m in wanted
    ]


# -- reading membership ----------------------------------------------------------------------------------


def _encode_cursor(member_id: str) -> str:
    return base64.urlsafe_b64encode(f"s:{member_id}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> str:
    if len(cursor) > 400:
        raise InvalidCursor()
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidCursor() from exc
    prefix, _, member_id = raw.partition(":")
    if prefix != "s" or not member_id:
        raise InvalidCursor()
    return member_id


def list_segment_members(
    uow: UnitOfWork, segment_id: str, *, limit: int = 100, cursor: str | None = None
) -> dict[str, Any]:
    get_segment(uow, segment_id)
    stmt = (
        select(segment_members.c.member_id, segment_members.c.source, segment_members.c.added_at)
        .where(segment_members.c.segment_id == segment_id)
        .order_by(segment_members.c.member_id)
        .limit(limit + 1)
    )
    if cursor:
        stmt = stmt.where(segment_members.c.member_id > _decode_cursor(cursor))
    rows = uow.conn.execute(stmt).all()
    page = rows[:limit]
    return {
        "data": [
            {"member_id": r.member_id, "source": r.source, "added_at": isoformat_z(r.added_at)} for r in page
        ],
        "next_cursor": _encode_cursor(page[-1].member_id) if len(rows) > limit and page else None,
    }


def segments_of_member(uow: UnitOfWork, member_id: str) -> list[dict[str, Any]]:
    if uow.component(MemberRepository).get(member_id) is None:
        raise NotFound(f"member {member_id!r} does not exist", code="member_not_found")
    rows = uow.conn.execute(
        select(
            segments.c.id,
            segments.c.name,
            segments.c.kind,
            segment_members.c.source,
            segment_members.c.added_at,
        )
        .join(segments, segments.c.id == segment_members.c.segment_id)
        .where(segment_members.c.member_id == member_id)
        .order_by(segments.c.id)
    )
    return [
        {
            "segment_id": r.id,
            "name": r.name,
            "kind": r.kind,
            "source": r.source,
            "added_at": isoformat_z(r.added_at),
        }
        for r in rows
    ]


def membership(uow: UnitOfWork, segment_id: str, member_id: str) -> dict[str, Any]:
    """Whether one member is in one segment (and since when)."""
    get_segment(uow, segment_id)
    if uow.component(MemberRepository).get(member_id) is None:
        raise NotFound(f"member {member_id!r} does not exist", code="member_not_found")
    row = uow.conn.execute(
        select(segment_members.c.source, segment_members.c.added_at).where(
            segment_members.c.segment_id == segment_id, segment_members.c.member_id == member_id
        )
    ).first()
    return {
        "segment_id": segment_id,
        "member_id": member_id,
        "member": row is not None,
        "source": row.source if row else None,
        "added_at": isoformat_z(row.added_at) if row else None,
    }


# -- previews ---------------------------------------------------------------------------------------------


def preview(
    ctx: AppContext,
    raw_rules: Any,
    *,
    program_id: str | None = None,
    sample_size: int = 10,
    max_members: int = 100_000,
    max_seconds: float = 10.0,
) -> dict[str, Any]:
    """How many members a rule set matches now, with a sample, without saving anything.

    Members are read in batches, each in a short read transaction of its own so a preview of a large
    base holds no snapshot open; it stops after `max_members` or `max_seconds` (`complete` says
    whether every member was seen).
    """
    deadline = time.monotonic() + max_seconds
    with ctx.uow(write=False) as uow:
        rules = check_rules(uow, raw_rules)
        resolved = _program_for(uow, rules, program_id)
        total = _member_total(uow)
    segment = RuleSegment("preview", "preview", resolved, rules)
    batch = ctx.settings.segment_batch_size
    count = evaluated = after = 0
    sample: list[str] = []
    complete = False
    while not complete and evaluated < max_members and time.monotonic() < deadline:
        wanted = min(batch, max_members - evaluated)
        with ctx.uow(write=False) as uow:
            page = uow.conn.execute(
                select(members.c.pk, members.c.id)
                .where(members.c.pk > after)
                .order_by(members.c.pk)
                .limit(wanted)
            ).all()
            decided = decide(uow, dict.fromkeys((row.id for row in page), (segment,))) if page else {}
        for row in page:
            if decided[row.id]:
                count += 1
                if len(sample) < sample_size:
                    sample.append(row.id)
        evaluated += len(page)
        complete = len(page) < wanted
        if page:
            after = page[-1].pk
    complete = complete or evaluated >= total
    return {
        "count": count,
        "evaluated": evaluated,
        "total": max(total, evaluated),
        "complete": complete,
        "sample": sample,
        "program_id": resolved,
        "rules": rules.to_dict(),
        "time_relative": rules.time_relative,
    }
