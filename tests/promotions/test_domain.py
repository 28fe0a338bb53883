"""Discount maths, validation rules, gift balances and order parsing: pure functions, no database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from perkflow.promotions.domain import (
    CodeState,
    Discount,
    Order,
    Rules,
    RuleViolation,
    check_rules,
    gift_credit,
    gift_debit,
    require_payable_order,
)

NOW = datetime(2026, 3, 14, 9, 0, tzinfo=UTC)


def state(**changes: object) -> CodeState:
    base = CodeState(
        active=True, campaign_active=True, redeemed_quantity=0, campaign_redemptions=0, customer_redemptions=0
    )
    for key, value in changes.items():
        setattr(base, key, value)
    return base


def violation(rules: Rules, code_state: CodeState, order: Order | None = None) -> str:
    with pytest.raises(RuleViolation) as caught:
        check_rules(rules, code_state, order or Order(amount=1000), NOW)
    return caught.value.key


def test_amount_percent_and_fixed_discounts() -> None:
    assert Discount.parse({"type": "AMOUNT", "amount_off": 500}).amount_for(4000) == 500
    assert (
        Discount.parse({"type": "AMOUNT", "amount_off": 500}).amount_for(300) == 300
    )  # never above the order
    assert Discount.parse({"type": "PERCENT", "percent_off": 15}).amount_for(999) == 150  # 149.85 rounds up
    assert Discount.parse({"type": "PERCENT", "percent_off": 10}).amount_for(1005) == 101  # half up
    assert Discount.parse({"type": "PERCENT", "percent_off": 50, "amount_limit": 700}).amount_for(5000) == 700
    assert Discount.parse({"type": "PERCENT", "percent_off": 12.5}).amount_for(1000) == 125
    assert Discount.parse({"type": "FIXED", "fixed_amount": 1500}).amount_for(4000) == 2500
    assert Discount.parse({"type": "FIXED", "fixed_amount": 1500}).amount_for(1000) == 0
    assert Discount.parse({"type": "AMOUNT", "amount_off": 500}).amount_for(0) == 0


@pytest.mark.parametrize(
    "raw",
    [
        {"type": "UNIT", "unit_off": 1},
        {"type": "AMOUNT"},
        {"type": "AMOUNT", "amount_off": 5.5},
        {"type": "AMOUNT", "amount_off": -1},
        {"type": "PERCENT", "percent_off": 0},
        {"type": "PERCENT", "percent_off": 120},
        {"type": "PERCENT", "percent_off": True},
        "10%",
    ],
)
def test_bad_discounts_are_refused(raw: object) -> None:
    with pytest.raises(RuleViolation) as caught:
        Discount.parse(raw)
    assert caught.value.key == "invalid_campaign"


def test_each_validation_rule_gives_its_reason() -> None:
    assert violation(Rules(), state(active=False)) == "voucher_disabled"
    assert violation(Rules(), state(campaign_active=False)) == "voucher_disabled"
    assert violation(Rules(start_date=NOW + timedelta(seconds=1)), state()) == "voucher_not_active"
    assert violation(Rules(expiration_date=NOW), state()) == "voucher_expired"
    assert violation(Rules(quantity=1), state(redeemed_quantity=1)) == "quantity_exceeded"
    assert violation(Rules(max_redemptions=10), state(campaign_redemptions=10)) == "redemption_rules_violated"
    per_customer = Rules(max_redemptions_per_customer=2)
    assert violation(per_customer, state(customer_redemptions=2)) == "redemption_rules_violated"
    assert violation(Rules(min_order_amount=5000), state(), Order(amount=4999)) == "order_rules_violated"
    assert violation(Rules(segment_id="vip"), state(in_segment=False)) == "customer_rules_violated"


def test_codes_within_every_rule_pass() -> None:
    rules = Rules(
        start_date=NOW,
        expiration_date=NOW + timedelta(seconds=1),
        quantity=2,
        max_redemptions=10,
        max_redemptions_per_customer=2,
        min_order_amount=1000,
        segment_id="vip",
    )
    check_rules(
        rules,
        state(redeemed_quantity=1, campaign_redemptions=9, customer_redemptions=1, in_segment=True),
        Order(amount=1000),
        NOW,
    )


def test_gift_card_maths() -> None:
    assert gift_debit(balance=5000, order_remaining=3000, requested=None) == 3000
    assert gift_debit(balance=2000, order_remaining=3000, requested=None) == 2000
    assert gift_debit(balance=5000, order_remaining=3000, requested=1000) == 1000
    assert gift_debit(balance=5000, order_remaining=800, requested=1000) == 800
    for balance, requested in ((0, None), (500, 600)):
        with pytest.raises(RuleViolation) as caught:
            gift_debit(balance=balance, order_remaining=3000, requested=requested)
        assert caught.value.key == "gift_amount_exceeded"
    assert gift_credit(1500, 500) == 2000
    with pytest.raises(RuleViolation):
        gift_credit(1500, 0)


def test_orders_sum_their_items_and_refuse_bad_amounts() -> None:
    order = Order.parse({"items": [{"product_id": "p1", "quantity": 2, "price": 1250}, {"amount": 500}]})
    assert order.amount == 3000 and order.items[0].amount == 2500
    assert Order.parse({"amount": 100, "items": [{"amount": 9}]}).amount == 100
    assert Order.parse(None).amount == 0
    for raw in (
        {"amount": "10.00"},
        {"amount": 10.5},
        {"amount": -1},
        {"items": ["x"]},
        [1],
        {"amount": 10**13},
    ):
        with pytest.raises(RuleViolation) as caught:
            Order.parse(raw)
        assert caught.value.key == "invalid_payload"


def test_a_gift_card_needs_an_order_amount_to_pay() -> None:
    with pytest.raises(RuleViolation) as missing:
        require_payable_order(Order.parse(None), 0)
    assert missing.value.key == "missing_amount"
    assert Order.parse({}).amount_given is False and Order.parse({"items": [{"amount": 5}]}).amount_given
    with pytest.raises(RuleViolation) as zero:
        require_payable_order(Order.parse({"amount": 0}), 0)
    assert zero.value.key == "invalid_amount"
    with pytest.raises(RuleViolation) as covered:
        require_payable_order(Order.parse({"amount": 100}), 0)
    assert covered.value.key == "invalid_amount"
    require_payable_order(Order.parse({"amount": 100}), 40)


def test_customer_limits_need_a_customer() -> None:
    with pytest.raises(RuleViolation) as missing:
        check_rules(Rules(max_redemptions_per_customer=1), state(customer_known=False), Order(100), NOW)
    assert missing.value.key == "missing_customer"
    check_rules(Rules(), state(customer_known=False), Order(100), NOW)
