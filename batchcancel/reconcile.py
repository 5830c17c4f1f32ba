"""The ``reconcile`` command's core: does a report still match the API?

Each order whose outcome claims something about its status is read again
with ``GET /orders/{id}/track``, through the same rate gate, retries and
429 handling as a cancel, and every disagreement becomes one row.

Track, not the order list: the list is newest first with no way to jump to
an order, so reaching an order placed a day ago costs a page per
``page_size`` orders placed since, on the whole account; a report names no
creation time to stop at; and an order missing from the list could be
deleted or merely beyond the pages read.  Track costs exactly one request
per order and its 404 is a clear "no such order".

What each outcome claims, and what breaks the claim (pure, in ``compare``):

============================  =============================================
outcome in the report         a disagreement when the order now is
============================  =============================================
cancelled, already_cancelled  not cancelled, or gone (404); for cancelled,
                              also an ``authorization_total`` other than
                              the refund reported
not_cancellable               cancelled, or reviewing (cancellable again),
                              or gone (404)
not_found                     found
============================  =============================================

``error``, ``not_attempted``, ``invalid_input`` and ``would_cancel`` claim
nothing about the order's status now, so they are skipped (counted, not
requested).  An order whose status could not be read is an ``unchecked``
row: not a disagreement, but not a confirmation either.
"""

from __future__ import annotations

import asyncio
import csv
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TextIO

import structlog

from batchcancel.api import ThanksIo
from batchcancel.cancel import (
    EXIT_CREDENTIALS,
    EXIT_INCOMPLETE,
    EXIT_OK,
    EXIT_SIGNAL,
    request_job,
)
from batchcancel.config import Settings
from batchcancel.errors import InputError
from batchcancel.ids import neutralise
from batchcancel.outcomes import Answer, Outcome, Retry, StopRun
from batchcancel.run import Attempts, Job

log = structlog.get_logger("batchcancel")

CLAIMS = frozenset({Outcome.CANCELLED, Outcome.ALREADY_CANCELLED,
                    Outcome.NOT_CANCELLABLE, Outcome.NOT_FOUND})

COLUMNS = (
    "order_id", "kind", "reported_outcome", "reported_status",
    "reported_refunded_credits", "current_status", "current_credits",
    "detail", "report_line",
)


class Kind(StrEnum):
    """How a report and the API disagree."""

    NOT_CANCELLED = "not_cancelled"          # reported cancelled, now is not
    CANCELLED_SINCE = "cancelled_since"      # reported not cancellable
    CANCELLABLE_AGAIN = "cancellable_again"  # reported not cancellable
    GONE = "gone"                            # reported a status, now 404
    FOUND = "found"                          # reported not_found, now exists
    CREDITS_DIFFER = "credits_differ"        # refund != authorization_total
    UNCHECKED = "unchecked"                  # no status could be read


@dataclass(frozen=True, slots=True)
class Entry:
    """One row of a report, as far as reconciling needs it."""

    order_id: int
    outcome: Outcome
    order_status: str
    refunded_credits: int | None
    report_line: int  # the row's line in the report file (header is 1)


@dataclass(frozen=True, slots=True)
class Current:
    """What the track endpoint says now; ``exists`` False on a 404."""

    exists: bool
    status: str | None = None
    credits: int | None = None


@dataclass(frozen=True, slots=True)
class Disagreement:
    entry: Entry
    kind: Kind
    current: Current | None
    detail: str


def read_entries(path: Path) -> tuple[list[Entry], int]:
    """The report's rows that name an order, and how many rows there were."""
    try:
        with path.open(newline="", encoding="utf-8") as file:
            rows = list(csv.DictReader(file))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"cannot read the report {path}: {exc}") from None
    if rows and not {"order_id", "outcome"} <= set(rows[0]):
        raise InputError(f"{path} is not a batchcancel report: it has no "
                         "order_id and outcome columns")
    return [e for n, row in enumerate(rows, 2)
            if (e := _entry(path, n, row)) is not None], len(rows)


def _entry(path: Path, line: int, row: dict[str, str]) -> Entry | None:
    try:
        outcome = Outcome(row["outcome"])
    except ValueError:
        raise InputError(f"{path} line {line}: unknown outcome "
                         f"{row['outcome']!r}") from None
    text = (row.get("order_id") or "").strip()
    if not text:
        return None
    if not (text.isascii() and text.isdigit()) or int(text) <= 0:
        raise InputError(f"{path} line {line}: order_id {text!r} is not an order ID")
    credits = (row.get("refunded_credits") or "").strip()
    return Entry(int(text), outcome, (row.get("order_status") or "").strip(),
                 int(credits) if credits.isdigit() else None, line)


def judge_track(answer: Answer) -> Current | Retry | StopRun:
    """Decide one answer of the track endpoint (pure)."""
    status = answer.http_status
    if status in {401, 402, 403}:
        return StopRun(f"credentials refused (HTTP {status})")
    if status in {408, 425, 429} or status >= 500 or not answer.readable:
        return Retry(f"HTTP {status}" if answer.readable else "unreadable body",
                     throttled=status == 429, retry_after=answer.retry_after,
                     reset_in=answer.rate.reset_in if answer.rate else None)
    if status == 404:
        return Current(exists=False)
    if status == 200 and answer.order is not None and answer.order.status:
        return Current(True, answer.order.status, answer.order.authorization_total)
    return Retry(f"HTTP {status} without an order status")


def compare(entry: Entry, current: Current) -> Disagreement | None:
    """The disagreement between a report row and the order now, if any."""
    outcome, status = entry.outcome, current.status
    if outcome is Outcome.NOT_FOUND:
        return (_differ(entry, Kind.FOUND, current, f"the order exists, {status}")
                if current.exists else None)
    if not current.exists:
        return _differ(entry, Kind.GONE, current, "track answers 404")
    if outcome in {Outcome.CANCELLED, Outcome.ALREADY_CANCELLED}:
        if status != "cancelled":
            return _differ(entry, Kind.NOT_CANCELLED, current, f"the order is {status}")
        reported = entry.refunded_credits
        if (outcome is Outcome.CANCELLED and reported is not None
                and current.credits is not None and current.credits != reported):
            return _differ(entry, Kind.CREDITS_DIFFER, current,
                           f"refund reported {reported}, authorization_total "
                           f"now {current.credits}")
        return None
    if status == "cancelled":
        return _differ(entry, Kind.CANCELLED_SINCE, current, "the order is cancelled")
    if status == "reviewing":
        return _differ(entry, Kind.CANCELLABLE_AGAIN, current,
                       "the order is reviewing")
    return None


def _differ(entry: Entry, kind: Kind, current: Current | None,
            detail: str) -> Disagreement:
    return Disagreement(entry, kind, current, detail)


@dataclass(slots=True)
class ReconcileStats:
    rows: int = 0
    checked: int = 0
    agreed: int = 0
    skipped: int = 0
    requests_sent: int = 0
    kinds: Counter[str] | None = None


async def reconcile(settings: Settings, token: str, report: Path, out: TextIO,
                    *, handle_signals: bool = True) -> tuple[ReconcileStats, int]:
    """Check every claim of ``report``; write disagreements to ``out``."""
    entries, rows = read_entries(report)
    claimed = [e for e in entries if e.outcome in CLAIMS]
    stats = ReconcileStats(rows=rows, skipped=rows - len(claimed))
    found: dict[int, Disagreement] = {}
    async with request_job(settings, token,
                           handle_signals=handle_signals) as (client, job):
        await _check_all(job, client, claimed, settings.concurrency, found, stats)
    ordered = [found[e.report_line] for e in claimed if e.report_line in found]
    write_disagreements(out, ordered)
    stats.kinds = Counter(d.kind.value for d in ordered)
    stats.requests_sent = job.stats.requests_sent
    code = _exit_code(job, ordered)
    log.info("reconcile.finished", exit_code=code, rows=rows, checked=stats.checked,
             agreed=stats.agreed, skipped=stats.skipped,
             requests_sent=stats.requests_sent, **stats.kinds)
    return stats, code


async def _check_all(job: Job, client: ThanksIo, claimed: Sequence[Entry],
                     concurrency: int, found: dict[int, Disagreement],
                     stats: ReconcileStats) -> None:
    pending: Iterator[Entry] = iter(claimed)

    async def work() -> None:
        for entry in pending:  # shared: each entry is taken by one worker
            if job.stopping:
                found[entry.report_line] = _differ(
                    entry, Kind.UNCHECKED, None, "run stopped first")
                continue
            result = await _check(job, client, entry)
            stats.checked += 1
            if result is None:
                stats.agreed += 1
                continue
            found[entry.report_line] = result
            log.warning("reconcile.disagreement", order_id=entry.order_id,
                        kind=result.kind.value, reported=entry.outcome.value,
                        now=result.current.status if result.current else None)

    await asyncio.gather(*(work() for _ in range(concurrency)))


async def _check(job: Job, client: ThanksIo, entry: Entry) -> Disagreement | None:
    attempts = Attempts()
    decision = await job.request(lambda: client.track(entry.order_id),
                                 judge_track, attempts, label=entry.order_id,
                                 counted=False)
    if isinstance(decision, StopRun):
        job.stop(decision.reason, by="credentials")
    if isinstance(decision, Current):
        return compare(entry, decision)
    reason = (decision.reason if isinstance(decision, Retry | StopRun)
              else "run stopped first")
    return _differ(entry, Kind.UNCHECKED, None, f"status not read: {reason}")


def write_disagreements(out: TextIO, found: Sequence[Disagreement]) -> None:
    writer = csv.writer(out)
    writer.writerow(COLUMNS)
    for d in found:
        current = d.current
        writer.writerow([
            d.entry.order_id, d.kind.value, d.entry.outcome.value,
            neutralise(d.entry.order_status),
            "" if d.entry.refunded_credits is None else d.entry.refunded_credits,
            _shown(current),
            "" if current is None or current.credits is None else current.credits,
            neutralise(d.detail), d.entry.report_line,
        ])
    out.flush()


def _shown(current: Current | None) -> str:
    if current is None:
        return ""
    return neutralise(current.status or "") if current.exists else "not_found"


def _exit_code(job: Job, found: Sequence[Disagreement]) -> int:
    if job.stats.stopped_by == "credentials":
        return EXIT_CREDENTIALS
    if job.stats.stopped_by in EXIT_SIGNAL:
        return EXIT_SIGNAL[job.stats.stopped_by]
    return EXIT_INCOMPLETE if found else EXIT_OK
