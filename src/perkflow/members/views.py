"""The member as workflow filters, segment rules and templates see it: one lazily built mapping.

Keys are the loyalty field names CEP mappings use (`email`, `tier`, `points_balance`, custom fields…)
plus `segments` (ids of the member's segments) and `activity` (`activity.checkout.count`,
`activity.checkout.last_at`). Values are read only when asked for, so a filter on `tier` never
loads segment memberships or membership dates.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any

from perkflow.core.clock import from_epoch, to_epoch
from perkflow.core.uow import UnitOfWork
from perkflow.ledger.accounts import Account, AccountRepository
from perkflow.members.repository import Member, MemberRepository
from perkflow.members.service import FieldCatalog
from perkflow.programs.service import ProgramConfig
from perkflow.sync.fields import MEMBER_FIELDS, STANDING_FIELDS, read_values

PROFILE_KEYS = ("id", "member_id", "email", "first_name", "last_name", "birth_date", "status")
DATE_FIELDS = frozenset({"opted_in_at", "opted_out_at", "tier_since"})
DIRECT_FIELDS = frozenset(
    {
        "opted_in",
        "tier",
        "points_balance",
        "points_pending",
        "points_earned",
        "points_spent",
        "points_expired",
    }
)
EXTRA_KEYS = ("segments", "activity")


def customer_attribute_names(custom_fields: Mapping[str, Any]) -> set[str]:
    """Every name a customer condition or `customer.*` reference may use."""
    return {*PROFILE_KEYS, *MEMBER_FIELDS, *STANDING_FIELDS, *custom_fields, *EXTRA_KEYS}


class ActivityStats(Mapping[str, Mapping[str, Any]]):
    """activity.<type>.count and activity.<type>.last_at; types never seen count 0."""

    def __init__(self, stats: Mapping[str, list[int]]) -> None:
        self._stats = stats

    def __getitem__(self, activity_type: str) -> Mapping[str, Any]:
        found = self._stats.get(activity_type)
        if found is None:
            return {"count": 0, "last_at": None}
        return {"count": found[0], "last_at": from_epoch(found[1])}

    def __iter__(self) -> Iterator[str]:
        return iter(self._stats)

    def __len__(self) -> int:
        return len(self._stats)


class CustomerView(Mapping[str, Any]):
    def __init__(
        self,
        uow: UnitOfWork,
        member_id: str,
        program: ProgramConfig | None,
        *,
        now: datetime | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> None:
        self.uow = uow
        self.member_id = member_id
        self.program = program
        self.now = now or uow.now
        self._overrides = dict(overrides or {})
        self._member: Member | bool | None = False  # False: not loaded yet
        self._account: Account | bool | None = False
        self._standing: dict[str, Any] | None = None
        self._segments: list[str] | None = None

    # -- loading --------------------------------------------------------------------------------------

    @property
    def member(self) -> Member | None:
        if self._member is False:
            self._member = self.uow.component(MemberRepository).get(self.member_id)
        return self._member  # type: ignore[return-value]

    @property
    def account(self) -> Account | None:
        if self._account is False:
            self._account = (
                self.uow.component(AccountRepository).get(self.member_id, self.program.id)
                if self.program is not None
                else None
            )
        return self._account  # type: ignore[return-value]

    def _standing_value(self, key: str) -> Any:
        if self._standing is None:
            self._standing = {}
        if key in DIRECT_FIELDS and key not in self._standing:
            # Read straight from the account: templates and filters mostly ask for one of these, and
            # the full standing (next expiry...) costs a pass over the lots.
            self._standing[key] = self._direct(key)
        if key in DATE_FIELDS and "opted_in_at" not in self._standing:
            account = self.account
            if account is not None and not account.dates_loaded and self.program is not None:
                self.uow.component(AccountRepository).get_with_dates(self.member_id, self.program.id)
            self._standing.update(self._read(set(STANDING_FIELDS)))
        elif key not in self._standing:
            self._standing.update(self._read(set(STANDING_FIELDS) - DATE_FIELDS))
        return self._standing.get(key)

    def _direct(self, key: str) -> Any:
        account = self.account
        if account is None:
            return False if key == "opted_in" else None
        if key == "opted_in":
            return account.opted_in
        if key == "tier":
            tier = self.program.ladder.get(account.tier_id) if self.program else None
            return tier.name if tier else None
        points = account.points
        if key == "points_balance":
            return points.spendable(to_epoch(self.now))
        return {
            "points_pending": points.pending,
            "points_earned": points.earned,
            "points_spent": points.spent,
            "points_expired": points.expired,
        }[key]

    def _read(self, wanted: set[str]) -> dict[str, Any]:
        account = self.account
        if account is None:
            return dict.fromkeys(wanted) | {"opted_in": False}
        tier = self.program.ladder.get(account.tier_id) if self.program else None
        return read_values(None, account, tier.name if tier else None, self.now, wanted)

    # -- the mapping ------------------------------------------------------------------------------------

    def __getitem__(self, key: str) -> Any:
        if key in self._overrides:
            return self._overrides[key]
        if key in STANDING_FIELDS:
            return self._standing_value(key)
        member = self.member
        if key in ("id", "member_id"):
            return self.member_id
        if member is None:
            raise KeyError(key)
        if key == "birth_date":
            return member.birth_date.isoformat() if member.birth_date else None
        if key in ("email", "first_name", "last_name", "status"):
            return getattr(member, key)
        if key == "segments":
            if self._segments is None:
                from perkflow.segments.membership import segments_of

                self._segments = sorted(segments_of(self.uow, self.member_id))
            return self._segments
        if key == "activity":
            account = self.account
            return ActivityStats(account.activity_stats if account is not None else {})
        if key in member.fields:
            return member.fields[key]
        if key in self.uow.component(FieldCatalog).fields:
            return None
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        member = self.member
        names = [*PROFILE_KEYS, *STANDING_FIELDS, *EXTRA_KEYS]
        if member is not None:
            names.extend(k for k in member.fields if k not in names)
        return iter(names)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def snapshot(self) -> dict[str, Any]:
        """The profile part as plain data (for run records and dry runs)."""
        out: dict[str, Any] = {}
        for key in self:
            if key == "activity":
                continue
            try:
                out[key] = self[key]
            except KeyError:
                continue
        return out
