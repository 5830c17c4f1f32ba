"""The ``cancel`` command's core: wire the parts together and run one job.

The CLI hands over checked settings and the token; this module builds the
HTTP session, the rate gate and the writers, runs the pipeline, and writes
the report and the summary.  It prints nothing: people read the CLI.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

import aiohttp
import structlog
from yarl import URL

from batchcancel.api import ThanksIo
from batchcancel.config import Settings, is_loopback
from batchcancel.errors import ConfigError
from batchcancel.ids import OrderRef, check_readable, read_ids
from batchcancel.journal import Journal, identity
from batchcancel.logs import Console
from batchcancel.markdown import append_step_summary, render_markdown, write_markdown
from batchcancel.outcomes import Outcome, Row, StopRun
from batchcancel.plan import (
    Fetch,
    Listed,
    PageFinal,
    PageView,
    Planned,
    Schedule,
    judge_list_page,
    preflight,
    settle_from_list,
    to_planned,
)
from batchcancel.progress import Position, Progress
from batchcancel.ratelimit import Rate, ThrottleGate
from batchcancel.report import (
    ReportWriter,
    Tally,
    build_summary,
    money,
    write_json_atomic,
)
from batchcancel.retry import Backoff
from batchcancel.run import (
    Attempts,
    Job,
    Plan,
    Planner,
    RunSettings,
    RunStats,
    with_plan,
)

log = structlog.get_logger("batchcancel")

EXIT_OK = 0
EXIT_INCOMPLETE = 1
EXIT_USAGE = 2
EXIT_CREDENTIALS = 3
EXIT_SIGNAL = {"SIGINT": 130, "SIGTERM": 143}


@dataclass(frozen=True, slots=True)
class JobResult:
    summary: dict[str, Any]
    exit_code: int


class _Fanout:
    """Hands each row to the report, the tally and the progress line.

    If the report cannot be written (a full disk), the tally and progress
    still count the row, and the run is stopped: no further cancel should be
    sent that the report could not record.
    """

    def __init__(self, report: ReportWriter, *others: Any) -> None:
        self._report = report
        self._others = others
        self.failed: OSError | None = None
        self.on_failure: Callable[[OSError], None] = lambda exc: None

    def record(self, row: Row) -> None:
        if self.failed is None:
            try:
                self._report.record(row)
            except OSError as exc:
                self.failed = exc
                self.on_failure(exc)
        for sink in self._others:
            sink.record(row)


async def cancel_orders(
    settings: Settings,
    token: str,
    inputs: Sequence[str],
    *,
    console: Console,
    stdin: BinaryIO | None = None,
    quiet: bool = False,
    handle_signals: bool = True,
    confirm: Confirm | None = None,
    step_summary: str | None = None,
) -> JobResult:
    """Cancel every order ID of ``inputs``; write the report and summary.

    ``confirm``, when given, is asked after the preflight and before the
    first cancel; answering False sends nothing.  ``step_summary``: a CI
    job summary file the Markdown summary is appended to.
    """
    check_readable(inputs)
    check_outputs(settings, inputs)
    if stdin is None and "-" in inputs:
        # A private, unbuffered copy of stdin: the reading thread may still
        # wait on it when the run ends, and the interpreter must not wait
        # for (or trip over) sys.stdin's buffer lock at exit.
        stdin = os.fdopen(os.dup(0), "rb", buffering=0)
    items = read_ids(inputs, column=settings.column, stdin=stdin)
    if settings.shard is not None:
        items = settings.shard.filter(items)
    journal = None if settings.dry_run else Journal(
        settings.journal, identity(_job_inputs(settings, inputs), token,
                                   settings.base_url),
        started_at=datetime.now(UTC))
    if journal is not None and journal.resumed:
        log.info("journal.resumed", finished=len(journal.finished),
                 job_started=journal.started_at.isoformat(timespec="seconds"))
    report = _open_report(settings, secrets=(token,))
    tally = Tally()
    progress = Progress(console, quiet=quiet)
    sink = _Fanout(report, *([journal] if journal else []), tally, progress)

    try:
        async with api_session(settings) as session:
            client = ThanksIo(session, settings.base_url, token)
            job = Job(client, rate_gate(settings), sink, run_settings(settings, inputs),
                      job_started=journal.started_at if journal else None,
                      finished=journal.finished if journal else None,
                      sent_before=set(journal.sent_before) if journal else None,
                      on_send=journal.sending if journal else (lambda _: None))
            sink.on_failure = lambda exc: job.stop(
                f"the report cannot be written: {exc}", by="output")
            resumed_from = (journal.started_at if journal and journal.resumed
                            else None)
            planner = (_planner(client, settings,
                                None if settings.yes else confirm, resumed_from,
                                journal.sent_before if journal else set())
                       if settings.preflight or settings.dry_run else None)
            stats = await _run(job, items, planner, progress, handle_signals)
    finally:
        if journal is not None:
            journal.close()

    console.detach()
    _finish_report(report, sink, stats)
    if stats.input_unread:
        stats.stop_reason = (f"{stats.stop_reason}; the input was not read past "
                             f"line {stats.lines_read} (it was still open)")
    missing = stats.distinct_ids + stats.invalid_lines - sum(tally.outcomes.values())
    if missing:
        # Never a silent loss: a row short of the input is an error, loudly.
        log.error("run.rows_missing", missing=missing)
        stats.stop_reason = f"internal error: {missing} input rows have no report row"
        stats.stopped_by = "internal"
    exit_code = exit_code_for(tally, stats, dry_run=settings.dry_run)
    summary = build_summary(tally, stats, exit_code)
    summary["report"] = str(settings.report)
    if settings.shard is not None:
        summary["shard"] = {"index": settings.shard.index,
                            "count": settings.shard.count,
                            "inputs": list(inputs)}
    write_json_atomic(settings.summary, summary)
    _publish_markdown(summary, settings, step_summary, secrets=(token,))
    log.info("run.finished", exit_code=exit_code, **_counts(summary))
    return JobResult(summary, exit_code)


def _publish_markdown(summary: dict[str, Any], settings: Settings,
                      step_summary: str | None, secrets: Sequence[str]) -> None:
    """Write ``--summary-md`` and append to the CI summary, if asked.

    A failure here is logged, not raised: the report and the JSON summary,
    the run's record, are already in place.
    """
    targets = [(settings.summary_md, write_markdown),
               (Path(step_summary) if step_summary else None, append_step_summary)]
    if not any(path for path, _ in targets):
        return
    text = render_markdown(summary, journal=None if settings.dry_run
                           else str(settings.journal))
    for secret in secrets:
        text = text.replace(secret, "[REDACTED]")
    for path, write in targets:
        if path is not None:
            try:
                write(path, text)
            except OSError as exc:
                log.error("summary_md.unwritable", path=str(path),
                          error=exc.strerror or type(exc).__name__)


def check_outputs(settings: Settings, inputs: Sequence[str]) -> None:
    """Refuse, before any request, outputs that cannot be written or that
    would overwrite an input or each other."""
    report, summary, journal = settings.report, settings.summary, settings.journal
    if _same(report, summary):
        raise ConfigError(f"--report and --summary are the same file: {report}")
    if _same(journal, report) or _same(journal, summary):
        raise ConfigError(f"the journal {journal} would overwrite an output")
    markdown = [settings.summary_md] if settings.summary_md else []
    for md in markdown:
        if any(_same(md, other) for other in (report, summary, journal)):
            raise ConfigError(f"--summary-md {md} would overwrite another output")
    for name in inputs:
        for output in (report, summary, journal, *markdown):
            if name != "-" and _same(Path(name), output):
                raise ConfigError(f"{output} is an input; writing it would destroy it")
    for output in (report, summary, *markdown):
        folder = output.parent if str(output.parent) else Path(".")
        if output.is_dir() or not folder.is_dir() or not os.access(folder, os.W_OK):
            raise ConfigError(f"cannot write {output}: its folder is missing or "
                              "not writable, or it is a folder")


def _regular(name: str) -> bool:
    try:
        return name != "-" and Path(name).is_file()
    except OSError:
        return False


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists()
                                              and os.path.samefile(a, b))
    except OSError:
        return False


def _finish_report(report: ReportWriter, sink: _Fanout, stats: RunStats) -> None:
    try:
        report.close()
    except OSError as exc:
        sink.failed = exc
    if sink.failed is not None:
        stats.stopped_by = "output"
        stats.stop_reason = (f"the report could not be written ({sink.failed}); "
                             f"rows so far are in {report.path}.partial")


async def _run(job: Job, items: Any, planner: Planner | None,
               progress: Progress, handle_signals: bool) -> RunStats:
    undo = job.install_signal_handlers() if handle_signals else None
    # A live bar redraws twice a second; a log event every 5 s is plenty.
    interval = 0.5 if progress.on_terminal else 5.0

    def position() -> Position:
        stats = job.stats
        read = stats.distinct_ids + stats.invalid_lines
        return Position(read, read if stats.input_complete else None,
                        job.nearest_deadline(time.time()))

    shown = asyncio.create_task(progress.show(position, interval=interval))
    try:
        stats = await job.run(items, planner)
        shown.cancel()
        progress.finish(position())
        return stats
    finally:
        shown.cancel()
        progress.stop()
        if undo is not None:
            undo()


def exit_code_for(tally: Tally, stats: RunStats, *, dry_run: bool = False) -> int:
    """The exit-code rule of the README, in one place."""
    if stats.stopped_by == "credentials":
        return EXIT_CREDENTIALS
    if stats.stopped_by in EXIT_SIGNAL:
        return EXIT_SIGNAL[stats.stopped_by]
    if stats.stopped_by in {"input", "tls"}:
        return EXIT_USAGE
    if stats.stopped_by in {"output", "internal", "preflight", "outage",
                            "max-errors"}:
        return EXIT_INCOMPLETE
    if dry_run:
        return EXIT_INCOMPLETE if tally.outcomes[Outcome.ERROR.value] else EXIT_OK
    unsettled = (tally.outcomes[Outcome.ERROR.value]
                 + tally.outcomes[Outcome.NOT_ATTEMPTED.value])
    return EXIT_INCOMPLETE if unsettled else EXIT_OK


def _open_report(settings: Settings, secrets: Sequence[str]) -> ReportWriter:
    try:
        return ReportWriter(settings.report, secrets=secrets)
    except OSError as exc:
        raise ConfigError(
            f"cannot write the report {settings.report}: {exc.strerror}"
        ) from None


class _NoRows:
    """A sink for commands that settle no order (select, reconcile)."""

    def record(self, row: Row) -> None:  # pragma: no cover - never called
        raise AssertionError(f"a row was recorded for {row.order_id}")


@contextlib.asynccontextmanager
async def request_job(settings: Settings, token: str, *,
                      handle_signals: bool = True
                      ) -> AsyncIterator[tuple[ThanksIo, Job]]:
    """The client and a Job for a command that only asks the API (select,
    reconcile): the same session, rate gate, retries and signal handling
    as ``cancel``, and no rows."""
    async with api_session(settings) as session:
        client = ThanksIo(session, settings.base_url, token)
        job = Job(client, rate_gate(settings), _NoRows(), run_settings(settings, []))
        undo = job.install_signal_handlers() if handle_signals else None
        try:
            yield client, job
        finally:
            if undo is not None:
                undo()


def api_session(settings: Settings) -> aiohttp.ClientSession:
    timeout = aiohttp.ClientTimeout(
        total=None,
        connect=settings.connect_timeout,
        sock_connect=settings.connect_timeout,
        sock_read=settings.read_timeout,
    )
    host = URL(settings.base_url).host or ""
    session = aiohttp.ClientSession(
        timeout=timeout,
        connector=aiohttp.TCPConnector(limit=settings.concurrency),
        # Proxies from the environment are for reaching the real API; a
        # loopback sandbox is reached directly whatever HTTP_PROXY says.
        trust_env=not is_loopback(host),
        raise_for_status=False,
    )
    # aiohttp silently re-sends an idempotent request (PUT included) once
    # when the connection drops (aio-libs/aiohttp#10790).  That second PUT
    # would skip the rate gate and hide an attempt that may have cancelled
    # the order, so it is switched off; every attempt is ours to count.
    # A test checks that attempts in the report equal requests received.
    if hasattr(session, "_retry_connection"):
        session._retry_connection = False
    return session


def rate_gate(settings: Settings) -> ThrottleGate:
    # N shards share one account: each gets 1/N of the ceiling, of the
    # starting pace and, once the headers show it, of the account's limit.
    count = settings.shard.count if settings.shard else 1
    return ThrottleGate(_divided(settings.rate_ceiling, count),
                        start=_divided(settings.rate_start, count),
                        window=settings.rate_window, portion=count)


def _divided(rate: Rate | None, count: int) -> Rate | None:
    return None if rate is None else Rate(rate.per_second / count)


def _job_inputs(settings: Settings, inputs: Sequence[str]) -> list[str]:
    """What identifies the job's input for the journal: the shard too."""
    shard = [f"shard:{settings.shard}"] if settings.shard else []
    return [*inputs, *shard]


def run_settings(settings: Settings, inputs: Sequence[str]) -> RunSettings:
    return RunSettings(
        read_batch=256 if all(_regular(name) for name in inputs) else 1,
        concurrency=settings.concurrency,
        max_retries=settings.max_retries,
        backoff=Backoff(settings.backoff_initial, settings.backoff_max),
        retry_after_cap=settings.retry_after_cap,
        cooldown=settings.cooldown,
        grace=settings.grace,
        outage_limit=settings.outage_limit,
        max_errors=settings.max_errors,
    )


def _counts(summary: dict[str, Any]) -> dict[str, Any]:
    return {
        **{k: v for k, v in summary["outcomes"].items() if v},
        "refunded_credits": summary["refunded_credits"]["cents"],
        "requests_sent": summary["requests_sent"],
        "retries": summary["retries"],
        "duration_s": summary["duration_s"],
    }


# -- preflight, plan, dry run and the question before cancelling -------------

Confirm = Callable[[str], bool]


def _planner(client: ThanksIo, settings: Settings, confirm: Confirm | None,
             resumed_from: datetime | None = None,
             sent_before: set[int] | None = None) -> Planner:
    sent_earlier = frozenset(sent_before or ())

    async def plan(job: Job, refs: list[OrderRef]) -> Plan | None:
        listed, complete = await _list_orders(job, client, settings, refs)
        if job.stopping:
            return None
        settled, planned = _split(refs, listed, settings.review_window,
                                  resumed_from, sent_earlier)
        log.info("preflight.finished", listed=len(listed), complete=complete,
                 settled_by_list=len(settled), to_send=len(planned))
        if settings.dry_run:
            if not complete:
                # A dry run is only as good as the list: say it was not read.
                job.stats.stopped_by = "preflight"
                job.stats.stop_reason = "the order list could not be read completely"
            return Plan(settled + [_dry_row(p, listed, complete) for p in planned],
                        None)
        if confirm is not None and planned:
            agreed = await _ask(job, confirm, confirmation_text(planned, listed))
            if agreed is None:  # a signal came while the question waited
                return None
            if not agreed:
                job.stop("not confirmed at the prompt", by="user", immediately=True)
                return Plan(settled + [_declined(p) for p in planned], None)
        now = datetime.now(UTC).timestamp()
        return Plan(settled, Schedule(planned, now=now, rate=job.gate_rate,
                                      slots=job.slot_times, lead=job.lead()))

    return plan


def list_fetcher(job: Job, client: ThanksIo, event: str = "preflight") -> Fetch:
    """Pages of the order list through the job's rate gate and retries."""
    async def fetch(page: int, size: int, sub: int | None) -> PageView | None:
        decision = await job.request(
            lambda: client.list_orders(page, size, sub), judge_list_page,
            Attempts(), label=f"list page {page}", counted=False)
        if isinstance(decision, StopRun):
            job.stop(decision.reason, by=decision.by)
        if isinstance(decision, PageFinal) and decision.page is not None:
            return decision.page
        log.warning(f"{event}.page_failed", page=page, sub_account_id=sub)
        return None

    return fetch


async def _list_orders(job: Job, client: ThanksIo, settings: Settings,
                       refs: list[OrderRef]) -> tuple[dict[int, Listed], bool]:
    fetch = list_fetcher(job, client)
    window = settings.review_window
    cutoff = datetime.now(UTC) - window - min(window / 4, timedelta(minutes=15))
    return await preflight(fetch, {r.order_id for r in refs},
                           sub_accounts=settings.sub_accounts or (None,),
                           per_page=settings.page_size, cutoff=cutoff)


def _split(refs: list[OrderRef], listed: dict[int, Listed], window: timedelta,
           resumed_from: datetime | None,
           sent_before: frozenset[int]) -> tuple[list[Row], list[Planned]]:
    settled: list[Row] = []
    planned: list[Planned] = []
    for ref in refs:
        row = settle_from_list(ref, listed.get(ref.order_id), resumed_from,
                               sent_before)
        if row is not None:
            settled.append(row)
        else:
            planned.append(to_planned(ref, listed.get(ref.order_id), window))
    return settled, planned


async def _ask(job: Job, confirm: Confirm, text: str) -> bool | None:
    """Ask in a daemon thread; None if the run is stopped meanwhile.

    The terminal read cannot be interrupted, so a SIGINT or SIGTERM (say,
    from ``docker stop``) abandons the question instead of waiting for it.
    """
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[bool] = loop.create_future()

    def settle(agreed: bool) -> None:
        if not answer.done():
            answer.set_result(agreed)

    def ask() -> None:
        agreed = False
        try:
            agreed = confirm(text)
        finally:
            with contextlib.suppress(RuntimeError):  # the loop may be gone
                loop.call_soon_threadsafe(settle, agreed)

    threading.Thread(target=ask, name="batchcancel-confirm", daemon=True).start()
    stopped = asyncio.ensure_future(job.wait_stopping())
    waiting: set[asyncio.Future[Any]] = {answer, stopped}
    try:
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
    return answer.result() if answer.done() and not job.stopping else None


def _dry_row(planned: Planned, listed: dict[int, Listed], complete: bool) -> Row:
    ref = planned.ref
    if ref.order_id not in listed:
        detail = ("dry run: not in the order list; a real run sends it a cancel"
                  if complete else
                  "dry run: the order list could not be read; status unknown")
        return with_plan(Row(order_id=ref.order_id, outcome=Outcome.NOT_ATTEMPTED,
                             source=ref.source, line=ref.line, detail=detail),
                         planned)
    return with_plan(Row(order_id=ref.order_id, outcome=Outcome.WOULD_CANCEL,
                         source=ref.source, line=ref.line,
                         order_status=listed[ref.order_id].status,
                         sub_account_id=planned.sub_account_id,
                         credits_at_stake=planned.credits,
                         detail="dry run: the order list shows it cancellable"),
                     planned)


def _declined(planned: Planned) -> Row:
    ref = planned.ref
    return with_plan(Row(order_id=ref.order_id, outcome=Outcome.NOT_ATTEMPTED,
                         source=ref.source, line=ref.line,
                         detail="not confirmed at the prompt"), planned)


def confirmation_text(planned: list[Planned], listed: dict[int, Listed]) -> str:
    """What the operator is asked before an irreversible bulk cancel."""
    known = [p for p in planned if p.ref.order_id in listed]
    stake: dict[str, int] = {}
    for p in known:
        account = "main" if p.sub_account_id is None else str(p.sub_account_id)
        stake[account] = stake.get(account, 0) + p.credits
    total = sum(stake.values())
    lines = [f"About to cancel {len(planned)} orders: {len(known)} listed as "
             f"cancellable with {money(total)} in credits at stake"]
    if len(stake) > 1:
        lines += [f"  {name}: {money(cents)}"
                  for name, cents in sorted(stake.items())]
    unknown = len(planned) - len(known)
    if unknown:
        lines.append(f"  and {unknown} not in the order list (sent a cancel anyway)")
    return "\n".join(lines)
