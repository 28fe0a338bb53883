"""What each workflow action does when a run reaches it.

Loyalty actions change state through the same services the API uses, inside the unit of work of the
triggering event, so they commit with it or not at all. Platform actions (sync fields, sync event,
webhook) only queue work items in the sync engine's outbox. Every action returns what it did (the
run record keeps it, and a dry run shows it); a failure raises ActionFailed and takes the action's
`fail` output.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update

from perkflow.activity.stream import Activity, ActivityLog
from perkflow.core.clock import isoformat_z, to_epoch
from perkflow.core.errors import PerkflowError
from perkflow.core.uow import UnitOfWork
from perkflow.ledger.accounts import Account, AccountRepository
from perkflow.ledger.service import record_earning, record_spend, settle_if_due
from perkflow.members.repository import MemberRepository
from perkflow.members.views import CustomerView
from perkflow.programs.service import ProgramCatalog, ProgramConfig
from perkflow.sync.outbox import enqueue_attributes, enqueue_event
from perkflow.tiers.service import evaluate_tier
from perkflow.workflows.expressions import RenderError
from perkflow.workflows.graph import (
    AssignCouponParams,
    ModifyFieldParams,
    Node,
    PointsParams,
    RewardClaimParams,
    SetTierParams,
    SyncEventParams,
    SyncFieldsParams,
    WebhookParams,
)
from perkflow.workflows.tables import campaign_budgets

if TYPE_CHECKING:
    from perkflow.sync.integrations import Integration

MAX_POINTS = 1_000_000_000


class ActionFailed(Exception):
    def __init__(self, message: str, code: str = "action_failed") -> None:
        super().__init__(message)
        self.message = message
        self.code = code


@dataclass(slots=True)
class RunScope:
    """What a run knows: the member, the triggering event (if any), and what earlier actions produced."""

    uow: UnitOfWork
    workflow_id: str
    version: int
    kind: str
    bonus_cap: int | None
    member_id: str
    program: ProgramConfig | None
    now: datetime
    trigger_ref: str  # stable id of what started the run, for the ids of platform events
    occurred_at: datetime
    event: dict[str, Any] | None
    customer: CustomerView
    reward: dict[str, Any] | None = None
    coupon: dict[str, Any] | None = None
    # Where the run sits in a cascade of workflows triggering each other (see engine.Lineage).
    depth: int = 0
    root: str = ""
    chain: frozenset[str] = frozenset()
    preview: bool = False  # dry runs: also show the request each platform would receive

    now_iso: str = ""

    def integrations(self) -> list[Integration]:
        return self.uow.component(RunCache).integrations()

    def template_scope(self) -> dict[str, Any]:
        if not self.now_iso:
            self.now_iso = isoformat_z(self.now)
        return {
            "event": self.event if self.event is not None else {},
            "customer": self.customer,
            "reward": self.reward or {},
            "coupon": self.coupon or {},
            "now": self.now_iso,
        }

    def render(self, node: Node, name: str, default: Any = None) -> Any:
        compiled = node.values.get(name)
        if compiled is None:
            return default
        if compiled.is_static:
            return compiled.render({})  # no template to fill: skip building the scope
        try:
            return compiled.render(self.template_scope())
        except RenderError as exc:
            raise ActionFailed(str(exc), "template_failed") from exc

    def platform_event_id(self, node: Node) -> str:
        return f"{self.trigger_ref}:{self.workflow_id}:{node.id}"


class RunCache:
    """Unit-of-work component: what every run of the transaction asks for and that does not change.

    The connected integrations are read (through their process cache) once per transaction instead
    of once per platform action, and the integrations an action targets are resolved once per
    (target, kinds). Changes to integrations reach that cache only after their commit anyway.
    """

    def __init__(self, uow: UnitOfWork) -> None:
        self.uow = uow
        self._integrations: list[Integration] | None = None
        self._targets: dict[tuple[str, tuple[str, ...]], list[Integration]] = {}

    def integrations(self) -> list[Integration]:
        if self._integrations is None:
            from perkflow.sync.integrations import cache

            self._integrations = cache(self.uow.ctx).get(self.uow)
        return self._integrations

    def targets(self, wanted: str, kinds: tuple[str, ...]) -> list[Integration]:
        key = (wanted, kinds)
        found = self._targets.get(key)
        if found is None:
            found = [
                i
                for i in self.integrations()
                if i.status != "disconnected" and i.kind in kinds and wanted in ("*", i.kind, i.id)
            ]
            if not found and wanted not in ("*", *kinds):
                raise ActionFailed(f"integration {wanted!r} is not connected", "integration_not_connected")
            self._targets[key] = found
        return found

    def before_commit(self) -> bool:
        return False

    def flush(self) -> None:
        pass


def _program(scope: RunScope) -> ProgramConfig:
    if scope.program is None:
        raise ActionFailed("the workflow has no program to act in", "no_program")
    return scope.program


def _account(scope: RunScope, program: ProgramConfig | None = None) -> Account:
    program = program or _program(scope)
    account = scope.uow.component(AccountRepository).get(scope.member_id, program.id)
    if account is None or not account.opted_in or account.member_status != "active":
        raise ActionFailed(
            f"member {scope.member_id!r} is not an active member of {program.id!r}", "not_opted_in"
        )
    settle_if_due(scope.uow, account, program)
    return account


def _points(scope: RunScope, node: Node) -> int:
    value = scope.render(node, "points")
    if isinstance(value, str):
        value = value.strip()
        if value.lstrip("-").isdigit():
            value = int(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ActionFailed(f"points must be a whole number, the template gave {value!r}", "invalid_points")
    if value <= 0:
        raise ActionFailed(f"points must be positive, the template gave {value}", "invalid_points")
    return min(value, MAX_POINTS)


def _source_data(scope: RunScope, node: Node, reason: str) -> dict[str, Any]:
    data: dict[str, Any] = {
        "workflow_id": scope.workflow_id,
        "workflow_version": scope.version,
        "node": node.id,
    }
    if reason:
        data["reason"] = reason
    return data


def _after_points(scope: RunScope, account: Account, program: ProgramConfig) -> None:
    evaluate_tier(scope.uow, account, program, source="workflow")


def _budget_left(scope: RunScope) -> int | None:
    if scope.kind != "campaign" or scope.bonus_cap is None:
        return None
    used = scope.uow.conn.execute(
        select(campaign_budgets.c.bonus_points).where(
            campaign_budgets.c.workflow_id == scope.workflow_id,
            campaign_budgets.c.member_id == scope.member_id,
        )
    ).scalar()
    return max(0, scope.bonus_cap - int(used or 0))


def _spend_budget(scope: RunScope, points: int) -> None:
    db = scope.uow.db
    scope.uow.conn.execute(
        db.upsert_add(
            campaign_budgets,
            {"workflow_id": scope.workflow_id, "member_id": scope.member_id, "bonus_points": points},
            keys=("workflow_id", "member_id"),
            add="bonus_points",
        )
    )


def add_points(scope: RunScope, node: Node) -> dict[str, Any]:
    params: PointsParams = node.params
    program = _program(scope)
    account = _account(scope, program)
    wanted = _points(scope, node)
    granted = wanted
    left = _budget_left(scope)
    if left is not None:
        if left <= 0:
            raise ActionFailed(
                f"the campaign's cap of {scope.bonus_cap} bonus points for this member is reached",
                "campaign_cap",
            )
        granted = min(wanted, left)
        _spend_budget(scope, granted)
    expires_at = scope.now + timedelta(days=params.expires_in_days) if params.expires_in_days else None
    data = {"points": granted, **_source_data(scope, node, params.reason)}
    activity = record_earning(
        scope.uow,
        account,
        program,
        type="point_add",
        points=granted,
        occurred_at=scope.now,
        data=data,
        expires_at=expires_at,
        source="workflow",
    )
    _after_points(scope, account, program)
    out: dict[str, Any] = {"points": granted, "activity": activity.id}
    if granted < wanted:
        out["capped"] = True
        out["requested"] = wanted
    return out


def subtract_points(scope: RunScope, node: Node) -> dict[str, Any]:
    params: PointsParams = node.params
    program = _program(scope)
    account = _account(scope, program)
    points = _points(scope, node)
    spendable = account.points.spendable(to_epoch(scope.uow.now))
    if points > spendable:
        raise ActionFailed(
            f"the member has {spendable} points, the action takes {points}", "insufficient_points"
        )
    activity = record_spend(
        scope.uow,
        account,
        type="point_subtract",
        points=points,
        occurred_at=scope.now,
        data={"points": points, **_source_data(scope, node, params.reason)},
        source="workflow",
    )
    _after_points(scope, account, program)
    return {"points": -points, "activity": activity.id}


def reward_view(data: dict[str, Any], program_id: str | None) -> dict[str, Any]:
    return {
        "id": data.get("reward_id"),
        "name": data.get("reward_name"),
        "description": data.get("reward_description"),
        "points_cost": data.get("points_cost"),
        "program_id": program_id,
    }


def coupon_view(data: dict[str, Any], source: str) -> dict[str, Any] | None:
    """coupon.* of a reward claim or pool assignment (coupon_* keys) or a published promotion code."""
    if data.get("coupon_code"):
        return {
            "code": data.get("coupon_code"),
            "value": data.get("coupon_value"),
            "currency": data.get("coupon_currency"),
            "expires_at": data.get("coupon_expires_at"),
            "reward_id": data.get("reward_id"),
            "source": source,
        }
    if data.get("code") and data.get("campaign_id"):
        return {
            "code": data.get("code"),
            "value": data.get("value"),
            "currency": None,
            "expires_at": data.get("expiration_date"),
            "reward_id": None,
            "source": "promotion",
        }
    return None


def reward_claim(scope: RunScope, node: Node) -> dict[str, Any]:
    from perkflow.rewards.service import claim_reward

    params: RewardClaimParams = node.params
    with scope.uow.conn.begin_nested():
        try:
            activity = claim_reward(
                scope.uow,
                member_id=scope.member_id,
                reward_id=params.reward,
                free=params.free,
                source="workflow",
                occurred_at=scope.now,
            )
        except PerkflowError as exc:
            raise ActionFailed(exc.message, exc.code) from exc
    activity.data["workflow_id"] = scope.workflow_id
    scope.reward = reward_view(activity.data, activity.program_id)
    scope.coupon = coupon_view(activity.data, "reward")
    program = scope.uow.component(ProgramCatalog).get(activity.program_id or "")
    account = scope.uow.component(AccountRepository).get(scope.member_id, program.id)
    if account is not None:
        _after_points(scope, account, program)
    return {
        "activity": activity.id,
        "reward": scope.reward,
        "coupon": scope.coupon,
        "points": activity.points_delta,
    }


def set_tier(scope: RunScope, node: Node) -> dict[str, Any]:
    from perkflow.tiers.service import set_tier as move

    params: SetTierParams = node.params
    program = _program(scope)
    tier = next((t for t in program.ladder.tiers if params.tier in (t.id, t.name)), None)
    if tier is None:
        raise ActionFailed(f"program {program.id!r} has no tier {params.tier!r}", "tier_not_found")
    account = _account(scope, program)
    activity = move(
        scope.uow,
        account,
        program,
        tier,
        occurred_at=scope.now,
        source="workflow",
        reason=params.reason or f"workflow {scope.workflow_id}",
    )
    return {"tier": tier.name, "changed": activity is not None, "activity": activity.id if activity else None}


def assign_coupon(scope: RunScope, node: Node) -> dict[str, Any]:
    from perkflow.rewards.service import get_reward, take_coupon
    from perkflow.rewards.tables import coupons

    params: AssignCouponParams = node.params
    uow = scope.uow
    try:
        reward = get_reward(uow, params.reward)
    except PerkflowError as exc:
        raise ActionFailed(exc.message, exc.code) from exc
    program = uow.component(ProgramCatalog).get(reward.program_id)
    account = _account(scope, program)
    with uow.conn.begin_nested():
        coupon = take_coupon(uow, reward.id, scope.member_id)
        if coupon is None:
            raise ActionFailed(f"reward {reward.id!r} has no coupons left", "reward_out_of_stock")
        data = {
            "reward_id": reward.id,
            "reward_name": reward.name,
            "coupon_code": coupon.code,
            "coupon_value": coupon.value,
            "coupon_currency": coupon.currency,
            "coupon_expires_at": isoformat_z(coupon.expires_at) if coupon.expires_at else None,
            "workflow_id": scope.workflow_id,
            "node": node.id,
        }
        activity = uow.component(ActivityLog).record(
            type="coupon_assigned",
            member_id=scope.member_id,
            program_id=program.id,
            chain=account,
            data=data,
            occurred_at=scope.now,
            source="workflow",
        )
        uow.conn.execute(update(coupons).where(coupons.c.id == coupon.id).values(activity_seq=activity.seq))
    scope.coupon = coupon_view(data, "pool")
    if scope.reward is None:
        scope.reward = reward_view({**data, "reward_description": reward.description}, program.id)
    return {"activity": activity.id, "coupon": scope.coupon}


def modify_field(scope: RunScope, node: Node) -> dict[str, Any]:
    from perkflow.members.service import apply_profile, normalize_profile, record_profile_change

    params: ModifyFieldParams = node.params
    value = scope.render(node, "value", params.value)
    uow = scope.uow
    try:
        clean = normalize_profile(uow, {params.field: value})
    except PerkflowError as exc:
        raise ActionFailed(
            f"{params.field}: {exc.details.get(params.field, exc.message)}", "invalid_value"
        ) from exc
    member = uow.component(MemberRepository).get_for_update(scope.member_id)
    if member is None:
        raise ActionFailed(f"member {scope.member_id!r} does not exist", "member_not_found")
    changed = apply_profile(member, clean, now=uow.now)
    activity: Activity | None = None
    if changed:
        member.mark_dirty()
        activity = record_profile_change(uow, member, changed, source="workflow", occurred_at=scope.now)
    return {
        "field": params.field,
        "value": clean.get(params.field),
        "changed": bool(changed),
        "activity": activity.id if activity else None,
    }


def _integrations(scope: RunScope, wanted: str, kinds: tuple[str, ...]) -> list[Integration]:
    """The connected integrations an action sends to: one by id, every one of a kind, or all (*)."""
    return scope.uow.component(RunCache).targets(wanted, kinds)


def _preview(
    scope: RunScope,
    integration: Integration,
    *,
    attributes: dict[str, Any] | None = None,
    event: tuple[str, dict[str, Any], str] | None = None,
) -> dict[str, Any]:
    """The request the platform would receive (dry runs): what the delivery worker would build."""
    from perkflow.sync.preview import preview_request

    events = None
    if event is not None:
        name, properties, event_id = event
        # The same shapes `sync.outbox.enqueue_event` stores and the worker hands to the connector.
        sent = (
            {"type": name, "data": properties}
            if integration.kind == "webhook"
            else {**properties, "perkflow_event_id": event_id}
        )
        events = [(name, sent, event_id, scope.occurred_at)]
    return preview_request(scope.uow, integration, scope.member_id, attributes=attributes, events=events)


def _require_json_object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ActionFailed(
            f"{what} must be an object, the template gave {type(value).__name__}", "invalid_value"
        )
    return value


def sync_fields(scope: RunScope, node: Node) -> dict[str, Any]:
    params: SyncFieldsParams = node.params
    values = _require_json_object(scope.render(node, "fields", params.fields), "fields")
    sent = []
    for integration in _integrations(scope, params.integration, ("braze", "bloomreach")):
        enqueue_attributes(scope.uow, integration, scope.member_id, values)
        entry: dict[str, Any] = {
            "integration": integration.id,
            "kind": integration.kind,
            "attributes": values,
        }
        if scope.preview:
            entry["request"] = _preview(scope, integration, attributes=values)
        sent.append(entry)
    return {"sent": sent}


def _event_name(scope: RunScope, node: Node, default: str) -> str:
    name = scope.render(node, "name", default)
    if not isinstance(name, str) or not 1 <= len(name) <= 200:
        raise ActionFailed(
            f"the event name must be 1-200 characters, the template gave {name!r}", "invalid_value"
        )
    return name


def sync_event(scope: RunScope, node: Node) -> dict[str, Any]:
    params: SyncEventParams = node.params
    properties = _require_json_object(scope.render(node, "properties", params.properties), "properties")
    name = _event_name(scope, node, params.name)
    event_id = scope.platform_event_id(node)
    sent = []
    for integration in _integrations(scope, params.integration, ("braze", "bloomreach")):
        enqueue_event(scope.uow, integration, scope.member_id, name, properties, event_id, scope.occurred_at)
        entry: dict[str, Any] = {
            "integration": integration.id,
            "kind": integration.kind,
            "name": name,
            "properties": properties,
        }
        if scope.preview:
            entry["request"] = _preview(scope, integration, event=(name, properties, event_id))
        sent.append(entry)
    return {"event_id": event_id, "sent": sent}


def webhook(scope: RunScope, node: Node) -> dict[str, Any]:
    params: WebhookParams = node.params
    payload = _require_json_object(scope.render(node, "payload", params.payload), "payload")
    event_id = scope.platform_event_id(node)
    sent = []
    for integration in _integrations(scope, params.integration, ("webhook",)):
        enqueue_event(
            scope.uow, integration, scope.member_id, params.event_type, payload, event_id, scope.occurred_at
        )
        entry: dict[str, Any] = {
            "integration": integration.id,
            "kind": "webhook",
            "event_type": params.event_type,
            "payload": payload,
        }
        if scope.preview:
            entry["request"] = _preview(scope, integration, event=(params.event_type, payload, event_id))
        sent.append(entry)
    return {"event_id": event_id, "sent": sent}


ACTIONS: dict[str, Callable[[RunScope, Node], dict[str, Any]]] = {
    "action.add_points": add_points,
    "action.subtract_points": subtract_points,
    "action.reward_claim": reward_claim,
    "action.set_tier": set_tier,
    "action.assign_coupon": assign_coupon,
    "action.modify_field": modify_field,
    "action.sync_fields": sync_fields,
    "action.sync_event": sync_event,
    "action.webhook": webhook,
}
