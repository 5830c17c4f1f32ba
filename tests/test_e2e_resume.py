"""End to end, issue 4: killed with SIGKILL and resumed, nothing lost or doubled."""

from __future__ import annotations

import asyncio
import random
import signal
import sys
from pathlib import Path

import pytest
from conftest import SandboxFactory
from support import FAST, cli_env, disagreements, read_json, read_report, run_cli

from batchcancel.sandbox import Faults

FAULTS = Faults(server_error=0.02, drop_before=0.01, drop_after=0.02,
                late_answer=0.01, garbled_body=0.01, late_delay=1.0)



def outcome_set(report: Path) -> set[tuple[str, str, str]]:
    return {(r["order_id"], r["outcome"], r["refunded_credits"])
            for r in read_report(report)}


@pytest.mark.e2e
async def test_kill_9_and_resume_equals_an_uninterrupted_run(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    """Three SIGKILLs, three resumes: the rows of a run never interrupted, and
    refunded credits equal to the sandbox's, each counted once."""
    ids = [100_000 + n for n in range(1000)]
    source = tmp_path / "ids.csv"
    source.write_text("order_id\n" + "".join(f"{i}\n" for i in ids))
    rand = random.Random(4)

    calm = await sandbox_factory(orders=1000, seed=31, faults=FAULTS)
    baseline = await run_cli(["cancel", str(source), "--report",
                              str(tmp_path / "calm.csv"), "--base-url",
                              calm.base_url, *FAST])

    sandbox = await sandbox_factory(orders=1000, seed=31, faults=FAULTS)
    report = tmp_path / "report.csv"
    args = ["cancel", str(source), "--report", str(report), "--base-url",
            sandbox.base_url, *FAST, "--rate", "200/s"]
    for _ in range(3):
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "batchcancel", *args, env=cli_env(),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        target = sandbox.record()["requests"]["cancel"] + rand.randint(20, 150)
        while (sandbox.record()["requests"]["cancel"] < target
               and process.returncode is None):
            await asyncio.sleep(0.01)
        if process.returncode is None:
            process.send_signal(signal.SIGKILL)
        await process.wait()
    resumed = await run_cli(args)
    record = sandbox.record()
    rows = read_report(report)

    assert 0 == baseline.code, baseline.stderr[-2000:]
    assert 0 == resumed.code, resumed.stderr[-2000:]
    assert sorted(map(str, ids)) == sorted(r["order_id"] for r in rows)
    assert [] == disagreements(rows, record)
    assert outcome_set(tmp_path / "calm.csv") == outcome_set(report)
    assert record["refunded_credits_total"] == read_json(
        tmp_path / "report-summary.json")["refunded_credits"]["cents"]


@pytest.mark.e2e
async def test_a_finished_job_run_again_sends_nothing(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    """The same command after a complete run resends nothing, same report."""
    sandbox = await sandbox_factory(orders=50, seed=32)
    source = tmp_path / "ids.csv"
    source.write_text("".join(f"{100_000 + n}\n" for n in range(50)))
    args = ["cancel", str(source), "--report", str(tmp_path / "r.csv"),
            "--base-url", sandbox.base_url, "--rate", "off", "--no-preflight"]

    await run_cli(args)
    first = outcome_set(tmp_path / "r.csv")
    sent = sandbox.record()["requests"]["total"]
    again = await run_cli(args)

    assert 0 == again.code, again.stderr
    assert sent == sandbox.record()["requests"]["total"]
    assert first == outcome_set(tmp_path / "r.csv")


@pytest.mark.e2e
async def test_a_journal_of_another_base_url_is_refused(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    """Resuming against another server is refused with a clear message."""
    one = await sandbox_factory(orders=5)
    two = await sandbox_factory(orders=5)
    source = tmp_path / "ids.csv"
    source.write_text("100001\n")
    base = ["cancel", str(source), "--report", str(tmp_path / "r.csv"),
            "--rate", "off"]

    await run_cli([*base, "--base-url", one.base_url])
    refused = await run_cli([*base, "--base-url", two.base_url])

    assert 2 == refused.code
    assert "another base URL" in refused.stderr
    assert 0 == two.record()["requests"]["total"]


@pytest.mark.e2e
async def test_an_outage_ends_the_run_resumable_and_a_rerun_finishes_it(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    """The API answers only 503s: the run gives up after --outage-limit with
    every order not_attempted and exit 1, having sent a handful of requests,
    not a storm; once the API is back, the same command settles them all."""
    ids = [100_000 + n for n in range(60)]
    source = tmp_path / "ids.csv"
    source.write_text("order_id\n" + "".join(f"{i}\n" for i in ids))
    sandbox = await sandbox_factory(orders=60, seed=5,
                                    faults=Faults(server_error=1.0))
    report = tmp_path / "report.csv"
    args = ["cancel", str(source), "--report", str(report), "--base-url",
            sandbox.base_url, *FAST, "--outage-limit", "3s", "--no-preflight"]

    down = await run_cli(args)
    summary = read_json(tmp_path / "report-summary.json")
    sent_while_down = sandbox.record()["requests"]["cancel"]
    sandbox.set_faults(Faults())
    back = await run_cli(args)
    rows = read_report(report)

    assert 1 == down.code, down.stderr[-2000:]
    assert {"not_attempted": 60} == {k: v for k, v in summary["outcomes"].items() if v}
    assert "run the same command again" in summary["stop_reason"]
    assert "run.paused" in down.stderr
    assert sent_while_down < 60  # paused, not each order's retries
    assert 0 == back.code, back.stderr[-2000:]
    assert sorted(map(str, ids)) == sorted(r["order_id"] for r in rows)
    assert [] == disagreements(rows, sandbox.record())
