"""The pipeline with a scripted client: one row per ID, retries, stops."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta

import pytest

from batchcancel.budget import ErrorLimit
from batchcancel.errors import TransportError
from batchcancel.ids import Duplicate, InputItem, OrderRef, Rejected
from batchcancel.outcomes import Answer, OrderView, Outcome, Row
from batchcancel.ratelimit import RateHeaders, Ticket
from batchcancel.retry import Backoff
from batchcancel.run import Job, RunSettings

STARTED = datetime(2026, 12, 4, 10, 0, tzinfo=UTC)
LATER = STARTED + timedelta(seconds=5)
LONG_AGO = STARTED - timedelta(days=3)

Step = Answer | TransportError


def cancelled(total: int = 267, when: datetime = LATER) -> Answer:
    return Answer(200, OrderView("cancelled", total, None, when))


def status(name: str) -> Answer:
    return Answer(200, OrderView(name, 99, None, LONG_AGO))


class ScriptedApi:
    """Answers each order's requests from its script, then repeats the last."""

    def __init__(self, scripts: dict[int, Sequence[Step]],
                 tracks: dict[int, Sequence[Step]] | None = None,
                 default: Sequence[Step] = (Answer(404, message="Not Found"),),
                 ) -> None:
        self._scripts = scripts
        self._tracks = tracks or {}
        self._default = default
        self.calls: Counter[int] = Counter()
        self.track_calls: Counter[int] = Counter()

    async def cancel(self, order_id: int) -> Answer:
        return self._next(self._scripts, self.calls, order_id)

    async def track(self, order_id: int) -> Answer:
        return self._next(self._tracks, self.track_calls, order_id)

    def _next(self, scripts: dict[int, Sequence[Step]], calls: Counter[int],
              order_id: int) -> Answer:
        script = scripts.get(order_id, self._default)
        step = script[min(calls[order_id], len(script) - 1)]
        calls[order_id] += 1
        if isinstance(step, TransportError):
            raise step
        return step


class OpenGate:
    """A gate that never waits but records tickets and cooldowns."""

    rate = None

    def __init__(self) -> None:
        self.acquired = 0
        self.settled = 0
        self.cooldowns: list[float] = []
        self.pauses: list[float] = []

    async def acquire(self) -> Ticket:
        self.acquired += 1
        await asyncio.sleep(0)
        return Ticket(0.0, 0)

    def settle(self, ticket: Ticket, headers: RateHeaders | None) -> None:
        self.settled += 1

    def cool_down(self, seconds: float) -> None:
        self.cooldowns.append(seconds)

    def pause(self, seconds: float) -> None:
        self.pauses.append(seconds)


class Rows:
    def __init__(self) -> None:
        self.rows: list[Row] = []

    def record(self, row: Row) -> None:
        self.rows.append(row)

    def by_id(self) -> dict[int | None, Row]:
        return {row.order_id: row for row in self.rows}


async def no_sleep(_seconds: float) -> None:
    await asyncio.sleep(0)


def refs(*ids: int) -> Iterator[InputItem]:
    return iter([OrderRef(order_id, "in.csv", n + 2) for n, order_id in enumerate(ids)])


async def run(api: ScriptedApi, items: Iterator[InputItem], *, retries: int = 3,
              gate: OpenGate | None = None) -> tuple[Job, Rows, OpenGate]:
    sink, gate = Rows(), gate or OpenGate()
    job = Job(api, gate, sink, RunSettings(concurrency=3, max_retries=retries,
                                           backoff=Backoff(0.01, 0.02), grace=0.5),
              now=lambda: STARTED, sleep=no_sleep, rand=lambda: 0.5)
    await job.run(items)
    return job, sink, gate


async def test_every_distinct_id_gets_exactly_one_row() -> None:
    """Valid IDs, rejected lines and duplicates: one row each, duplicates none."""
    items: list[InputItem] = [
        OrderRef(1, "in", 2), Rejected("in", 3, "abc", "not a positive integer"),
        Duplicate(1, "in", 4, "in", 2), OrderRef(2, "in", 5),
    ]
    api = ScriptedApi({1: [cancelled()], 2: [status("fulfilled")]})

    job, sink, _ = await run(api, iter(items))

    assert [1, 2, None] == sorted(sink.by_id(), key=lambda k: k or 10**9)
    assert 3 == len(sink.rows)
    assert (4, 1, 1, 2) == (job.stats.lines_read, job.stats.duplicates,
                            job.stats.invalid_lines, job.stats.distinct_ids)
    assert 1 == api.calls[1]


async def test_outcomes_follow_the_answers() -> None:
    """Each kind of answer lands in its outcome with the right credits."""
    api = ScriptedApi({
        1: [cancelled(267)], 2: [cancelled(73, LONG_AGO)], 3: [status("printed")],
        4: [Answer(409, message="Order cannot be cancelled")],
        5: [Answer(404, message="Not Found")],
    })

    _, sink, _ = await run(api, refs(1, 2, 3, 4, 5))
    got = {k: (r.outcome, r.refunded_credits) for k, r in sink.by_id().items()}

    assert {1: (Outcome.CANCELLED, 267), 2: (Outcome.ALREADY_CANCELLED, 0),
            3: (Outcome.NOT_CANCELLABLE, 0), 4: (Outcome.NOT_CANCELLABLE, 0),
            5: (Outcome.NOT_FOUND, 0)} == got


async def test_retries_pass_the_gate_every_time() -> None:
    """Two 5xx then a cancel: three requests, three gate passes, two retries."""
    api = ScriptedApi({1: [Answer(500, readable=False), Answer(503, readable=False),
                           cancelled()]})

    job, sink, gate = await run(api, refs(1))

    assert (Outcome.CANCELLED, 3) == (sink.rows[0].outcome, sink.rows[0].attempts)
    assert (3, 3, 2) == (gate.acquired, job.stats.requests_sent, job.stats.retries)
    assert gate.acquired == gate.settled  # every ticket handed back


async def test_a_429_cools_the_whole_gate_down_by_its_retry_after() -> None:
    """A 429 with Retry-After: 7 asks the shared gate for a 7 s cooldown."""
    api = ScriptedApi({1: [Answer(429, retry_after="7"), cancelled()]})

    _, sink, gate = await run(api, refs(1))

    assert [7.0] == gate.cooldowns
    assert Outcome.CANCELLED == sink.rows[0].outcome


async def test_exhausted_retries_are_an_error_with_the_last_reason() -> None:
    """After max_retries further failures the order is an error, not lost."""
    api = ScriptedApi({1: [Answer(502, readable=False)]})

    _, sink, _ = await run(api, refs(1), retries=2)

    row = sink.rows[0]
    assert (Outcome.ERROR, 3) == (row.outcome, row.attempts)
    assert "gave up after 3 attempts: HTTP 502" in row.detail
    assert row.refunded_credits is None  # a 5xx may have hidden a cancel


async def test_a_timed_out_cancel_found_cancelled_on_retry_is_ours() -> None:
    """The cancel happened behind a timeout: the retry's answer counts it once."""
    api = ScriptedApi({1: [TransportError("read timeout"), cancelled(146, None)]})

    _, sink, _ = await run(api, refs(1))

    assert (Outcome.CANCELLED, 146) == (sink.rows[0].outcome,
                                        sink.rows[0].refunded_credits)


async def test_a_refusal_after_a_lost_attempt_is_checked_with_track() -> None:
    """'Already cancelled' after our timeout is verified: it was our cancel."""
    api = ScriptedApi(
        {1: [TransportError("read timeout"),
             Answer(400, message="Order has already been cancelled")]},
        tracks={1: [cancelled(267)]},
    )

    _, sink, _ = await run(api, refs(1))

    assert (Outcome.CANCELLED, 267) == (sink.rows[0].outcome,
                                        sink.rows[0].refunded_credits)
    assert 1 == api.track_calls[1]


async def test_a_refusal_without_a_lost_attempt_is_not_checked() -> None:
    """A plain refusal on the first attempt costs no extra request."""
    api = ScriptedApi({1: [Answer(400, message="Order has already been cancelled")]})

    _, sink, _ = await run(api, refs(1))

    assert Outcome.ALREADY_CANCELLED == sink.rows[0].outcome
    assert 0 == api.track_calls[1]


async def test_refused_credentials_stop_the_run_and_nothing_is_lost() -> None:
    """A 401 stops everything; every ID not answered is not_attempted."""
    api = ScriptedApi({}, default=[Answer(401, message="Unauthenticated.")])
    ids = list(range(1, 51))

    job, sink, _ = await run(api, refs(*ids))

    assert sorted(ids) == sorted(r.order_id for r in sink.rows)
    assert {Outcome.NOT_ATTEMPTED} == {r.outcome for r in sink.rows}
    assert "credentials" == job.stats.stopped_by
    assert sum(api.calls.values()) <= 3  # only what was in flight at the time


async def test_a_stop_records_the_unread_rest_of_the_input() -> None:
    """Stopping mid-run still reads the input to the end, as not_attempted."""
    api = ScriptedApi({}, default=[cancelled()])
    ids = list(range(1, 2001))
    sink, gate = Rows(), OpenGate()
    job = Job(api, gate, sink, RunSettings(concurrency=2, grace=0.1),
              now=lambda: STARTED, sleep=no_sleep)

    async def stop_soon() -> None:
        while len(sink.rows) < 10:
            await asyncio.sleep(0)
        job.stop("test", by="SIGTERM")

    await asyncio.gather(job.run(refs(*ids)), stop_soon())

    outcomes = Counter(r.outcome for r in sink.rows)
    assert 2000 == len(sink.rows) == len({r.order_id for r in sink.rows})
    assert outcomes[Outcome.CANCELLED] == sum(api.calls.values())
    assert outcomes[Outcome.NOT_ATTEMPTED] > 1000


async def test_in_flight_requests_are_abandoned_after_the_grace() -> None:
    """A request that hangs past --grace becomes not_attempted, maybe applied."""
    class Hanging(ScriptedApi):
        async def cancel(self, order_id: int) -> Answer:
            self.calls[order_id] += 1
            await asyncio.sleep(3600)
            raise AssertionError("unreachable")

    api = Hanging({})
    sink = Rows()
    job = Job(api, OpenGate(), sink, RunSettings(concurrency=1, grace=0.05),
              now=lambda: STARTED, sleep=no_sleep)

    async def stop_when_sent() -> None:
        while not api.calls:
            await asyncio.sleep(0)
        job.stop("test", by="SIGINT")

    await asyncio.wait_for(asyncio.gather(job.run(refs(7)), stop_when_sent()), 5)

    assert [7] == [r.order_id for r in sink.rows]
    assert Outcome.NOT_ATTEMPTED == sink.rows[0].outcome
    # It was on the wire: the API may have cancelled it, so no refund of 0.
    assert sink.rows[0].refunded_credits is None


@pytest.mark.parametrize("reason", ["connection lost", "unreadable body"])
async def test_transport_failures_are_retried(reason: str) -> None:
    """Resets and unreadable bodies are retried like 5xx."""
    api = ScriptedApi({1: [TransportError(reason), cancelled()]})

    _, sink, _ = await run(api, refs(1))

    assert (Outcome.CANCELLED, 2) == (sink.rows[0].outcome, sink.rows[0].attempts)


async def test_an_unexpected_failure_in_one_order_loses_no_row() -> None:
    """A bug met while settling one order gives it an error row; the rest go on.

    (Such a failure once dropped orders from the report and exited 0.)"""
    class Broken(ScriptedApi):
        async def cancel(self, order_id: int) -> Answer:
            if order_id == 2:
                raise RuntimeError("boom")
            return await super().cancel(order_id)

    api = Broken({}, default=[cancelled()])

    _, sink, _ = await run(api, refs(1, 2, 3))
    rows = sink.by_id()

    assert [1, 2, 3] == sorted(rows)
    assert Outcome.ERROR == rows[2].outcome
    assert "internal error (RuntimeError)" in rows[2].detail


class Ticking:
    """A wall clock that moves ``step`` seconds each time it is read."""

    def __init__(self, step: float) -> None:
        self.at, self.step = STARTED, timedelta(seconds=step)

    def __call__(self) -> datetime:
        self.at += self.step
        return self.at


async def run_with(api: ScriptedApi, items: Iterator[InputItem],
                   settings: RunSettings,
                   now: Ticking | None = None) -> tuple[Job, Rows, OpenGate]:
    sink, gate = Rows(), OpenGate()
    job = Job(api, gate, sink, settings, now=now or (lambda: STARTED),
              sleep=no_sleep, rand=lambda: 0.5)
    await job.run(items)
    return job, sink, gate


DOWN = Answer(503, readable=False)


async def test_an_outage_pauses_the_run_and_charges_no_order() -> None:
    """Nine 503s across three orders, then the API is back: all cancelled,
    though each order allows two retries (the failures before the fifth in a
    row count against them, none after), and the gate was paused."""
    down_then_up = [DOWN, DOWN, DOWN, cancelled()]
    api = ScriptedApi({1: down_then_up, 2: down_then_up, 3: down_then_up})
    settings = RunSettings(concurrency=3, max_retries=2, backoff=Backoff(0.01, 0.02))

    job, sink, gate = await run_with(api, refs(1, 2, 3), settings)

    assert {Outcome.CANCELLED} == {row.outcome for row in sink.rows}
    assert [1.0] == gate.pauses[:1]
    assert job.stats.stopped_by is None


async def test_a_lasting_outage_ends_the_run_with_the_rest_resumable() -> None:
    """The API fails every request for the outage limit: the run stops by
    "outage", and no order is an error: they are all not_attempted."""
    api = ScriptedApi({}, default=[TransportError("connection reset")])
    settings = RunSettings(concurrency=2, max_retries=3, outage_limit=60.0,
                           backoff=Backoff(0.01, 0.02), grace=0.1)

    job, sink, gate = await run_with(api, refs(*range(1, 11)), settings,
                                     now=Ticking(5.0))

    assert "outage" == job.stats.stopped_by
    assert "connection reset" in (job.stats.stop_reason or "")
    assert {Outcome.NOT_ATTEMPTED} == {row.outcome for row in sink.rows}
    assert 10 == len(sink.rows)
    assert [1.0, 2.0, 4.0] == gate.pauses[:3]  # the pause grows


async def test_one_order_failing_alone_is_not_an_outage() -> None:
    """Six 502s for one order, answers for the others: that order is an
    error after its retries, and the run never pauses."""
    api = ScriptedApi({1: [Answer(502, readable=False)]},
                      default=[cancelled()])
    settings = RunSettings(concurrency=1, max_retries=5, backoff=Backoff(0.01, 0.02))

    _, sink, gate = await run_with(api, refs(1, 2), settings)

    assert Outcome.ERROR == sink.by_id()[1].outcome
    assert [] == gate.pauses


async def test_max_errors_ends_the_run_on_purpose() -> None:
    """--max-errors 1: the second order to end in error stops the run; the
    orders not yet sent are not_attempted."""
    bad = [Answer(502, readable=False), cancelled()]
    api = ScriptedApi({1: bad, 3: bad, 5: bad}, default=[cancelled()])
    settings = RunSettings(concurrency=1, max_retries=0, grace=0.1,
                           max_errors=ErrorLimit.parse("1"))

    job, sink, _ = await run_with(api, refs(1, 2, 3, 4, 5), settings)
    outcomes = [sink.by_id()[n].outcome for n in range(1, 6)]

    assert [Outcome.ERROR, Outcome.CANCELLED, Outcome.ERROR] == outcomes[:3]
    assert {Outcome.NOT_ATTEMPTED} == set(outcomes[3:])
    assert "max-errors" == job.stats.stopped_by


async def test_orders_that_always_fail_among_healthy_ones_are_errors() -> None:
    """Two orders that fail whatever happens, among healthy ones: they fail
    while the API answers the others, so it is no outage, and each ends
    error after its retries."""
    api = ScriptedApi({1: [DOWN], 2: [DOWN]}, default=[cancelled()])
    settings = RunSettings(concurrency=2, max_retries=2,
                           backoff=Backoff(0.01, 0.02), grace=0.1)

    _, sink, _ = await run_with(api, refs(1, 3, 2, *range(4, 12)), settings)

    assert (Outcome.ERROR, Outcome.ERROR) == (sink.by_id()[1].outcome,
                                              sink.by_id()[2].outcome)
    assert (3, 3) == (api.calls[1], api.calls[2])
