"""The Markdown summary: rendering (pure), the two writers, and end to end
with GITHUB_STEP_SUMMARY set, against the sandbox."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from conftest import SandboxFactory
from support import TOKEN, cli_env, read_json, read_report, run_cli

from batchcancel.markdown import append_step_summary, render_markdown
from batchcancel.outcomes import Outcome


def summary(**changes: Any) -> dict[str, Any]:
    outcomes = {o.value: 0 for o in Outcome}
    outcomes.update(cancelled=1200, already_cancelled=3, not_attempted=5)
    document: dict[str, Any] = {
        "outcomes": outcomes,
        "refunded_credits": {
            "cents": 123456, "dollars": "1234.56",
            "by_sub_account": {"66": {"cents": 100000, "dollars": "1000.00"},
                               "main": {"cents": 23456, "dollars": "234.56"}},
            "cancelled_with_unknown_credits": 0, "unknown_refund_rows": 0,
        },
        "would_cancel_credits": {"cents": 0, "dollars": "0.00",
                                 "by_sub_account": {}},
        "lines_read": 1210, "distinct_ids": 1208, "duplicates": 2,
        "invalid_lines": 0, "requests_sent": 1250, "retries": 42,
        "stop_reason": None, "started_at": "2026-12-04T10:00:00+00:00",
        "finished_at": "2026-12-04T10:20:50+00:00", "duration_s": 1250.0,
        "exit_code": 1, "report": "out/report.csv",
    }
    document.update(changes)
    return document


def cells(markdown: str, first: str) -> list[str]:
    """The cells of the table row whose first cell is ``first``."""
    for line in markdown.splitlines():
        parts = [p.strip() for p in re.split(r"(?<!\\)\|", line)[1:-1]]
        if parts and parts[0] == first:
            return parts
    raise AssertionError(f"no row {first!r} in:\n{markdown}")


def test_outcome_counts_are_a_table_without_the_zeros() -> None:
    """One row per outcome that happened, its count right-aligned."""
    text = render_markdown(summary())

    assert ["cancelled", "1200"] == cells(text, "cancelled")
    assert ["not_attempted", "5"] == cells(text, "not_attempted")
    assert "| not_found |" not in text
    assert "| outcome | orders |\n| --- | ---: |" in text


def test_credits_are_dollars_and_cents_per_sub_account_and_in_total() -> None:
    """Integer cents become $1,234.56, per sub-account and in a total row."""
    text = render_markdown(summary())

    assert text.startswith("## batchcancel: 1208 orders, $1,234.56 refunded\n")
    assert ["66", "$1,000.00"] == cells(text, "66")
    assert ["main", "$234.56"] == cells(text, "main")
    assert ["**total**", "**$1,234.56**"] == cells(text, "**total**")


def test_the_run_facts_say_what_the_exit_code_means() -> None:
    """Start, finish, exit code with its meaning, report, rate, not attempted."""
    text = render_markdown(summary())

    assert "2026-12-04T10:00:00+00:00" == cells(text, "started")[1]
    assert "2026-12-04T10:20:50+00:00 (1250.0 s)" == cells(text, "finished")[1]
    assert ("1: some orders ended as error or not_attempted, or the report "
            "could not be written") == cells(text, "exit code")[1]
    assert "`out/report.csv`" == cells(text, "report")[1]
    assert "1.00 requests/s (1250 requests, 42 retries)" == cells(
        text, "rate seen")[1]
    assert "5" == cells(text, "not attempted")[1]


def test_orders_not_attempted_come_with_how_to_resume() -> None:
    """The resume hint names the journal; none without orders waiting."""
    text = render_markdown(summary(), journal="out/report-journal.jsonl")
    outcomes = {**summary()["outcomes"], "not_attempted": 0}

    assert ("**To resume**: 5 orders were not attempted. Run the same command "
            "again") in text
    assert "`out/report-journal.jsonl`" in text
    assert "To resume" not in render_markdown(summary(outcomes=outcomes),
                                              journal="j.jsonl")


def test_a_dry_run_says_so_and_what_is_at_stake() -> None:
    """would_cancel: the stake in dollars, and no resume hint."""
    outcomes = {**summary()["outcomes"], "would_cancel": 7, "cancelled": 0}
    stake = {"cents": 500099, "dollars": "5000.99", "by_sub_account": {}}

    text = render_markdown(summary(outcomes=outcomes, would_cancel_credits=stake),
                           journal="j.jsonl")

    assert "**Dry run**: 7 orders would be cancelled, $5,000.99 at stake." in text
    assert "To resume" not in text


def test_a_pipe_or_a_line_break_cannot_break_a_table_row() -> None:
    """Text from the run (a path, a stop reason) is escaped for a table cell."""
    text = render_markdown(summary(report="a|b.csv",
                                   stop_reason="input unreadable:\nline 3"))

    assert "| report | `a\\|b.csv` |" in text
    assert "| stopped early | input unreadable: line 3 |" in text


def test_appending_keeps_what_the_file_held(tmp_path: Path) -> None:
    """The CI summary file is appended to, never truncated."""
    path = tmp_path / "step.md"
    path.write_text("# Earlier step\n", encoding="utf-8")

    append_step_summary(path, "## ours\n")

    assert "# Earlier step\n\n## ours\n" == path.read_text(encoding="utf-8")


@pytest.mark.e2e
async def test_a_run_writes_the_markdown_and_appends_it_for_ci(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    """--summary-md and GITHUB_STEP_SUMMARY get the same block; the step
    summary keeps its earlier content; figures match the JSON summary."""
    sandbox = await sandbox_factory(orders=40, seed=41)
    step = tmp_path / "step-summary.md"
    step.write_text("# Build\n\nall green\n", encoding="utf-8")
    md = tmp_path / "summary.md"
    ids = b"".join(b"%d\n" % (100_000 + n) for n in range(40))

    done = await run_cli(
        ["cancel", "-", "--report", str(tmp_path / "r.csv"), "--summary-md", str(md),
         "--base-url", sandbox.base_url, "--rate", "off"],
        stdin=ids, env=cli_env(GITHUB_STEP_SUMMARY=str(step)))
    document = read_json(tmp_path / "r-summary.json")
    text = md.read_text(encoding="utf-8")
    rows = read_report(tmp_path / "r.csv")
    cents = sum(int(r["refunded_credits"] or 0) for r in rows)

    assert 0 == done.code, done.stderr
    assert "# Build\n\nall green\n\n" + text == step.read_text(encoding="utf-8")
    assert cents == document["refunded_credits"]["cents"]
    assert str(document["outcomes"]["cancelled"]) == cells(text, "cancelled")[1]
    expected = f"${cents // 100:,}.{cents % 100:02d}"
    assert f"**{expected}**" == cells(text, "**total**")[1]
    assert "0: every valid order ID got a final answer" == cells(text, "exit code")[1]
    assert TOKEN not in text


@pytest.mark.e2e
async def test_an_unwritable_step_summary_does_not_fail_the_run(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    """A CI summary that cannot be written is an error event; exit unchanged."""
    sandbox = await sandbox_factory(orders=5, seed=42)

    done = await run_cli(
        ["cancel", "-", "--report", str(tmp_path / "r.csv"),
         "--base-url", sandbox.base_url, "--rate", "off"],
        stdin=b"100000\n",
        env=cli_env(GITHUB_STEP_SUMMARY=str(tmp_path / "missing" / "s.md")))

    assert 0 == done.code, done.stderr
    assert "summary_md.unwritable" in done.stderr
