"""Which failures are worth another attempt, and how long to wait first.

Only arithmetic lives here: the waiting itself is the rate gate's job, so
that every pause can be tested with a fake clock.
"""

from __future__ import annotations

import email.utils
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime


@dataclass(frozen=True, slots=True)
class Backoff:
    """Capped exponential backoff with "equal jitter".

    Half of each delay is fixed and half is random, so retries still spread
    out (no thundering herd) but never collapse to an immediate retry.
    """

    initial: float = 0.5
    cap: float = 30.0

    def delay(self, retry: int, rand: Callable[[], float]) -> float:
        """Seconds to wait before retry number ``retry`` (1 for the first)."""
        ceiling = min(self.cap, self.initial * 2.0 ** max(0, retry - 1))
        return ceiling / 2 + rand() * ceiling / 2


def parse_retry_after(
    value: str | None, *, now: datetime, cap: float
) -> float | None:
    """Seconds to wait according to a ``Retry-After`` header, or None.

    The header is either delta-seconds or an HTTP date.  A date in the past
    means "now" (0.0); anything absurd is held to ``cap`` so that a broken
    proxy cannot park the run until the review windows have closed.
    Unparseable values give None, and the caller falls back to backoff.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None

    if text.isascii() and text.isdigit():
        return min(float(text), cap)

    seconds = _seconds_until_http_date(text, now)
    if seconds is None:
        return None
    return min(max(seconds, 0.0), cap)


def _seconds_until_http_date(text: str, now: datetime) -> float | None:
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        # RFC 9110 dates are always GMT; a missing zone still means GMT.
        when = when.replace(tzinfo=UTC)
    seconds = (when - now).total_seconds()
    return seconds if math.isfinite(seconds) else None
