"""The rate gate: the pace, the shared cooldown after a 429, rate syntax."""

from __future__ import annotations

import asyncio
import math
import time
from fractions import Fraction

import pytest

from batchcancel.errors import ConfigError
from batchcancel.ratelimit import (
    AccountWindow,
    Rate,
    RateHeaders,
    ThrottleGate,
    Ticket,
)


@pytest.mark.parametrize(("text", "per_second"), [
    ("2", Fraction(2)),
    ("2/s", Fraction(2)),
    ("60/min", Fraction(1)),
    ("90/m", Fraction(3, 2)),
    ("3600/h", Fraction(1)),
    ("0.5/s", Fraction(1, 2)),
    (" 30 / MIN ", Fraction(1, 2)),
])
def test_rate_syntax(text: str, per_second: Fraction) -> None:
    """Rates are read exactly in each documented form."""
    assert Rate.parse(text).per_second == per_second


@pytest.mark.parametrize("text", ["", "fast", "0", "0/s", "-1/s", "5/day", "1e3"])
def test_bad_rates_are_configuration_errors(text: str) -> None:
    """A rate that cannot be read is refused with the accepted forms named."""
    with pytest.raises(ConfigError, match="rate"):
        Rate.parse(text)


@pytest.mark.parametrize(("text", "spacing"), [
    ("60/min", 1.01), ("50/s", 0.0202), ("2.5/s", 0.404), ("30/min", 2.02),
])
def test_requests_are_spaced_evenly_with_a_margin(text: str, spacing: float) -> None:
    """One request per 1/rate seconds, 1% slower: a burst of a whole second's
    requests at once, each a little late on the wire, would put more than the
    rate into one sliding second of arrivals (the benchmark counted 54 at
    50/s), and requests exactly 1/rate apart leave no room for jitter."""
    requests, seconds = Rate.parse(text).window()

    assert (1, spacing) == (requests, pytest.approx(seconds))


@pytest.mark.parametrize("text", ["60/min", "50/s", "2.5/s", "30/min", "7/s"])
def test_no_sliding_second_holds_more_than_the_rate(text: str) -> None:
    """Sends at the pace, every other one 8 ms late on arrival: no
    one-second span of arrivals holds more than the rate (rounded up, for a
    rate that is not a whole number per second)."""
    rate = Rate.parse(text)
    _, spacing = rate.window()
    arrivals = sorted(n * spacing + (0.008 if n % 2 else 0.0) for n in range(200))

    busiest = max(sum(1 for t in arrivals if start <= t < start + 1.0)
                  for start in arrivals)

    assert busiest <= math.ceil(rate.per_second)


class FakeClock:
    """A clock that only moves when the fake sleep is awaited."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(round(seconds, 6))
        self.now += seconds
        await asyncio.sleep(0)


async def test_cooldown_holds_every_request_until_it_ends() -> None:
    """After cool_down(5) the next acquire returns only 5 seconds later."""
    clock = FakeClock()
    gate = ThrottleGate(None, clock=clock, sleep=clock.sleep)

    gate.cool_down(5.0)
    await gate.acquire()

    assert clock.slept == [5.0]
    assert clock.now == 1005.0


async def test_a_shorter_cooldown_never_cuts_a_longer_one() -> None:
    """Two 429s at once: the later end of the two is kept."""
    clock = FakeClock()
    gate = ThrottleGate(None, clock=clock, sleep=clock.sleep)

    gate.cool_down(10.0)
    gate.cool_down(2.0)

    assert gate.cooling_for == 10.0


async def test_without_a_cooldown_acquire_does_not_wait() -> None:
    """An unthrottled gate with no cooldown lets requests straight through."""
    clock = FakeClock()
    gate = ThrottleGate(None, clock=clock, sleep=clock.sleep)

    for _ in range(100):
        await gate.acquire()

    assert clock.slept == []


async def test_throttle_paces_requests_at_the_rate() -> None:
    """At 20/s, the 21st request waits for the first second to pass."""
    gate = ThrottleGate(Rate.parse("20/s"))

    started = time.monotonic()
    for _ in range(21):
        await gate.acquire()
    elapsed = time.monotonic() - started

    assert elapsed >= 1.0


# -- the account's window, as the headers tell it (pure) ---------------------

SOLO = Ticket(0.0, 0)


def answered(window: AccountWindow, now: float, remaining: int,
             limit: int = 10, reset_in: float | None = None) -> None:
    window.sent()
    window.answered(now, SOLO, RateHeaders(limit, remaining, reset_in))


def room(window: AccountWindow, now: float) -> int:
    sent = 0
    while not window.exhausted(now):
        window.sent()
        sent += 1
    return sent


def test_room_is_what_the_api_says_remains_less_one_at_first() -> None:
    """Remaining 3 on the first answer: two go, one stays in reserve."""
    window = AccountWindow()
    answered(window, 0.0, remaining=3)

    assert 2 == room(window, 0.1)


def test_after_a_quiet_window_all_that_remains_is_used() -> None:
    """Once a whole window passed with nobody else, no request is held back."""
    window = AccountWindow()
    for now in (0.0, 1.0, 2.0):
        answered(window, now, remaining=9)

    assert 9 == room(window, 2.1)


def test_requests_in_flight_count_against_the_room() -> None:
    """Two requests on the wire and Remaining 2: no room for a third."""
    window = AccountWindow()
    window.sent()
    window.sent()
    window.sent()
    window.answered(0.0, Ticket(0.0, 2), RateHeaders(10, 4))

    assert 2 == window.expected


def test_another_client_spending_the_budget_is_noticed() -> None:
    """Remaining falling faster than our own requests is foreign spending."""
    window = AccountWindow()
    answered(window, 0.0, remaining=9)
    answered(window, 0.1, remaining=5)  # we sent one; four more went elsewhere

    assert (5, 3) == (window.expected, window.foreign_this_window)
    assert 3 == window.reserve  # as much as the other program spent


def test_a_rise_in_remaining_is_a_new_window_and_teaches_its_length() -> None:
    """Remaining going back up marks a new window; the gaps give its length."""
    window = AccountWindow()
    for now in (0.0, 1.0, 2.01, 3.0):
        answered(window, now, remaining=9)
        answered(window, now + 0.4, remaining=8)

    assert window.window == pytest.approx(1.0)
    assert 10 / 1.0 == pytest.approx(window.share(60.0) or 0)


def test_one_short_gap_does_not_shrink_the_window() -> None:
    """An answer overtaking another once cannot make the window look tiny.

    (A single spurious 0.2 s gap once tripled the pace and spoilt a plan.)"""
    window = AccountWindow()
    for now in (0.0, 1.0, 1.2, 2.2, 3.2):
        answered(window, now, remaining=9)

    assert window.window == pytest.approx(1.0)


def test_an_exhausted_window_reopens_at_the_reset_header() -> None:
    """X-RateLimit-Reset, when given, is when the window reopens."""
    window = AccountWindow()
    answered(window, 100.0, remaining=0, reset_in=7.0)

    assert window.exhausted(100.0)
    assert 107.0 == window.reopen_time(100.0)


def test_without_a_reset_header_the_learned_window_is_used() -> None:
    """No reset header: reopen one learned window after the last reset."""
    window = AccountWindow()
    for now in (0.0, 2.0, 4.0, 6.0):
        answered(window, now, remaining=9)   # a new window every 2 s
    answered(window, 6.5, remaining=0)

    assert 8.0 == window.reopen_time(6.6)
    assert 8.02 == pytest.approx(window.reopen_time(6.6, margin=0.02))


def test_knowing_nothing_the_documented_60_seconds_apply() -> None:
    """Exhausted before any window was seen: wait the documented 60 s."""
    window = AccountWindow()
    answered(window, 10.0, remaining=0)

    assert 70.0 == window.reopen_time(10.0)


def test_the_window_is_open_again_once_a_429_cooldown_has_passed() -> None:
    """After a 429's Retry-After has passed, requests may go again at once.

    (A bug once made the gate wait a further 60 s here.)"""
    window = AccountWindow()
    window.exhausted_by_429(5.0, seconds=1.0)

    assert window.exhausted(5.5)
    assert not window.exhausted(6.0)


def test_a_reopened_window_lets_one_probe_through_even_with_a_reserve() -> None:
    """With another client seen, a reopened window still admits one request.

    (A bug once kept the reserve larger than the probe allowance, so the
    gate waited for ever.)"""
    window = AccountWindow()
    answered(window, 0.0, remaining=9)
    answered(window, 0.1, remaining=5)  # another client: a reserve of one
    window.exhausted_by_429(0.2, seconds=1.0)

    assert not window.exhausted(1.3)


async def test_a_reopened_window_offers_its_room_to_the_plan() -> None:
    """Just after a reopening the plan sees the new window's room, not zero.

    (Seeing zero once made a plan drop a whole window of valuable orders.)"""
    clock = FakeClock()
    gate = ThrottleGate(None, window=1.0, clock=clock, sleep=clock.sleep)
    ticket = await gate.acquire()
    gate.settle(ticket, RateHeaders(limit=10, remaining=0))
    clock.now += 1.5
    gate.account.reopened(clock.now)  # what the gate does once the wait is over

    slots = gate.slot_times(10, now=5000.0)

    assert 9 <= sum(1 for t in slots if t < 5000.5)


async def test_a_probe_that_brings_no_headers_lets_another_probe_go() -> None:
    """A probe lost on the wire (or answered without rate headers) tells
    nothing about the window: the next request may probe at once.

    (Otherwise the gate waited for ever: the demo once hung this way.)"""
    clock = FakeClock()
    gate = ThrottleGate(None, window=1.0, clock=clock, sleep=clock.sleep)
    gate.settle(await gate.acquire(), RateHeaders(limit=10, remaining=0))
    clock.now += 1.5
    probe = await asyncio.wait_for(gate.acquire(), 1.0)

    gate.settle(probe, None)  # a dropped connection: no answer at all
    again = await asyncio.wait_for(gate.acquire(), 1.0)

    assert again.sent_at == clock.now
