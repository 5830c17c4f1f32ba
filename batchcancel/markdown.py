"""The Markdown summary: the JSON summary, rendered for people and for a CI
job page (``GITHUB_STEP_SUMMARY``).

Rendering is a pure function of the summary dict; the two writers are the
only I/O.  Amounts are integer cents until the last step, so a dollar
figure here is the exact sum of the report's ``refunded_credits``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from batchcancel.report import money, write_text_atomic

#: What each exit code means, in the words of the README's table.
EXIT_MEANINGS = {
    0: "every valid order ID got a final answer",
    1: "some orders ended as error or not_attempted, or the report could "
       "not be written",
    2: "usage, configuration or unreadable input",
    3: "credentials refused",
    130: "interrupted by SIGINT, after the report was written",
    143: "interrupted by SIGTERM, after the report was written",
}


def render_markdown(summary: Mapping[str, Any], *,
                    journal: str | None = None) -> str:
    """The whole Markdown block for one run (pure)."""
    credits = summary["refunded_credits"]
    outcomes = {k: v for k, v in summary["outcomes"].items() if v}
    blocks = [
        f"## batchcancel: {summary['distinct_ids']} orders, "
        f"{money(credits['cents'])} refunded",
        _table(("outcome", "orders"), [(k, str(v)) for k, v in outcomes.items()]
               or [("(none)", "0")], right=(1,)),
        "### Refunded credits by sub-account",
        _credits_table(credits),
    ]
    blocks += _notes(summary)
    blocks += ["### Run", _table(("", ""), _facts(summary), right=())]
    blocks += _resume(summary, journal)
    return "\n\n".join(blocks) + "\n"


def _credits_table(credits: Mapping[str, Any]) -> str:
    rows = [(account, money(amount["cents"]))
            for account, amount in credits["by_sub_account"].items()]
    rows.append(("**total**", f"**{money(credits['cents'])}**"))
    return _table(("sub-account", "refunded"), rows, right=(1,))


def _notes(summary: Mapping[str, Any]) -> list[str]:
    notes = []
    unknown = summary["refunded_credits"]["unknown_refund_rows"]
    if unknown:
        notes.append(f"**Refund unknown for {unknown} orders**: an attempt may "
                     "have cancelled them. Check their rows in the report.")
    would = summary["outcomes"].get("would_cancel", 0)
    if would:
        stake = summary.get("would_cancel_credits", {}).get("cents", 0)
        notes.append(f"**Dry run**: {would} orders would be cancelled, "
                     f"{money(stake)} at stake. Nothing was cancelled.")
    return notes


def _facts(summary: Mapping[str, Any]) -> list[tuple[str, str]]:
    code = summary["exit_code"]
    duration = summary["duration_s"]
    sent = summary["requests_sent"]
    rate = sent / duration if duration > 0 else 0.0
    facts = [
        ("started", summary["started_at"]),
        ("finished", f"{summary['finished_at']} ({duration} s)"),
        ("exit code", f"{code}: {EXIT_MEANINGS.get(code, 'see the README')}"),
        ("report", _code(str(summary.get("report") or "(none)"))),
        ("rate seen", f"{rate:.2f} requests/s ({sent} requests, "
                      f"{summary['retries']} retries)"),
        ("input", f"{summary['lines_read']} lines: {summary['distinct_ids']} "
                  f"distinct IDs, {summary['duplicates']} duplicates, "
                  f"{summary['invalid_lines']} invalid"),
        ("not attempted", str(summary["outcomes"].get("not_attempted", 0))),
    ]
    if summary["stop_reason"]:
        facts.append(("stopped early", summary["stop_reason"]))
    return facts


def _resume(summary: Mapping[str, Any], journal: str | None) -> list[str]:
    waiting = summary["outcomes"].get("not_attempted", 0)
    if not waiting or summary["outcomes"].get("would_cancel", 0) or not journal:
        return []
    return [f"**To resume**: {waiting} orders were not attempted. Run the same "
            "command again (same input, same `--report`): the journal "
            f"{_code(journal)} keeps the finished orders, which are not sent "
            "again."]


def _table(header: tuple[str, str], rows: list[tuple[str, str]], *,
           right: tuple[int, ...]) -> str:
    rule = ["---:" if n in right else "---" for n in range(len(header))]
    lines = [header, tuple(rule), *rows]
    return "\n".join("| " + " | ".join(_cell(c) for c in line) + " |"
                     for line in lines)


def _cell(text: str) -> str:
    """One table cell: a pipe or a line break would end the row."""
    return " ".join(text.replace("|", "\\|").split())


def _code(text: str) -> str:
    """A code span that holds any text, backticks included."""
    fence = "`"
    while fence in text:
        fence += "`"
    return f"{fence} {text} {fence}" if "`" in text else f"`{text}`"


def write_markdown(path: Path, text: str) -> None:
    """``--summary-md``: replaced whole, never seen half written."""
    write_text_atomic(path, text)


def append_step_summary(path: Path, text: str) -> None:
    """Add the block to the CI job's summary, keeping what is there.

    One ``write`` of the whole block on an ``O_APPEND`` descriptor, so that
    other steps appending to the same file cannot land inside it.
    """
    data = ("\n" + text).encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        written = os.write(fd, data)
        while written < len(data):  # rare: a short write to a full disk
            written += os.write(fd, data[written:])
    finally:
        os.close(fd)
