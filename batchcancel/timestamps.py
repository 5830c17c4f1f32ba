"""The API's timestamps, in each form it has been seen to use.

- ISO 8601 with a zone, e.g. ``2025-09-08T16:05:12.000000Z`` (order list);
- ``YYYY-MM-DD HH:MM:SS`` without a zone (cancel and track), taken as UTC,
  since the docs never name a zone and the object form below says UTC;
- ``{"date": "2020-03-30 16:33:04.000000", "timezone_type": 3,
  "timezone": "UTC"}`` (older order lists).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


def parse_timestamp(raw: object) -> datetime | None:
    """An aware UTC datetime, or None when ``raw`` is not a known form."""
    try:
        if isinstance(raw, dict):
            return _from_object(raw)
        if not isinstance(raw, str) or not raw.strip():
            return None
        return _from_text(raw.strip(), UTC)
    except (ValueError, OverflowError):
        # Odd zones ("+ab:cd") and dates at the calendar's edge
        # ("9999-12-31T23:59:59-14:00") are unknown times, not crashes.
        return None


def _from_text(text: str, zone: timezone | ZoneInfo) -> datetime | None:
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=zone)
    return when.astimezone(UTC)


def _from_object(raw: dict[object, object]) -> datetime | None:
    text = raw.get("date")
    if not isinstance(text, str):
        return None
    return _from_text(text.strip(), _zone(raw.get("timezone")))


def _zone(name: object) -> timezone | ZoneInfo:
    if not isinstance(name, str) or name.upper() in {"", "UTC", "Z", "GMT"}:
        return UTC
    if name[:1] in "+-" and len(name) == 6 and name[3] == ":":
        sign = -1 if name[0] == "-" else 1
        hours, minutes = int(name[1:3]), int(name[4:6])
        return timezone(sign * timedelta(hours=hours, minutes=minutes))
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return UTC
