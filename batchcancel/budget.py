"""The failure budget: when the API as a whole is failing, and when to stop.

Two different questions, both pure arithmetic over counts and times:

- ``Outage``: many requests in a row got no answer or a 5xx.  One order's
  retries cannot tell a flaky request from an API that is down, so the run
  as a whole pauses, with a growing pause, and while it is paused the
  failures during an outage are charged to no order: an outage must not
  turn thousands of still-cancellable orders into ``error`` rows.  When the
  failing lasts ``limit`` seconds, the run gives up and leaves the rest
  ``not_attempted``, for a resume once the API is back.
- ``ErrorLimit``: ``--max-errors N`` or ``P%``, the operator's own limit on
  orders that end ``error``, modelled on GNU parallel's ``--halt fail=``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from batchcancel.errors import ConfigError

#: Failures in a row before the run pauses; with 2% of requests failing at
#: random, five in a row happen about once in three billion requests.
PAUSE_AFTER = 5
#: A percentage is judged only once this many orders have ended, so that
#: the first order's error is not already "100%".
MIN_SAMPLE = 20


@dataclass(frozen=True, slots=True)
class Pause:
    """Hold every request back for ``seconds``."""

    seconds: float


@dataclass(frozen=True, slots=True)
class GiveUp:
    """The API has failed every request for ``seconds``; stop the run."""

    failures: int
    seconds: float


@dataclass(slots=True)
class Outage:
    """Consecutive failures of the API, seen across every request."""

    limit: float = 300.0
    pause_after: int = PAUSE_AFTER
    first_pause: float = 1.0
    max_pause: float = 30.0
    streak: int = 0
    since: float = 0.0
    # The orders failing in the current streak, and those seen failing
    # while the API answered other orders: their failures are their own.
    failing: set[int | str] = field(default_factory=set)
    troubled: set[int | str] = field(default_factory=set)
    pauses: int = 0
    paused_until: float = 0.0

    @property
    def active(self) -> bool:
        """The API is failing as a whole, not one request at a time.

        Failures in a row of one order alone are that order's trouble, and
        so are those of an order once seen failing while the API answered
        others: their retries deal with them, and they are no sign of an
        outage.
        """
        return self.streak >= self.pause_after and len(self.failing) > 1

    def charges(self, order: int | str) -> bool:
        """Whether a failure of ``order`` counts against its retries now."""
        return order in self.troubled or not self.active

    def failed(self, now: float, order: int | str) -> Pause | GiveUp | None:
        """A request for ``order`` got no answer or a 5xx at ``now``."""
        if order in self.troubled:
            return None
        if self.streak == 0:
            self.since = now
        self.failing.add(order)
        self.streak += 1
        if not self.active:
            return None
        if now - self.since >= self.limit:
            return GiveUp(self.streak, now - self.since)
        if now < self.paused_until:
            return None  # requests that were in flight when it began
        seconds = min(self.max_pause, self.first_pause * 2.0 ** self.pauses)
        self.pauses += 1
        self.paused_until = now + seconds
        return Pause(seconds)

    def answered(self) -> bool:
        """The API answered; returns whether that ended an outage."""
        ended = self.active
        if not ended:
            # These failed while the API still answered: their own trouble.
            self.troubled |= self.failing
        self.failing = set()
        self.streak = self.pauses = 0
        self.paused_until = 0.0
        return ended


@dataclass(frozen=True, slots=True)
class ErrorLimit:
    """``--max-errors``: more than ``count`` orders, or more than
    ``percent`` of the orders ended so far, ending ``error`` stops the run."""

    text: str
    count: int | None = None
    percent: float | None = None

    @classmethod
    def parse(cls, text: str) -> ErrorLimit:
        raw = str(text).strip()
        try:
            if raw.endswith("%"):
                percent = float(raw[:-1])
                if percent == 0:
                    return cls(raw, count=0)  # no error at all, like "0"
                if math.isfinite(percent) and 0 < percent < 100:
                    return cls(raw, percent=percent)
            elif (count := int(raw)) >= 0:
                return cls(raw, count=count)
        except ValueError:
            pass
        raise ConfigError(
            f"max_errors {text!r} is not understood; write a number of orders "
            "such as 10, or a share of the orders such as 5%")

    def exceeded(self, errors: int, ended: int) -> bool:
        """Whether ``errors`` out of ``ended`` orders is over the limit."""
        if self.count is not None:
            return errors > self.count
        assert self.percent is not None
        # At 1%, one error in 20 orders says little: wait for 100.
        sample = max(MIN_SAMPLE, math.ceil(100 / self.percent))
        return ended >= sample and errors * 100 > self.percent * ended
