"""Earning rules and expiry policies with no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple

from perkflow.core.errors import InvalidInput
from perkflow.core.limits import MAX_POINTS

ExpiryKind = Literal["none", "rolling", "end_of_period"]
Period = Literal["month", "quarter", "year"]
RuleKind = Literal["per_amount", "fixed"]
OncePer = Literal["day", "year", "lifetime"]


@dataclass(frozen=True, slots=True)
class ExpiryPolicy:
    """When earned points expire: never, N days after earning, or at the end of a calendar period.

    `rolling` points stay valid through the N-th day after the day they were earned and expire at the
    end of that day (00:00 UTC the next day), so a day's earnings expire together. `end_of_period`
    with `periods_after=0` expires at the end of the period the points were earned in;
    `periods_after=1` keeps them through the following period as well (e.g. "end of next year").
    """

    kind: ExpiryKind = "none"
    days: int | None = None
    period: Period | None = None
    periods_after: int = 0

    def expires_at(self, earned_at: datetime) -> datetime | None:
        earned_at = earned_at.astimezone(UTC)
        if self.kind == "none":
            return None
        if self.kind == "rolling":
            expiry = self.expires_epoch(int(earned_at.timestamp()))
            assert expiry is not None
            return datetime.fromtimestamp(expiry, UTC)
        assert self.period is not None
        months = {"month": 1, "quarter": 3, "year": 12}[self.period]
        start_month = (earned_at.month - 1) // months * months if self.period != "year" else 0
        month_index = earned_at.year * 12 + start_month + months * (1 + self.periods_after)
        return datetime(month_index // 12, month_index % 12 + 1, 1, tzinfo=UTC)

    def expires_epoch(self, earned_epoch: int) -> int | None:
        """expires_at in UTC epoch seconds (the ingestion hot path works in epochs)."""
        if self.kind == "none":
            return None
        if self.kind == "rolling":
            assert self.days is not None
            return (earned_epoch // 86400 + self.days + 1) * 86400
        moment = self.expires_at(datetime.fromtimestamp(earned_epoch, UTC))
        assert moment is not None
        return int(moment.timestamp())

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "days": self.days,
            "period": self.period,
            "periods_after": self.periods_after,
        }


@dataclass(frozen=True, slots=True)
class EarningRule:
    """Points awarded for one kind of event.

    `per_amount`: `points` for every whole `amount_unit` minor units of the event's amount field
    (checkout `total`), e.g. 1 point per 100 cents. `fixed`: `points` for each matching event.
    `conditions` are equalities on the event's data (e.g. {"channel": "online"}).
    """

    id: str
    name: str
    event: str
    kind: RuleKind
    points: int
    amount_unit: int | None = None
    amount_field: str = "total"
    min_amount: int | None = None
    pending_days: int = 0
    conditions: dict[str, Any] = field(default_factory=dict)
    once_per: OncePer | None = None
    active: bool = True

    def matches(self, data: dict[str, Any]) -> bool:
        if not self.active:
            return False
        for key, expected in self.conditions.items():
            if data.get(key) != expected:
                return False
        if self.min_amount is not None:
            amount = data.get(self.amount_field)
            if not isinstance(amount, int) or amount < self.min_amount:
                return False
        return True

    def points_for(self, data: dict[str, Any]) -> int:
        if self.kind == "fixed":
            return self.points
        amount = data.get(self.amount_field)
        if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
            return 0
        assert self.amount_unit
        return (amount // self.amount_unit) * self.points


class EarnPlan(NamedTuple):
    """What an event earns. One event creates at most one lot, so when any matching rule holds its
    points back, the whole earning is pending for the longest pending period among those rules.

    A named tuple rather than a frozen dataclass: one is made per event, and a frozen dataclass
    costs several times as much to create."""

    points: int
    pending_days: int
    rule_ids: tuple[str, ...]


def plan_earning(rules: list[EarningRule], event: str, data: dict[str, Any]) -> EarnPlan:
    points = 0
    pending_days = 0
    used: list[str] = []
    for rule in rules:
        if rule.event != event or not rule.matches(data):
            continue
        earned = rule.points_for(data)
        if earned <= 0:
            continue
        used.append(rule.id)
        points += earned
        pending_days = max(pending_days, rule.pending_days)
    if points > MAX_POINTS:
        # Refused rather than capped: an earning this large is a misconfigured rule or a typo in
        # the amount, and the brand should see it instead of a silently clipped figure.
        raise InvalidInput(
            f"the event would earn {points} points; one event may earn at most {MAX_POINTS}",
            code="points_out_of_range",
            details={"max_points": MAX_POINTS, "rules": used},
        )
    return EarnPlan(points, pending_days, tuple(used))


def once_per_key(once_per: OncePer, moment: datetime) -> str:
    """The period an earning may happen once in, as part of a deduplication key."""
    moment = moment.astimezone(UTC)
    if once_per == "day":
        return moment.strftime("%Y-%m-%d")
    if once_per == "year":
        return str(moment.year)
    return "ever"
