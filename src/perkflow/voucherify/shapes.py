"""Perkflow's promotion objects in the shapes the voucherify SDK's models accept (integers for money and
points, its enum literals, the objects it requires)."""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any

from perkflow.core.clock import isoformat_z, to_epoch
from perkflow.core.uow import UnitOfWork
from perkflow.promotions.domain import Order
from perkflow.promotions.service import (
    Applied,
    Campaign,
    CardBalance,
    Evaluation,
    Published,
    Redeemed,
    RedemptionRecord,
    RolledBack,
    Voucher,
    loyalty_account,
)
from perkflow.voucherify.errors import error_body

STACKING_RULES = {
    "redeemables_limit": 30,
    "applicable_redeemables_limit": 5,
    "applicable_redeemables_per_category_limit": 1,
    "applicable_exclusive_redeemables_limit": 1,
    "applicable_exclusive_redeemables_per_category_limit": 1,
    "redeemables_application_mode": "ALL",
    "redeemables_sorting_rule": "REQUESTED_ORDER",
}


def iso(moment: datetime | None) -> str | None:
    return isoformat_z(moment) if moment is not None else None


def customer(member_id: str) -> dict[str, Any]:
    # Customers are members: the member id is both the id and the source_id.
    return {"id": member_id, "source_id": member_id, "object": "customer"}


def code_config(campaign: Campaign) -> dict[str, Any]:
    return campaign.code_config_public()


def campaign_voucher(campaign: Campaign) -> dict[str, Any]:
    out: dict[str, Any] = {
        "type": campaign.voucher_type,
        "redemption": {"quantity": campaign.redemption_quantity},
        "code_config": code_config(campaign),
        "is_referral_code": campaign.campaign_type == "REFERRAL_PROGRAM",
        "start_date": iso(campaign.start_date),
        "expiration_date": iso(campaign.expiration_date),
    }
    if campaign.discount is not None:
        out["discount"] = campaign.discount.to_dict()
    if campaign.voucher_type == "GIFT_VOUCHER":
        out["gift"] = {
            "amount": campaign.gift_amount,
            "balance": campaign.gift_amount,
            "effect": "APPLY_TO_ORDER",
        }
    if campaign.voucher_type == "LOYALTY_CARD":
        out["loyalty_card"] = {"points": 0}
    return out


def campaign_out(campaign: Campaign) -> dict[str, Any]:
    return {
        "id": campaign.id,
        "object": "campaign",
        "name": campaign.name,
        "description": campaign.description,
        "campaign_type": campaign.campaign_type,
        "type": campaign.type,
        "voucher": campaign_voucher(campaign),
        "auto_join": False,
        "join_once": campaign.join_once,
        "use_voucher_metadata_schema": False,
        "vouchers_count": campaign.generated_count,
        "start_date": iso(campaign.start_date),
        "expiration_date": iso(campaign.expiration_date),
        "active": campaign.active,
        "metadata": campaign.metadata,
        "created_at": iso(campaign.created_at),
        "updated_at": iso(campaign.updated_at),
        # The campaign is usable at once; its codes may still be generating in the background.
        "creation_status": campaign.generation_status,
        "vouchers_generation_status": campaign.generation_status,
        "readonly": False,
        "protected": False,
        "program_id": campaign.program_id,
    }


def voucher_out(uow: UnitOfWork, campaign: Campaign, voucher: Voucher) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": voucher.id,
        "code": voucher.code,
        "campaign": campaign.name,
        "campaign_id": campaign.id,
        "category": None,
        "type": campaign.voucher_type,
        "start_date": iso(campaign.start_date),
        "expiration_date": iso(campaign.expiration_date),
        "active": voucher.active and campaign.active,
        "additional_info": None,
        "metadata": {},
        "is_referral_code": campaign.campaign_type == "REFERRAL_PROGRAM",
        "created_at": iso(voucher.created_at or campaign.created_at),
        "updated_at": iso(voucher.published_at or voucher.created_at or campaign.created_at),
        "holder_id": voucher.holder_id,
        "object": "voucher",
        "publish": {"object": "list", "count": 1 if voucher.holder_id else 0},
        "redemption": {
            "object": "list",
            "quantity": campaign.redemption_quantity,
            "redeemed_quantity": voucher.redeemed_quantity,
        },
    }
    if campaign.discount is not None:
        out["discount"] = campaign.discount.to_dict()
    if campaign.voucher_type == "GIFT_VOUCHER":
        out["gift"] = {
            "amount": voucher.gift_amount,
            "balance": voucher.gift_balance,
            "effect": "APPLY_TO_ORDER",
        }
    if campaign.voucher_type == "LOYALTY_CARD":
        account = loyalty_account(uow, campaign, voucher.holder_id)
        points = account.points if account is not None else None
        balance = points.spendable(to_epoch(uow.now)) if points is not None else 0
        out["loyalty_card"] = {
            "points": points.earned if points is not None else 0,
            "balance": balance,
            "pending_points": points.pending if points is not None else 0,
            "expired_points": points.expired if points is not None else 0,
            "subtracted_points": points.spent if points is not None else 0,
        }
    return out


def publication_out(uow: UnitOfWork, published: Published) -> dict[str, Any]:
    pub = published.publication
    return {
        "id": pub.id,
        "object": "publication",
        "created_at": iso(pub.created_at),
        "customer_id": pub.customer_id,
        "tracking_id": pub.customer_id,
        "metadata": pub.metadata,
        # The SDK accepts only "API"; the caller's own channel (e.g. Braze) is kept on the record.
        "channel": "API",
        "source_id": pub.source_id,
        "result": "SUCCESS",
        "customer": customer(pub.customer_id),
        "voucher": voucher_out(uow, published.campaign, published.voucher),
        "vouchers_id": [published.voucher.id],
    }


def order_out(order: Order, discount: int, customer_id: str | None) -> dict[str, Any]:
    return {
        "id": order.id,
        "source_id": order.source_id,
        "amount": order.amount,
        "discount_amount": discount,
        "total_discount_amount": discount,
        "total_amount": order.amount - discount,
        "applied_discount_amount": discount,
        "total_applied_discount_amount": discount,
        "items": [
            {
                "object": "order_item",
                "product_id": item.product_id,
                "sku_id": item.sku_id,
                "quantity": item.quantity,
                "amount": item.amount,
            }
            for item in order.items
        ],
        "customer_id": customer_id,
        "metadata": {},
        "object": "order",
    }


def _result(applied: Applied) -> dict[str, Any]:
    if applied.error is not None:
        err = applied.error
        return {
            "error": error_body(
                err.status,
                err.code,
                err.message,
                err.details,
                resource_type=err.resource_type,
                resource_id=err.resource_id,
            )
        }
    campaign = applied.campaign
    assert campaign is not None and applied.voucher is not None
    if campaign.voucher_type == "GIFT_VOUCHER":
        return {"gift": {"balance": applied.voucher.gift_balance, "credits": applied.gift_amount}}
    if campaign.voucher_type == "LOYALTY_CARD":
        return {"loyalty_card": {"points": applied.loyalty_points}}
    assert campaign.discount is not None
    return {"discount": campaign.discount.to_dict()}


def validation_out(evaluation: Evaluation, tracking_id: str | None) -> dict[str, Any]:
    valid = evaluation.valid
    discount = evaluation.total_discount if valid else 0
    redeemables = []
    inapplicable = []
    skipped = []
    remaining = evaluation.order.amount
    for applied in evaluation.applied:
        entry: dict[str, Any] = {"id": applied.redeemable.code, "object": "voucher", "metadata": {}}
        if applied.campaign is not None:
            entry["campaign_id"] = applied.campaign.id
            entry["campaign_name"] = applied.campaign.name
        if applied.error is not None:
            entry.update(status="INAPPLICABLE", result=_result(applied))
            inapplicable.append(entry)
        elif not valid:
            entry.update(
                status="SKIPPED",
                result={
                    "details": {
                        "key": "preceding_validation_failed",
                        "message": "another redeemable of the request is not valid",
                    }
                },
            )
            skipped.append(entry)
        else:
            entry.update(status="APPLICABLE", result=_result(applied))
            entry["order"] = {
                "amount": remaining,
                "discount_amount": applied.discount,
                "total_discount_amount": applied.discount,
                "total_amount": remaining - applied.discount,
                "applied_discount_amount": applied.discount,
                "object": "order",
            }
            remaining -= applied.discount
        redeemables.append(entry)
    out: dict[str, Any] = {
        "id": "valid_" + os.urandom(10).hex(),
        "valid": valid,
        "redeemables": redeemables,
        "order": order_out(evaluation.order, discount, evaluation.customer_id),
        "tracking_id": tracking_id or evaluation.customer_id,
        "stacking_rules": STACKING_RULES,
    }
    if inapplicable:
        out["inapplicable_redeemables"] = inapplicable
    if skipped:
        out["skipped_redeemables"] = skipped
    return out


def redemption_out(
    uow: UnitOfWork,
    record: RedemptionRecord,
    campaign: Campaign | None,
    voucher: Voucher | None,
    *,
    reward: dict[str, Any] | None = None,
) -> dict[str, Any]:
    order = Order.parse(record.order)
    out: dict[str, Any] = {
        "id": record.id,
        "object": "redemption",
        "date": iso(record.created_at),
        "customer_id": record.customer_id,
        "tracking_id": record.tracking_id,
        "metadata": record.metadata,
        "amount": record.amount,
        "redemption": record.parent_id,
        "result": "SUCCESS",
        "status": record.status,
        "order": order_out(order, record.amount, record.customer_id),
        "channel": {"channel_type": "API"},
        "customer": customer(record.customer_id),
    }
    if voucher is not None and campaign is not None:
        out["related_object_type"] = "voucher"
        out["related_object_id"] = voucher.id
        out["voucher"] = voucher_out(uow, campaign, voucher)
        if record.gift_amount:
            out["gift"] = {"amount": record.gift_amount}
        if record.loyalty_points:
            out["loyalty_card"] = {"points": record.loyalty_points}
    else:
        out["related_object_type"] = "redemption"
        out["related_object_id"] = record.id
    if reward is not None:
        out["reward"] = reward
    return out


def redeemed_out(uow: UnitOfWork, redeemed: Redeemed) -> dict[str, Any]:
    items = []
    for record in redeemed.records:
        assert record.code is not None and record.campaign_id is not None
        campaign = redeemed.campaigns[record.campaign_id]
        reward = reward_result(record)
        items.append(redemption_out(uow, record, campaign, redeemed.vouchers[record.code], reward=reward))
    out: dict[str, Any] = {
        "redemptions": items,
        "order": order_out(
            redeemed.evaluation.order, redeemed.evaluation.total_discount, redeemed.evaluation.customer_id
        ),
    }
    if redeemed.parent is not None:
        out["parent_redemption"] = redemption_out(uow, redeemed.parent, None, None)
    return out


def reward_result(record: RedemptionRecord) -> dict[str, Any] | None:
    effects = record.effects
    if not effects.get("reward_id"):
        return None
    return {
        "id": effects["reward_id"],
        "assignment_id": effects.get("assignment_id"),
        "object": "reward",
        "type": "CAMPAIGN" if effects.get("reward_code") else "MATERIAL",
    }


def rollback_out(uow: UnitOfWork, done: RolledBack) -> dict[str, Any]:
    record = done.redemption
    out: dict[str, Any] = {
        "id": done.id,
        "object": "redemption_rollback",
        "date": iso(done.created_at),
        "customer_id": record.customer_id,
        "tracking_id": done.tracking_id or record.tracking_id,
        "metadata": {},
        "amount": -record.amount,
        "redemption": record.id,
        "reason": done.reason,
        "result": "SUCCESS",
        "status": "SUCCEEDED",
        "order": order_out(Order.parse(record.order), record.amount, record.customer_id),
        "channel": {"channel_type": "API"},
        "customer": customer(record.customer_id),
    }
    if done.voucher is not None and done.campaign is not None:
        out["related_object_type"] = "voucher"
        out["related_object_id"] = done.voucher.id
        out["voucher"] = voucher_out(uow, done.campaign, done.voucher)
        if record.gift_amount:
            out["gift"] = {"amount": record.gift_amount}
        if record.loyalty_points:
            out["loyalty_card"] = {"points": record.loyalty_points}
    else:
        out["related_object_type"] = "redemption"
        out["related_object_id"] = record.id
    return out


def stacked_rollback_out(uow: UnitOfWork, done: RolledBack) -> dict[str, Any]:
    return {
        "rollbacks": [rollback_out(uow, child) for child in done.children],
        "parent_rollback": rollback_out(uow, done),
        "order": order_out(Order.parse(done.redemption.order), 0, done.redemption.customer_id),
    }


def balance_out(result: CardBalance) -> dict[str, Any]:
    return {
        "points": result.points,
        "total": result.balance,
        "balance": result.balance,
        "type": "loyalty_card",
        "object": "balance",
        "operation_type": "MANUAL",
        "related_object": {"type": "voucher", "id": result.voucher.id},
    }


def gift_balance_out(voucher: Voucher, amount: int) -> dict[str, Any]:
    return {
        "amount": amount,
        "total": voucher.gift_amount,
        "balance": voucher.gift_balance,
        "type": "gift_voucher",
        "object": "balance",
        "operation_type": "MANUAL",
        "related_object": {"type": "voucher", "id": voucher.id},
    }


def reward_out(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "name": row["name"],
        "stock": row["stock"],
        "redeemed": row["redeemed"],
        "attributes": {},
        "metadata": row["metadata"],
        "type": row["type"],
        "parameters": row["parameters"],
        "created_at": iso(row["created_at"]),
        "updated_at": None,
        "object": "reward",
    }


def assignment_out(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "reward_id": row["reward_id"],
        "created_at": iso(row["created_at"]),
        "updated_at": None,
        "object": "reward_assignment",
        "related_object_id": row["campaign_id"],
        "related_object_type": "campaign",
        "parameters": {"loyalty": {"points": row["points"]}},
    }
