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
import itertools
import random
import signal
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

import structlog

from batchcancel.api import CancelClient
from batchcancel.errors import InputError, TransportError
from batchcancel.ids import Duplicate, InputItem, OrderRef, Rejected
from batchcancel.outcomes import (
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
from batchcancel.ratelimit import RateGate
from batchcancel.retry import Backoff, parse_retry_after

log = structlog.get_logger("batchcancel")

_BATCH = 256


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


@dataclass(slots=True)
class _Attempts:
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
    ) -> None:
        self._client = client
        self._gate = gate
        self._sink = sink
        self._settings = settings
        self._now = now
        self._sleep = sleep
        self._rand = rand
        self.stats = RunStats(started_at=now())
        self._stopping = asyncio.Event()
        self._workers: dict[asyncio.Task[None], bool] = {}
        self.input_error: Exception | None = None

    # -- stopping -----------------------------------------------------------

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

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

    async def run(self, items: Iterator[InputItem]) -> RunStats:
        """Send every order of ``items`` and record one row for each."""
        queue: asyncio.Queue[OrderRef | None] = asyncio.Queue(
            maxsize=self._settings.concurrency * 4
        )
        producer = asyncio.create_task(self._produce(items, queue))
        for _ in range(self._settings.concurrency):
            task = asyncio.create_task(self._work(queue))
            self._workers[task] = False

        await asyncio.gather(*self._workers, return_exceptions=True)
        await self._drain(queue, producer)

        self.stats.finished_at = self._now()
        return self.stats

    async def _produce(self, items: Iterator[InputItem],
                       queue: asyncio.Queue[OrderRef | None]) -> None:
        try:
            while batch := await asyncio.to_thread(_take, items, _BATCH):
                for item in batch:
                    await self._take_in(item, queue)
        except (InputError, OSError) as exc:
            # Orders already sent must still reach the report: stop the run
            # like a signal would, and let the CLI say what went wrong.
            self.input_error = exc
            self.stop(f"input unreadable: {exc}", by="input")

        if not self.stopping:
            for _ in range(self._settings.concurrency):
                await queue.put(None)

    async def _take_in(self, item: InputItem,
                       queue: asyncio.Queue[OrderRef | None]) -> None:
        self.stats.lines_read += 1
        match item:
            case Rejected():
                self.stats.invalid_lines += 1
                self._sink.record(_rejected_row(item))
            case Duplicate():
                self.stats.duplicates += 1
                log.debug("input.duplicate", order_id=item.order_id,
                          line=item.line, first_line=item.first_line)
            case OrderRef():
                self.stats.distinct_ids += 1
                if self.stopping:
                    self._sink.record(_not_attempted(item, _Attempts()))
                else:
                    await queue.put(item)

    async def _drain(self, queue: asyncio.Queue[OrderRef | None],
                     producer: asyncio.Task[None]) -> None:
        # Workers have ended: what is still queued, and whatever the producer
        # is still reading, becomes ``not_attempted`` here.
        while True:
            while not queue.empty():
                ref = queue.get_nowait()
                if ref is not None:
                    self._sink.record(_not_attempted(ref, _Attempts()))
            if producer.done():
                break
            await asyncio.wait({producer}, timeout=0.05)
        producer.result()  # an input error surfaces here, never silently

    async def _work(self, queue: asyncio.Queue[OrderRef | None]) -> None:
        task = asyncio.current_task()
        assert task is not None
        while (ref := await queue.get()) is not None:
            attempts = _Attempts()
            try:
                row = await self._settle(ref, attempts, task)
            except asyncio.CancelledError:
                self._sink.record(_not_attempted(ref, attempts))
                return
            self._sink.record(row)
            log.debug("order.finished", order_id=row.order_id,
                      outcome=row.outcome.value,
                      refunded_credits=row.refunded_credits,
                      attempts=row.attempts)

    # -- one order ----------------------------------------------------------

    async def _settle(self, ref: OrderRef, attempts: _Attempts,
                      task: asyncio.Task[None]) -> Row:
        for number in range(1, self._settings.max_retries + 2):
            if self.stopping:
                return _not_attempted(ref, attempts)
            await self._gate.acquire()
            if self.stopping:
                return _not_attempted(ref, attempts)

            self._workers[task] = True
            try:
                decision = await self._attempt(ref, attempts)
            finally:
                self._workers[task] = False

            match decision:
                case Final() if needs_status_check(decision,
                                                   attempts.maybe_applied):
                    return await self._check_status(ref, decision, attempts)
                case Final():
                    return _final_row(ref, decision, attempts)
                case StopRun():
                    self.stop(decision.reason, by="credentials")
                    return _not_attempted(ref, attempts, decision.reason)
                case Retry():
                    await self._before_retry(ref, decision, attempts, number)

        return _gave_up(ref, attempts)

    async def _attempt(self, ref: OrderRef, attempts: _Attempts) -> Decision:
        attempts.count += 1
        self.stats.requests_sent += 1
        try:
            answer = await self._client.cancel(ref.order_id)
        except TransportError as exc:
            attempts.http_status = None
            return Retry(exc.kind, maybe_applied=exc.sent)

        attempts.http_status = answer.http_status
        return classify(answer, run_started=self.stats.started_at,
                        maybe_applied_before=attempts.maybe_applied)

    async def _check_status(self, ref: OrderRef, refusal: Final,
                            attempts: _Attempts) -> Row:
        """Ask the track endpoint whether a lost attempt cancelled the order."""
        log.info("order.status_check", order_id=ref.order_id,
                 refusal=refusal.detail)
        for number in range(1, self._settings.max_retries + 2):
            await self._gate.acquire()
            self.stats.requests_sent += 1
            try:
                answer = await self._client.track(ref.order_id)
            except TransportError as exc:
                decision: Decision = Retry(f"status check: {exc.kind}")
            else:
                decision = classify_status_check(
                    answer, run_started=self.stats.started_at, refusal=refusal)

            match decision:
                case Final():
                    return _final_row(ref, decision, attempts)
                case StopRun():
                    self.stop(decision.reason, by="credentials")
                    return _not_attempted(ref, attempts, decision.reason)
                case Retry():
                    await self._before_retry(ref, decision, attempts, number)

        detail = f"{refusal.detail}; status check failed: {attempts.last_reason}"
        return _unsettled(ref, Outcome.ERROR, attempts, detail)

    async def _before_retry(self, ref: OrderRef, decision: Retry,
                            attempts: _Attempts, number: int) -> None:
        attempts.maybe_applied |= decision.maybe_applied
        attempts.last_reason = decision.reason
        if number > self._settings.max_retries:
            return

        self.stats.retries += 1
        if decision.throttled:
            delay = self._cooldown_for(decision.retry_after)
            self._gate.cool_down(delay)
        else:
            delay = self._settings.backoff.delay(number, self._rand)
        log.info("request.retry_scheduled", order_id=ref.order_id,
                 attempt=number, reason=decision.reason,
                 delay_s=round(delay, 2), shared_cooldown=decision.throttled)
        if not decision.throttled:
            await self._sleep(delay)

    def _cooldown_for(self, retry_after: str | None) -> float:
        seconds = parse_retry_after(retry_after, now=self._now(),
                                    cap=self._settings.retry_after_cap)
        return self._settings.cooldown if seconds is None else seconds


def _take(items: Iterator[InputItem], count: int) -> list[InputItem]:
    return list(itertools.islice(items, count))


def _final_row(ref: OrderRef, decision: Final, attempts: _Attempts) -> Row:
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


def _gave_up(ref: OrderRef, attempts: _Attempts) -> Row:
    detail = f"gave up after {attempts.count} attempts: {attempts.last_reason}"
    return _unsettled(ref, Outcome.ERROR, attempts, detail)


def _not_attempted(ref: OrderRef, attempts: _Attempts,
                   detail: str = "run stopped first") -> Row:
    return _unsettled(ref, Outcome.NOT_ATTEMPTED, attempts, detail)


def _unsettled(ref: OrderRef, outcome: Outcome, attempts: _Attempts,
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
