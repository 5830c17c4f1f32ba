"""The report (CSV), the summary (JSON) and their tallies.

Rows are written and flushed one by one to ``<report>.partial`` while the
run goes on, so a crash leaves every finished row on disk; the finished
report then replaces the old one in a single rename, so a reader never
sees half a report under the real name.  The summary is written the same
way.  Nothing here decides an outcome.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from batchcancel.ids import neutralise
from batchcancel.outcomes import Outcome, Row
from batchcancel.run import RunStats

COLUMNS = (
    "order_id", "outcome", "order_status", "refunded_credits", "http_status",
    "attempts", "detail", "sub_account_id", "source", "line", "input_value",
    "credits_at_stake", "deadline",
)

MAIN_ACCOUNT = "main"


class ReportWriter:
    """Streams rows to ``PATH.partial``; ``close`` puts it in place."""

    def __init__(self, path: Path, *, secrets: Sequence[str] = ()) -> None:
        self.path = path
        self._secrets = tuple(s for s in secrets if s)
        self._partial = path.with_name(path.name + ".partial")
        self._file: IO[str] = self._partial.open("w", newline="", encoding="utf-8")
        self._csv = csv.writer(self._file)
        self._csv.writerow(COLUMNS)

    def record(self, row: Row) -> None:
        cells = _cells(row)
        if self._secrets:
            cells = [_scrub(cell, self._secrets) for cell in cells]
        self._csv.writerow(cells)
        self._file.flush()

    def close(self) -> None:
        """Make the report durable and give it its real name."""
        if self._file.closed:
            return
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self._partial, self.path)


def _scrub(cell: str, secrets: tuple[str, ...]) -> str:
    # The token can only be here if an input line held it; never echo it.
    for secret in secrets:
        cell = cell.replace(secret, "[REDACTED]")
    return cell


def _printable(value: str) -> str:
    """Control characters from input or the API, shown as escapes."""
    if value.isprintable():
        return value
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in value)


def _cells(row: Row) -> list[str]:
    def text(value: object) -> str:
        return "" if value is None else str(value)

    source = "stdin" if row.source == "-" else row.source

    return [
        text(row.order_id), row.outcome.value, text(row.order_status),
        text(row.refunded_credits), text(row.http_status), str(row.attempts),
        neutralise(_printable(row.detail)), text(row.sub_account_id),
        neutralise(source), str(row.line), neutralise(_printable(row.input_value)),
        text(row.credits_at_stake),
        row.deadline.isoformat(timespec="seconds") if row.deadline else "",
    ]


@dataclass(slots=True)
class Tally:
    """Adds rows up as they arrive: counts and credits per sub-account."""

    outcomes: Counter[str] = field(default_factory=Counter)
    credits_by_account: Counter[str] = field(default_factory=Counter)
    stake_by_account: Counter[str] = field(default_factory=Counter)
    cancelled_with_unknown_credits: int = 0
    unknown_refund_rows: int = 0

    def record(self, row: Row) -> None:
        self.outcomes[row.outcome.value] += 1
        if row.refunded_credits is None:
            self.unknown_refund_rows += 1
        account = MAIN_ACCOUNT if row.sub_account_id is None else str(
            row.sub_account_id)
        if row.outcome is Outcome.WOULD_CANCEL:
            self.stake_by_account[account] += row.credits_at_stake or 0
        if row.outcome is not Outcome.CANCELLED:
            return
        if row.refunded_credits is None:
            self.cancelled_with_unknown_credits += 1
            return
        self.credits_by_account[account] += row.refunded_credits

    @property
    def refunded_credits(self) -> int:
        return sum(self.credits_by_account.values())


def _by_account(cents_by_account: Counter[str]) -> dict[str, Any]:
    total = sum(cents_by_account.values())
    return {
        "cents": total,
        "dollars": dollars(total),
        "by_sub_account": {
            account: {"cents": cents, "dollars": dollars(cents)}
            for account, cents in sorted(cents_by_account.items())
        },
    }


def dollars(cents: int) -> str:
    """``12345`` → ``"123.45"``: exact, no floating point."""
    sign = "-" if cents < 0 else ""
    whole, rest = divmod(abs(cents), 100)
    return f"{sign}{whole}.{rest:02d}"


def money(cents: int) -> str:
    """``123456`` → ``"$1,234.56"``: for people, exact, no floating point."""
    sign = "-" if cents < 0 else ""
    whole, rest = divmod(abs(cents), 100)
    return f"{sign}${whole:,}.{rest:02d}"


def build_summary(tally: Tally, stats: RunStats, exit_code: int) -> dict[str, Any]:
    """The JSON summary, as a plain dict (pure)."""
    finished = stats.finished_at or stats.started_at
    credits = tally.refunded_credits
    return {
        "outcomes": {o.value: tally.outcomes.get(o.value, 0) for o in Outcome},
        "refunded_credits": {
            "cents": credits,
            "dollars": dollars(credits),
            "by_sub_account": {
                account: {"cents": cents, "dollars": dollars(cents)}
                for account, cents in sorted(tally.credits_by_account.items())
            },
            "cancelled_with_unknown_credits": tally.cancelled_with_unknown_credits,
            # error / not_attempted rows where an attempt may have cancelled
            # the order: the refund is unknown, so not in the total above.
            "unknown_refund_rows": tally.unknown_refund_rows,
        },
        "would_cancel_credits": _by_account(tally.stake_by_account),
        "lines_read": stats.lines_read,
        "distinct_ids": stats.distinct_ids,
        "duplicates": stats.duplicates,
        "invalid_lines": stats.invalid_lines,
        "requests_sent": stats.requests_sent,
        "retries": stats.retries,
        "stop_reason": stats.stop_reason,
        "started_at": stats.started_at.isoformat(timespec="seconds"),
        "finished_at": finished.isoformat(timespec="seconds"),
        "duration_s": round((finished - stats.started_at).total_seconds(), 3),
        "exit_code": exit_code,
    }


def write_json_atomic(path: Path, document: Mapping[str, Any]) -> None:
    """Write ``document`` to ``path`` so that it is never seen half written."""
    text = json.dumps(document, indent=2, sort_keys=False) + "\n"
    write_text_atomic(path, text)


def write_text_atomic(path: Path, text: str) -> None:
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def human_summary(summary: Mapping[str, Any]) -> str:
    """A few lines for stderr, for the person who ran the job."""
    outcomes = summary["outcomes"]
    credits = summary["refunded_credits"]
    counts = ", ".join(f"{name} {count}" for name, count in outcomes.items() if count)
    lines = [
        f"batchcancel: {summary['distinct_ids']} distinct order IDs, "
        f"{summary['duplicates']} duplicates, {summary['invalid_lines']} invalid lines",
        f"  outcomes: {counts or 'none'}",
        f"  refunded: {money(credits['cents'])} ({credits['cents']} cents)",
    ]
    for account, amount in credits["by_sub_account"].items():
        lines.append(f"    {account}: {money(amount['cents'])}")
    if credits["unknown_refund_rows"]:
        lines.append(f"  refund UNKNOWN for {credits['unknown_refund_rows']} orders "
                     "(an attempt may have cancelled them; check them in the report)")
    stake = summary.get("would_cancel_credits", {})
    if summary["outcomes"].get("would_cancel"):
        lines.append(f"  dry run: {summary['outcomes']['would_cancel']} orders would "
                     f"be cancelled, {money(stake.get('cents', 0))} at stake")
    lines.append(
        f"  requests: {summary['requests_sent']} sent, {summary['retries']} retries,"
        f" {summary['duration_s']} s; exit {summary['exit_code']}"
    )
    if summary["stop_reason"]:
        lines.append(f"  stopped early: {summary['stop_reason']}")
    if summary.get("report"):
        lines.append(f"  report: {summary['report']}")
    return "\n".join(lines)
