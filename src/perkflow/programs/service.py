"""Programs, earning rules and tier ladders: creating them and loading them as one configuration."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from perkflow.core.errors import Conflict, InvalidInput, NotFound
from perkflow.core.ids import new_id
from perkflow.core.uow import UnitOfWork
from perkflow.programs.rules import EarningRule, ExpiryPolicy
from perkflow.programs.tables import earning_rules, programs
from perkflow.tiers.domain import TierDef, TierLadder
from perkflow.tiers.tables import tiers


@dataclass
class ProgramConfig:
    id: str
    name: str
    description: str
    currency: str
    status: str
    is_default: bool
    expiry: ExpiryPolicy
    tier_window_days: int | None
    rules: list[EarningRule]
    ladder: TierLadder
    created_at: datetime
    updated_at: datetime
    _rules_by_event: dict[str, list[EarningRule]] = field(default_factory=dict, repr=False)
    _once_rules_by_event: dict[str, list[EarningRule]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for rule in self.rules:
            if rule.active:
                self._rules_by_event.setdefault(rule.event, []).append(rule)
                if rule.once_per:
                    self._once_rules_by_event.setdefault(rule.event, []).append(rule)

    def rules_for(self, event: str) -> list[EarningRule]:
        return self._rules_by_event.get(event, [])

    def once_rules_for(self, event: str) -> list[EarningRule]:
        """The active rules for `event` that may earn only once per period."""
        return self._once_rules_by_event.get(event, [])

    def to_public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "currency": self.currency,
            "status": self.status,
            "is_default": self.is_default,
            "expiry_policy": self.expiry.to_dict(),
            "tier_window_days": self.tier_window_days,
            "earning_rules": [rule_to_public(r) for r in self.rules],
            "tiers": [{"id": t.id, "name": t.name, "threshold": t.threshold} for t in self.ladder.tiers],
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


def rule_to_public(rule: EarningRule) -> dict[str, Any]:
    return {
        "id": rule.id,
        "name": rule.name,
        "event": rule.event,
        "kind": rule.kind,
        "points": rule.points,
        "amount_unit": rule.amount_unit,
        "amount_field": rule.amount_field,
        "min_amount": rule.min_amount,
        "pending_days": rule.pending_days,
        "conditions": rule.conditions,
        "once_per": rule.once_per,
        "active": rule.active,
    }


def _rule_from_row(row: Any) -> EarningRule:
    return EarningRule(
        id=row.id,
        name=row.name,
        event=row.event,
        kind=row.kind,
        points=row.points,
        amount_unit=row.amount_unit,
        amount_field=row.amount_field,
        min_amount=row.min_amount,
        pending_days=row.pending_days,
        conditions=row.conditions or {},
        once_per=row.once_per,
        active=row.active,
    )


def load_programs(conn: Connection) -> dict[str, ProgramConfig]:
    rules_by_program: dict[str, list[EarningRule]] = {}
    for row in conn.execute(select(earning_rules).order_by(earning_rules.c.created_at, earning_rules.c.id)):
        rules_by_program.setdefault(row.program_id, []).append(_rule_from_row(row))
    tiers_by_program: dict[str, list[TierDef]] = {}
    for row in conn.execute(select(tiers)):
        tiers_by_program.setdefault(row.program_id, []).append(TierDef(row.id, row.name, row.threshold))
    found: dict[str, ProgramConfig] = {}
    for row in conn.execute(select(programs).order_by(programs.c.created_at)):
        policy = row.expiry_policy or {}
        found[row.id] = ProgramConfig(
            id=row.id,
            name=row.name,
            description=row.description,
            currency=row.currency,
            status=row.status,
            is_default=row.is_default,
            expiry=ExpiryPolicy(
                kind=policy.get("kind", "none"),
                days=policy.get("days"),
                period=policy.get("period"),
                periods_after=policy.get("periods_after", 0),
            ),
            tier_window_days=row.tier_window_days,
            rules=rules_by_program.get(row.id, []),
            ladder=TierLadder(tiers_by_program.get(row.id, [])),
            created_at=row.created_at,
            updated_at=row.updated_at,
        )
    return found


class _CatalogCache:
    """The programs as a committed transaction of this process read them, with its change token."""

    def __init__(self) -> None:
        self.programs: dict[str, ProgramConfig] | None = None
        self.token: tuple[Any, int, int] | None = None


class ProgramCatalog:
    """Unit-of-work component: every program's configuration, loaded once per unit of work.

    On SQLite, write units of work reuse the configuration the previous one of this process read,
    as long as nothing was committed by anyone else since (`Database.change_token`); bulk
    ingestion would otherwise read every program, rule and tier again for each batch.
    """

    def __init__(self, uow: UnitOfWork) -> None:
        self.uow = uow
        self._programs: dict[str, ProgramConfig] | None = None
        self._changed = False

    @property
    def programs(self) -> dict[str, ProgramConfig]:
        if self._programs is None:
            self._programs = self._load()
        return self._programs

    def _load(self) -> dict[str, ProgramConfig]:
        uow = self.uow
        token = uow.db.change_token(uow.conn) if uow.write and not self._changed else None
        if token is None:
            return load_programs(uow.conn)
        cache = uow.ctx.caches.setdefault("programs.catalog", _CatalogCache())
        if cache.token == token and cache.programs is not None:
            found = dict(cache.programs)
        else:
            found = load_programs(uow.conn)
            cache.programs, cache.token = None, None

        def store() -> None:
            # A unit of work that changed programs reloaded them; what it read first is stale.
            if not self._changed:
                cache.programs, cache.token = found, (token[0], token[1], uow.db.commits)

        uow.on_commit(store)
        return found

    def reload(self) -> None:
        """Forget the loaded configuration (after this unit of work changed it)."""
        self._programs = None
        self._changed = True

    def get(self, program_id: str) -> ProgramConfig:
        program = self.programs.get(program_id)
        if program is None:
            raise NotFound(f"program {program_id!r} does not exist", code="program_not_found")
        return program

    def default_id(self) -> str | None:
        """The program an event naming none goes to: the default one, or the only one; else None."""
        for program in self.programs.values():
            if program.is_default:
                return program.id
        if len(self.programs) == 1:
            return next(iter(self.programs))
        return None

    def resolve(self, program_id: str | None) -> ProgramConfig:
        """The named program, or the default one when the caller names none."""
        if program_id is not None:
            return self.get(program_id)
        default = self.default_id()
        if default is not None:
            return self.programs[default]
        if not self.programs:
            raise NotFound("no loyalty program exists yet; create one first", code="program_not_found")
        raise InvalidInput(
            "several programs exist and none is the default; name the program",
            code="program_required",
        )

    def before_commit(self) -> bool:
        return False

    def flush(self) -> None:
        return None


# -- writes -----------------------------------------------------------------------------------------


def create_program(uow: UnitOfWork, spec: dict[str, Any]) -> ProgramConfig:
    conn = uow.conn
    program_id = spec.get("id") or new_id("prg")
    existing = conn.execute(select(programs.c.id)).scalars().all()
    is_default = bool(spec.get("is_default")) or not existing
    if is_default and existing:
        conn.execute(update(programs).values(is_default=False))
    try:
        conn.execute(
            insert(programs).values(
                id=program_id,
                name=spec["name"],
                description=spec.get("description", ""),
                currency=spec["currency"],
                status="active",
                expiry_policy=spec.get("expiry_policy") or {"kind": "none"},
                tier_window_days=spec.get("tier_window_days"),
                is_default=is_default,
                created_at=uow.now,
                updated_at=uow.now,
            )
        )
    except IntegrityError as exc:
        raise Conflict(
            f"a program with id {program_id!r} or name {spec['name']!r} already exists",
            code="program_exists",
        ) from exc
    for rule in spec.get("earning_rules") or []:
        add_earning_rule(uow, program_id, rule)
    if spec.get("tiers"):
        _insert_tiers(uow, program_id, spec["tiers"])
    uow.component(ProgramCatalog).reload()
    return uow.component(ProgramCatalog).get(program_id)


def update_program(uow: UnitOfWork, program_id: str, changes: dict[str, Any]) -> ProgramConfig:
    catalog = uow.component(ProgramCatalog)
    catalog.get(program_id)
    values = {k: v for k, v in changes.items() if k in ("name", "description", "expiry_policy", "status")}
    if "tier_window_days" in changes:
        values["tier_window_days"] = changes["tier_window_days"]
    if changes.get("is_default"):
        uow.conn.execute(update(programs).values(is_default=False))
        values["is_default"] = True
    if values:
        values["updated_at"] = uow.now
        try:
            uow.conn.execute(update(programs).where(programs.c.id == program_id).values(**values))
        except IntegrityError as exc:
            raise Conflict("another program already has that name", code="program_exists") from exc
    catalog.reload()
    return catalog.get(program_id)


def add_earning_rule(uow: UnitOfWork, program_id: str, rule: dict[str, Any]) -> EarningRule:
    rule_id = rule.get("id") or new_id("rule")
    try:
        uow.conn.execute(
            insert(earning_rules).values(
                id=rule_id,
                program_id=program_id,
                name=rule["name"],
                event=rule["event"],
                kind=rule["kind"],
                points=rule["points"],
                amount_unit=rule.get("amount_unit"),
                amount_field=rule.get("amount_field") or "total",
                min_amount=rule.get("min_amount"),
                pending_days=rule.get("pending_days") or 0,
                conditions=rule.get("conditions") or {},
                once_per=rule.get("once_per"),
                active=rule.get("active", True),
                created_at=uow.now,
            )
        )
    except IntegrityError as exc:
        raise Conflict(f"earning rule {rule_id!r} already exists", code="rule_exists") from exc
    uow.component(ProgramCatalog).reload()
    return next(r for r in uow.component(ProgramCatalog).get(program_id).rules if r.id == rule_id)


def set_rule_active(uow: UnitOfWork, program_id: str, rule_id: str, active: bool) -> EarningRule:
    result = uow.conn.execute(
        update(earning_rules)
        .where(earning_rules.c.id == rule_id, earning_rules.c.program_id == program_id)
        .values(active=active)
    )
    if result.rowcount == 0:
        raise NotFound(f"earning rule {rule_id!r} does not exist in this program", code="rule_not_found")
    uow.component(ProgramCatalog).reload()
    return next(r for r in uow.component(ProgramCatalog).get(program_id).rules if r.id == rule_id)


def delete_earning_rule(uow: UnitOfWork, program_id: str, rule_id: str) -> None:
    result = uow.conn.execute(
        delete(earning_rules).where(earning_rules.c.id == rule_id, earning_rules.c.program_id == program_id)
    )
    if result.rowcount == 0:
        raise NotFound(f"earning rule {rule_id!r} does not exist in this program", code="rule_not_found")
    uow.component(ProgramCatalog).reload()


def replace_tiers(uow: UnitOfWork, program_id: str, ladder: list[dict[str, Any]]) -> ProgramConfig:
    """Replace a program's ladder, then move every member to the tier the new ladder gives them."""
    from perkflow.tiers.service import reevaluate_program_tiers

    uow.component(ProgramCatalog).get(program_id)
    uow.conn.execute(delete(tiers).where(tiers.c.program_id == program_id))
    _insert_tiers(uow, program_id, ladder)
    uow.component(ProgramCatalog).reload()
    program = uow.component(ProgramCatalog).get(program_id)
    reevaluate_program_tiers(uow, program)
    return program


def _insert_tiers(uow: UnitOfWork, program_id: str, ladder: list[dict[str, Any]]) -> None:
    names = [t["name"] for t in ladder]
    thresholds = [t["threshold"] for t in ladder]
    if len(set(names)) != len(names) or len(set(thresholds)) != len(thresholds):
        raise InvalidInput("tier names and thresholds must be unique", code="invalid_tiers")
    rows = [
        {
            "id": t.get("id") or new_id("tier"),
            "program_id": program_id,
            "name": t["name"],
            "threshold": t["threshold"],
            "created_at": uow.now,
        }
        for t in ladder
    ]
    if rows:
        try:
            uow.conn.execute(insert(tiers), rows)
        except IntegrityError as exc:
            raise Conflict("a tier id in the ladder is already used", code="tier_exists") from exc
