"""``batchcancel merge``: the reports and summaries of N shards as one run.

Rows are taken as written (never re-judged) and put in input order; the
summary's counts and cents are added up, its dollars recomputed from the
cents, its times spanned.  Before anything is written the set is checked:
each shard of one N exactly once, the same inputs, no order ID twice, every
row in the shard that owns it, and each report as long as its summary says.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from batchcancel.errors import InputError
from batchcancel.report import COLUMNS, dollars, write_json_atomic, write_text_atomic
from batchcancel.shard import shard_of

_LABEL = re.compile(r"shard-\d+-of-\d+")
# Summary keys that are not added up.
_SPANNED = {"started_at", "finished_at", "duration_s", "exit_code",
            "stop_reason", "report", "shard"}


@dataclass(frozen=True, slots=True)
class ShardRun:
    """One shard's report rows and summary."""

    report: Path
    rows: list[dict[str, str]]
    summary: dict[str, Any]

    @property
    def index(self) -> int:
        return int(self.summary["shard"]["index"])

    @property
    def count(self) -> int:
        return int(self.summary["shard"]["count"])


def pair_files(paths: Sequence[Path]) -> list[tuple[Path, Path]]:
    """(report, summary) pairs: summaries given as .json files are matched to
    reports by the report path they name; others are found beside them."""
    summaries = [p for p in paths if p.suffix == ".json"]
    reports = [p for p in paths if p.suffix != ".json"]
    named = {}
    for path in summaries:
        named[Path(_load_json(path).get("report", "")).resolve()] = path
    pairs = []
    for report in reports:
        summary = named.pop(report.resolve(), None) or _beside(report)
        if summary is None:
            raise InputError(f"no summary found beside {report}; pass its "
                             ".json summary as well")
        pairs.append((report, summary))
    if named:
        raise InputError(f"{', '.join(map(str, named.values()))}: no report given "
                         "for this summary")
    if not pairs:
        raise InputError("give the reports of every shard to merge")
    return pairs


def _beside(report: Path) -> Path | None:
    """Where ``cancel`` puts a report's summary by default, sharded or not:
    ``r.shard-0-of-3.csv`` has ``r-summary.shard-0-of-3.json``."""
    base, dot, label = report.stem.rpartition(".")
    candidates = [report.with_name(report.stem + "-summary.json")]
    if dot and _LABEL.fullmatch(label):
        candidates.insert(0, report.with_name(f"{base}-summary.{label}.json"))
    return next((c for c in candidates if c.is_file()), None)


def load(pairs: Sequence[tuple[Path, Path]]) -> list[ShardRun]:
    runs = [ShardRun(report, _load_rows(report), _load_json(summary))
            for report, summary in pairs]
    for run in runs:
        if not isinstance(run.summary.get("shard"), dict):
            raise InputError(f"{run.report}: its summary is not a shard's "
                             "(it has no shard entry); run cancel with --shard")
    return sorted(runs, key=lambda r: r.index)


def check(runs: Sequence[ShardRun]) -> None:
    """Refuse a set that is not exactly the N shards of one job."""
    counts = {run.count for run in runs}
    if len(counts) != 1:
        raise InputError(f"the reports come from different shard counts: "
                         f"{sorted(counts)}")
    count = counts.pop()
    indices = Counter(run.index for run in runs)
    twice = sorted(i for i, n in indices.items() if n > 1)
    missing = sorted(set(range(count)) - set(indices))
    if twice or missing:
        raise InputError(f"need each of the {count} shards exactly once: "
                         f"missing {missing or 'none'}, twice {twice or 'none'}")
    if len({tuple(run.summary["shard"].get("inputs", [])) for run in runs}) > 1:
        raise InputError("the shards read different inputs; merge shards of one job")
    seen: dict[str, int] = {}
    for run in runs:
        _check_rows(run, count, seen)


def _check_rows(run: ShardRun, count: int, seen: dict[str, int]) -> None:
    expected = run.summary["distinct_ids"] + run.summary["invalid_lines"]
    if len(run.rows) != expected:
        raise InputError(f"{run.report} has {len(run.rows)} rows but its summary "
                         f"counts {expected}; is it from another run?")
    for row in run.rows:
        order_id = row["order_id"]
        if not order_id:
            if run.index != 0:
                raise InputError(f"{run.report}: an invalid line outside shard 0")
            continue
        if order_id in seen:
            raise InputError(f"order {order_id} is in shard {seen[order_id]} and "
                             f"shard {run.index}: the reports overlap")
        seen[order_id] = run.index
        if not order_id.isdigit() or shard_of(int(order_id), count) != run.index:
            raise InputError(f"{run.report}: order {order_id} does not belong to "
                             f"shard {run.index} of {count}")


def merged_rows(runs: Sequence[ShardRun]) -> list[dict[str, str]]:
    """Every row, in input order (source as given, then line)."""
    inputs = [("stdin" if n == "-" else n)
              for n in runs[0].summary["shard"].get("inputs", [])]
    rank = {name: n for n, name in enumerate(inputs)}
    rows = [row for run in runs for row in run.rows]
    return sorted(rows, key=lambda r: (rank.get(r["source"], len(rank)),
                                       r["source"], int(r["line"] or 0)))


def merged_summary(runs: Sequence[ShardRun], report: Path,
                   rows: Sequence[Mapping[str, str]]) -> dict[str, Any]:
    """The shards' summaries as one: sums, cents to dollars, the time span."""
    total: dict[str, Any] = {}
    for run in runs:
        total = _add(total, {k: v for k, v in run.summary.items()
                             if k not in _SPANNED})
    _redo_dollars(total)
    started = min(datetime.fromisoformat(r.summary["started_at"]) for r in runs)
    finished = max(datetime.fromisoformat(r.summary["finished_at"]) for r in runs)
    reasons = [f"shard {r.index}: {r.summary['stop_reason']}" for r in runs
               if r.summary.get("stop_reason")]
    total.update(
        stop_reason="; ".join(reasons) or None,
        started_at=started.isoformat(timespec="seconds"),
        finished_at=finished.isoformat(timespec="seconds"),
        duration_s=round((finished - started).total_seconds(), 3),
        exit_code=max(r.summary["exit_code"] for r in runs),
        report=str(report),
        merged_from=[str(r.report) for r in runs],
    )
    counted = Counter(row["outcome"] for row in rows)
    if {k: v for k, v in total["outcomes"].items() if v} != dict(counted):
        raise InputError("the reports' rows and the summaries' outcome counts "
                         "differ; a report was edited or cut short")
    return total


def _add(a: Any, b: Any) -> Any:
    if isinstance(a, dict) and isinstance(b, dict):
        keys = [*a, *(k for k in b if k not in a)]
        return {k: _add(a.get(k), b.get(k)) for k in keys}
    if a is None:
        return b
    if b is None:
        return a
    if isinstance(a, int) and isinstance(b, int) and not isinstance(a, bool):
        return a + b
    if isinstance(a, float | int) and isinstance(b, float | int):
        return round(a + b, 6)
    return a  # text: the same in every shard, or the first shard's


def _redo_dollars(node: Any) -> None:
    if isinstance(node, dict):
        if isinstance(node.get("cents"), int):
            node["dollars"] = dollars(node["cents"])
        for value in node.values():
            _redo_dollars(value)


def write(report: Path, summary: Path, rows: Sequence[Mapping[str, str]],
          document: Mapping[str, Any]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(COLUMNS)
    writer.writerows([row[c] for c in COLUMNS] for row in rows)
    write_text_atomic(report, buffer.getvalue())
    write_json_atomic(summary, document)


def merge(paths: Sequence[Path], report: Path, summary: Path) -> dict[str, Any]:
    """Check and merge; write the merged report and summary; return the latter."""
    pairs = pair_files(paths)
    for output in (report, summary):
        if any(output.resolve() in (r.resolve(), s.resolve()) for r, s in pairs):
            raise InputError(f"{output} is one of the files to merge")
    runs = load(pairs)
    check(runs)
    rows = merged_rows(runs)
    document = merged_summary(runs, report, rows)
    write(report, summary, rows, document)
    return document


def _load_rows(path: Path) -> list[dict[str, str]]:
    try:
        with path.open(newline="", encoding="utf-8") as file:
            reader = csv.DictReader(file)
            rows = list(reader)
            header = tuple(reader.fieldnames or ())
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"cannot read the report {path}: {exc}") from None
    if header != COLUMNS:
        raise InputError(f"{path} is not a batchcancel report (its columns differ)")
    return rows


def _load_json(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"cannot read the summary {path}: {exc}") from None
    if not isinstance(document, dict):
        raise InputError(f"{path} is not a batchcancel summary")
    return document
