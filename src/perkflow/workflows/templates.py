"""The seed use cases as ready workflows (Antavo's Braze/Bloomreach recipes), installed inactive.

Platform actions name `*` (every connected Braze and Bloomreach), so a template works whichever
platforms the brand connects, before or after installing it. A template that needs a choice only
the brand can make (which reward is the birthday gift) declares it as a parameter.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from perkflow.core.errors import Conflict, InvalidInput, NotFound
from perkflow.core.uow import UnitOfWork
from perkflow.workflows.tables import workflows


@dataclass(frozen=True)
class TemplateParam:
    name: str
    description: str
    default: Any = None  # None: required
    type: str = "string"  # string | integer | list of strings

    def problem(self, value: Any) -> str | None:
        """Why a value cannot be used, or None (the graph check catches what this lets through)."""
        if self.type == "integer":
            ok = isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 23
            return None if ok else "expected an hour from 0 to 23"
        if self.type == "list":
            ok = isinstance(value, list) and bool(value) and all(isinstance(v, str) for v in value)
            return None if ok else "expected a non-empty list of event types"
        return None if isinstance(value, str) and 0 < len(value) <= 200 else "expected a string"

    @property
    def required(self) -> bool:
        return self.default is None


@dataclass(frozen=True)
class WorkflowTemplate:
    name: str
    title: str
    description: str
    build: Callable[[dict[str, Any]], dict[str, Any]]
    params: tuple[TemplateParam, ...] = field(default_factory=tuple)

    def spec(self, given: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(given) - {p.name for p in self.params})
        if unknown:
            raise InvalidInput(
                f"the {self.name} template has no parameter {', '.join(unknown)}",
                code="invalid_template_params",
                details={"unknown": unknown, "params": [p.name for p in self.params]},
            )
        values = {p.name: given.get(p.name, p.default) for p in self.params}
        missing = [p.name for p in self.params if values[p.name] is None]
        if missing:
            raise InvalidInput(
                f"the {self.name} template needs {', '.join(missing)}: "
                + "; ".join(f"{p.name}: {p.description}" for p in self.params if p.name in missing),
                code="template_params_missing",
                details={"missing": missing},
            )
        problems = {p.name: why for p in self.params if (why := p.problem(values[p.name])) is not None}
        if problems:
            raise InvalidInput(
                f"invalid parameters for the {self.name} template",
                code="invalid_template_params",
                details=problems,
            )
        return self.build(values)

    def to_public(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "description": self.description,
            "params": [
                {"name": p.name, "description": p.description, "required": p.required, "default": p.default}
                for p in self.params
            ],
        }


def _welcome(params: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": "Welcome to the loyalty program",
        "description": "When a member opts in, send the platforms an event with the opt-in date and the "
        "points added for enrolling, so a welcome campaign can start.",
        "kind": "general",
        "graph": {
            "nodes": [
                {"id": "opted_in", "type": "trigger.event", "params": {"event": "opt_in"}},
                {
                    "id": "welcome_event",
                    "type": "action.sync_event",
                    "params": {
                        "integration": "*",
                        "name": params["event_name"],
                        "properties": {
                            "opted_in_at": "{{ event.occurred_at }}",
                            "points_added": "{{ event.points }}",
                            "points_balance": "{{ customer.points_balance }}",
                            "tier": "{{ customer.tier }}",
                        },
                    },
                },
            ],
            "edges": [{"from": "opted_in", "to": "welcome_event"}],
        },
    }


def _birthday(params: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": "Birthday reward",
        "description": "Every day, members whose birthday is today get the reward for free, and the "
        "platforms an event with the reward and its coupon.",
        "kind": "general",
        "graph": {
            "nodes": [
                {
                    "id": "every_morning",
                    "type": "trigger.date",
                    "params": {"cron": f"0 {params['hour']} * * *"},
                },
                {
                    "id": "birthday_today",
                    "type": "filter.customer_attribute",
                    "params": {
                        "conditions": [{"attribute": "birth_date", "operator": "in_date", "value": "today"}]
                    },
                },
                {
                    "id": "gift",
                    "type": "action.reward_claim",
                    "params": {"reward": params["reward"], "free": True},
                },
                {
                    "id": "birthday_event",
                    "type": "action.sync_event",
                    "params": {
                        "integration": "*",
                        "name": params["event_name"],
                        "properties": {
                            "reward_name": "{{ reward.name }}",
                            "coupon_code": "{{ coupon.code | default(none) }}",
                            "coupon_value": "{{ coupon.value | default(none) }}",
                            "coupon_expires_at": "{{ coupon.expires_at | default(none) }}",
                        },
                    },
                },
            ],
            "edges": [
                {"from": "every_morning", "to": "birthday_today"},
                {"from": "birthday_today", "to": "gift"},
                {"from": "gift", "to": "birthday_event"},
            ],
        },
    }


def _reward_claim(params: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": "Reward claim",
        "description": "When a member claims a reward, send the platforms the reward's name and "
        "description and the coupon's code, value and expiry.",
        "kind": "campaign",
        "graph": {
            "nodes": [
                {"id": "claimed", "type": "trigger.event", "params": {"event": "reward_claim"}},
                {
                    "id": "claim_event",
                    "type": "action.sync_event",
                    "params": {
                        "integration": "*",
                        "name": params["event_name"],
                        "properties": {
                            "reward_name": "{{ reward.name }}",
                            "reward_description": "{{ reward.description }}",
                            "coupon_code": "{{ coupon.code | default(none) }}",
                            "coupon_value": "{{ coupon.value | default(none) }}",
                            "coupon_expires_at": "{{ coupon.expires_at | default(none) }}",
                            "points_spent": "{{ reward.points_cost if not event.free else 0 }}",
                        },
                    },
                },
            ],
            "edges": [{"from": "claimed", "to": "claim_event"}],
        },
    }


def _tier_upgrade(params: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": f"Tier upgrade to {params['tier']}",
        "description": f"When a member moves up to {params['tier']}, send the platforms an event.",
        "kind": "general",
        "graph": {
            "nodes": [
                {"id": "tier_up", "type": "trigger.event", "params": {"event": "tier_up"}},
                {
                    "id": "reached_tier",
                    "type": "filter.event_attribute",
                    "params": {
                        "conditions": [{"attribute": "tier", "operator": "eq", "value": params["tier"]}]
                    },
                },
                {
                    "id": "tier_event",
                    "type": "action.sync_event",
                    "params": {
                        "integration": "*",
                        "name": params["event_name"],
                        "properties": {
                            "tier": "{{ event.to_tier }}",
                            "previous_tier": "{{ event.from_tier }}",
                            "points_balance": "{{ customer.points_balance }}",
                        },
                    },
                },
            ],
            "edges": [
                {"from": "tier_up", "to": "reached_tier"},
                {"from": "reached_tier", "to": "tier_event"},
            ],
        },
    }


def _last_purchase(params: dict[str, Any]) -> dict[str, Any]:
    prefix = params["field_prefix"]
    return {
        "name": "Sync last purchase data",
        "description": "After each purchase, write its date, amount, item count and store to profile "
        "attributes on the platforms (attributes that need no field mapping).",
        "kind": "general",
        "graph": {
            "nodes": [
                {"id": "purchased", "type": "trigger.event", "params": {"events": params["events"]}},
                {
                    "id": "last_purchase",
                    "type": "action.sync_fields",
                    "params": {
                        "integration": "*",
                        "fields": {
                            f"{prefix}date": "{{ event.occurred_at }}",
                            f"{prefix}amount": "{{ event.total }}",
                            f"{prefix}items_count": "{{ event.items_count | default(0) }}",
                            f"{prefix}store": "{{ event.store | default(none) }}",
                        },
                    },
                },
            ],
            "edges": [{"from": "purchased", "to": "last_purchase"}],
        },
    }


TEMPLATES: dict[str, WorkflowTemplate] = {
    t.name: t
    for t in (
        WorkflowTemplate(
            "welcome",
            "Welcome to the loyalty program",
            "opt-in -> sync platform event with the opt-in date and the enrolment points",
            _welcome,
            (TemplateParam("event_name", "the event name on the platforms", "loyalty_welcome"),),
        ),
        WorkflowTemplate(
            "birthday_reward",
            "Birthday reward",
            "daily -> birth_date in date today -> reward claim for free -> sync platform event",
            _birthday,
            (
                TemplateParam("reward", "the id of the reward to give (a coupon-based reward)"),
                TemplateParam("hour", "the UTC hour the daily run starts", 8, "integer"),
                TemplateParam("event_name", "the event name on the platforms", "loyalty_birthday_reward"),
            ),
        ),
        WorkflowTemplate(
            "reward_claim",
            "Reward claim",
            "reward claim -> sync platform event with reward name, description, coupon code, value, expiry",
            _reward_claim,
            (TemplateParam("event_name", "the event name on the platforms", "loyalty_reward_claimed"),),
        ),
        WorkflowTemplate(
            "tier_upgrade",
            "Tier upgrade",
            "tier up -> event attribute tier equal Gold -> sync platform event",
            _tier_upgrade,
            (
                TemplateParam("tier", "the tier whose upgrades are announced", "Gold"),
                TemplateParam("event_name", "the event name on the platforms", "loyalty_tier_upgrade"),
            ),
        ),
        WorkflowTemplate(
            "last_purchase",
            "Sync last purchase data",
            "checkout -> sync multiple fields: last purchase date, amount, items count, store",
            _last_purchase,
            (
                TemplateParam(
                    "events", "the purchase events (checkout and/or checkout_accept)", ["checkout"], "list"
                ),
                TemplateParam("field_prefix", "prefix of the remote attribute names", "last_purchase_"),
            ),
        ),
    )
}


def get_template(name: str) -> WorkflowTemplate:
    found = TEMPLATES.get(name)
    if found is None:
        raise NotFound(
            f"there is no workflow template {name!r}",
            code="template_not_found",
            details={"templates": sorted(TEMPLATES)},
        )
    return found


def install_template(
    uow: UnitOfWork, name: str, params: dict[str, Any] | None = None, *, program_id: str | None = None
) -> dict[str, Any]:
    """Create the template's workflow, inactive; a template is installed once (archive it to reinstall)."""
    from perkflow.workflows.service import create_workflow

    template = get_template(name)
    spec = template.spec(params or {})
    existing = uow.conn.execute(
        select(workflows.c.id).where(workflows.c.template == name, workflows.c.status != "archived")
    ).scalar()
    if existing is not None:
        raise Conflict(
            f"the {name} template is installed already as workflow {existing!r}",
            code="template_installed",
            details={"workflow_id": existing},
        )
    if program_id is not None:
        spec["program_id"] = program_id
    return create_workflow(uow, spec, template=name)
