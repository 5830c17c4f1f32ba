"""The pipeline: input → bounded queue → a fixed pool of workers → rows.

One producer reads the input (in a thread, so a slow stdin never blocks the
event loop) and feeds a bounded queue; ``concurrency`` workers take order
IDs from it.  Each attempt of each order passes the rate gate, is sent, and
its answer is classified by the pure ``outcomes.classify``.  Every final
row goes to the sink as soon as it is known.

Stopping: ``Job.stop`` (on a refused token, or on SIGINT/SIGTERM from the
CLI) stops new attempts at once.  Requests already on the wire get
``grace`` seconds to come back; then they are abandoned.  Everything that
has no final answer, including the rest of the input, which is still read
to the end, is recorded as ``not_attempted``, so no input line is lost.
"""

from __future__ import annotations

import asyncio
import random
import signal
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

import structlog

from batchcancel.api import CancelClient
from batchcancel.budget import ErrorLimit, GiveUp, Outage, Pause
from batchcancel.errors import CertificateRefused, InputError, TransportError
from batchcancel.ids import Duplicate, InputItem, OrderRef, Rejected
from batchcancel.outcomes import (
    Answer,
    Decision,
    Final,
    Outcome,
    Retry,
    Row,
    StopRun,
    classify,
    classify_status_check,
    needs_status_check,
)
from batchcancel.plan import Planned, Schedule
from batchcancel.ratelimit import RateGate, RateHeaders, Ticket
from batchcancel.reader import ThreadedReader
from batchcancel.retry import Backoff, parse_retry_after

log = structlog.get_logger("batchcancel")



A = TypeVar("A", bound="HttpAnswer")
D = TypeVar("D")
Taken = tuple[OrderRef | None, "Ticket | None", "Planned | None"]


class HttpAnswer(Protocol):
    """What the retry loop reads of any answer."""

    @property
    def rate(self) -> RateHeaders | None: ...

    @property
    def http_status(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Plan:
    """What a planner made of the input before anything is sent."""

    settled: list[Row]           # outcomes the order list already decided
    schedule: Schedule | None    # None: send nothing (a dry run)


Planner = Callable[["Job", list[OrderRef]], Awaitable["Plan | None"]]


class RowSink(Protocol):
    """Where final rows go (the report, the tallies, the progress line)."""

    def record(self, row: Row) -> None:
        """Take one final row; called once per distinct ID or rejected line."""


@dataclass(frozen=True, slots=True)
class RunSettings:
    """How hard to try; every field is a setting of ``config.py``."""

    concurrency: int = 4
    max_retries: int = 5
    backoff: Backoff = field(default_factory=Backoff)
    retry_after_cap: float = 300.0
    # A 429 without Retry-After: wait out the API's documented window.
    cooldown: float = 60.0
    grace: float = 10.0
    # Seconds the API may fail every request before the run gives up.
    outage_limit: float = 300.0
    max_errors: ErrorLimit | None = None
    # Items per hand-over from the reading thread: 1 for pipes and terminals.
    read_batch: int = 256


@dataclass(slots=True)
class RunStats:
    """What the summary counts besides the rows themselves."""

    started_at: datetime
    finished_at: datetime | None = None
    lines_read: int = 0
    distinct_ids: int = 0
    duplicates: int = 0
    invalid_lines: int = 0
    requests_sent: int = 0
    retries: int = 0
    stop_reason: str | None = None
    stopped_by: str | None = None
    # A stop came while a pipe was silent: lines after lines_read are unknown.
    input_unread: bool = False
    # Every input line has been read: the count of rows to come is known.
    input_complete: bool = False


@dataclass(slots=True)
class Attempts:
    """The running state of one order's attempts."""

    count: int = 0
    maybe_applied: bool = False
    last_reason: str = ""
    http_status: int | None = None


class Job:
    """One run of the main job; build it, then ``await job.run(items)``."""

    def __init__(
        self,
        client: CancelClient,
        gate: RateGate,
        sink: RowSink,
        settings: RunSettings,
        *,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rand: Callable[[], float] = random.random,
        job_started: datetime | None = None,
        finished: dict[int, Row] | None = None,
        sent_before: set[int] | None = None,
        on_send: Callable[[int], None] = lambda order_id: None,
    ) -> None:
        """``job_started`` and ``finished`` come from the journal of an
        interrupted run of the same job: its first start, which decides
        what this job cancelled, and the rows it already settled."""
        self._client = client
        self._gate = gate
        self._sink = sink
        self._settings = settings
        self._now = now
        self._sleep = sleep
        self._rand = rand
        self.stats = RunStats(started_at=now())
        self.job_started = job_started or self.stats.started_at
        self._finished = finished or {}
        self._sent_before = sent_before or set()
        self._on_send = on_send
        self._stopping = asyncio.Event()
        self._workers: dict[asyncio.Task[None], bool] = {}
        self.input_error: Exception | None = None
        self._schedule: Schedule | None = None
        self._hurry = False
        self._outage = Outage(limit=settings.outage_limit)
        self._ended = self._errors = 0

    # -- stopping -----------------------------------------------------------

    @property
    def gate_rate(self) -> float | None:
        """The rate the gate expects to sustain now (for planning)."""
        return self._gate.rate

    def slot_times(self, count: int, now: float) -> list[float]:
        """When the next ``count`` cancels could go (for the schedule).

        The gate's view of the account's window, and no faster than the
        pool of workers can carry requests one round trip at a time.
        """
        spacing = self._gate.latency / self._settings.concurrency
        times = self._gate.slot_times(count, now)
        return [max(t, now + n * spacing) for n, t in enumerate(times)]

    def lead(self) -> float:
        """Seconds a cancel needs to arrive: two round trips, at least 20 ms."""
        return max(0.02, 2 * self._gate.latency)

    def nearest_deadline(self, now: float) -> float | None:
        """When the next review window of an order still to send closes."""
        return None if self._schedule is None else self._schedule.nearest_deadline(now)

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    async def wait_stopping(self) -> None:
        """Return once the run is told to stop."""
        await self._stopping.wait()

    def stop(self, reason: str, *, by: str | None = None,
             immediately: bool = False) -> None:
        """Start no new attempt; abandon in-flight ones after the grace."""
        if self.stopping:
            immediately = True  # a second stop does not wait again
        else:
            self.stats.stop_reason, self.stats.stopped_by = reason, by
            self._stopping.set()
            log.warning("run.stopping", reason=reason,
                        grace_s=self._settings.grace)
        self._hurry = self._hurry or immediately
        for task, in_flight in self._workers.items():
            if immediately or not in_flight:
                task.cancel()
        if not immediately:
            loop = asyncio.get_running_loop()
            loop.call_later(self._settings.grace, self._abandon_in_flight)

    def _abandon_in_flight(self) -> None:
        for task in self._workers:
            task.cancel()

    def install_signal_handlers(self) -> Callable[[], None]:
        """Stop cleanly on SIGINT/SIGTERM; returns a function undoing it."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self._on_signal, signum)

        def undo() -> None:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)

        return undo

    def _on_signal(self, signum: int) -> None:
        name = signal.Signals(signum).name
        self.stop(f"received {name}", by=name)

    # -- the pipeline -------------------------------------------------------

    async def run(self, items: Iterator[InputItem],
                  planner: Planner | None = None) -> RunStats:
        """Send every order of ``items`` and record one row for each.

        Without a planner, orders are sent in input order as they are read.
        With one, the whole input is read first, the planner settles what
        it can from the order list and returns a ``Schedule``, and the
        workers take orders from it in its order.
        """
        if planner is None:
            await self._run_streaming(items)
        else:
            await self._run_planned(items, planner)
        self.stats.finished_at = self._now()
        return self.stats

    async def _run_streaming(self, items: Iterator[InputItem]) -> None:
        queue: asyncio.Queue[OrderRef | None] = asyncio.Queue(
            maxsize=self._settings.concurrency * 4
        )
        producer = asyncio.create_task(self._produce(items, queue.put))
        if not self.stopping:
            await self._start_workers(lambda: self._from_queue(queue))
        await self._drain(queue, producer)

    async def _run_planned(self, items: Iterator[InputItem],
                           planner: Planner) -> None:
        refs: list[OrderRef] = []

        async def keep(ref: OrderRef | None) -> None:
            if ref is not None:
                refs.append(ref)

        await self._produce(items, keep)
        plan = None if self.stopping else await planner(self, refs)
        if plan is None:
            for ref in refs:
                self._sink.record(_not_attempted(ref, Attempts()))
            return

        for row in plan.settled:
            self._sink.record(row)
            log.debug("order.finished", order_id=row.order_id,
                      outcome=row.outcome.value, from_order_list=True)
        self._schedule = plan.schedule
        if plan.schedule is not None and not self.stopping:
            await self._start_workers(lambda: self._from_schedule(plan.schedule))
        self._drain_schedule()

    async def _start_workers(self, take: Callable[[], Awaitable[Taken]]) -> None:
        for _ in range(self._settings.concurrency):
            task = asyncio.create_task(self._work(take))
            self._workers[task] = False
        await asyncio.gather(*self._workers, return_exceptions=True)

    async def _produce(self, items: Iterator[InputItem],
                       put: Callable[[OrderRef | None], Awaitable[None]]) -> None:
        reader = ThreadedReader(items, batch=self._settings.read_batch)
        try:
            while batch := await self._read(reader):
                for item in batch:
                    await self._take_in(item, put)
        except (InputError, OSError) as exc:
            # Orders already sent must still reach the report: stop the run
            # like a signal would, and let the CLI say what went wrong.
            self.input_error = exc
            self.stop(f"input unreadable: {exc}", by="input")
        else:
            self.stats.input_complete = not self.stats.input_unread
        if not self.stopping:
            for _ in range(self._settings.concurrency):
                await put(None)

    async def _read(self, reader: ThreadedReader[InputItem]) -> list[InputItem] | None:
        """The next batch, unless the run stops while the input is silent."""
        read = asyncio.ensure_future(reader.next_batch())
        if not self.stopping:
            stop = asyncio.ensure_future(self._stopping.wait())
            try:
                await asyncio.wait({read, stop}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stop.cancel()
        if not read.done():
            # Stopping while a pipe is silent: give it the grace (none after
            # a second signal), then stop waiting on it.
            grace = 0.0 if self._hurry else self._settings.grace
            done, _ = await asyncio.wait({read}, timeout=grace)
            if not done:
                read.cancel()
                reader.abandon()
                self.stats.input_unread = True
                log.warning("input.abandoned", lines_read=self.stats.lines_read)
                return None
        return read.result()

    async def _take_in(self, item: InputItem,
                       put: Callable[[OrderRef | None], Awaitable[None]]) -> None:
        self.stats.lines_read += 1
        match item:
            case Rejected():
                self.stats.invalid_lines += 1
                self._sink.record(_rejected_row(item))
            case Duplicate():
                self.stats.duplicates += 1
                log.debug("input.duplicate", order_id=item.order_id,
                          line=item.line, first_line=item.first_line)
            case OrderRef() if item.order_id in self._finished:
                # Settled by an interrupted run of this job: never sent again.
                self.stats.distinct_ids += 1
                self._sink.record(replace(self._finished[item.order_id],
                                          source=item.source, line=item.line))
            case OrderRef():
                self.stats.distinct_ids += 1
                if self.stopping:
                    self._sink.record(_not_attempted(item, Attempts()))
                else:
                    await put(item)

    async def _drain(self, queue: asyncio.Queue[OrderRef | None],
                     producer: asyncio.Task[None]) -> None:
        # Workers have ended: what is still queued, and whatever the producer
        # is still reading, becomes ``not_attempted`` here.
        while True:
            while not queue.empty():
                ref = queue.get_nowait()
                if ref is not None:
                    self._sink.record(_not_attempted(ref, Attempts()))
            if producer.done():
                break
            await asyncio.wait({producer}, timeout=0.05)
        producer.result()  # an input error surfaces here, never silently

    def _drain_schedule(self) -> None:
        if self._schedule is not None:
            for planned in self._schedule.leftovers():
                row = _not_attempted(planned.ref, Attempts())
                self._sink.record(with_plan(row, planned))

    async def _from_queue(self, queue: asyncio.Queue[OrderRef | None]) -> Taken:
        return await queue.get(), None, None

    async def _from_schedule(self, schedule: Schedule | None) -> Taken:
        # The choice is made only once a request may go, so it is made
        # with the freshest clock and rate.
        assert schedule is not None
        ticket = await self._gate.acquire()
        planned = schedule.next(self._now().timestamp(), self._gate.rate,
                                margin=self._gate.latency)
        if planned is None:
            self._gate.release(ticket)
            return None, None, None
        return planned.ref, ticket, planned

    async def _work(self, take: Callable[[], Awaitable[Taken]]) -> None:
        task = asyncio.current_task()
        assert task is not None
        while True:
            ref, ticket, planned = await take()
            if ref is None:
                return
            attempts = Attempts()
            try:
                row = await self._settle(ref, attempts, task, ticket, planned)
            except asyncio.CancelledError:
                self._sink.record(with_plan(_not_attempted(ref, attempts), planned))
                return
            except Exception as exc:
                log.error("order.internal_error", order_id=ref.order_id,
                          error=type(exc).__name__)
                row = _unsettled(ref, Outcome.ERROR, attempts,
                                 f"internal error ({type(exc).__name__})")
            row = with_plan(row, planned)
            self._sink.record(row)
            log.debug("order.finished", order_id=row.order_id,
                      outcome=row.outcome.value,
                      refunded_credits=row.refunded_credits,
                      attempts=row.attempts)
            self._count_error(row)

    def _count_error(self, row: Row) -> None:
        """Stop the run once ``--max-errors`` is exceeded."""
        self._ended += 1
        self._errors += row.outcome is Outcome.ERROR
        limit = self._settings.max_errors
        if (limit is not None and not self.stopping
                and limit.exceeded(self._errors, self._ended)):
            self.stop(f"{self._errors} of {self._ended} orders ended in error, "
                      f"over --max-errors {limit.text}", by="max-errors")

    # -- requests -----------------------------------------------------------

    async def request(self, send: Callable[[], Awaitable[A]],
                      judge: Callable[[A], D | Retry | StopRun],
                      attempts: Attempts, *, label: int | str,
                      ticket: Ticket | None = None,
                      counted: bool = True) -> D | Retry | StopRun | None:
        """Send until a final decision, with the gate and retries.

        Returns the final decision, the last ``Retry`` when retries ran
        out, or None when the run stopped before a request went out.
        """
        task = asyncio.current_task()
        charged = 0  # failed attempts counted against max_retries
        while True:
            if ticket is None and not self.stopping:
                ticket = await self._gate.acquire()
            if self.stopping or ticket is None:
                if ticket is not None:
                    self._gate.release(ticket)
                return None

            if counted and attempts.count == 0 and isinstance(label, int):
                self._on_send(label)  # journaled before the request leaves
            decision = await self._exchange(send, judge, attempts, ticket,
                                            task, counted, label)
            ticket = None
            if not isinstance(decision, Retry):
                return decision
            # During an outage the API is failing, not the order.
            charged += self._outage.charges(label)
            await self._before_retry(label, decision, attempts, charged)
            if charged > self._settings.max_retries:
                return decision

    async def _exchange(self, send: Callable[[], Awaitable[A]],
                        judge: Callable[[A], D | Retry | StopRun],
                        attempts: Attempts, ticket: Ticket,
                        task: asyncio.Task[Any] | None,
                        counted: bool, label: int | str) -> D | Retry | StopRun:
        if counted:
            attempts.count += 1
        self.stats.requests_sent += 1
        if task in self._workers:
            self._workers[task] = True
        try:
            answer = await send()
        except CertificateRefused as exc:
            self._gate.settle(ticket, None)
            return StopRun(exc.advice, by="tls")
        except TransportError as exc:
            self._gate.settle(ticket, None)
            attempts.http_status = None
            self._failed(label, exc.kind)
            return Retry(exc.kind, maybe_applied=exc.sent)
        except asyncio.CancelledError:
            # Abandoned on the wire at a stop: the API may have carried it out.
            attempts.maybe_applied = True
            self._gate.settle(ticket, None)
            raise
        finally:
            if task in self._workers:
                self._workers[task] = False
        # A 429's own headers say only that the window is full; the
        # cooldown deals with it, so they do not count as foreign spending.
        throttled = answer.http_status == 429
        self._gate.settle(ticket, None if throttled else answer.rate)
        attempts.http_status = answer.http_status
        if answer.http_status >= 500:
            self._failed(label, f"HTTP {answer.http_status}")
        elif not throttled and self._outage.answered():
            log.info("run.outage_over")
        return judge(answer)

    def _failed(self, label: int | str, reason: str) -> None:
        """A request got no answer or a 5xx: pause, or give up, on an outage."""
        outage = self._outage
        match outage.failed(self._now().timestamp(), label):
            case Pause(seconds):
                self._gate.pause(seconds)
                log.warning("run.paused", consecutive_failures=outage.streak,
                            pause_s=round(seconds, 2), last_error=reason)
            case GiveUp(failures, seconds) if not self.stopping:
                self.stop(f"the API failed {failures} requests in a row for "
                          f"{seconds:.0f} s (last: {reason}); the orders left "
                          "are not_attempted: run the same command again to "
                          "resume", by="outage")

    # -- one order ----------------------------------------------------------

    async def _settle(self, ref: OrderRef, attempts: Attempts,
                      task: asyncio.Task[None], ticket: Ticket | None,
                      planned: Planned | None = None) -> Row:
        # The order list showed it still cancellable just before the run
        # began cancelling: a "cancelled" answer is then this run's doing.
        listed_open = planned is not None and planned.listed_open
        sent_before = ref.order_id in self._sent_before
        attempts.maybe_applied |= sent_before

        def judge(answer: Answer) -> Decision:
            return classify(answer, run_started=self.job_started,
                            maybe_applied_before=attempts.maybe_applied,
                            listed_open=listed_open, sent_before=sent_before)

        decision = await self.request(
            lambda: self._client.cancel(ref.order_id), judge, attempts,
            label=ref.order_id, ticket=ticket)
        match decision:
            case None:
                return _not_attempted(ref, attempts)
            case Final() if needs_status_check(decision, attempts.maybe_applied):
                return await self._check_status(ref, decision, attempts,
                                                listed_open, sent_before)
            case Final():
                return _final_row(ref, decision, attempts)
            case StopRun():
                self.stop(decision.reason, by=decision.by)
                return _not_attempted(ref, attempts, decision.reason)
        return _gave_up(ref, attempts)

    async def _check_status(self, ref: OrderRef, refusal: Final,
                            attempts: Attempts, listed_open: bool,
                            sent_before: bool) -> Row:
        """Ask the track endpoint whether a lost attempt cancelled the order."""
        log.info("order.status_check", order_id=ref.order_id,
                 refusal=refusal.detail)

        def judge(answer: Answer) -> Decision:
            return classify_status_check(answer, run_started=self.job_started,
                                         refusal=refusal, listed_open=listed_open,
                                         sent_before=sent_before)

        decision = await self.request(
            lambda: self._client.track(ref.order_id), judge, attempts,
            label=ref.order_id, counted=False)
        match decision:
            case Final():
                return _final_row(ref, decision, attempts)
            case StopRun():
                self.stop(decision.reason, by=decision.by)
                return _not_attempted(ref, attempts, decision.reason)
        detail = f"{refusal.detail}; status check failed: {attempts.last_reason}"
        return _unsettled(ref, Outcome.ERROR, attempts, detail)

    async def _before_retry(self, label: int | str, decision: Retry,
                            attempts: Attempts, number: int) -> None:
        attempts.maybe_applied |= decision.maybe_applied
        attempts.last_reason = decision.reason
        if number > self._settings.max_retries:
            return

        self.stats.retries += 1
        if decision.throttled:
            delay = self._cooldown_for(decision.retry_after, decision.reset_in)
            self._gate.cool_down(delay)
        else:
            delay = self._settings.backoff.delay(number, self._rand)
        log.info("request.retry_scheduled", order_id=label, attempt=number,
                 reason=decision.reason, delay_s=round(delay, 2),
                 shared_cooldown=decision.throttled)
        if not decision.throttled:
            await self._sleep(delay)

    def _cooldown_for(self, retry_after: str | None,
                      reset_in: float | None = None) -> float:
        """Retry-After, else X-RateLimit-Reset, else --cooldown."""
        seconds = parse_retry_after(retry_after, now=self._now(),
                                    cap=self._settings.retry_after_cap)
        if seconds is None and reset_in is not None:
            seconds = min(reset_in, self._settings.retry_after_cap)
        return self._settings.cooldown if seconds is None else seconds


def with_plan(row: Row, planned: Planned | None) -> Row:
    """Add what the plan knew (credits at stake, deadline) to a row."""
    if planned is None or planned.deadline is None:
        return row
    return replace(row, credits_at_stake=planned.credits,
                   deadline=datetime.fromtimestamp(planned.deadline, UTC))


def _final_row(ref: OrderRef, decision: Final, attempts: Attempts) -> Row:
    return Row(
        order_id=ref.order_id,
        outcome=decision.outcome,
        source=ref.source,
        line=ref.line,
        order_status=decision.order_status,
        refunded_credits=decision.refunded_credits
        if decision.outcome is Outcome.CANCELLED
        else 0,
        http_status=attempts.http_status,
        attempts=attempts.count,
        detail=decision.detail,
        sub_account_id=decision.sub_account_id,
    )


def _gave_up(ref: OrderRef, attempts: Attempts) -> Row:
    detail = f"gave up after {attempts.count} attempts: {attempts.last_reason}"
    return _unsettled(ref, Outcome.ERROR, attempts, detail)


def _not_attempted(ref: OrderRef, attempts: Attempts,
                   detail: str = "run stopped first") -> Row:
    return _unsettled(ref, Outcome.NOT_ATTEMPTED, attempts, detail)


def _unsettled(ref: OrderRef, outcome: Outcome, attempts: Attempts,
               detail: str) -> Row:
    if attempts.maybe_applied:
        detail += "; an attempt may have been carried out"
    return Row(
        order_id=ref.order_id,
        outcome=outcome,
        source=ref.source,
        line=ref.line,
        # Unknown, not zero, when an attempt may have cancelled the order.
        refunded_credits=None if attempts.maybe_applied else 0,
        http_status=attempts.http_status,
        attempts=attempts.count,
        detail=detail,
    )


def _rejected_row(item: Rejected) -> Row:
    return Row(
        order_id=None,
        outcome=Outcome.INVALID_INPUT,
        source=item.source,
        line=item.line,
        detail=item.reason,
        input_value=item.value,
    )
