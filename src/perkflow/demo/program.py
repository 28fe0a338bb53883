"""The demo loyalty program: the seed's tier ladder, earning rules, rewards and a custom event type."""

from __future__ import annotations

from typing import Any

DEMO_PROGRAM_ID = "demo"

DEMO_PROGRAM: dict[str, Any] = {
    "id": DEMO_PROGRAM_ID,
    "name": "Perkflow Rewards",
    "description": "Demo program: 1 point per euro, tiers from the Antavo-Bloomreach use cases.",
    "currency": "EUR",
    "expiry_policy": {"kind": "rolling", "days": 365},
    "tier_window_days": None,
    "is_default": True,
    "earning_rules": [
        {
            "id": "rule_enrol",
            "name": "Welcome points",
            "event": "opt_in",
            "kind": "fixed",
            "points": 5,
            "once_per": "lifetime",
        },
        {
            "id": "rule_purchase",
            "name": "1 point per euro",
            "event": "checkout",
            "kind": "per_amount",
            "points": 1,
            "amount_unit": 100,
        },
        {
            "id": "rule_online",
            "name": "Online bonus: 1 point per 5 euros, confirmed on delivery",
            "event": "checkout",
            "kind": "per_amount",
            "points": 1,
            "amount_unit": 500,
            "pending_days": 14,
            "conditions": {"channel": "online"},
        },
        {
            "id": "rule_birthday",
            "name": "Birthday gift",
            "event": "birthday",
            "kind": "fixed",
            "points": 25,
            "once_per": "year",
        },
        {
            "id": "rule_review",
            "name": "Product review",
            "event": "review_written",
            "kind": "fixed",
            "points": 5,
        },
    ],
    # The seed's ladder: Bronze for everyone who opts in, Silver 10-50, Gold 50-100, Platinum 100+.
    "tiers": [
        {"id": "tier_bronze", "name": "Bronze", "threshold": 0},
        {"id": "tier_silver", "name": "Silver", "threshold": 10},
        {"id": "tier_gold", "name": "Gold", "threshold": 50},
        {"id": "tier_platinum", "name": "Platinum", "threshold": 100},
    ],
}

DEMO_EVENT_TYPES: list[dict[str, Any]] = [
    {
        "name": "review_written",
        "description": "The member reviewed a product",
        "attributes": {"product_id": "string", "rating": "integer"},
    },
]

DEMO_FIELDS: list[dict[str, Any]] = [
    {"key": "favourite_store", "type": "string", "label": "Favourite store"},
    {"key": "newsletter", "type": "boolean", "label": "Newsletter subscriber"},
]

DEMO_REWARDS: list[dict[str, Any]] = [
    {
        "id": "rew_coffee",
        "name": "Free coffee",
        "description": "A coffee of your choice in any store",
        "points_cost": 30,
        "coupons": {"pattern": "COFFEE-####", "charset": "readable", "count": 20, "value": 350},
    },
    {
        "id": "rew_voucher10",
        "name": "10 euro voucher",
        "description": "10 euro off your next purchase",
        "points_cost": 100,
        "coupons": {"pattern": "TEN-######", "charset": "readable", "count": 20, "value": 1000},
    },
]


def install_demo_program(uow: Any) -> None:
    """Create the demo program with its fields, event types and rewards in one unit of work."""
    from datetime import timedelta

    from perkflow.codes.generator import CodeConfig
    from perkflow.events.types import register_event_type
    from perkflow.members.service import define_field
    from perkflow.programs.service import create_program
    from perkflow.rewards.service import create_reward, generate_coupons

    for field in DEMO_FIELDS:
        define_field(uow, field["key"], field["type"], field["label"])
    for event_type in DEMO_EVENT_TYPES:
        register_event_type(uow, event_type["name"], event_type["attributes"], event_type["description"])
    create_program(uow, DEMO_PROGRAM)
    for reward in DEMO_REWARDS:
        spec = {k: v for k, v in reward.items() if k != "coupons"}
        create_reward(uow, {**spec, "program_id": DEMO_PROGRAM_ID, "uses_coupons": True})
        pool = reward["coupons"]
        generate_coupons(
            uow,
            reward["id"],
            count=pool["count"],
            config=CodeConfig.build(pattern=pool["pattern"], charset=pool["charset"]),
            value=pool["value"],
            expires_at=uow.now + timedelta(days=90),
        )
