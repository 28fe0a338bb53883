"""The points maths on its own: lots, spending order, pending points, claw-backs and expiry."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from perkflow.ledger.domain import InsufficientPoints, Lot, PointsAccount

DAY = 86_400


def account_with(*lots: tuple[int, int, int | None]) -> PointsAccount:
    account = PointsAccount()
    for lot_id, amount, expires in lots:
        account.earn(lot_id, amount, expires_at=expires)
    return account


def test_spending_takes_soonest_expiring_lots_first() -> None:
    account = account_with((1, 50, 30 * DAY), (2, 50, 10 * DAY), (3, 50, None), (4, 50, 20 * DAY))
    allocations = account.spend(120, now=0)
    assert [(a.lot_id, a.amount) for a in allocations] == [(2, 50), (4, 50), (1, 20)]
    assert account.balance == 80
    assert sorted((lot.id, lot.remaining) for lot in account.lots) == [(1, 30), (3, 50)]


def test_expired_lots_cannot_be_spent_even_before_the_job_runs() -> None:
    account = account_with((1, 40, 10 * DAY), (2, 30, None))
    assert account.spendable(now=11 * DAY) == 30
    with pytest.raises(InsufficientPoints) as raised:
        account.spend(31, now=11 * DAY)
    assert raised.value.details == {"available": 30, "required": 31}
    assert account.balance == 70  # nothing changed


def test_pending_points_are_visible_but_not_spendable_until_released() -> None:
    account = PointsAccount()
    account.earn(1, 100, expires_at=None, release_at=5 * DAY)
    assert (account.balance, account.pending, account.spendable(0)) == (0, 100, 0)
    with pytest.raises(InsufficientPoints):
        account.spend(1, now=0)
    settlement = account.settle(5 * DAY)
    assert settlement.released_points == 100
    assert (account.balance, account.pending, account.earned) == (100, 0, 100)


def test_settle_expires_only_what_is_due_and_records_it() -> None:
    account = account_with((1, 10, 5 * DAY), (2, 20, 6 * DAY))
    settlement = account.settle(5 * DAY)
    assert [(a.lot_id, a.amount) for a in settlement.expired] == [(1, 10)]
    assert (account.balance, account.expired) == (20, 10)
    assert account.earned == 30  # expiry does not undo what was earned


def test_claw_back_prefers_the_refunded_lot_and_never_goes_negative() -> None:
    account = account_with((1, 30, 10 * DAY), (2, 40, 20 * DAY))
    account.spend(60, now=0)  # lot 1 empty, lot 2 has 10 left
    result = account.claw_back(25, now=0, prefer_lot_id=2)
    assert (result.taken, result.shortfall) == (10, 15)
    assert account.balance == 0
    assert account.earned == 45


def test_claw_back_of_a_pending_lot_cancels_pending_points() -> None:
    account = PointsAccount()
    account.earn(7, 60, expires_at=None, release_at=DAY)
    result = account.claw_back(20, now=0, prefer_lot_id=7)
    assert (result.taken, result.from_pending, account.pending, account.balance) == (0, 20, 40, 0)


def test_earnings_expiring_together_share_a_lot() -> None:
    account = account_with((1, 10, 9 * DAY), (2, 15, 9 * DAY))
    assert [(lot.id, lot.amount, lot.remaining) for lot in account.lots] == [(1, 25, 25)]


def test_lots_survive_encoding_round_trip() -> None:
    account = account_with((1, 10, 9 * DAY), (2, 15, None))
    account.earn(3, 5, expires_at=None, release_at=3 * DAY)
    copy = PointsAccount(
        account.balance,
        account.pending,
        account.earned,
        encoded_lots=account.encode_lots(),
        stored_due=account.next_due(),
    )
    assert copy.lots == account.lots
    assert copy.spendable(0) == account.spendable(0) == 25


class LedgerMachine(RuleBasedStateMachine):
    """Random sequences of earn, spend, accept, cancel, claw back and settle keep the books balanced."""

    def __init__(self) -> None:
        super().__init__()
        self.account = PointsAccount()
        self.now = 0
        self.next_id = 1
        self.net = 0  # points in minus points out, tracked independently of the account

    @rule(
        amount=st.integers(1, 500),
        expires_in=st.one_of(st.none(), st.integers(1, 60)),
        pending_days=st.integers(0, 5),
    )
    def earn(self, amount: int, expires_in: int | None, pending_days: int) -> None:
        expires = self.now + expires_in * DAY if expires_in else None
        release = self.now + pending_days * DAY if pending_days else None
        self.account.earn(self.next_id, amount, expires_at=expires, release_at=release)
        self.next_id += 1

    @rule(amount=st.integers(1, 800))
    def spend(self, amount: int) -> None:
        before = self.account.spendable(self.now)
        if amount > before:
            with pytest.raises(InsufficientPoints):
                self.account.spend(amount, self.now)
            return
        allocations = self.account.spend(amount, self.now)
        assert sum(a.amount for a in allocations) == amount
        # soonest-expiring first: no unused lot expires before the last lot drawn from
        last = allocations[-1].lot_id
        drawn = self.account.lot(last)
        cutoff = drawn.spend_key() if drawn else None
        for lot in self.account.lots:
            usable = (
                not lot.pending
                and lot.remaining > 0
                and (lot.expires_at is None or lot.expires_at > self.now)
            )
            if usable and cutoff is not None and lot.id != last:
                assert lot.spend_key() > cutoff

    @precondition(lambda self: any(lot.pending for lot in self.account.lots))
    @rule(data=st.data())
    def release_or_cancel(self, data: st.DataObject) -> None:
        lot = data.draw(st.sampled_from([lot for lot in self.account.lots if lot.pending]))
        if data.draw(st.booleans()):
            self.account.release(lot.id)
        else:
            self.account.cancel_pending(lot.id)

    @rule(amount=st.integers(1, 300))
    def claw_back(self, amount: int) -> None:
        result = self.account.claw_back(amount, self.now)
        assert result.taken + result.shortfall == amount

    @rule(days=st.integers(0, 20))
    def time_passes(self, days: int) -> None:
        self.now += days * DAY
        self.account.settle(self.now)

    @invariant()
    def balances_equal_lots(self) -> None:
        lots = self.account.lots
        assert self.account.balance == sum(lot.remaining for lot in lots if not lot.pending)
        assert self.account.pending == sum(lot.remaining for lot in lots if lot.pending)
        assert self.account.balance >= 0 and self.account.pending >= 0
        assert all(lot.remaining > 0 for lot in lots)

    @invariant()
    def survives_storage(self) -> None:
        stored = PointsAccount(
            self.account.balance,
            self.account.pending,
            self.account.earned,
            self.account.spent,
            self.account.expired,
            encoded_lots=self.account.encode_lots(),
            stored_due=self.account.next_due(),
        )
        assert stored.spendable(self.now) == self.account.spendable(self.now)


TestLedgerMachine = LedgerMachine.TestCase
TestLedgerMachine.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


@given(
    st.lists(
        st.tuples(st.integers(1, 1000), st.one_of(st.none(), st.integers(1, 10**6))), min_size=1, max_size=30
    )
)
def test_a_spend_of_everything_spendable_empties_the_account(lots: list[tuple[int, int | None]]) -> None:
    account = PointsAccount()
    for index, (amount, expires) in enumerate(lots, start=1):
        account.earn(index, amount, expires_at=expires)
    total = account.spendable(0)
    account.spend(total, 0)
    assert account.balance == 0 and account.lots == []


def test_lot_json_shape_is_stable() -> None:
    assert Lot(1, 10, 5, 99, None, 3).to_json() == [1, 10, 5, 99, None, 3]


@given(
    st.lists(
        st.tuples(st.integers(1, 30), st.one_of(st.none(), st.integers(1, 30)), st.booleans()),
        min_size=0,
        max_size=6,
    ),
    st.integers(0, 32),
    st.one_of(st.none(), st.integers(1, 10)),
    st.booleans(),
)
def test_due_by_agrees_with_next_due(
    lots: list[tuple[int, int | None, bool]], now_day: int, window: int | None, reload: bool
) -> None:
    """The cheap check settlement makes before every event says exactly what next_due() says,
    also after releases (which leave its lower bound behind) and after a round trip through storage."""
    account = PointsAccount()
    for lot_id, (earned_day, expires_day, pending) in enumerate(lots, start=1):
        account.earn(
            lot_id,
            10,
            expires_at=expires_day * DAY if expires_day is not None else None,
            release_at=(earned_day + 3) * DAY if pending else None,
            earned_day=earned_day,
            window_days=window,
        )
    for lot in list(account.lots)[::2]:
        account.release(lot.id, window_days=window)
    if reload:
        account = PointsAccount(
            account.balance,
            account.pending,
            account.earned,
            earned_by_day=dict(account.earned_by_day),
            encoded_lots=account.encode_lots(),
            stored_due=account.next_due(window),
        )
    now = now_day * DAY
    due = account.next_due(window)
    assert account.due_by(now, window) == (due is not None and due <= now)
