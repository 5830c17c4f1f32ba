"""Sharding: a stable share of the input, the rate shared out, merge exact."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from conftest import SandboxFactory
from support import FAST, TOKEN, read_json, read_report, run_cli

from batchcancel.cancel import rate_gate
from batchcancel.config import DEFAULTS, build_settings
from batchcancel.errors import ConfigError, InputError
from batchcancel.ids import Duplicate, OrderRef, Rejected
from batchcancel.merge import merge
from batchcancel.ratelimit import RateHeaders, ThrottleGate
from batchcancel.shard import Shard, parse_shard, shard_of


def test_shard_of_is_sha256_of_the_decimal_id_mod_n() -> None:
    """The documented rule, so any tool can recompute it: first 8 bytes, big end."""
    digest = hashlib.sha256(b"100001").digest()

    assert int.from_bytes(digest[:8], "big") % 3 == shard_of(100_001, 3)
    assert [1, 1, 0, 1] == [shard_of(i, 3) for i in (1, 100_001, 100_002,
                                                      999_999_999_999)]


def test_every_id_belongs_to_exactly_one_shard() -> None:
    """Three shards together keep each ID once."""
    shards = [Shard(k, 3) for k in range(3)]

    assert all(1 == sum(s.owns(100_000 + n) for s in shards) for n in range(500))


def test_duplicates_follow_their_id_and_invalid_lines_go_to_shard_0() -> None:
    """A duplicate is kept where its ID is; a rejected line only by shard 0."""
    owner = Shard(shard_of(100_001, 3), 3)
    other = Shard((owner.index + 1) % 3, 3)
    dup = Duplicate(100_001, "a.csv", 9, "a.csv", 2)
    bad = Rejected("a.csv", 5, "abc", "not a positive integer")

    assert (True, False) == (owner.keeps(dup), other.keeps(dup))
    assert [True, False, False] == [Shard(k, 3).keeps(bad) for k in range(3)]
    assert owner.keeps(OrderRef(100_001, "a.csv", 2))


def test_shard_spec_and_kubernetes_index_are_checked() -> None:
    """K/N from the flag or JOB_COMPLETION_INDEX; clear errors otherwise."""
    assert Shard(2, 3) == parse_shard("2/3", None, {})
    assert Shard(1, 4) == parse_shard(None, 4, {"JOB_COMPLETION_INDEX": "1"})
    assert None is parse_shard(None, None, {})
    for spec, shards, env, message in [
        ("3/3", None, {}, "out of range"),
        ("1-3", None, {}, "is not K/N"),
        (None, 3, {}, "JOB_COMPLETION_INDEX, which is not set"),
        (None, 3, {"JOB_COMPLETION_INDEX": "5"}, "out of range"),
        ("0/3", 3, {}, "not both"),
    ]:
        with pytest.raises(ConfigError, match=message):
            parse_shard(spec, shards, env)


def test_sharded_outputs_get_a_suffix_that_never_collides() -> None:
    """report, summary and journal of shard 1/3 carry .shard-1-of-3."""
    settings = build_settings({**DEFAULTS, "report": "out/r.csv", "shards": 3},
                              environ={"JOB_COMPLETION_INDEX": "1"})

    assert (Path("out/r.shard-1-of-3.csv"), Path("out/r-summary.shard-1-of-3.json"),
            Path("out/r-journal.shard-1-of-3.jsonl")) == (
        settings.report, settings.summary, settings.journal)


def test_the_ceiling_and_starting_pace_are_divided_between_shards() -> None:
    """--rate 6/s over 3 shards: 2/s each; auto starts at 1/3 per second each."""
    fixed = build_settings({**DEFAULTS, "rate": "6/s", "shard": "0/3"})
    auto = build_settings({**DEFAULTS, "shard": "2/3"})

    assert 2.0 == rate_gate(fixed).rate
    assert pytest.approx(1 / 3) == rate_gate(auto).rate


async def test_a_shard_keeps_to_its_share_of_the_account_limit() -> None:
    """Once the headers show 60 a window, each of 3 shards paces at most 19/min."""
    clock = [0.0]
    gate = ThrottleGate(None, start=None, portion=3, clock=lambda: clock[0])
    ticket = await gate.acquire()

    gate.settle(ticket, RateHeaders(limit=60, remaining=59))

    assert gate.rate is not None
    assert gate.rate <= (60 - 3) / 3 / 60


# -- merge refusals -----------------------------------------------------------


def _shard_files(folder: Path, index: int, count: int,
                 rows: list[tuple[str, str]]) -> Path:
    report = folder / f"r.shard-{index}-of-{count}.csv"
    header = ("order_id,outcome,order_status,refunded_credits,http_status,attempts,"
              "detail,sub_account_id,source,line,input_value,credits_at_stake,"
              "deadline")
    lines = [f"{oid},{outcome},,0,,0,,,a.csv,{n + 2},,," for n, (oid, outcome)
             in enumerate(rows)]
    report.write_text("\n".join([header, *lines]) + "\n", encoding="utf-8")
    summary: dict[str, Any] = {
        "outcomes": {"not_found": len(rows)}, "distinct_ids": len(rows),
        "invalid_lines": 0, "started_at": "2026-12-03T10:00:00+00:00",
        "finished_at": "2026-12-03T10:00:05+00:00", "exit_code": 0,
        "stop_reason": None, "report": str(report),
        "shard": {"index": index, "count": count, "inputs": ["a.csv"]},
    }
    (folder / f"r-summary.shard-{index}-of-{count}.json").write_text(
        json.dumps(summary), encoding="utf-8")
    return report


def _ids_of(shard: int, count: int, many: int = 2) -> list[str]:
    return [str(n) for n in range(100_000, 100_100)
            if shard_of(n, count) == shard][:many]


def test_merge_refuses_a_missing_shard(tmp_path: Path) -> None:
    """Shards 0 and 2 of 3 are not a whole run."""
    files = [_shard_files(tmp_path, k, 3, [(i, "not_found") for i in _ids_of(k, 3)])
             for k in (0, 2)]

    with pytest.raises(InputError, match=r"missing \[1\]"):
        merge(files, tmp_path / "m.csv", tmp_path / "m.json")


def test_merge_refuses_the_same_order_in_two_reports(tmp_path: Path) -> None:
    """An order ID in two shards' reports is an overlap, named in the error."""
    shared = _ids_of(0, 2, 1)[0]
    files = [_shard_files(tmp_path, 0, 2, [(shared, "not_found")]),
             _shard_files(tmp_path, 1, 2, [(shared, "not_found")])]

    with pytest.raises(InputError, match=f"order {shared} is in shard 0 and shard 1"):
        merge(files, tmp_path / "m.csv", tmp_path / "m.json")


def test_merge_refuses_shards_of_different_counts(tmp_path: Path) -> None:
    """A 0/2 report and a 1/3 report come from different runs."""
    files = [_shard_files(tmp_path, 0, 2, [(_ids_of(0, 2, 1)[0], "not_found")]),
             _shard_files(tmp_path, 1, 3, [(_ids_of(1, 3, 1)[0], "not_found")])]

    with pytest.raises(InputError, match="different shard counts"):
        merge(files, tmp_path / "m.csv", tmp_path / "m.json")


# -- end to end ---------------------------------------------------------------


def _rows(path: Path) -> list[tuple[str, str, str, str]]:
    return sorted((r["order_id"], r["outcome"], r["refunded_credits"], r["line"])
                  for r in read_report(path))


TOTALS = ("outcomes", "refunded_credits", "would_cancel_credits", "lines_read",
          "distinct_ids", "duplicates", "invalid_lines", "stop_reason", "exit_code")


@pytest.mark.e2e
async def test_three_shards_merged_equal_one_unsharded_run(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    """Three concurrent shards on one sandbox, merged, give the rows and totals
    of one unsharded run on an identical sandbox."""
    shared = await sandbox_factory(orders=900, seed=17)
    twin = await sandbox_factory(orders=900, seed=17)
    ids = [str(100_000 + n) for n in range(900)]
    lines = [*ids, "999999001", "abc", ids[3], "", "-5", ids[700], "999999002"]
    source = tmp_path / "ids.csv"
    source.write_text("order_id\n" + "\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    out.mkdir()

    shards = await asyncio.gather(*(
        run_cli(["cancel", str(source), "--report", str(out / "report.csv"),
                 "--base-url", shared.base_url, "--shards", "3", *FAST],
                env={**_env(), "JOB_COMPLETION_INDEX": str(k)})
        for k in range(3)))
    whole = await run_cli(["cancel", str(source), "--report",
                           str(tmp_path / "whole.csv"), "--base-url", twin.base_url,
                           *FAST])
    merged = await run_cli(["merge", *(str(out / f"report.shard-{k}-of-3.csv")
                                       for k in range(3)),
                            "--report", str(tmp_path / "merged.csv")])
    merged_totals = read_json(tmp_path / "merged-summary.json")
    whole_totals = read_json(tmp_path / "whole-summary.json")

    assert [0, 0, 0] == [s.code for s in shards], shards[0].stderr[-2000:]
    assert (0, 0) == (whole.code, merged.code), merged.stderr[-2000:]
    assert _rows(tmp_path / "whole.csv") == _rows(tmp_path / "merged.csv")
    assert {k: whole_totals[k] for k in TOTALS} == {k: merged_totals[k] for k in TOTALS}
    assert (shared.record()["refunded_credits_total"]
            == twin.record()["refunded_credits_total"]
            == merged_totals["refunded_credits"]["cents"])
    assert 0 < merged_totals["outcomes"]["cancelled"]
    assert TOKEN not in "".join(s.stderr for s in shards) + merged.stderr


@pytest.mark.e2e
async def test_merge_without_every_shard_exits_2_with_an_error(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    """Two of three real shard reports: Error, exit 2, nothing written."""
    sandbox = await sandbox_factory(orders=30)
    source = tmp_path / "ids.csv"
    source.write_text("\n".join(str(100_000 + n) for n in range(30)) + "\n",
                      encoding="utf-8")
    for k in (0, 1):
        done = await run_cli(["cancel", str(source), "--report",
                              str(tmp_path / "r.csv"), "--shard", f"{k}/3",
                              "--base-url", sandbox.base_url, *FAST])
        assert 0 == done.code, done.stderr[-2000:]

    merged = await run_cli(["merge", str(tmp_path / "r.shard-0-of-3.csv"),
                            str(tmp_path / "r.shard-1-of-3.csv"),
                            "--report", str(tmp_path / "m.csv")])

    assert 2 == merged.code
    assert "Error: need each of the 3 shards exactly once: missing [2]" in merged.stderr
    assert not (tmp_path / "m.csv").exists()


def _env() -> dict[str, str]:
    from support import cli_env

    return cli_env()
