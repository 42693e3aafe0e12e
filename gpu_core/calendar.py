"""The context features of time: Thai public holidays (``holiday_calendar``; lunar-calendar holidays are
the official dates where announced, otherwise approximate) and the hour of day in Asia/Bangkok
(``time_of_day``), one definition for training rows and served requests."""

from __future__ import annotations

import datetime as dt
from typing import Any

BANGKOK_UTC_OFFSET_S = 7 * 3600  # Asia/Bangkok has no daylight saving time

_FIXED = ("01-01", "04-06", "04-13", "04-14", "04-15", "05-01", "05-04", "06-03", "07-28", "08-12", "10-13",
          "10-23", "12-05", "12-10", "12-31")
_LUNAR = {
    2025: ("02-12", "05-11", "07-10", "07-11"),
    2026: ("03-03", "05-31", "07-29", "07-30"),
    2027: ("02-20", "05-20", "07-18", "07-19"),
}


def holidays(year: int) -> set[dt.date]:
    days = {dt.date.fromisoformat(f"{year}-{md}") for md in _FIXED}
    days |= {dt.date.fromisoformat(f"{year}-{md}") for md in _LUNAR.get(year, ())}
    return days


def is_holiday(day: dt.date) -> bool:
    return day in holidays(day.year)


def time_of_day(ts_ms: Any) -> Any:
    """Fractional hour of day in Asia/Bangkok of epoch-millisecond ``ts_ms`` (an int or an int64 array)."""
    return ((ts_ms // 1000 + BANGKOK_UTC_OFFSET_S) % 86400) / 3600.0
