"""The rate gate: every attempt passes it, retries included.

The steady pace comes from asyncio-throttle's sliding window, kept behind
our own small interface so that the rest of the code never depends on it.
On top of it sits the shared *cooldown*: after a 429 every worker waits
until the API's ``Retry-After`` has passed, and then the throttle paces
them back in one by one instead of letting them all go at once.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Protocol

from asyncio_throttle.throttler import Throttler

from batchcancel.errors import ConfigError

_RATE = re.compile(
    r"^\s*(?P<count>\d+(?:\.\d+)?)\s*(?:/\s*(?P<unit>s|sec|second|m|min|minute|h|hour))?\s*$",
    re.IGNORECASE,
)
_UNIT_SECONDS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60,
                 "minute": 60, "h": 3600, "hour": 3600}


@dataclass(frozen=True, slots=True)
class Rate:
    """A request rate, kept exact: ``60/min`` is not 0.99999 per second."""

    per_second: Fraction

    @classmethod
    def parse(cls, text: str) -> Rate:
        """Read ``2``, ``2/s``, ``60/min`` or ``3600/h``."""
        match = _RATE.match(text)
        if match is None:
            raise ConfigError(
                f"rate {text!r} is not understood; write it as 2, 2/s or 60/min"
            )
        count = Fraction(match["count"])
        unit = (match["unit"] or "s").lower()
        if count <= 0:
            raise ConfigError(f"rate {text!r} must be above zero")
        return cls(count / _UNIT_SECONDS[unit])

    def __str__(self) -> str:
        return f"{float(self.per_second):g}/s"

    def window(self) -> tuple[int, float]:
        """The (requests, seconds) sliding window that keeps this pace.

        At least one second wide so that a per-second count never exceeds
        the rate, and no wider than needed so that the pace stays even.
        """
        if self.per_second >= 1:
            limit = math.floor(self.per_second)
            return limit, float(limit / self.per_second)
        return 1, float(1 / self.per_second)


class RateGate(Protocol):
    """What the workers need from a rate gate."""

    async def acquire(self) -> None:
        """Return when one more request may be sent."""

    def cool_down(self, seconds: float) -> None:
        """Hold every request back for ``seconds`` from now."""


Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class ThrottleGate:
    """A rate ceiling (or none) plus the shared cooldown after a 429."""

    def __init__(
        self,
        rate: Rate | None,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self._resume_at = 0.0
        self._throttler: Throttler | None = None
        if rate is not None:
            limit, period = rate.window()
            # The throttle polls; polling at a tenth of the spacing keeps
            # the pace within a few per cent without spinning the CPU.
            poll = min(0.05, period / limit / 10)
            self._throttler = Throttler(limit, period, retry_interval=poll)

    @property
    def cooling_for(self) -> float:
        """Seconds left in the current cooldown (0.0 when none)."""
        return max(0.0, self._resume_at - self._clock())

    def cool_down(self, seconds: float) -> None:
        # Several 429s may arrive together: keep the latest end, never
        # shorten a cooldown that is already running.
        self._resume_at = max(self._resume_at, self._clock() + max(0.0, seconds))

    async def acquire(self) -> None:
        while True:
            await self._wait_out_cooldown()
            if self._throttler is not None:
                await self._throttler.acquire()
            # A 429 may have started a cooldown while we queued for a slot.
            if self.cooling_for == 0.0:
                return

    async def _wait_out_cooldown(self) -> None:
        while (left := self.cooling_for) > 0.0:
            await self._sleep(left)
