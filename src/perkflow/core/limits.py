"""The bounds on numbers and dates a client may send, in one place, so both databases answer alike.

Each bound is chosen so that what the engine derives and stores from accepted values stays inside
the 64-bit columns: one event earns at most MAX_POINTS, so a balance would need billions of events
to approach 2**63; money is bounded by MAX_AMOUNT so sums of many amounts stay far from it too.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

# Points one event, adjustment, claim or reward cost may carry.
MAX_POINTS = 1_000_000_000
# Minor units of money in one value (a checkout total, a coupon value, an earning-rule unit).
MAX_AMOUNT = 10**12
# Units of one item in a checkout; workflows sum them into items_count.
MAX_QUANTITY = 1_000_000
# Qualifying points a tier may ask for: far above what members earn, far below 2**63.
MAX_THRESHOLD = 10**15
# What a BIGINT (and SQLite's INTEGER) holds: ids, sequence numbers and cursor positions.
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
# Dates outside these years are typing mistakes, and near datetime's own limits a conversion to
# UTC overflows; both databases hold every date in between.
MIN_YEAR = 1900
MAX_YEAR = 9000


def fits_int64(value: int) -> bool:
    return INT64_MIN <= value <= INT64_MAX


def storable_utc(moment: datetime) -> datetime:
    """`moment` (aware) in UTC, or ValueError when it is outside the years Perkflow stores."""
    try:
        utc = moment.astimezone(UTC)
    except (OverflowError, ValueError):
        utc = None
    if utc is None or not MIN_YEAR <= utc.year < MAX_YEAR:
        raise ValueError(f"the date must be between {MIN_YEAR} and {MAX_YEAR}")
    return utc


def storable_date(day: date) -> date:
    if not MIN_YEAR <= day.year < MAX_YEAR:
        raise ValueError(f"the date must be between {MIN_YEAR} and {MAX_YEAR}")
    return day
