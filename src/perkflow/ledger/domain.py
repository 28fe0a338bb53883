"""Points maths with no I/O: lots, earning, spending soonest-expiring first, pending points, expiry.

Times are UTC epoch seconds here: lots are compared and sorted constantly, and integers make that
cheap and unambiguous. Services convert to aware datetimes at the edges.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson

from perkflow.core.errors import InvalidInput

NEVER = 1 << 62  # sort key for lots that never expire


class InsufficientPoints(InvalidInput):
    code = "insufficient_points"


@dataclass(slots=True)
class Lot:
    """Points from one earning. `release_at` is set while the lot is pending."""

    id: int
    amount: int
    remaining: int
    expires_at: int | None
    release_at: int | None = None
    earned_day: int | None = None  # UTC day number of the earning, for rolling tier windows

    @property
    def pending(self) -> bool:
        return self.release_at is not None

    def spend_key(self) -> tuple[int, int]:
        return (self.expires_at if self.expires_at is not None else NEVER, self.id)

    def to_json(self) -> list[int | None]:
        return [self.id, self.amount, self.remaining, self.expires_at, self.release_at, self.earned_day]

    @classmethod
    def from_json(cls, raw: list[int | None]) -> Lot:
        lot_id, amount, remaining, expires_at, release_at, earned_day = raw
        assert lot_id is not None and amount is not None and remaining is not None
        return cls(lot_id, amount, remaining, expires_at, release_at, earned_day)


@dataclass(slots=True)
class Allocation:
    lot_id: int
    amount: int


@dataclass(slots=True)
class ClawBack:
    taken: int
    from_pending: int
    shortfall: int
    allocations: list[Allocation]


@dataclass(slots=True)
class Settlement:
    released: list[Allocation] = field(default_factory=list)
    expired: list[Allocation] = field(default_factory=list)  # available points that expired
    expired_pending: list[Allocation] = field(default_factory=list)  # pending points that expired

    @property
    def released_points(self) -> int:
        return sum(a.amount for a in self.released)

    @property
    def expired_points(self) -> int:
        return sum(a.amount for a in self.expired)


class PointsAccount:
    """A member's points in one program. Balances are kept equal to the sum of the open lots.

    `balance` counts available lots, `pending` counts pending lots; neither can go negative because
    every debit is taken from lots that hold it. `earned` is the lifetime total of confirmed earnings
    net of claw-backs (tiers qualify on it), `spent` and `expired` are running totals.

    Available earnings that expire at the same moment share one lot: they are indistinguishable for
    spending and expiry, and fewer lots keep the account row small (it is rewritten on every change).
    Pending earnings always get their own lot, because a checkout accept or reject addresses it.

    Lots arrive from storage as JSON and are decoded only when an operation needs them; reads that
    only need the balance use `stored_due` (next_due() as stored with the lots) to skip decoding.
    """

    __slots__ = (
        "_due_floor",
        "_encoded",
        "_lots",
        "_stored_due",
        "balance",
        "earned",
        "earned_by_day",
        "expired",
        "pending",
        "spent",
    )

    def __init__(
        self,
        balance: int = 0,
        pending: int = 0,
        earned: int = 0,
        spent: int = 0,
        expired: int = 0,
        lots: list[Lot] | None = None,
        earned_by_day: dict[int, int] | None = None,
        *,
        encoded_lots: str | None = None,
        stored_due: int | None = None,
    ) -> None:
        self.balance = balance
        self.pending = pending
        self.earned = earned
        self.spent = spent
        self.expired = expired
        # Confirmed earnings per UTC day inside the tier window ({day: points}); empty for lifetime tiers.
        self.earned_by_day: dict[int, int] = earned_by_day if earned_by_day is not None else {}
        self._lots: list[Lot] | None = lots if encoded_lots is None else None
        if self._lots is None and encoded_lots is None:
            self._lots = []
        self._encoded = encoded_lots or "[]"
        self._stored_due = stored_due
        # A lower bound of next_due() kept while lots are only added, so balance reads skip the lots.
        self._due_floor: int | None = stored_due if encoded_lots is not None else self.next_due()

    @property
    def lots(self) -> list[Lot]:
        if self._lots is None:
            self._lots = [Lot(*raw) for raw in orjson.loads(self._encoded)]
        return self._lots

    @lots.setter
    def lots(self, value: list[Lot]) -> None:
        self._lots = value
        self._due_floor = self.next_due()

    def encode_lots(self) -> str:
        """The open lots as stored: JSON arrays [id, amount, remaining, expires_at, release_at, day]."""
        if self._lots is None:
            return self._encoded
        return orjson.dumps([lot.to_json() for lot in self._lots]).decode()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PointsAccount):
            return NotImplemented
        return (self.balance, self.pending, self.earned, self.spent, self.expired, self.earned_by_day) == (
            other.balance,
            other.pending,
            other.earned,
            other.spent,
            other.expired,
            other.earned_by_day,
        ) and sorted(self.lots, key=lambda lot: lot.id) == sorted(other.lots, key=lambda lot: lot.id)

    def __repr__(self) -> str:
        return (
            f"PointsAccount(balance={self.balance}, pending={self.pending}, earned={self.earned}, "
            f"spent={self.spent}, expired={self.expired}, lots={self.lots!r})"
        )

    # -- queries ----------------------------------------------------------------------------------

    def lot(self, lot_id: int) -> Lot | None:
        for lot in self.lots:
            if lot.id == lot_id:
                return lot
        return None

    def spendable(self, now: int) -> int:
        """Available points that have not expired by `now` (expiry may not be materialised yet)."""
        if self._due_floor is None or self._due_floor > now:
            return self.balance
        return sum(
            lot.remaining
            for lot in self.lots
            if not lot.pending and (lot.expires_at is None or lot.expires_at > now)
        )

    def due_by(self, now: int, window_days: int | None = None) -> bool:
        """Whether the account needs settling at `now` (see next_due), cheaply when it does not."""
        if window_days is None and (self._due_floor is None or self._due_floor > now):
            return False  # the floor is a lower bound of every release and expiry moment
        due = self.next_due(window_days)
        return due is not None and due <= now

    def next_due(self, window_days: int | None = None) -> int | None:
        """The earliest moment this account needs settling: a pending lot releases, a lot expires,
        or (with a rolling tier window) the oldest counted day leaves the window."""
        if self._lots is None:
            return self._stored_due
        due: int | None = None
        for lot in self._lots:
            for moment in (lot.release_at, lot.expires_at):
                if moment is not None and (due is None or moment < due):
                    due = moment
        if window_days is not None and self.earned_by_day:
            leaves = (min(self.earned_by_day) + window_days) * 86400
            due = leaves if due is None else min(due, leaves)
        return due

    def mark_due_stored(self, due: int | None) -> bool:
        """Note that `due` (this account's next_due()) is what storage holds; True if it changed."""
        if due == self._stored_due:
            return False
        self._stored_due = due
        return True

    def qualifying(self, window_days: int | None, today: int) -> int:
        """Points counted for tiers: lifetime earnings, or earnings of the last `window_days` days."""
        if window_days is None:
            return self.earned
        first_day = today - window_days + 1
        return sum(points for day, points in self.earned_by_day.items() if day >= first_day)

    # -- changes ----------------------------------------------------------------------------------

    def earn(
        self,
        lot_id: int,
        amount: int,
        *,
        expires_at: int | None,
        release_at: int | None = None,
        earned_day: int | None = None,
        window_days: int | None = None,
    ) -> Lot:
        if amount <= 0:
            raise ValueError("an earning must be positive")
        lots = self.lots
        lot = None
        if release_at is None:
            for candidate in lots:
                if candidate.expires_at == expires_at and candidate.release_at is None:
                    lot = candidate
                    lot.amount += amount
                    lot.remaining += amount
                    break
        if lot is None:
            lot = Lot(lot_id, amount, amount, expires_at, release_at, earned_day)
            lots.append(lot)
        for moment in (expires_at, release_at):
            if moment is not None and (self._due_floor is None or moment < self._due_floor):
                self._due_floor = moment
        if release_at is None:
            self.balance += amount
            self._count_earned(amount, earned_day, window_days)
        else:
            self.pending += amount
        return lot

    def release(self, lot_id: int, *, window_days: int | None = None) -> int:
        """Make a pending lot spendable now (checkout accepted or pending period over)."""
        lot = self.lot(lot_id)
        if lot is None or not lot.pending:
            return 0
        lot.release_at = None
        self.pending -= lot.remaining
        self.balance += lot.remaining
        self._count_earned(lot.remaining, lot.earned_day, window_days)
        return lot.remaining

    def cancel_pending(self, lot_id: int, amount: int | None = None) -> int:
        """Cancel all or part of a pending lot (checkout rejected or refunded before release)."""
        lot = self.lot(lot_id)
        if lot is None or not lot.pending:
            return 0
        cancelled = lot.remaining if amount is None else min(amount, lot.remaining)
        lot.remaining -= cancelled
        self.pending -= cancelled
        self._drop_empty()
        return cancelled

    def spend(self, amount: int, now: int) -> list[Allocation]:
        """Take `amount` from available, unexpired lots, soonest-expiring first."""
        if amount <= 0:
            raise ValueError("a spend must be positive")
        available = self.spendable(now)
        if amount > available:
            raise InsufficientPoints(
                f"the member has {available} spendable points, {amount} are needed",
                details={"available": available, "required": amount},
            )
        allocations = self._take(amount, now, prefer_lot_id=None)
        self.balance -= amount
        self.spent += amount
        return allocations

    def claw_back(
        self,
        amount: int,
        now: int,
        *,
        prefer_lot_id: int | None = None,
        earned_day: int | None = None,
        window_days: int | None = None,
    ) -> ClawBack:
        """Take back points for a refund: the refunded earning's own lot first, never below zero.

        If the preferred lot is still pending, the pending points are cancelled instead. What cannot
        be recovered because it was already spent is reported as the shortfall.
        """
        if amount <= 0:
            raise ValueError("a claw-back must be positive")
        preferred = self.lot(prefer_lot_id) if prefer_lot_id is not None else None
        if preferred is not None and preferred.pending:
            cancelled = self.cancel_pending(preferred.id, amount)
            return ClawBack(taken=0, from_pending=cancelled, shortfall=amount - cancelled, allocations=[])
        take = min(amount, self.spendable(now))
        allocations = self._take(take, now, prefer_lot_id=prefer_lot_id) if take else []
        self.balance -= take
        self._count_earned(-amount, earned_day, window_days)
        return ClawBack(taken=take, from_pending=0, shortfall=amount - take, allocations=allocations)

    def settle(self, now: int, *, window_days: int | None = None) -> Settlement:
        """Release pending lots whose time has come, then expire lots whose expiry has passed."""
        settlement = Settlement()
        for lot in sorted(self.lots, key=Lot.spend_key):
            if lot.release_at is not None and lot.release_at <= now:
                settlement.released.append(Allocation(lot.id, self.release(lot.id, window_days=window_days)))
        for lot in sorted(self.lots, key=Lot.spend_key):
            if lot.expires_at is not None and lot.expires_at <= now and lot.remaining > 0:
                if lot.pending:
                    settlement.expired_pending.append(Allocation(lot.id, lot.remaining))
                    self.pending -= lot.remaining
                else:
                    settlement.expired.append(Allocation(lot.id, lot.remaining))
                    self.balance -= lot.remaining
                    self.expired += lot.remaining
                lot.remaining = 0
        self._drop_empty()
        return settlement

    def prune_window(self, window_days: int | None, today: int) -> None:
        if window_days is None:
            self.earned_by_day.clear()
            return
        first_day = today - window_days + 1
        for day in [d for d in self.earned_by_day if d < first_day]:
            del self.earned_by_day[day]

    # -- internals ----------------------------------------------------------------------------------

    def _take(self, amount: int, now: int, *, prefer_lot_id: int | None) -> list[Allocation]:
        candidates = [
            lot
            for lot in self.lots
            if not lot.pending and lot.remaining > 0 and (lot.expires_at is None or lot.expires_at > now)
        ]
        candidates.sort(key=lambda lot: (lot.id != prefer_lot_id, *lot.spend_key()))
        allocations: list[Allocation] = []
        left = amount
        for lot in candidates:
            if left == 0:
                break
            part = min(left, lot.remaining)
            lot.remaining -= part
            left -= part
            allocations.append(Allocation(lot.id, part))
        if left:  # pragma: no cover - callers check spendable() first
            raise AssertionError("lots do not cover the balance")
        self._drop_empty()
        return allocations

    def _drop_empty(self) -> None:
        if any(lot.remaining == 0 for lot in self.lots):
            self.lots = [lot for lot in self.lots if lot.remaining > 0]

    def _count_earned(self, amount: int, earned_day: int | None, window_days: int | None) -> None:
        self.earned = max(0, self.earned + amount)
        if window_days is not None and earned_day is not None:
            total = self.earned_by_day.get(earned_day, 0) + amount
            if total > 0:
                self.earned_by_day[earned_day] = total
            else:
                self.earned_by_day.pop(earned_day, None)
