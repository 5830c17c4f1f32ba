"""The report and the summary: exact figures, atomic files."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from batchcancel.outcomes import Outcome, Row
from batchcancel.report import (
    COLUMNS,
    ReportWriter,
    Tally,
    build_summary,
    dollars,
    write_json_atomic,
)
from batchcancel.run import RunStats


def row(order_id: int | None, outcome: Outcome, credits: int | None = 0,
        sub: int | None = None, **extra: object) -> Row:
    return Row(order_id=order_id, outcome=outcome, source="ids.csv", line=2,
               refunded_credits=credits, sub_account_id=sub, **extra)  # type: ignore[arg-type]


def test_rows_are_readable_while_the_run_goes_on(tmp_path: Path) -> None:
    """Each row is flushed to REPORT.partial at once; REPORT appears at close."""
    path = tmp_path / "report.csv"
    writer = ReportWriter(path)

    writer.record(row(101, Outcome.CANCELLED, 267))
    partial = (tmp_path / "report.csv.partial").read_text()

    assert not path.exists()
    assert "101,cancelled,,267" in partial

    writer.close()
    assert path.exists()
    assert not (tmp_path / "report.csv.partial").exists()


def test_report_columns_and_values(tmp_path: Path) -> None:
    """The CSV has the documented columns; unknown credits are left empty."""
    path = tmp_path / "report.csv"
    writer = ReportWriter(path)
    writer.record(row(101, Outcome.CANCELLED, 267, sub=66, order_status="cancelled",
                      http_status=200, attempts=2))
    writer.record(row(102, Outcome.ERROR, None, detail="gave up"))
    writer.close()

    with path.open(newline="") as file:
        rows = list(csv.DictReader(file))

    assert list(COLUMNS) == list(rows[0])
    assert {"order_id": "101", "outcome": "cancelled", "refunded_credits": "267",
            "sub_account_id": "66", "attempts": "2", "http_status": "200"
            }.items() <= rows[0].items()
    assert "" == rows[1]["refunded_credits"]


def test_formulas_echoed_from_input_are_neutralised(tmp_path: Path) -> None:
    """A rejected value like =HYPERLINK(...) cannot run in a spreadsheet."""
    path = tmp_path / "report.csv"
    writer = ReportWriter(path)
    writer.record(row(None, Outcome.INVALID_INPUT, input_value='=HYPERLINK("x")',
                      detail="not a positive integer"))
    writer.close()

    with path.open(newline="") as file:
        (only,) = list(csv.DictReader(file))

    assert only["input_value"].startswith("'=")


def test_dollars_are_exact() -> None:
    """Cents become dollars without floating point."""
    assert ["0.00", "0.07", "2.67", "1234567.89", "-1.05"] == [
        dollars(c) for c in (0, 7, 267, 123456789, -105)]


def test_tally_counts_credits_only_for_cancelled_orders() -> None:
    """Only this run's cancels add credits, per sub-account."""
    tally = Tally()
    for r in [row(1, Outcome.CANCELLED, 267, sub=66), row(2, Outcome.CANCELLED, 73),
              row(3, Outcome.ALREADY_CANCELLED, 0, sub=66),
              row(4, Outcome.NOT_CANCELLABLE, 0), row(5, Outcome.CANCELLED, None)]:
        tally.record(r)

    assert 340 == tally.refunded_credits
    assert {"66": 267, "main": 73} == dict(tally.credits_by_account)
    assert 1 == tally.cancelled_with_unknown_credits


def test_summary_holds_the_documented_fields() -> None:
    """The JSON summary gives counts, cents and dollars, and the run's figures."""
    started = datetime(2026, 12, 4, 10, 0, tzinfo=UTC)
    stats = RunStats(started_at=started, finished_at=started + timedelta(seconds=9.5),
                     lines_read=12, distinct_ids=9, duplicates=2, invalid_lines=1,
                     requests_sent=11, retries=2)
    tally = Tally()
    tally.record(row(1, Outcome.CANCELLED, 26700, sub=66))

    summary = build_summary(tally, stats, exit_code=0)

    assert 1 == summary["outcomes"]["cancelled"]
    assert 0 == summary["outcomes"]["not_attempted"]
    assert {"cents": 26700, "dollars": "267.00"} == {
        k: summary["refunded_credits"][k] for k in ("cents", "dollars")}
    assert {"66": {"cents": 26700, "dollars": "267.00"}} == summary[
        "refunded_credits"]["by_sub_account"]
    assert (12, 2, 1, 11, 2, 9.5, 0) == (
        summary["lines_read"], summary["duplicates"], summary["invalid_lines"],
        summary["requests_sent"], summary["retries"], summary["duration_s"],
        summary["exit_code"])


def test_json_is_replaced_atomically(tmp_path: Path) -> None:
    """The summary is written whole and leaves no temporary file behind."""
    path = tmp_path / "s.json"
    path.write_text("old")

    write_json_atomic(path, {"a": 1})

    assert {"a": 1} == json.loads(path.read_text())
    assert [path] == list(tmp_path.iterdir())


def test_control_characters_and_the_token_are_never_echoed(tmp_path: Path) -> None:
    """NUL and escape bytes are shown escaped; a token in the input is redacted."""
    path = tmp_path / "report.csv"
    writer = ReportWriter(path, secrets=("s3cr3t-token",))
    writer.record(row(None, Outcome.INVALID_INPUT,
                      input_value="\x00\x1b[31mx s3cr3t-token"))
    writer.close()

    text = path.read_text()

    assert "\x00" not in text
    assert "\x1b" not in text
    assert "s3cr3t-token" not in text
    assert "[REDACTED]" in text


def test_stdin_is_named_plainly_in_the_report(tmp_path: Path) -> None:
    """The source "-" is written as "stdin", not as a neutralised "'-"."""
    path = tmp_path / "report.csv"
    writer = ReportWriter(path)
    writer.record(Row(order_id=5, outcome=Outcome.CANCELLED, source="-", line=1))
    writer.close()

    with path.open(newline="") as file:
        (only,) = list(csv.DictReader(file))

    assert "stdin" == only["source"]
