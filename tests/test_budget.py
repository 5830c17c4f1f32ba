"""The failure budget: outages pause, then end, the run; --max-errors stops it."""

from __future__ import annotations

import pytest

from batchcancel.budget import ErrorLimit, GiveUp, Outage, Pause
from batchcancel.errors import ConfigError


def fail_many(outage: Outage, times: list[float]) -> list[Pause | GiveUp | None]:
    """Failures at ``times``, each for another order."""
    return [outage.failed(at, n) for n, at in enumerate(times)]


def test_four_failures_in_a_row_do_not_pause() -> None:
    """Below five failures in a row the run goes on at its own pace."""
    assert [None] * 4 == fail_many(Outage(), [0, 1, 2, 3])


def test_the_fifth_failure_pauses_and_pauses_grow_to_the_cap() -> None:
    """Each pause after the last one ended doubles, up to 30 s."""
    outage = Outage(limit=1000)
    fail_many(outage, [0, 0, 0, 0])

    pauses = [outage.failed(at, "x") for at in (0, 1.5, 4, 9, 18, 40, 80)]

    assert [Pause(1), Pause(2), Pause(4), Pause(8), Pause(16), Pause(30),
            Pause(30)] == pauses


def test_failures_during_a_pause_do_not_lengthen_it() -> None:
    """Requests that were on the wire when the pause began add nothing."""
    outage = Outage()
    fail_many(outage, [0, 0, 0, 0, 0])

    assert [None, None] == fail_many(outage, [0.2, 0.5])


def test_failing_for_the_limit_gives_up() -> None:
    """Failures in a row spanning the limit end the run."""
    outage = Outage(limit=60)
    fail_many(outage, [0, 1, 2, 3, 4])

    assert GiveUp(failures=6, seconds=61) == outage.failed(61, "x")


def test_one_order_failing_alone_is_no_outage() -> None:
    """Any number of failures of one order never pause the run."""
    outage = Outage()

    assert [None] * 8 == [outage.failed(at, 7) for at in range(8)]
    assert not outage.active


def test_an_answer_ends_the_outage_and_resets_the_pause() -> None:
    """After an answer the next outage starts again from a 1 s pause."""
    outage = Outage(limit=1000)
    fail_many(outage, [0, 0, 0, 0, 0, 2])

    assert outage.answered()
    assert [None] * 4 + [Pause(1)] == fail_many(outage, [10, 10, 10, 10, 10])


@pytest.mark.parametrize(("text", "count", "percent"), [
    ("10", 10, None), ("0", 0, None), (" 5% ", None, 5.0), ("0.5%", None, 0.5),
    ("0%", 0, None),
])
def test_max_errors_reads_a_count_or_a_share(text: str, count: int | None,
                                             percent: float | None) -> None:
    """A bare number is orders, a trailing % a share; 0% is no error at all."""
    limit = ErrorLimit.parse(text)

    assert (count, percent) == (limit.count, limit.percent)


@pytest.mark.parametrize("text", ["", "-1", "ten", "5%%", "100%", "150%",
                                  "nan%", "1.5"])
def test_max_errors_refuses_what_it_cannot_mean(text: str) -> None:
    """Nonsense is a configuration error that names the forms understood."""
    with pytest.raises(ConfigError, match="10, or a share"):
        ErrorLimit.parse(text)


def test_a_count_is_exceeded_only_above_it() -> None:
    """--max-errors 2 tolerates two errors and stops at the third."""
    limit = ErrorLimit.parse("2")

    assert (False, True) == (limit.exceeded(2, 3), limit.exceeded(3, 3))


def test_a_share_waits_for_a_sample_before_judging() -> None:
    """5%: one error in the first 19 orders stops nothing; 2 of 20 does."""
    limit = ErrorLimit.parse("5%")

    assert not limit.exceeded(1, 1)
    assert not limit.exceeded(5, 19)
    assert not limit.exceeded(1, 20)
    assert limit.exceeded(2, 20)


def test_a_small_share_waits_for_a_larger_sample() -> None:
    """1%: judged from the 100th order on, when one error is 1%."""
    limit = ErrorLimit.parse("1%")

    assert (False, True) == (limit.exceeded(3, 99), limit.exceeded(2, 100))



def test_an_order_seen_failing_while_the_api_answered_is_no_outage() -> None:
    """Once an order failed and the API then answered another, its failures
    are its own: they are charged and never make an outage."""
    outage = Outage()
    outage.failed(0, 1)
    outage.answered()

    verdicts = [outage.failed(at, 1) for at in range(1, 4)]
    verdicts += [outage.failed(at, 2) for at in range(4, 7)]

    assert [None] * 6 == verdicts
    assert (True, False) == (outage.charges(1), outage.active)
