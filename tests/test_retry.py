"""Backoff and Retry-After: how long batchcancel waits before trying again."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from batchcancel.retry import Backoff, parse_retry_after

NOW = datetime(2026, 12, 4, 10, 0, 0, tzinfo=UTC)


def test_backoff_doubles_until_the_cap() -> None:
    """Without jitter the ceiling doubles per retry and stops at the cap."""
    backoff = Backoff(initial=0.5, cap=3.0)

    ceilings = [backoff.delay(n, rand=lambda: 1.0) for n in range(1, 6)]

    assert ceilings == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_backoff_jitter_keeps_at_least_half_the_delay() -> None:
    """The random half never brings a retry forward to "immediately"."""
    backoff = Backoff(initial=1.0, cap=30.0)

    assert backoff.delay(3, rand=lambda: 0.0) == 2.0
    assert backoff.delay(3, rand=lambda: 0.5) == 3.0


@pytest.mark.parametrize(("header", "expected"), [
    ("7", 7.0),
    (" 0 ", 0.0),
    ("Fri, 04 Dec 2026 10:00:30 GMT", 30.0),
    ("Fri, 04 Dec 2026 09:59:00 GMT", 0.0),   # in the past: go now
    ("Friday, 04-Dec-26 10:00:10 GMT", 10.0),  # the obsolete RFC 850 form
])
def test_retry_after_is_read_as_seconds_or_date(header: str, expected: float) -> None:
    """Both Retry-After forms give seconds from now; a past date gives zero."""
    assert parse_retry_after(header, now=NOW, cap=600) == pytest.approx(expected)


def test_absurd_retry_after_is_capped() -> None:
    """A Retry-After of a day cannot park the run past the review windows."""
    tomorrow = (NOW + timedelta(days=1)).strftime("%a, %d %b %Y %H:%M:%S GMT")

    assert parse_retry_after("86400", now=NOW, cap=120) == 120
    assert parse_retry_after(tomorrow, now=NOW, cap=120) == 120


@pytest.mark.parametrize("header", [None, "", "soon", "-5", "1.5", "9" * 400])
def test_unusable_retry_after_gives_none(header: str | None) -> None:
    """A missing or malformed header leaves the choice of wait to the caller."""
    result = parse_retry_after(header, now=NOW, cap=120)

    assert result is None or result == 120  # 400 nines is "absurd", capped
