"""End to end: the real CLI, as a subprocess, against the sandbox on loopback."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from conftest import SandboxFactory
from support import (
    FAST,
    TOKEN,
    cli_env,
    disagreements,
    every_file_text,
    read_json,
    read_report,
    run_cli,
)

from batchcancel.sandbox import Faults

FAULTS = Faults(throttle_429=0.003, server_error=0.02, drop_before=0.01,
                drop_after=0.01, late_answer=0.005, garbled_body=0.01,
                late_delay=1.0)




def write_ids(path: Path, lines: list[str], header: str = "order_id") -> Path:
    path.write_text("\n".join([header, *lines]) + "\n", encoding="utf-8")
    return path


@pytest.mark.e2e
async def test_2000_orders_with_faults_agree_with_the_sandbox(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    """With faults on, the report matches the sandbox order by order and in total."""
    sandbox = await sandbox_factory(orders=2000, seed=3, faults=FAULTS)
    ids = [str(100_000 + n) for n in range(2000)]
    unknown = ["999999001", "999999002"]
    source = write_ids(tmp_path / "ids.csv", [*ids, *unknown, "abc", ids[5]])
    report, summary = tmp_path / "report.csv", tmp_path / "summary.json"

    done = await run_cli(["cancel", str(source), "--report", str(report),
                          "--summary", str(summary), "--base-url", sandbox.base_url,
                          "--log-level", "debug", *FAST])
    record = sandbox.record()
    rows = read_report(report)
    totals = read_json(summary)

    assert 0 == done.code, done.stderr[-2000:]
    assert [] == disagreements(rows, record)
    assert sorted([*ids, *unknown]) == sorted(r["order_id"] for r in rows
                                              if r["order_id"])
    assert record["refunded_credits_total"] == totals["refunded_credits"]["cents"]
    assert (1, 1, 2003) == (totals["duplicates"], totals["invalid_lines"],
                            totals["distinct_ids"] + totals["invalid_lines"])
    assert sum(record["requests"]["faults"].values()) > 50  # faults really struck
    assert {r["order_id"]: int(r["attempts"]) for r in rows if r["order_id"] in
            record["orders"]} == {oid: truth["cancel_requests"] for oid, truth in
                                  record["orders"].items()}
    written = every_file_text(tmp_path)
    assert TOKEN not in done.stdout + done.stderr + written
    assert (tmp_path / "report-journal.jsonl").exists()  # searched too


@pytest.mark.e2e
async def test_refused_token_stops_with_exit_3_and_loses_nothing(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    """A bad token ends the run at once: exit 3, every ID not_attempted."""
    sandbox = await sandbox_factory(orders=100)
    source = write_ids(tmp_path / "ids.csv", [str(100_000 + n) for n in range(100)])
    report = tmp_path / "r.csv"

    done = await run_cli(["cancel", str(source), "--report", str(report),
                          "--base-url", sandbox.base_url, *FAST],
                         env=cli_env(token="wrong-token"))
    rows = read_report(report)

    assert 3 == done.code
    assert 100 == len(rows)
    assert {"not_attempted"} == {r["outcome"] for r in rows}
    assert sandbox.record()["requests"]["unauthorized"] <= 16
    assert "wrong-token" not in done.stderr + report.read_text()


@pytest.mark.e2e
async def test_a_refused_token_says_so_even_when_quiet(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    """-q keeps errors: a refused token ends with one Error line naming the
    fix, not a silent exit 3."""
    sandbox = await sandbox_factory(orders=10)
    source = write_ids(tmp_path / "ids.csv", [str(100_000 + n) for n in range(10)])

    done = await run_cli(["cancel", str(source), "-q", "--report",
                          str(tmp_path / "r.csv"), "--base-url", sandbox.base_url,
                          *FAST], env=cli_env(token="wrong-token"))

    assert 3 == done.code
    assert "Error: the API refused the token" in done.stderr
    assert "THANKSIO_API_TOKEN" in done.stderr


@pytest.mark.e2e
async def test_ids_from_stdin(sandbox_factory: SandboxFactory, tmp_path: Path) -> None:
    """No INPUT reads stdin, one ID a line, and ends with exit 0."""
    sandbox = await sandbox_factory(orders=20, seed=5)
    report = tmp_path / "r.csv"
    ids = "".join(f"{100_000 + n}\n" for n in range(20)).encode()

    done = await run_cli(["cancel", "--report", str(report),
                          "--base-url", sandbox.base_url, *FAST], stdin=ids)

    assert 0 == done.code, done.stderr
    assert [] == disagreements(read_report(report), sandbox.record())
    assert 20 == len(read_report(report))


@pytest.mark.e2e
async def test_hostile_ids_never_reach_the_server(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    """Path tricks, signs and odd digits are reported and never requested."""
    sandbox = await sandbox_factory(orders=5)
    hostile = ["1/../2", "%2e%2e", "12?x=1", "12#", "+5", "-5", "1_000", "٤٢",
               "\uff10", "0", "1" * 40, "100000/cancel", "100001 100002"]
    source = write_ids(tmp_path / "ids.txt", [*hostile, "100003"], header="id")
    report = tmp_path / "r.csv"

    done = await run_cli(["cancel", str(source), "--report", str(report),
                          "--base-url", sandbox.base_url, "--no-preflight", *FAST])
    paths = [entry["path"] for entry in sandbox.record()["request_log"]]
    rows = read_report(report)

    assert 0 == done.code, done.stderr
    assert ["/api/v2/orders/100003/cancel"] == paths
    assert len(hostile) == Counter(r["outcome"] for r in rows)["invalid_input"]


@pytest.mark.e2e
async def test_the_server_rate_limit_is_respected_without_a_429_storm(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    """Against a 10-per-second fixed window, 429s pause everyone and all finish."""
    sandbox = await sandbox_factory(orders=60, rate_limit=10, rate_window=1.0)
    source = write_ids(tmp_path / "ids.csv", [str(100_000 + n) for n in range(60)])
    report = tmp_path / "r.csv"

    done = await run_cli(["cancel", str(source), "--report", str(report),
                          "--base-url", sandbox.base_url, *FAST, "--rate", "20/s",
                          "--rate-window", "1", "--concurrency", "4"])
    record = sandbox.record()

    throttled = [e["t"] for e in record["request_log"] if e["status"] == 429]
    windows = {int(t // 1.0) for t in throttled}

    assert 0 == done.code, done.stderr
    assert [] == disagreements(read_report(report), record)
    # After a 429 only the requests already in flight can meet the closed
    # window: at most one per worker, in any window that saw a 429.
    assert len(throttled) <= 4 * len(windows)


@pytest.mark.e2e
async def test_sigterm_writes_a_complete_report_and_exits_143(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    """SIGTERM mid-run: every ID in the report once, a summary, exit 143."""
    sandbox = await sandbox_factory(orders=300)
    ids = [str(100_000 + n) for n in range(300)]
    source = write_ids(tmp_path / "ids.csv", ids)
    report, summary = tmp_path / "r.csv", tmp_path / "s.json"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "batchcancel", "cancel", str(source), "--report",
        str(report), "--summary", str(summary), "--base-url", sandbox.base_url,
        "--rate", "30/s", "--grace", "2", env=cli_env(),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    while sandbox.record()["requests"]["cancel"] < 20:
        await asyncio.sleep(0.05)

    process.send_signal(signal.SIGTERM)
    _, err = await asyncio.wait_for(process.communicate(), 10)
    rows = read_report(report)
    outcomes = Counter(r["outcome"] for r in rows)

    assert 143 == process.returncode
    assert sorted(ids) == sorted(r["order_id"] for r in rows)
    assert outcomes["not_attempted"] > 100
    assert 143 == read_json(summary)["exit_code"]
    assert [] == disagreements([r for r in rows if r["outcome"] != "not_attempted"],
                               sandbox.record())
    assert b"Traceback" not in err
    assert b"Unclosed" not in err


@pytest.mark.e2e
async def test_a_missing_input_is_a_clear_error_before_any_request(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    """An unreadable input gives 'Error: ...', exit 2, and sends nothing."""
    sandbox = await sandbox_factory(orders=5)

    done = await run_cli(["cancel", str(tmp_path / "nope.csv"), "--report",
                          str(tmp_path / "r.csv"), "--base-url", sandbox.base_url])

    assert 2 == done.code
    assert done.stderr.startswith("Error: ")
    assert "nope.csv" in done.stderr
    assert "Traceback" not in done.stderr
    assert 0 == sandbox.record()["requests"]["total"]


@pytest.mark.e2e
async def test_no_token_is_a_usage_error(tmp_path: Path) -> None:
    """Without THANKSIO_API_TOKEN the run refuses to start, exit 2."""
    done = await run_cli(["cancel", "-", "--base-url", "http://127.0.0.1:9/api/v2"],
                         env=cli_env(token=None), stdin=b"1\n")

    assert 2 == done.code
    assert "THANKSIO_API_TOKEN" in done.stderr


@pytest.mark.e2e
async def test_the_demo_runs_and_agrees_with_its_sandbox(tmp_path: Path) -> None:
    """`batchcancel demo` exits 0 and leaves its input, report and summary."""
    done = await run_cli(["demo", "--orders", "150", "--quiet"], cwd=tmp_path,
                         env=cli_env(token=None))

    assert 0 == done.code, done.stderr[-2000:]
    assert "report agrees with the sandbox" in done.stderr
    assert {"batchcancel-demo-ids.csv", "batchcancel-demo-report.csv",
            "batchcancel-demo-summary.json"} <= set(os.listdir(tmp_path))


async def start_cli(args: list[str], **extra: Any) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "batchcancel", *args, env=cli_env(),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, **extra)


@pytest.mark.e2e
async def test_ids_piped_in_slowly_are_sent_as_they_arrive(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    """Without preflight, an ID on an open pipe is cancelled before the pipe ends."""
    sandbox = await sandbox_factory(orders=5, seed=9)
    process = await start_cli(["cancel", "-", "--no-preflight", "--report",
                               str(tmp_path / "r.csv"), "--base-url",
                               sandbox.base_url, "--rate", "off"])
    assert process.stdin is not None
    process.stdin.write(b"100001\n")
    await process.stdin.drain()

    for _ in range(100):
        if sandbox.record()["requests"]["cancel"]:
            break
        await asyncio.sleep(0.05)
    sent_while_open = sandbox.record()["requests"]["cancel"]
    process.stdin.close()
    await asyncio.wait_for(process.wait(), 20)

    assert 1 == sent_while_open
    assert 0 == process.returncode


@pytest.mark.e2e
async def test_a_signal_while_stdin_is_silent_stops_within_the_grace(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    """SIGINT while waiting on an open, silent pipe: exit 130, rows for what came.

    (The run once waited for the pipe to close, ignoring every signal.)"""
    sandbox = await sandbox_factory(orders=5, seed=9)
    report = tmp_path / "r.csv"
    process = await start_cli(["cancel", "-", "--report", str(report), "--grace",
                               "1", "--base-url", sandbox.base_url])
    assert process.stdin is not None
    process.stdin.write(b"100001\n100002\n")
    await process.stdin.drain()
    await asyncio.sleep(1.0)

    process.send_signal(signal.SIGINT)
    _, err = await asyncio.wait_for(process.communicate(), 10)
    rows = read_report(report)

    assert 130 == process.returncode
    assert ["100001", "100002"] == sorted(r["order_id"] for r in rows)
    assert {"not_attempted"} == {r["outcome"] for r in rows}
    assert b"not read past line" in err
    assert b"Traceback" not in err


@pytest.mark.e2e
async def test_running_the_same_job_twice_counts_no_refund_twice(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    """A second run right after the first claims none of the first run's refunds.

    (A run started in the same second once counted them again.)"""
    sandbox = await sandbox_factory(orders=100, seed=21)
    source = write_ids(tmp_path / "ids.csv", [str(100_000 + n) for n in range(100)])
    base = ["cancel", str(source), "--base-url", sandbox.base_url, "--rate", "off"]

    for mode in ([], ["--no-preflight"]):
        await run_cli([*base, *mode, "--report", str(tmp_path / "first.csv")])
        again = await run_cli([*base, *mode, "--report", str(tmp_path / "again.csv")])
        summary = read_json(tmp_path / "again-summary.json")

        assert 0 == again.code, again.stderr
        assert 0 == summary["outcomes"]["cancelled"], mode
        assert 0 == summary["refunded_credits"]["cents"], mode


@pytest.mark.e2e
@pytest.mark.parametrize("outputs", [
    ["--report", "same.csv", "--summary", "same.csv"],
    ["--report", "ids.csv"],
    ["--report", "r.csv", "--summary", "missing/s.json"],
])
async def test_bad_output_paths_are_refused_before_any_request(
    sandbox_factory: SandboxFactory, tmp_path: Path, outputs: list[str]
) -> None:
    """Outputs that collide with each other or the input, or cannot be written,
    stop the run before it sends anything."""
    sandbox = await sandbox_factory(orders=5)
    write_ids(tmp_path / "ids.csv", ["100001"])

    done = await run_cli(["cancel", "ids.csv", *outputs, "--base-url",
                          sandbox.base_url], cwd=tmp_path)

    assert 2 == done.code
    assert done.stderr.startswith("Error: ")
    assert 0 == sandbox.record()["requests"]["total"]
    assert "100001" in (tmp_path / "ids.csv").read_text()
