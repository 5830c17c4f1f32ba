"""The rate gate: the pace, the shared cooldown after a 429, rate syntax."""

from __future__ import annotations

import asyncio
import time
from fractions import Fraction

import pytest

from batchcancel.errors import ConfigError
from batchcancel.ratelimit import Rate, ThrottleGate


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


@pytest.mark.parametrize(("text", "window"), [
    ("60/min", (1, 1.0)),
    ("50/s", (50, 1.0)),
    ("2.5/s", (2, 0.8)),
    ("30/min", (1, 2.0)),
])
def test_window_never_allows_more_than_the_rate(text: str,
                                                window: tuple[int, float]) -> None:
    """The sliding window keeps any one second at or under the rate."""
    assert Rate.parse(text).window() == window


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
