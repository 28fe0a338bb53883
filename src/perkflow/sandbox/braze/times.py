"""Braze's date-string formats: recognising them, normalising to UTC, and rendering stored times."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

MIN_YEAR = 1  # Braze keeps years below 0 as strings; Python cannot represent year 0 either.
MAX_YEAR = 3000

_ISO = re.compile(
    r"^(?P<date>\d{4}-\d{2}-\d{2})"
    r"(?:[T ](?P<h>\d{2}):(?P<m>\d{2})(?::(?P<s>\d{2}))?(?:[.:](?P<frac>\d{1,9}))?)?"
    r"\s*(?P<tz>Z|z|UTC|[+-]\d{2}(?::?\d{2})?)?$"
)
_US_DATE = re.compile(r"^(?P<month>\d{1,2})/(?P<day>\d{1,2})/(?P<year>\d{4})$")
_MONTHS = {
    name: i
    for i, name in enumerate(
        ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"], start=1
    )
}
# `ddd MM dd HH:mm:ss.TZD YYYY` from Braze's list, plus the `date(1)` spelling with a month name.
_WEEKDAY_FORM = re.compile(
    r"^(?:mon|tue|wed|thu|fri|sat|sun)[a-z]*\s+(?P<month>\d{1,2}|[a-z]{3})\s+(?P<day>\d{1,2})\s+"
    r"(?P<h>\d{2}):(?P<m>\d{2}):(?P<s>\d{2})\.?\s*(?P<tz>Z|UTC|GMT|[+-]\d{2}:?\d{2})?\s+(?P<year>\d{4})$",
    re.IGNORECASE,
)


class OutOfRangeYear(ValueError):
    """A well-formed date whose year Braze does not accept as a time."""


def parse_time(text: str) -> datetime | None:
    """The UTC moment a Braze date string denotes, or None when the string is not one of its formats.

    Strings without a zone are UTC; date-only strings are midnight. Raises OutOfRangeYear for years
    outside 1..3000 so callers can keep such values as strings (top level) or drop them (in objects).
    """
    text = text.strip()
    if not text or len(text) > 64:
        return None
    for parse in (_parse_iso, _parse_us_date, _parse_weekday_form):
        moment = parse(text)
        if moment is not None:
            return moment
    return None


def _check_year(year: int) -> None:
    if year < MIN_YEAR or year > MAX_YEAR:
        raise OutOfRangeYear(f"year {year} is outside {MIN_YEAR}..{MAX_YEAR}")


def _zone(tz: str | None) -> timezone:
    if tz is None or tz.upper() in ("Z", "UTC", "GMT"):
        return UTC
    sign = -1 if tz[0] == "-" else 1
    digits = tz[1:].replace(":", "")
    hours, minutes = int(digits[:2]), int(digits[2:4] or 0)
    return timezone(sign * timedelta(hours=hours, minutes=minutes))


def _build(
    year: int, month: int, day: int, hour: int, minute: int, second: int, micro: int, tz: str | None
) -> datetime | None:
    _check_year(year)
    try:
        return datetime(year, month, day, hour, minute, second, micro, tzinfo=_zone(tz)).astimezone(UTC)
    except (ValueError, OverflowError):
        return None


def _parse_iso(text: str) -> datetime | None:
    match = _ISO.match(text)
    if match is None:
        return None
    year, month, day = (int(part) for part in match["date"].split("-"))
    frac = (match["frac"] or "0")[:6].ljust(6, "0")
    return _build(
        year,
        month,
        day,
        int(match["h"] or 0),
        int(match["m"] or 0),
        int(match["s"] or 0),
        int(frac),
        match["tz"],
    )


def _parse_us_date(text: str) -> datetime | None:
    match = _US_DATE.match(text)
    if match is None:
        return None
    return _build(int(match["year"]), int(match["month"]), int(match["day"]), 0, 0, 0, 0, None)


def _parse_weekday_form(text: str) -> datetime | None:
    match = _WEEKDAY_FORM.match(text)
    if match is None:
        return None
    month_text = match["month"].lower()
    month = int(month_text) if month_text.isdigit() else _MONTHS.get(month_text)
    if month is None:
        return None
    return _build(
        int(match["year"]),
        month,
        int(match["day"]),
        int(match["h"]),
        int(match["m"]),
        int(match["s"]),
        0,
        match["tz"],
    )


def format_time(moment: datetime) -> str:
    """How the sandbox stores and exports times: ISO-8601 UTC with milliseconds (2024-01-01T00:00:00.000Z)."""
    m = moment.astimezone(UTC)
    return (
        f"{m.year:04d}-{m.month:02d}-{m.day:02d}T{m.hour:02d}:{m.minute:02d}:{m.second:02d}"
        f".{m.microsecond // 1000:03d}Z"
    )


def epoch_to_datetime(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)
