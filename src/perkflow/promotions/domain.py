"""Promotion rules with no I/O: orders, discount computation, validation rules and gift-card balance maths."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

CAMPAIGN_TYPES = {
    "DISCOUNT_COUPONS": "DISCOUNT_VOUCHER",
    "GIFT_VOUCHERS": "GIFT_VOUCHER",
    "LOYALTY_PROGRAM": "LOYALTY_CARD",
    "REFERRAL_PROGRAM": "DISCOUNT_VOUCHER",
}
DISCOUNT_TYPES = ("AMOUNT", "PERCENT", "FIXED")
MAX_AMOUNT = 10**12  # minor units; anything larger is a mistake, and it keeps sums inside 64 bits
MAX_QUANTITY = 10**6  # units of one order item
MAX_ITEMS = 1000  # items of one order: with MAX_AMOUNT each, their sum stays far inside 64 bits


class RuleViolation(Exception):
    """Why a code cannot be used: a Voucherify error key, a message and the HTTP status to answer."""

    def __init__(self, key: str, message: str, *, status: int = 400, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.key = key
        self.message = message
        self.status = status
        self.details = details or {}


@dataclass(frozen=True, slots=True)
class OrderItem:
    product_id: str | None
    sku_id: str | None
    quantity: int
    amount: int


@dataclass(frozen=True, slots=True)
class Order:
    amount: int
    items: tuple[OrderItem, ...] = ()
    id: str | None = None
    source_id: str | None = None
    amount_given: bool = True  # False: the request gave neither order.amount nor items

    @classmethod
    def parse(cls, raw: Any) -> Order:
        """An order from a request: `amount`, or the sum of its items' `amount` or `price` x `quantity`."""
        if raw is None:
            return cls(amount=0, amount_given=False)
        if not isinstance(raw, dict):
            raise RuleViolation("invalid_payload", "order must be an object")
        raw_items = raw.get("items")
        if raw_items is not None and not isinstance(raw_items, list):
            raise RuleViolation("invalid_payload", "order.items must be a list")
        if raw_items is not None and len(raw_items) > MAX_ITEMS:
            raise RuleViolation("invalid_payload", f"an order has at most {MAX_ITEMS} items")
        items = []
        for index, item in enumerate(raw_items or []):
            if not isinstance(item, dict):
                raise RuleViolation("invalid_payload", f"order.items[{index}] must be an object")
            quantity = _int(item.get("quantity", 1), f"order.items[{index}].quantity", minimum=0)
            if quantity > MAX_QUANTITY:
                raise RuleViolation(
                    "invalid_payload", f"order.items[{index}].quantity may not exceed {MAX_QUANTITY}"
                )
            if item.get("amount") is not None:
                amount = _int(item["amount"], f"order.items[{index}].amount", minimum=0)
            else:
                price = _int(item.get("price", 0), f"order.items[{index}].price", minimum=0)
                amount = price * quantity
                if amount > MAX_AMOUNT:
                    raise RuleViolation(
                        "invalid_payload",
                        f"order.items[{index}]: price x quantity may not exceed {MAX_AMOUNT}",
                    )
            items.append(
                OrderItem(
                    product_id=_str_or_none(item.get("product_id")),
                    sku_id=_str_or_none(item.get("sku_id")),
                    quantity=quantity,
                    amount=amount,
                )
            )
        if raw.get("amount") is not None:
            amount = _int(raw["amount"], "order.amount", minimum=0)
        else:
            amount = sum(i.amount for i in items)
        if amount > MAX_AMOUNT:
            raise RuleViolation("invalid_payload", f"order.amount may not exceed {MAX_AMOUNT}")
        return cls(
            amount=amount,
            items=tuple(items),
            id=_str_or_none(raw.get("id")),
            source_id=_str_or_none(raw.get("source_id")),
            amount_given=raw.get("amount") is not None or bool(items),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "source_id": self.source_id,
            "amount": self.amount,
            "items": [
                {"product_id": i.product_id, "sku_id": i.sku_id, "quantity": i.quantity, "amount": i.amount}
                for i in self.items
            ],
        }


def _int(value: Any, name: str, *, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise RuleViolation("invalid_payload", f"{name} must be an integer (minor units)")
    if minimum is not None and value < minimum:
        raise RuleViolation("invalid_payload", f"{name} must be at least {minimum}")
    if value > MAX_AMOUNT:
        raise RuleViolation("invalid_payload", f"{name} may not exceed {MAX_AMOUNT}")
    return value


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)[:200]


# -- discounts --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Discount:
    type: str
    amount_off: int | None = None
    percent_off: int | float | None = None
    amount_limit: int | None = None
    fixed_amount: int | None = None

    @classmethod
    def parse(cls, raw: Any) -> Discount:
        try:
            return cls._parse(raw)
        except RuleViolation as exc:
            raise RuleViolation("invalid_campaign", exc.message) from exc

    @classmethod
    def _parse(cls, raw: Any) -> Discount:
        if not isinstance(raw, dict):
            raise RuleViolation("invalid_campaign", "voucher.discount must be an object")
        kind = raw.get("type")
        if kind not in DISCOUNT_TYPES:
            raise RuleViolation(
                "invalid_campaign",
                f"discount.type must be one of {', '.join(DISCOUNT_TYPES)} (UNIT is not supported)",
            )
        if kind == "AMOUNT":
            return cls("AMOUNT", amount_off=_int(raw.get("amount_off"), "discount.amount_off", minimum=0))
        if kind == "FIXED":
            return cls(
                "FIXED", fixed_amount=_int(raw.get("fixed_amount"), "discount.fixed_amount", minimum=0)
            )
        percent = raw.get("percent_off")
        if isinstance(percent, bool) or not isinstance(percent, int | float) or not 0 < percent <= 100:
            raise RuleViolation("invalid_campaign", "discount.percent_off must be a number in (0, 100]")
        limit = raw.get("amount_limit")
        return cls(
            "PERCENT",
            percent_off=percent,
            amount_limit=None if limit is None else _int(limit, "discount.amount_limit", minimum=0),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type, "effect": "APPLY_TO_ORDER"}
        for key in ("amount_off", "percent_off", "amount_limit", "fixed_amount"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out

    def amount_for(self, order_amount: int) -> int:
        """The discount on an order of `order_amount`, never more than the order itself."""
        if order_amount <= 0:
            return 0
        if self.type == "AMOUNT":
            assert self.amount_off is not None
            return min(self.amount_off, order_amount)
        if self.type == "FIXED":
            assert self.fixed_amount is not None
            return max(0, order_amount - self.fixed_amount)
        assert self.percent_off is not None
        # Round half up on exact integer maths when the percentage is whole (the usual case).
        if isinstance(self.percent_off, int):
            value = (order_amount * self.percent_off * 2 + 100) // 200
        else:
            value = int(order_amount * self.percent_off / 100 + 0.5)
        if self.amount_limit is not None:
            value = min(value, self.amount_limit)
        return min(value, order_amount)

    def value(self) -> int | float:
        """The headline value of the discount, as a distribution writes it into a profile."""
        if self.type == "AMOUNT":
            return self.amount_off or 0
        if self.type == "FIXED":
            return self.fixed_amount or 0
        return self.percent_off or 0


# -- gift cards -------------------------------------------------------------------------------------


def gift_debit(balance: int, order_remaining: int, requested: int | None) -> int:
    """What a gift card pays for an order: the requested credits (or all it can), within balance and order."""
    if balance <= 0:
        raise RuleViolation("gift_amount_exceeded", "the gift card has no balance left")
    if requested is not None:
        if requested <= 0:
            raise RuleViolation("invalid_payload", "gift.credits must be a positive integer")
        if requested > balance:
            raise RuleViolation(
                "gift_amount_exceeded",
                f"the gift card holds {balance}, {requested} were requested",
                details={"balance": balance, "requested": requested},
            )
        return min(requested, order_remaining)
    return min(balance, order_remaining)


def require_payable_order(order: Order, order_remaining: int) -> None:
    """A gift card pays for an order; with no amount to pay it would use up a redemption for nothing.

    The keys are Voucherify's redemption failure codes for orders without or with a wrong amount.
    """
    if not order.amount_given:
        raise RuleViolation(
            "missing_amount", "a gift card pays for an order: give order.amount (minor units) or its items"
        )
    if order.amount <= 0:
        raise RuleViolation("invalid_amount", "order.amount must be above 0 to pay with a gift card")
    if order_remaining <= 0:
        raise RuleViolation(
            "invalid_amount",
            "the other codes already cover the whole order: nothing is left for the gift card to pay",
            details={"order_amount": order.amount},
        )


def gift_credit(balance: int, amount: int) -> int:
    """The balance after adding credits (a positive amount)."""
    if amount <= 0:
        raise RuleViolation("invalid_payload", "amount must be a positive integer")
    if balance + amount > MAX_AMOUNT:
        raise RuleViolation("invalid_payload", f"a gift card balance may not exceed {MAX_AMOUNT}")
    return balance + amount


# -- validation rules -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rules:
    """A campaign's validation rules. Dates are aware UTC; limits None mean no limit."""

    start_date: datetime | None = None
    expiration_date: datetime | None = None
    quantity: int | None = None  # uses per code
    max_redemptions: int | None = None  # across the campaign
    max_redemptions_per_customer: int | None = None
    min_order_amount: int | None = None
    segment_id: str | None = None


@dataclass(slots=True)
class CodeState:
    """What validation needs to know about one code and its customer at this moment."""

    active: bool
    campaign_active: bool
    redeemed_quantity: int
    campaign_redemptions: int
    customer_redemptions: int
    in_segment: bool | None = None  # None: the campaign has no segment rule
    customer_known: bool = True  # False: neither the request nor the code's holder says who redeems
    extra: dict[str, Any] = field(default_factory=dict)


def check_rules(rules: Rules, state: CodeState, order: Order, now: datetime) -> None:
    """Raise the first rule the code breaks, with a reason a person can act on."""
    if not state.campaign_active or not state.active:
        raise RuleViolation("voucher_disabled", "the code is disabled")
    if rules.start_date is not None and now < rules.start_date:
        raise RuleViolation(
            "voucher_not_active",
            f"the code is valid from {rules.start_date.isoformat()}",
            details={"start_date": rules.start_date.isoformat()},
        )
    if rules.expiration_date is not None and now >= rules.expiration_date:
        raise RuleViolation(
            "voucher_expired",
            f"the code expired at {rules.expiration_date.isoformat()}",
            details={"expiration_date": rules.expiration_date.isoformat()},
        )
    if rules.quantity is not None and state.redeemed_quantity >= rules.quantity:
        raise RuleViolation(
            "quantity_exceeded",
            f"the code has been redeemed {state.redeemed_quantity} of {rules.quantity} times",
            details={"quantity": rules.quantity, "redeemed_quantity": state.redeemed_quantity},
        )
    if rules.max_redemptions is not None and state.campaign_redemptions >= rules.max_redemptions:
        raise RuleViolation(
            "redemption_rules_violated",
            f"the campaign's limit of {rules.max_redemptions} redemptions is reached",
            details={"max_redemptions": rules.max_redemptions},
        )
    if rules.max_redemptions_per_customer is not None and not state.customer_known:
        raise RuleViolation(
            "missing_customer",
            "the campaign limits redemptions per customer: give the customer (the code is not published)",
            details={"max_redemptions_per_customer": rules.max_redemptions_per_customer},
        )
    if (
        rules.max_redemptions_per_customer is not None
        and state.customer_redemptions >= rules.max_redemptions_per_customer
    ):
        raise RuleViolation(
            "redemption_rules_violated",
            f"the customer has already redeemed this campaign {state.customer_redemptions} times "
            f"(limit {rules.max_redemptions_per_customer})",
            details={"max_redemptions_per_customer": rules.max_redemptions_per_customer},
        )
    if rules.min_order_amount is not None and order.amount < rules.min_order_amount:
        raise RuleViolation(
            "order_rules_violated",
            f"the order amount {order.amount} is below the minimum of {rules.min_order_amount}",
            details={"min_order_amount": rules.min_order_amount, "order_amount": order.amount},
        )
    if rules.segment_id is not None and not state.in_segment:
        raise RuleViolation(
            "customer_rules_violated",
            f"the customer is not in segment {rules.segment_id!r}",
            details={"segment_id": rules.segment_id},
        )
