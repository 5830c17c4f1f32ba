"""Deadline-first planning: which order to send next.

The rule
--------
Every order with a known ``created_at`` has a deadline, ``created_at`` plus
the review window; its value is its ``authorization_total``.  The gate
sends one request every ``1/rate`` seconds, so the time ahead is a row of
slots.  Choosing which orders to cancel is then the textbook problem of
unit-time jobs with deadlines and profits, which a greedy rule solves
exactly: take orders from the most valuable down, and give each the
*latest* free slot that still meets its deadline (skip it when there is
none).  The chosen orders are sent earliest deadline first, which meets
every chosen deadline.  After them come the orders the plan could not fit,
then orders without a known deadline (not in the order list), then orders
whose deadline has already passed: all are still tried, in that order.

The plan is made again when the gate's rate changes, and when a chosen
order is reached after its deadline (the run fell behind the plan).
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Sequence,
)
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

import structlog

from batchcancel.ids import OrderRef
from batchcancel.outcomes import Outcome, Retry, Row, StopRun, normalise_status

log = structlog.get_logger("batchcancel")

#: Seconds kept in hand before a deadline: the request must also travel.
LEAD = 0.25


@dataclass(frozen=True, slots=True)
class Listed:
    """What the order list says about one order."""

    order_id: int
    status: str | None
    cancellable: bool | None
    created_at: datetime | None
    authorization_total: int | None
    sub_account_id: int | None
    updated_at: datetime | None = None
    kind: str | None = None  # the list's ``type``, lower case: postcard6x9, ...

    @property
    def is_cancelled(self) -> bool:
        return self.status == "cancelled"

    @property
    def looks_cancellable(self) -> bool:
        # When status and the flag disagree the status wins: a Reviewing
        # order flagged false still gets its request (the flag's rule is
        # undocumented); any other status is skipped unless flagged true.
        return self.status == "reviewing" or self.cancellable is True


@dataclass(frozen=True, slots=True)
class Planned:
    """An order to send, with what the plan knows of it."""

    ref: OrderRef
    deadline: float | None = None  # epoch seconds
    credits: int = 0
    sub_account_id: int | None = None
    listed_open: bool = False  # the order list showed it not yet cancelled


def deadline_of(listed: Listed | None, review_window: timedelta) -> datetime | None:
    if listed is None or listed.created_at is None:
        return None
    return listed.created_at + review_window


def parse_listed(raw: dict[str, object], created_at: datetime | None,
                 updated_at: datetime | None = None) -> Listed | None:
    """One item of ``GET /orders/list`` (already decoded), or None."""
    order_id = raw.get("id")
    if type(order_id) is not int or order_id <= 0:
        return None
    flag = raw.get("cancellable")
    total = raw.get("authorization_total")
    sub = raw.get("sub_account_id")
    kind = raw.get("type")
    return Listed(
        order_id=order_id,
        status=normalise_status(raw.get("status")),
        cancellable=flag if isinstance(flag, bool) else None,
        created_at=created_at,
        authorization_total=total if type(total) is int else None,
        sub_account_id=sub if type(sub) is int else None,
        updated_at=updated_at,
        kind=(kind.strip().lower() or None) if isinstance(kind, str) else None,
    )


def choose(orders: Sequence[Planned], slots: Sequence[float], *,
           lead: float = LEAD) -> set[int]:
    """Order IDs of the most valuable set that meets its deadlines.

    ``slots`` are the epoch times at which the next requests can go, in
    order.  Greedy by value into the latest free slot that still meets the
    deadline; free slots are found with a union-find over slot numbers, so
    the whole plan is O(n log n).
    """
    count = len(slots)
    parent = list(range(count + 1))  # slot k is index k + 1; index 0: none

    def free_at_or_before(index: int) -> int:
        while parent[index] != index:
            parent[index] = parent[parent[index]]
            index = parent[index]
        return index

    chosen: set[int] = set()
    ranked = sorted((o for o in orders if o.deadline is not None),
                    key=lambda o: (-o.credits, o.deadline))
    for order in ranked:
        assert order.deadline is not None
        fitting = bisect.bisect_right(slots, order.deadline - lead)
        index = free_at_or_before(fitting)
        if index == 0:
            continue
        chosen.add(order.ref.order_id)
        parent[index] = index - 1
    return chosen


def even_slots(count: int, now: float, rate: float | None) -> list[float]:
    """``count`` slots from ``now`` at ``rate`` per second (all now: no limit)."""
    step = 1 / rate if rate else 0.0
    return [now + n * step for n in range(count)]


SlotTimes = Callable[[int, float], list[float]]


class Schedule:
    """Hands out orders in the plan's order; re-plans as the rate changes."""

    def __init__(self, orders: Iterable[Planned], *, now: float,
                 rate: float | None, slots: SlotTimes | None = None,
                 lead: float = LEAD) -> None:
        self._chosen: deque[Planned] = deque()
        self._rest: deque[Planned] = deque()
        self._unknown: deque[Planned] = deque()
        self._past: deque[Planned] = deque()
        for order in orders:
            if order.deadline is None:
                self._unknown.append(order)
            else:
                self._rest.append(order)
        self._rate = rate
        self._slots = slots or (lambda count, at: even_slots(count, at, self._rate))
        self._lead = lead
        self.replans = 0
        self._plan(now)

    def next(self, now: float, rate: float | None, *,
             margin: float = 0.0) -> Planned | None:
        """The order to send now, or None when everything has been handed out.

        An order whose deadline falls within ``margin`` (the time a request
        takes to arrive) counts as passed.
        """
        if _rate_changed(self._rate, rate):
            self._rate = rate
            self._plan(now)
        while self._chosen:
            order = self._chosen.popleft()
            if _open(order, now + margin):
                return order
            self._past.append(order)
            self._plan(now)  # behind the plan: fit the rest again
        while self._rest:
            order = self._rest.popleft()
            if _open(order, now + margin):
                return order
            self._past.append(order)
        for queue in (self._unknown, self._past):
            if queue:
                return queue.popleft()
        return None

    def nearest_deadline(self, now: float) -> float | None:
        """The earliest deadline still ahead among orders not handed out."""
        # Both queues are in deadline order: the first open order of each
        # is its nearest, and only passed orders are skipped to find it.
        heads = (next((o.deadline for o in queue if _open(o, now)), None)
                 for queue in (self._chosen, self._rest))
        return min((d for d in heads if d is not None), default=None)

    def leftovers(self) -> Iterator[Planned]:
        """Everything not handed out yet (after a stop)."""
        for queue in (self._chosen, self._rest, self._unknown, self._past):
            while queue:
                yield queue.popleft()

    def _plan(self, now: float) -> None:
        pending = [*self._chosen, *self._rest]
        for order in pending:
            if not _open(order, now):
                self._past.append(order)
        pending = [o for o in pending if _open(o, now)]
        slots = self._slots(len(pending), now)
        picked = choose(pending, slots, lead=self._lead)
        by_deadline = sorted(pending, key=_deadline_key)
        self._chosen = deque(o for o in by_deadline if o.ref.order_id in picked)
        self._rest = deque(o for o in by_deadline if o.ref.order_id not in picked)
        self.replans += 1
        log.debug("plan.made", pending=len(pending), chosen=len(picked),
                  credits=sum(o.credits for o in self._chosen),
                  rate=self._rate and round(self._rate, 2),
                  first_slot_in=round(slots[0] - now, 3) if slots else None,
                  slots_in_1s=sum(1 for t in slots if t < now + 1))


def _open(order: Planned, now: float) -> bool:
    return order.deadline is not None and order.deadline > now


def _deadline_key(order: Planned) -> tuple[float, int]:
    assert order.deadline is not None
    return order.deadline, -order.credits


def _rate_changed(old: float | None, new: float | None) -> bool:
    if old is None or new is None:
        return old is not new
    return abs(new - old) > 0.05 * old


# -- the preflight: what the order list says before anything is sent ---------

Fetch = Callable[[int, int, "int | None"], Awaitable["PageView | None"]]


class PageView(Protocol):
    """What the preflight reads of one page of the order list."""

    @property
    def orders(self) -> tuple[Listed, ...]: ...

    @property
    def last_page(self) -> int | None: ...

    @property
    def per_page(self) -> int | None: ...

    @property
    def raw_count(self) -> int: ...


async def preflight(fetch: Fetch, wanted: set[int], *,
                    sub_accounts: Sequence[int | None], per_page: int,
                    cutoff: datetime) -> tuple[dict[int, Listed], bool]:
    """Page through the order list for the orders in ``wanted``.

    Newest first, so it stops at the last page, at a page whose oldest
    order was created before ``cutoff`` (too old to be cancellable), or
    once every wanted order has been seen.  Returns what was found and
    whether the listing was complete (False when a page could not be had).
    """
    found: dict[int, Listed] = {}
    complete = True
    pages = walk_pages(fetch, sub_accounts=sub_accounts, per_page=per_page,
                       cutoff=cutoff, done=lambda: len(found) == len(wanted))
    async for _sub_account, view in pages:
        if view is None:
            complete = False
            continue
        found.update((o.order_id, o) for o in view.orders
                     if o.order_id in wanted)
    return found, complete


async def walk_pages(fetch: Fetch, *, sub_accounts: Sequence[int | None],
                     per_page: int, cutoff: datetime | None,
                     done: Callable[[], bool] = lambda: False,
                     ) -> AsyncIterator[tuple[int | None, PageView | None]]:
    """Every page of the order list, per sub-account, newest first.

    Yields ``(sub_account, page)``; the page is None when it could not be
    had, and that sub-account's listing ends there.  A sub-account's listing
    also ends at its last page, at a page whose oldest order is older than
    ``cutoff`` (None: never), or once ``done()`` says so after a page.
    """
    for sub_account in sub_accounts or (None,):
        page, size = 1, per_page
        while True:
            view = await fetch(page, size, sub_account)
            yield sub_account, view
            if view is None:
                break
            if view.per_page is not None and 0 < view.per_page < size:
                # The server pages by its own, smaller size: ask for that
                # from now on so the page numbers keep meaning the same rows.
                size = view.per_page
            if _last(view, page, cutoff) or done():
                break
            page += 1


def _last(view: PageView, page: int, cutoff: datetime | None) -> bool:
    if view.raw_count == 0:
        return True
    if view.last_page is not None and page >= view.last_page:
        return True
    if cutoff is None:
        return False
    created = [o.created_at for o in view.orders if o.created_at is not None]
    return bool(created) and min(created) < cutoff


def settle_from_list(ref: OrderRef, listed: Listed | None,
                     job_started: datetime | None = None,
                     sent_before: frozenset[int] | set[int] = frozenset()
                     ) -> Row | None:
    """The row the order list alone decides, costing no cancel request.

    ``job_started``: when a resumed job first started.  An order the list
    shows cancelled after that moment, but that the journal does not hold,
    was cancelled by a request of this job whose answer was lost in a crash.
    """
    if listed is None:
        return None
    ours_lost = ref.order_id in sent_before or (
        job_started is not None and listed.updated_at is not None
        and listed.updated_at.replace(microsecond=0)
        > job_started.replace(microsecond=0))
    if listed.is_cancelled and ours_lost:
        return Row(order_id=ref.order_id, outcome=Outcome.CANCELLED,
                   source=ref.source, line=ref.line, order_status="cancelled",
                   refunded_credits=listed.authorization_total,
                   sub_account_id=listed.sub_account_id,
                   detail="order list: cancelled by an earlier attempt of this job")
    if listed.is_cancelled:
        return _listed_row(ref, listed, Outcome.ALREADY_CANCELLED,
                           "order list: already cancelled")
    if not listed.looks_cancellable:
        return _listed_row(ref, listed, Outcome.NOT_CANCELLABLE,
                           f"order list: order is {listed.status or 'unknown'}")
    return None


def _listed_row(ref: OrderRef, listed: Listed, outcome: Outcome,
                detail: str) -> Row:
    return Row(order_id=ref.order_id, outcome=outcome, source=ref.source,
               line=ref.line, order_status=listed.status, refunded_credits=0,
               sub_account_id=listed.sub_account_id, detail=detail)


def to_planned(ref: OrderRef, listed: Listed | None,
               review_window: timedelta) -> Planned:
    deadline = deadline_of(listed, review_window)
    return Planned(
        ref,
        deadline=deadline.timestamp() if deadline else None,
        credits=(listed.authorization_total or 0) if listed else 0,
        sub_account_id=listed.sub_account_id if listed else None,
        listed_open=listed is not None and not listed.is_cancelled,
    )


class ListAnswerView(Protocol):
    """What ``judge_list_page`` reads of an answer of the order list."""

    @property
    def http_status(self) -> int: ...

    @property
    def readable(self) -> bool: ...

    @property
    def retry_after(self) -> str | None: ...

    @property
    def page(self) -> PageView | None: ...


@dataclass(frozen=True, slots=True)
class PageFinal:
    """The list answered for good: a page, or None when it refused."""

    page: PageView | None


def judge_list_page(answer: ListAnswerView) -> PageFinal | Retry | StopRun:
    """Decide one answer of the order list (pure)."""
    status = answer.http_status
    if status in {401, 402, 403}:
        return StopRun(f"credentials refused (HTTP {status})")
    if status == 429:
        return Retry("HTTP 429", throttled=True, retry_after=answer.retry_after)
    if status >= 500 or status == 408 or not answer.readable:
        return Retry(f"HTTP {status}" if answer.readable else "unreadable body")
    if 200 <= status < 300 and answer.page is not None:
        return PageFinal(answer.page)
    # Any other answer: no list, so every order simply gets its cancel.
    return PageFinal(None)
