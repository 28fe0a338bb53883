"""Member profiles, the custom field catalogue, external identities and member listing."""

from __future__ import annotations

import base64
import re
from datetime import date
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.exc import IntegrityError

from perkflow.activity.stream import Activity, ActivityLog
from perkflow.core.errors import Conflict, InvalidCursor, InvalidInput, NotFound
from perkflow.core.limits import INT64_MAX
from perkflow.core.uow import UnitOfWork
from perkflow.ledger.tables import accounts
from perkflow.members.fields import (
    BUILTIN_FIELDS,
    FIELD_KEY,
    FIELD_TYPES,
    MEMBER_ID_PATTERN,
    MEMBER_ID_RULE,
    FieldValueError,
    is_member_id,
    normalize_value,
)
from perkflow.members.repository import Member, MemberRepository
from perkflow.members.tables import field_definitions, member_identities, members

EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}$")
PROFILE_COLUMNS = ("email", "first_name", "last_name", "birth_date")
STATUSES = ("active", "blocked")
MAX_CURSOR = 64
IDENTITY_ADDED = "identity_added"
IDENTITY_REMOVED = "identity_removed"


class FieldCatalog:
    """Unit-of-work component: the custom field definitions, loaded on first use."""

    def __init__(self, uow: UnitOfWork) -> None:
        self.uow = uow
        self._fields: dict[str, dict[str, Any]] | None = None

    @property
    def fields(self) -> dict[str, dict[str, Any]]:
        if self._fields is None:
            self._fields = {
                row.key: {
                    "key": row.key,
                    "label": row.label,
                    "type": row.type,
                    "description": row.description,
                }
                for row in self.uow.conn.execute(select(field_definitions).order_by(field_definitions.c.key))
            }
        return self._fields

    def before_commit(self) -> bool:
        return False

    def flush(self) -> None:
        return None


def define_field(
    uow: UnitOfWork, key: str, type: str, label: str | None = None, description: str = ""
) -> dict[str, Any]:
    if not FIELD_KEY.match(key):
        raise InvalidInput(
            "field keys are lower-case letters, digits and underscores, starting with a letter (max 64)",
            code="invalid_field",
        )
    if key in BUILTIN_FIELDS:
        raise Conflict(f"{key!r} is a built-in member attribute", code="field_reserved")
    if type not in FIELD_TYPES:
        raise InvalidInput(
            f"unknown field type {type!r}", code="invalid_field", details={"allowed": FIELD_TYPES}
        )
    try:
        uow.conn.execute(
            insert(field_definitions).values(
                key=key,
                type=type,
                label=label or key.replace("_", " ").capitalize(),
                description=description,
                created_at=uow.now,
            )
        )
    except IntegrityError as exc:
        raise Conflict(f"field {key!r} already exists", code="field_exists") from exc
    uow.component(FieldCatalog)._fields = None
    return uow.component(FieldCatalog).fields[key]


def delete_field(uow: UnitOfWork, key: str) -> None:
    if uow.conn.execute(delete(field_definitions).where(field_definitions.c.key == key)).rowcount == 0:
        raise NotFound(f"field {key!r} does not exist", code="field_not_found")
    uow.component(FieldCatalog)._fields = None


def normalize_profile(
    uow: UnitOfWork, data: dict[str, Any], *, ignore: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """Validate profile data (built-in attributes and catalogue fields) and return it normalised.

    Every problem is reported at once, keyed by field, so a caller can fix a payload in one go.
    """
    catalog = uow.component(FieldCatalog).fields
    clean: dict[str, Any] = {}
    problems: dict[str, str] = {}
    for key, value in data.items():
        if key in ignore:
            continue
        try:
            if key == "email":
                if value is not None and (not isinstance(value, str) or not EMAIL.match(value)):
                    raise FieldValueError("expected an email address")
                clean[key] = value.strip().lower() if isinstance(value, str) else None
            elif key in ("first_name", "last_name"):
                if value is not None and (not isinstance(value, str) or len(value) > 200):
                    raise FieldValueError("expected a string of at most 200 characters")
                clean[key] = value
            elif key == "birth_date":
                clean[key] = None if value is None else date.fromisoformat(normalize_value("date", value))
            elif key in catalog:
                clean[key] = normalize_value(catalog[key]["type"], value)
            else:
                raise FieldValueError(
                    "not a member attribute or a field of the catalogue (see /api/v1/fields)"
                )
        except FieldValueError as exc:
            problems[key] = str(exc)
    if problems:
        raise InvalidInput("some member fields are invalid", code="invalid_fields", details=problems)
    return clean


def apply_profile(member: Member, changes: dict[str, Any], *, now: Any) -> dict[str, Any]:
    """Apply normalised changes to a member; returns {field: new value} for what actually changed."""
    changed: dict[str, Any] = {}
    for key, value in changes.items():
        if key in PROFILE_COLUMNS:
            if getattr(member, key) != value:
                setattr(member, key, value)
                changed[key] = value.isoformat() if isinstance(value, date) else value
        elif value is None:
            if key in member.fields:
                member.fields = {k: v for k, v in member.fields.items() if k != key}
                changed[key] = None
        elif member.fields.get(key) != value:
            member.fields = {**member.fields, key: value}
            changed[key] = value
    if changed:
        member.updated_at = now
        member.mark_dirty()
    return changed


def record_profile_change(
    uow: UnitOfWork,
    member: Member,
    changed: dict[str, Any],
    *,
    source: str,
    event_id: str | None = None,
    occurred_at: Any = None,
) -> Activity:
    return uow.component(ActivityLog).record(
        type="profile",
        member_id=member.id,
        program_id=None,
        chain=member,
        data=changed,
        effects={"changed": sorted(changed)},
        occurred_at=occurred_at,
        source=source,
        event_id=event_id,
    )


def create_member(uow: UnitOfWork, spec: dict[str, Any], *, source: str = "api") -> Member:
    repo = uow.component(MemberRepository)
    member_id = spec["id"]
    if not is_member_id(member_id):
        raise InvalidInput(
            f"a member id is {MEMBER_ID_RULE}",
            code="invalid_member_id",
            details={"member_id": str(member_id)[:200], "pattern": MEMBER_ID_PATTERN},
        )
    if repo.get(member_id) is not None:
        raise Conflict(f"member {member_id!r} already exists", code="member_exists")
    profile = normalize_profile(uow, {k: v for k, v in spec.items() if k in PROFILE_COLUMNS})
    fields = normalize_profile(uow, spec.get("fields") or {})
    status = spec.get("status") or "active"
    if status not in STATUSES:
        raise InvalidInput(f"status must be one of {', '.join(STATUSES)}", code="invalid_status")
    try:
        member = repo.add(
            member_id, status=status, fields={k: v for k, v in fields.items() if v is not None}, **profile
        )
    except IntegrityError as exc:
        raise Conflict(f"member {member_id!r} already exists", code="member_exists") from exc
    record_profile_change(uow, member, member.profile(), source=source)
    for identity in spec.get("identities") or []:
        add_identity(
            uow, member_id, identity["external_source"], identity["external_source_id"], source=source
        )
    return member


def update_member(uow: UnitOfWork, member_id: str, spec: dict[str, Any], *, source: str = "api") -> Member:
    member = uow.component(MemberRepository).get_for_update(member_id)
    if member is None:
        raise NotFound(f"member {member_id!r} does not exist", code="member_not_found")
    changes = normalize_profile(uow, {k: v for k, v in spec.items() if k in PROFILE_COLUMNS})
    changes.update(normalize_profile(uow, spec.get("fields") or {}))
    changed = apply_profile(member, changes, now=uow.now)
    status = spec.get("status")
    if status is not None and status != member.status:
        if status not in STATUSES:
            raise InvalidInput(f"status must be one of {', '.join(STATUSES)}", code="invalid_status")
        member.status = status
        member.updated_at = uow.now
        member.mark_dirty()
        changed["status"] = status
    if changed:
        record_profile_change(uow, member, changed, source=source)
    return member


def check_identity(source_name: Any, source_id: Any) -> None:
    """The bounds the API's Identity shape declares, for callers that do not come through it."""
    for name, value, limit in (
        ("external_source", source_name, 100),
        ("external_source_id", source_id, 255),
    ):
        if not isinstance(value, str) or not value.strip() or len(value) > limit:
            raise InvalidInput(
                f"{name} must be a non-blank string of at most {limit} characters",
                code="invalid_identity",
                details={"field": name},
            )


def _record_identity(uow: UnitOfWork, member: Member, kind: str, pair: dict[str, str], source: str) -> None:
    # On the member's chain like profile changes, so the timeline, sync mappings and workflow
    # triggers see who a member is known as, and when that changed.
    uow.component(ActivityLog).record(
        type=kind, member_id=member.id, program_id=None, chain=member, data=pair, source=source
    )


def add_identity(
    uow: UnitOfWork, member_id: str, source_name: str, source_id: str, *, source: str = "api"
) -> dict[str, Any]:
    """Attach an (external_source, external_source_id) pair; each pair belongs to one member only."""
    check_identity(source_name, source_id)
    owner = uow.conn.execute(
        select(member_identities.c.member_id).where(
            member_identities.c.external_source == source_name,
            member_identities.c.external_source_id == source_id,
        )
    ).scalar()
    if owner is not None:
        raise Conflict(
            f"external identity ({source_name}, {source_id}) already belongs to member {owner!r}",
            code="identity_taken",
            details={"external_source": source_name, "external_source_id": source_id, "member_id": owner},
        )
    member = uow.component(MemberRepository).get_for_update(member_id)
    if member is None:
        raise NotFound(f"member {member_id!r} does not exist", code="member_not_found")
    try:
        with uow.conn.begin_nested():
            uow.conn.execute(
                insert(member_identities).values(
                    member_id=member_id,
                    external_source=source_name,
                    external_source_id=source_id,
                    created_at=uow.now,
                )
            )
    except IntegrityError as exc:
        raise Conflict(
            f"external identity ({source_name}, {source_id}) already belongs to another member",
            code="identity_taken",
            details={"external_source": source_name, "external_source_id": source_id},
        ) from exc
    pair = {"external_source": source_name, "external_source_id": source_id}
    _record_identity(uow, member, IDENTITY_ADDED, pair, source)
    return pair


def remove_identity(
    uow: UnitOfWork, member_id: str, source_name: str, source_id: str, *, source: str = "api"
) -> None:
    member = uow.component(MemberRepository).get_for_update(member_id)
    if member is None:
        raise NotFound(f"member {member_id!r} does not exist", code="member_not_found")
    result = uow.conn.execute(
        delete(member_identities).where(
            member_identities.c.member_id == member_id,
            member_identities.c.external_source == source_name,
            member_identities.c.external_source_id == source_id,
        )
    )
    if result.rowcount == 0:
        raise NotFound(
            "this member has no such external identity",
            code="identity_not_found",
            details={"external_source": source_name, "external_source_id": source_id},
        )
    _record_identity(
        uow,
        member,
        IDENTITY_REMOVED,
        {"external_source": source_name, "external_source_id": source_id},
        source,
    )


def identities_of(uow: UnitOfWork, member_ids: list[str]) -> dict[str, list[dict[str, str]]]:
    found: dict[str, list[dict[str, str]]] = {m: [] for m in member_ids}
    if not member_ids:
        return found
    rows = uow.conn.execute(
        select(member_identities)
        .where(member_identities.c.member_id.in_(member_ids))
        .order_by(member_identities.c.id)
    )
    for row in rows:
        found[row.member_id].append(
            {"external_source": row.external_source, "external_source_id": row.external_source_id}
        )
    return found


def find_by_identity(uow: UnitOfWork, source_name: str, source_id: str) -> Member:
    member_id = uow.conn.execute(
        select(member_identities.c.member_id).where(
            member_identities.c.external_source == source_name,
            member_identities.c.external_source_id == source_id,
        )
    ).scalar()
    member = uow.component(MemberRepository).get(member_id) if member_id else None
    if member is None:
        raise NotFound(
            f"no member has the external identity ({source_name}, {source_id})", code="member_not_found"
        )
    return member


def encode_cursor(pk: int) -> str:
    return base64.urlsafe_b64encode(f"m:{pk}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        if len(cursor) > MAX_CURSOR:
            raise ValueError("too long")
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        prefix, _, value = raw.partition(":")
        if prefix != "m" or not value.isdigit():
            raise ValueError(raw)
        pk = int(value)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidCursor() from exc
    if pk > INT64_MAX:
        raise InvalidCursor()
    return pk


def filter_value(field_type: str, raw: str, key: str) -> Any:
    """A `field.<key>=<raw>` query value as the field's type stores it; empty means "not set"."""
    if raw == "":
        return None
    try:
        if field_type == "integer":
            if not raw.strip().lstrip("+-").isdigit() or not raw.isascii():
                raise FieldValueError("expected an integer")
            return normalize_value(field_type, int(raw))
        if field_type == "float":
            return normalize_value(field_type, float(raw))
        if field_type == "boolean":
            if raw.lower() not in ("true", "false"):
                raise FieldValueError("expected true or false")
            return raw.lower() == "true"
        if field_type in ("array", "object", "array_of_objects"):
            raise FieldValueError(f"{field_type} fields cannot be filtered on")
        return normalize_value(field_type, raw)
    except (FieldValueError, ValueError) as exc:
        raise InvalidInput(
            f"filter field.{key}: {exc}",
            code="invalid_filter",
            details={"filter": f"field.{key}", "type": field_type, "value": raw[:100]},
        ) from exc


def list_members(
    uow: UnitOfWork,
    *,
    limit: int = 50,
    cursor: str | None = None,
    email: str | None = None,
    status: str | None = None,
    program_id: str | None = None,
    opted_in: bool | None = None,
    tier_id: str | None = None,
    field_filters: dict[str, str] | None = None,
) -> tuple[list[Member], str | None]:
    stmt = select(members)
    if cursor:
        stmt = stmt.where(members.c.pk > decode_cursor(cursor))
    if email:
        stmt = stmt.where(members.c.email == email.strip().lower())
    if status:
        stmt = stmt.where(members.c.status == status)
    if program_id is not None or opted_in is not None or tier_id is not None:
        sub = select(accounts.c.member_id)
        if program_id is not None:
            sub = sub.where(accounts.c.program_id == program_id)
        if opted_in is not None:
            sub = sub.where(accounts.c.status == ("opted_in" if opted_in else "opted_out"))
        if tier_id is not None:
            sub = sub.where(accounts.c.tier_id == tier_id)
        stmt = stmt.where(members.c.id.in_(sub))
    if status and status not in STATUSES:
        raise InvalidInput(
            f"status must be one of {', '.join(STATUSES)}",
            code="invalid_filter",
            details={"filter": "status", "allowed": list(STATUSES)},
        )
    catalog = uow.component(FieldCatalog).fields if field_filters else {}
    for key, raw in (field_filters or {}).items():
        definition = catalog.get(key)
        if definition is None:
            raise InvalidInput(
                f"unknown field {key!r}: filters name fields of the catalogue (see /api/v1/fields)",
                code="invalid_filter",
                details={"filter": f"field.{key}"},
            )
        value = filter_value(definition["type"], raw, key)
        stmt = stmt.where(uow.db.json_key_equals(members.c.fields, key, value))
    rows = uow.conn.execute(stmt.order_by(members.c.pk).limit(limit + 1)).all()
    found = [Member.from_row(row) for row in rows[:limit]]
    next_cursor = encode_cursor(found[-1].pk) if len(rows) > limit and found else None
    return found, next_cursor
