"""The ``cancel`` command's core: wire the parts together and run one job.

The CLI hands over checked settings and the token; this module builds the
HTTP session, the rate gate and the writers, runs the pipeline, and writes
the report and the summary.  It prints nothing: people read the CLI.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

import aiohttp
import structlog
from yarl import URL

from batchcancel.api import ThanksIo
from batchcancel.config import Settings, is_loopback
from batchcancel.errors import ConfigError
from batchcancel.ids import check_readable, read_ids
from batchcancel.logs import Console
from batchcancel.outcomes import Outcome, Row
from batchcancel.progress import Progress
from batchcancel.ratelimit import ThrottleGate
from batchcancel.report import ReportWriter, Tally, build_summary, write_json_atomic
from batchcancel.retry import Backoff
from batchcancel.run import Job, RunSettings, RunStats

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
    """Hands each row to every sink, in order: the report first."""

    def __init__(self, *sinks: Any) -> None:
        self._sinks = sinks

    def record(self, row: Row) -> None:
        for sink in self._sinks:
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
) -> JobResult:
    """Cancel every order ID of ``inputs``; write the report and summary."""
    check_readable(inputs)
    items = read_ids(inputs, column=settings.column, stdin=stdin)
    report = _open_report(settings)
    tally = Tally()
    progress = Progress(console, quiet=quiet)

    async with _session(settings) as session:
        job = Job(ThanksIo(session, settings.base_url, token), _gate(settings),
                  _Fanout(report, tally, progress), _run_settings(settings))
        stats = await _run(job, items, progress, handle_signals)

    console.end_status()
    report.close()
    exit_code = exit_code_for(tally, stats)
    summary = build_summary(tally, stats, exit_code)
    write_json_atomic(settings.summary, summary)
    log.info("run.finished", exit_code=exit_code, **_counts(summary))
    return JobResult(summary, exit_code)


async def _run(job: Job, items: Any, progress: Progress,
               handle_signals: bool) -> RunStats:
    undo = job.install_signal_handlers() if handle_signals else None
    shown = asyncio.create_task(progress.show(
        lambda: job.stats.distinct_ids + job.stats.invalid_lines, interval=0.5
    ))
    try:
        return await job.run(items)
    finally:
        shown.cancel()
        if undo is not None:
            undo()


def exit_code_for(tally: Tally, stats: RunStats) -> int:
    """The exit-code rule of the README, in one place."""
    if stats.stopped_by == "credentials":
        return EXIT_CREDENTIALS
    if stats.stopped_by in EXIT_SIGNAL:
        return EXIT_SIGNAL[stats.stopped_by]
    if stats.stopped_by == "input":
        return EXIT_USAGE
    unsettled = (tally.outcomes[Outcome.ERROR.value]
                 + tally.outcomes[Outcome.NOT_ATTEMPTED.value])
    return EXIT_INCOMPLETE if unsettled else EXIT_OK


def _open_report(settings: Settings) -> ReportWriter:
    try:
        return ReportWriter(settings.report)
    except OSError as exc:
        raise ConfigError(
            f"cannot write the report {settings.report}: {exc.strerror}"
        ) from None


def _session(settings: Settings) -> aiohttp.ClientSession:
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


def _gate(settings: Settings) -> ThrottleGate:
    return ThrottleGate(settings.rate)


def _run_settings(settings: Settings) -> RunSettings:
    return RunSettings(
        concurrency=settings.concurrency,
        max_retries=settings.max_retries,
        backoff=Backoff(settings.backoff_initial, settings.backoff_max),
        retry_after_cap=settings.retry_after_cap,
        cooldown=settings.cooldown,
        grace=settings.grace,
    )


def _counts(summary: dict[str, Any]) -> dict[str, Any]:
    return {
        **{k: v for k, v in summary["outcomes"].items() if v},
        "refunded_credits": summary["refunded_credits"]["cents"],
        "requests_sent": summary["requests_sent"],
        "retries": summary["retries"],
        "duration_s": summary["duration_s"],
    }
