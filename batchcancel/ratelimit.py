"""The rate gate: every request passes it, retries and list pages included.

Three things decide when the next request may go:

1. **The pace**: asyncio-throttle's sliding window, kept behind this
   module's interface.  Its rate is the lowest of the ``--rate`` ceiling,
   the documented 60 a minute until the account's real limit is known, and
   this client's share of the account's window once it is.
2. **The account's window** (``AccountWindow``, pure arithmetic): the
   ``X-RateLimit-Limit`` and ``X-RateLimit-Remaining`` headers say how many
   more requests the API will take.  The gate never has more requests out
   than remain, so another program spending the same token's budget makes
   this one slow down instead of meeting a 429.  When nothing remains, the
   gate waits for the window to reopen: at ``X-RateLimit-Reset`` if the API
   gives it, else one learned window length after the last time
   ``Remaining`` went back up, else 60 seconds (the documented window).
3. **The cooldown**: after a 429 every worker waits until ``Retry-After``
   has passed; then the pace lets them back in one by one.
"""

from __future__ import annotations

import asyncio
import math
import re
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Protocol

from asyncio_throttle.throttler import Throttler

from batchcancel.errors import ConfigError

_RATE = re.compile(
    r"^\s*(?P<count>\d+(?:\.\d+)?)\s*"
    r"(?:/\s*(?P<unit>s|sec|second|m|min|minute|h|hour))?\s*$",
    re.IGNORECASE,
)
_UNIT_SECONDS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60,
                 "minute": 60, "h": 3600, "hour": 3600}

DOCUMENTED_WINDOW = 60.0
DOCUMENTED_LIMIT = 60


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
        """The (requests, seconds) window that keeps this pace: one request
        per 1/rate seconds, 1% slower.

        Evenly spaced, never in bursts: a second's worth sent at once and
        delayed unevenly on the way would put more than the rate into one
        sliding second of arrivals.  The 1% leaves room for that jitter.
        """
        return 1, float(PACE_MARGIN / self.per_second)


@dataclass(frozen=True, slots=True)
class RateHeaders:
    """What one answer said about the account's rate window."""

    limit: int | None = None
    remaining: int | None = None
    reset_in: float | None = None  # seconds until the window reopens


@dataclass(frozen=True, slots=True)
class Ticket:
    """One admitted request; hand it back with ``settle`` when it ends."""

    sent_at: float
    in_flight_at_send: int


class RateGate(Protocol):
    """What the workers need from a rate gate."""

    async def acquire(self) -> Ticket:
        """Return when one more request may be sent."""

    def settle(self, ticket: Ticket, headers: RateHeaders | None) -> None:
        """The request of ``ticket`` ended, with these headers if any."""

    def release(self, ticket: Ticket) -> None:
        """Give back a ticket whose request was never sent."""

    def cool_down(self, seconds: float) -> None:
        """A 429: the window is full; hold every request back for ``seconds``."""

    def pause(self, seconds: float) -> None:
        """Hold every request back for ``seconds``; the window is untouched."""

    @property
    def rate(self) -> float | None:
        """Requests per second this gate expects to sustain (None: no limit)."""

    @property
    def latency(self) -> float:
        """Recent round-trip time of a request, seconds."""

    def slot_times(self, count: int, now: float) -> list[float]:
        """When the next ``count`` requests can go, as epoch seconds."""


#: An explicit pace is kept this much slower than asked (see Rate.window).
PACE_MARGIN = 1.01

#: A reading of Remaining older than this share of the window is stale
#: once another program is seen on the token.
STALE_AFTER = 0.1


@dataclass(slots=True)
class AccountWindow:
    """The account's fixed rate window as seen from this client (pure).

    ``expected`` is how many more requests the API will admit in the current
    window once the requests in flight have landed; None while no answer has
    told.  Times are the gate's clock; nothing here sleeps.
    """

    assumed_window: float = DOCUMENTED_WINDOW
    limit: int | None = None
    expected: int | None = None
    last_reset: float | None = None
    window: float | None = None
    reopens_at: float | None = None
    in_flight: int = 0
    foreign_this_window: int = 0
    foreign_last_window: int = 0
    quiet_windows: int = 0
    watched_whole_window: bool = False
    # Just reopened: one request is out to learn the new window's room.
    probing: bool = False
    ever_shared: bool = False
    # When ``expected`` was last read from an answer's headers.
    read_at: float = 0.0
    _gaps: list[float] = field(default_factory=list)

    def sent(self) -> None:
        self.in_flight += 1
        if self.expected is not None:
            self.expected -= 1

    def answered(self, now: float, ticket: Ticket, headers: RateHeaders | None
                 ) -> None:
        self.in_flight = max(0, self.in_flight - 1)
        if headers is None or headers.remaining is None:
            if self.probing and self.expected is not None:
                # The probe learned nothing (lost, or no headers): give its
                # place back so that the next request probes, or the gate
                # would wait for an answer that never comes.
                self.expected += 1
            return
        if headers.limit is not None:
            self.limit = headers.limit
        self.read_at = now

        probe, self.probing = self.probing, False
        implied = headers.remaining - self.in_flight
        # Answers can arrive out of order by as many requests as were in
        # flight together; only a rise beyond that is a new window.
        slack = max(ticket.in_flight_at_send, self.in_flight)
        if self.expected is None or implied > self.expected + slack:
            self._new_window(now, implied, headers.reset_in)
            if probe:
                self._count_before_probe(headers.remaining, ticket)
        elif implied < self.expected:
            self.foreign_this_window += self.expected - implied
            self.expected = implied
        if headers.reset_in is not None:
            self.reopens_at = now + headers.reset_in

    def _new_window(self, now: float, implied: int, reset_in: float | None) -> None:
        if self.last_reset is not None and self.expected is not None:
            self._learn_gap(now - self.last_reset)
        self.last_reset = now
        seen = self.foreign_this_window or self.foreign_last_window
        # A window counts as quiet once it was watched from start to end.
        self.quiet_windows = 0 if seen else self.quiet_windows + (
            self.watched_whole_window)
        self.watched_whole_window = True
        self.foreign_last_window = self.foreign_this_window
        self.foreign_this_window = 0
        self.expected = implied
        self.reopens_at = None if reset_in is None else now + reset_in

    def _count_before_probe(self, remaining: int, ticket: Ticket) -> None:
        # Our reopening is only an estimate, often late: whatever another
        # program spent between the real reset and our probe is seen only
        # here.  Of the window's used requests, ours are the probe and, at
        # most, those that were still on the wire when it left.
        if self.limit is not None:
            used = self.limit - remaining
            self.foreign_this_window += max(0, used - 1 - ticket.in_flight_at_send)

    def _learn_gap(self, gap: float) -> None:
        # A reset is seen only at the first answer after it, so a gap is a
        # window long while requests flow, longer after an idle spell, and
        # (rarely, from answers overtaking each other) shorter.  The median
        # of recent gaps is robust to both; until three gaps are known the
        # assumed window stands.
        self._gaps = [*self._gaps[-6:], gap]
        if len(self._gaps) >= 3:
            median = statistics.median(self._gaps)
            # A window learned a little short makes every probe early, each
            # a 429; one learned a little long costs a little pace.  So the
            # assumed window stands unless the gaps say it is far off.
            near = self.assumed_window / 2 < median < self.assumed_window
            self.window = self.assumed_window if near else max(0.2, median)

    def exhausted(self, now: float) -> bool:
        """True when the window has no room left for one more request."""
        if self.reopens_at is not None and now >= self.reopens_at:
            self.reopened(now)
        return self.expected is not None and self.room(now) <= 0

    def room(self, now: float) -> int:
        """Requests this client may still send in the current window.

        What the last answer left, less the reserve.  While another program
        spends the same budget, a reading of Remaining grows stale: what
        it left may be gone, and a request sent on it late in the window
        would be a 429.  So an old reading is not trusted, and the rest of
        that window is left to the other program.
        """
        assert self.expected is not None
        if self.probing:
            # One probe, and nothing more until it has answered.
            return 0 if self.in_flight else self.expected - self.reserve
        window = self.window or self.assumed_window
        if self.shared and now - self.read_at > STALE_AFTER * window:
            return 0  # wait for the next window and probe it afresh
        return self.expected - self.reserve

    @property
    def shared(self) -> bool:
        """Another program has been seen spending this budget.

        Once seen, always assumed: a window in which its requests happened
        to go unnoticed is no sign that it has gone, and bursting again
        would meet its next request with a 429.
        """
        if self.foreign_last_window or self.foreign_this_window:
            self.ever_shared = True
        return self.ever_shared

    @property
    def reserve(self) -> int:
        # Requests kept back so that another program's request, landing
        # between our reading of Remaining and our own request, cannot make
        # ours a 429: one while nobody else has been seen (until a whole
        # window has passed without anyone), and as many as the other
        # program spent last window, at least two, once it has.
        foreign = max(self.foreign_last_window, self.foreign_this_window)
        if self.shared:
            return max(2, foreign)
        return 0 if self.quiet_windows >= 1 else 1

    def reopen_time(self, now: float, margin: float = 0.0) -> float:
        """When the exhausted window is expected to take requests again."""
        if self.reopens_at is not None and self.reopens_at > now:
            return self.reopens_at
        window = self.window or self.assumed_window
        if self.last_reset is None:
            return now + window
        periods = max(1, math.ceil((now - self.last_reset) / window))
        # Resets are seen up to a round trip late and unevenly, so a learned
        # window can come out a little short: ``margin`` (about two round
        # trips) keeps the probe from arriving before the window reopens.
        return self.last_reset + periods * window + min(margin, 0.05 * window)

    def reopened(self, now: float) -> None:
        """The wait is over: one request goes first to see how much room
        there is, so a wrong guess about the reopening costs one 429 at
        most, never a burst of them."""
        self.foreign_last_window = self.foreign_this_window
        self.foreign_this_window = 0
        self.expected = self.reserve + 1 if self.limit is not None else None
        self.read_at = now
        self.reopens_at = None
        self.probing = self.limit is not None

    def exhausted_by_429(self, now: float, seconds: float) -> None:
        self.expected = 0
        self.reopens_at = now + seconds

    def share(self, assumed_window: float) -> float | None:
        """Requests per second left for this client, once the limit is known.

        The window is the learned one, else ``assumed_window`` (the
        documented 60 s unless configured).
        """
        if self.limit is None:
            return None
        foreign = max(self.foreign_last_window, self.foreign_this_window)
        room = self.limit - foreign - (self.reserve if self.shared else 0)
        return max(1.0, room) / (self.window or assumed_window)


Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class ThrottleGate:
    """The pace, the account's window and the 429 cooldown, together."""

    def __init__(
        self,
        ceiling: Rate | None,
        *,
        start: Rate | None = None,
        window: float = DOCUMENTED_WINDOW,
        follow_headers: bool = True,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        portion: int = 1,
    ) -> None:
        """``ceiling``: never faster (None: no ceiling).  ``start``: the pace
        until the account's limit is known (``--rate auto``: 60/min).
        ``portion``: this gate is one of that many sharing the account (the
        shards of one job); once the limit is known it keeps to an even
        ``1/portion`` of it, never bursting."""
        self._portion = max(1, portion)
        self._ceiling = ceiling
        self._start = start
        self._follow = follow_headers
        self._clock = clock
        self._sleep = sleep
        self._resume_at = 0.0
        self.account = AccountWindow(assumed_window=window)
        self._changed = asyncio.Event()
        self._pace_rate: float | None = None
        self._latency = 0.0
        self._throttler: Throttler | None = None
        self._set_pace(self._wanted_pace())

    # -- what the workers call ------------------------------------------

    @property
    def rate(self) -> float | None:
        return self._planning_rate() if self._follow else self._pace_rate

    @property
    def cooling_for(self) -> float:
        """Seconds left in the current cooldown (0.0 when none)."""
        return max(0.0, self._resume_at - self._clock())

    def cool_down(self, seconds: float) -> None:
        # Several 429s may arrive together: keep the latest end, never
        # shorten a cooldown that is already running.
        seconds = max(0.0, seconds)
        self._resume_at = max(self._resume_at, self._clock() + seconds)
        self.account.exhausted_by_429(self._clock(), seconds)
        self._wake()

    def pause(self, seconds: float) -> None:
        # An outage says nothing about the account's window: only the wait.
        self._resume_at = max(self._resume_at, self._clock() + max(0.0, seconds))
        self._wake()

    async def acquire(self) -> Ticket:
        while True:
            await self._wait_out_cooldown()
            await self._wait_for_room()
            if self._throttler is not None:
                await self._throttler.acquire()
            # The state may have changed while we queued for a pace slot.
            if self.cooling_for == 0.0 and not self._no_room():
                return self._admit()

    def settle(self, ticket: Ticket, headers: RateHeaders | None) -> None:
        now = self._clock()
        self._latency += 0.2 * ((now - ticket.sent_at) - self._latency)
        before = (self.account.window, self.account.shared)
        self.account.answered(now, ticket, headers if self._follow else None)
        if before != (self.account.window, self.account.shared):
            # Imported here: config.py imports this module, and start-up
            # (``--version``) must not pay for structlog.
            import structlog

            structlog.get_logger("batchcancel").debug(
                "rate.window_learned", window_s=self.account.window,
                shared=self.account.shared, reserve=self.account.reserve)
        self._set_pace(self._wanted_pace())
        self._wake()

    def release(self, ticket: Ticket) -> None:
        self.account.answered(self._clock(), ticket, None)
        if self.account.expected is not None:
            self.account.expected += 1
        self._wake()

    @property
    def latency(self) -> float:
        return self._latency

    def slot_times(self, count: int, now: float) -> list[float]:
        """When the next ``count`` requests can go, as far as the gate knows.

        With the account's window known: what remains of it now, then its
        share at each reopening; otherwise evenly at the pace.  Requests
        also queue behind each other on the wire, never faster than one per
        ``latency / concurrency``: the caller folds that in as ``spacing``.
        """
        offset = now - self._clock()
        start = now + self.cooling_for
        account = self.account
        share = account.share(account.assumed_window) if self._follow else None
        if share is None or account.expected is None:
            step = 1 / self._pace_rate if self._pace_rate else 0.0
            return [start + n * step for n in range(count)]
        window = account.window or account.assumed_window
        # Right after a reopening only a probe may go, but the new window's
        # room is there: plan with it, or the plan loses a whole window.
        now_room = (int(share * window) if account.probing
                    else account.room(self._clock()))
        times = [start] * max(0, min(count, now_room))
        reopen = account.reopen_time(self._clock(), 2 * self._latency) + offset
        per_window = max(1, int(share * window))
        while len(times) < count:
            times += [max(start, reopen)] * min(per_window, count - len(times))
            reopen += window
        return times

    # -- inside ---------------------------------------------------------

    def _admit(self) -> Ticket:
        ticket = Ticket(self._clock(), self.account.in_flight)
        self.account.sent()
        return ticket

    def _no_room(self) -> bool:
        return self._follow and self.account.exhausted(self._clock())

    async def _wait_out_cooldown(self) -> None:
        while (left := self.cooling_for) > 0.0:
            await self._sleep(left)

    async def _wait_for_room(self) -> None:
        while self._no_room():
            now = self._clock()
            if self.account.in_flight:
                # Answers still to come may show that a new window began.
                await self._wait_changed(self._reopen_in(now))
                continue
            await self._sleep(max(0.0, self._reopen_in(now)))
            if not self.account.probing:
                self.account.reopened(self._clock())

    def _reopen_in(self, now: float) -> float:
        return self.account.reopen_time(now, 2 * self._latency) - now

    async def _wait_changed(self, longest: float) -> None:
        self._changed.clear()
        try:
            await asyncio.wait_for(self._changed.wait(), max(0.0, longest))
        except TimeoutError:
            if not self.account.probing:  # one probe, however many wait
                self.account.reopened(self._clock())

    def _wake(self) -> None:
        self._changed.set()

    def _wanted_pace(self) -> float | None:
        """The pace for asyncio-throttle, on top of the account's window.

        Until an answer shows the account's limit: the starting pace.  Once
        it is known, the window's room itself decides, so each window is
        used whole from its first moment (a pace would lose the requests
        that straddle the API's window boundaries).  But when another
        program spends the same budget, this client keeps to its share,
        evenly, and leaves the other room to work.
        """
        ceiling = float(self._ceiling.per_second) if self._ceiling else None
        account = self.account
        if not self._follow or account.limit is None:
            learned = float(self._start.per_second) if self._start else None
        elif self._portion > 1:
            learned = min(self._fair_share(), account.share(account.assumed_window)
                          or math.inf)
        elif account.shared:
            learned = account.share(account.assumed_window)
        else:
            learned = None
        candidates = [r for r in (learned, ceiling) if r is not None]
        return min(candidates) if candidates else None

    def _fair_share(self) -> float:
        # Shards burst at the same moment and see each other only through
        # Remaining, answers late: an even pace of their 1/portion of the
        # limit, one request each kept back, can never add up past it.
        account = self.account
        assert account.limit is not None
        window = account.window or account.assumed_window
        return max(1.0, account.limit - self._portion) / self._portion / window

    def _planning_rate(self) -> float | None:
        share = self.account.share(self.account.assumed_window)
        candidates = [r for r in (self._pace_rate, share) if r is not None]
        return min(candidates) if candidates else None

    def _set_pace(self, rate: float | None) -> None:
        if rate == self._pace_rate or (
            rate is not None and self._pace_rate is not None
            and abs(rate - self._pace_rate) <= 0.02 * self._pace_rate
        ):
            return
        self._pace_rate = rate
        if rate is None:
            self._throttler = None
            return
        limit, period = Rate(Fraction(rate).limit_denominator(10_000)).window()
        # The throttle polls; polling at a tenth of the spacing keeps the
        # pace within a few per cent without spinning the CPU.
        poll = min(0.05, period / limit / 10)
        self._throttler = Throttler(limit, period, retry_interval=poll)
