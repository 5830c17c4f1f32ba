"""Deadline-first planning: the chosen set is the best one, sent EDF."""

from __future__ import annotations

import heapq
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from batchcancel.ids import OrderRef
from batchcancel.plan import Planned, Schedule, choose, even_slots


def planned(order_id: int, deadline: float | None, credits: int) -> Planned:
    return Planned(OrderRef(order_id, "in", order_id), deadline, credits)


def best_by_heap(jobs: list[tuple[float, int]], *, now: float, rate: float) -> int:
    """An independent optimum: by deadline, keep the most valuable that fit.

    Moore-Hodgson style: walk deadlines in order, push each value on a
    min-heap, and drop the cheapest whenever more jobs are kept than slots
    exist before the current deadline.
    """
    kept: list[int] = []
    for deadline, value in sorted(jobs):
        heapq.heappush(kept, value)
        slots = int((deadline - now) * rate) + 1 if deadline >= now else 0
        while len(kept) > max(0, slots):
            heapq.heappop(kept)
    return sum(kept)


def test_the_most_valuable_orders_win_when_not_all_fit() -> None:
    """Two slots before a shared deadline: the two largest amounts are chosen."""
    orders = [planned(1, 10.5, 73), planned(2, 10.5, 500), planned(3, 10.5, 267)]

    assert {2, 3} == choose(orders, even_slots(3, 10.0, 2.0), lead=0.0)


def test_an_early_deadline_is_served_first_so_both_fit() -> None:
    """EDF order lets an urgent small order go before a later large one."""
    orders = [planned(1, 20.0, 1000), planned(2, 10.5, 10)]
    schedule = Schedule(orders, now=10.0, rate=1.0)

    first = schedule.next(10.0, 1.0)
    second = schedule.next(11.0, 1.0)

    assert [2, 1] == [first.ref.order_id if first else None,
                      second.ref.order_id if second else None]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 60), st.integers(1, 5000)), max_size=80),
       st.sampled_from([0.5, 1.0, 3.0, 10.0]))
def test_choose_matches_an_independent_optimum(jobs: list[tuple[float, int]],
                                               rate: float) -> None:
    """The greedy choice recovers exactly the optimum of a different algorithm."""
    orders = [planned(n + 1, d, c) for n, (d, c) in enumerate(jobs)]
    picked = choose(orders, even_slots(len(orders), 0.0, rate), lead=0.0)

    assert best_by_heap(jobs, now=0.0, rate=rate) == sum(
        c for n, (_, c) in enumerate(jobs) if n + 1 in picked)


def test_slots_in_bursts_are_used_as_given() -> None:
    """Three slots now and none later: the three most valuable are chosen."""
    orders = [planned(n, 5.0, n * 10) for n in range(1, 6)]

    assert {3, 4, 5} == choose(orders, [0.0, 0.0, 0.0, 60.0, 60.0], lead=0.0)


def test_unknown_and_passed_deadlines_come_after_the_rest() -> None:
    """Orders without a deadline, then those whose deadline passed, go last."""
    orders = [planned(1, None, 0), planned(2, 5.0, 900), planned(3, 50.0, 10),
              planned(4, 60.0, 20)]
    schedule = Schedule(orders, now=10.0, rate=1.0)

    sent = [p.ref.order_id for p in iter(lambda: schedule.next(10.0, 1.0), None)]

    assert [3, 4, 1, 2] == sent


def test_every_order_is_handed_out_exactly_once() -> None:
    """However rates change, each order comes out of the schedule once."""
    rand = random.Random(4)
    orders = [planned(n, rand.choice([None, rand.uniform(0, 100)]),
                      rand.randint(1, 999)) for n in range(1, 301)]
    schedule = Schedule(orders, now=0.0, rate=2.0)

    seen = []
    clock = 0.0
    while (order := schedule.next(clock, rand.choice([1.0, 2.0, 5.0]))) is not None:
        seen.append(order.ref.order_id)
        clock += 0.3

    assert sorted(seen) == list(range(1, 301))
    assert schedule.replans > 1


def test_a_rate_change_makes_a_new_plan() -> None:
    """When the rate doubles, orders that did not fit before are chosen."""
    orders = [planned(n, 10.0 + 0.01, 100) for n in range(1, 21)]
    schedule = Schedule(orders, now=0.0, rate=1.0)
    replans = schedule.replans

    schedule.next(0.0, 2.0)

    assert replans + 1 == schedule.replans


def test_leftovers_after_a_stop_are_everything_not_handed_out() -> None:
    """A stop turns the rest of the schedule into leftovers, none lost."""
    orders = [planned(n, 100.0 + n, 1) for n in range(1, 11)]
    schedule = Schedule(orders, now=0.0, rate=1.0)
    schedule.next(0.0, 1.0)

    assert 9 == len(list(schedule.leftovers()))
