"""``batchcancel demo``: the whole main job against the embedded sandbox.

It starts the sandbox on a free loopback port with faults on, writes a
sample input of a few hundred IDs (with duplicates, invalid lines and
orders the sandbox does not know), runs the real ``cancel`` core against
it, and then checks the report against the sandbox's record of truth.
No token and no network are needed: nothing leaves this machine.
"""

from __future__ import annotations

import csv
import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batchcancel.cancel import JobResult, cancel_orders
from batchcancel.config import DEFAULTS, build_settings
from batchcancel.logs import Console
from batchcancel.sandbox import Faults, Sandbox, SandboxConfig

INPUT = "batchcancel-demo-ids.csv"
REPORT = "batchcancel-demo-report.csv"
SUMMARY = "batchcancel-demo-summary.json"
JOURNAL = "batchcancel-demo-journal.jsonl"

_FAULTS = Faults(
    throttle_429=0.02, server_error=0.03, drop_before=0.01, drop_after=0.01,
    late_answer=0.01, garbled_body=0.01, late_delay=1.5,
)
_INVALID = ["abc", "-42", "0", "12.5", "1/../2", "=1+1", "١٢٣", "99999999999999999999"]


@dataclass(frozen=True, slots=True)
class Agreement:
    """How the report compares with what the sandbox really did."""

    checked: int
    mismatches: tuple[str, ...]
    report_credits: int
    sandbox_credits: int

    @property
    def holds(self) -> bool:
        return not self.mismatches and self.report_credits == self.sandbox_credits


async def run_demo(folder: Path, console: Console, *, orders: int = 400,
                   seed: int = 7, quiet: bool = False) -> tuple[JobResult, Agreement]:
    """Run the demo in ``folder``; return the job's result and the check."""
    sandbox = Sandbox(SandboxConfig(orders=orders, seed=seed, rate_limit=25,
                                    rate_window=1.0, faults=_FAULTS))
    await sandbox.start("127.0.0.1", 0)
    # Each demo is a new job against a new sandbox: never resume an old one.
    (folder / JOURNAL).unlink(missing_ok=True)
    try:
        ids = write_sample_input(folder / INPUT, sandbox_ids(sandbox, orders),
                                 random.Random(seed))
        settings = build_settings({
            **DEFAULTS, "base_url": sandbox.base_url, "rate": "20/s",
            "rate_window": 1.0,
            "concurrency": 8, "max_retries": 8, "backoff_initial": 0.05,
            "backoff_max": 1.0, "cooldown": 1.0, "read_timeout": 1.0,
            "report": str(folder / REPORT), "summary": str(folder / SUMMARY),
            "journal": str(folder / JOURNAL),
        })
        result = await cancel_orders(settings, sandbox.config.token, [str(ids)],
                                     console=console, quiet=quiet)
        return result, compare_with_sandbox(folder / REPORT, sandbox.record())
    finally:
        await sandbox.stop()


def sandbox_ids(sandbox: Sandbox, orders: int) -> range:
    first = sandbox.config.first_id
    return range(first, first + orders)


def write_sample_input(path: Path, known: range, rand: random.Random) -> Path:
    """A CSV like an operator's export: header, a few mistakes, repeats."""
    chosen = rand.sample(list(known), k=min(len(known), 300))
    unknown = [known.stop + 10_000 + n for n in range(10)]
    lines: list[str] = [*map(str, chosen), *map(str, unknown), *_INVALID,
                        *map(str, rand.sample(chosen, k=15))]
    rand.shuffle(lines)
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["order_id", "campaign"])
        writer.writerows([value, "spring-promo"] for value in lines)
    return path


def expected_outcome(truth: Mapping[str, Any] | None) -> str:
    """The outcome a report must give an order, from the sandbox's record."""
    if truth is None:
        return "not_found"
    if truth["cancelled_by_sandbox_api"]:
        return "cancelled"
    if truth["status"] == "cancelled":
        return "already_cancelled"
    return "not_cancellable"


def compare_with_sandbox(report: Path, record: Mapping[str, Any]) -> Agreement:
    """Check every report row against the record, and the credits in total."""
    orders: Mapping[str, Any] = record["orders"]
    mismatches: list[str] = []
    credits = 0
    checked = 0
    with report.open(newline="", encoding="utf-8") as file:
        for row in csv.DictReader(file):
            if not row["order_id"]:
                continue
            checked += 1
            truth = orders.get(row["order_id"])
            want = expected_outcome(truth)
            if row["outcome"] != want:
                mismatches.append(f"{row['order_id']}: {row['outcome']} != {want}")
            if row["outcome"] == "cancelled":
                credits += int(row["refunded_credits"] or 0)
                if truth and int(row["refunded_credits"] or -1) != truth[
                        "refunded_credits"]:
                    mismatches.append(f"{row['order_id']}: credits differ")
    return Agreement(checked, tuple(mismatches), credits,
                     int(record["refunded_credits_total"]))
