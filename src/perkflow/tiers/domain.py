"""Tier rules with no I/O: which tier a member qualifies for, and whether that is a move up or down."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TierDef:
    id: str
    name: str
    threshold: int  # qualifying points needed; the lowest tier (threshold 0) is everyone who opted in


@dataclass(frozen=True, slots=True)
class TierChange:
    from_tier: TierDef | None
    to_tier: TierDef | None

    @property
    def direction(self) -> str:
        old = self.from_tier.threshold if self.from_tier else -1
        new = self.to_tier.threshold if self.to_tier else -1
        return "tier_up" if new > old else "tier_down"


class TierLadder:
    """Tiers sorted by threshold; a member holds the highest tier whose threshold they reach."""

    def __init__(self, tiers: Iterable[TierDef]) -> None:
        self.tiers = sorted(tiers, key=lambda t: t.threshold)
        thresholds = [t.threshold for t in self.tiers]
        if len(set(thresholds)) != len(thresholds):
            raise ValueError("two tiers share a threshold")
        self._by_id = {t.id: t for t in self.tiers}

    def __bool__(self) -> bool:
        return bool(self.tiers)

    def get(self, tier_id: str | None) -> TierDef | None:
        return self._by_id.get(tier_id) if tier_id else None

    def tier_for(self, qualifying: int) -> TierDef | None:
        found = None
        for tier in self.tiers:
            if tier.threshold <= qualifying:
                found = tier
            else:
                break
        return found

    def evaluate(self, current_tier_id: str | None, qualifying: int) -> TierChange | None:
        """The change to apply, or None when the member already holds the right tier."""
        target = self.tier_for(qualifying)
        current = self.get(current_tier_id)
        if (target.id if target else None) == (current.id if current else None):
            return None
        return TierChange(from_tier=current, to_tier=target)
