"""The sandbox's rate limit: a fixed window, counted as one pure step per request.

Windows start at whole multiples of the window length after the sandbox started, the
way a per-minute limiter keyed on the clock behaves. A request is admitted while the
current window has room; a refused request does not use up room.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from email.utils import formatdate

from ._config import RetryAfterStyle


@dataclass(frozen=True, slots=True)
class FixedWindow:
    """How much of the current window is used; `origin` is the sandbox's start."""

    limit: int
    length: float
    origin: float
    index: int = 0
    used: int = 0

    def at(self, now: float) -> FixedWindow:
        """This window as of `now`: a fresh one once the current one has ended."""
        index = math.floor((now - self.origin) / self.length)
        if index == self.index:
            return self
        return replace(self, index=index, used=0)

    def admit(self, now: float) -> tuple[FixedWindow, bool]:
        """Count one request at `now`; the flag says whether it is let through."""
        current = self.at(now)
        if current.used >= current.limit:
            return current, False
        return replace(current, used=current.used + 1), True

    @property
    def remaining(self) -> int:
        """Requests the current window still lets through."""
        return max(0, self.limit - self.used)

    @property
    def reopens_at(self) -> float:
        """The epoch time at which the next window starts."""
        return self.origin + (self.index + 1) * self.length


def retry_after(style: RetryAfterStyle, until: float, now: float) -> str | None:
    """The Retry-After value that tells a client to wait until `until`, if any."""
    if style == "none":
        return None

    # Rounded up in both forms, so a client that obeys never arrives too early.
    if style == "date":
        return http_date(math.ceil(until))
    return str(max(1, math.ceil(until - now)))


def http_date(timestamp: float) -> str:
    """An RFC 7231 IMF-fixdate such as "Sun, 06 Nov 1994 08:49:37 GMT"."""
    return formatdate(timestamp, usegmt=True)
