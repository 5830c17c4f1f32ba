"""End to end, issue 3: preflight, deadline-first schedule, --rate auto,
dry run and the confirmation, against the sandbox on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pty
import select
import signal
import sys
import time
from collections import Counter
from pathlib import Path

import aiohttp
import pytest
from conftest import SandboxFactory
from support import TOKEN, cli_env, disagreements, read_json, read_report, run_cli

from bench.optimum import best_for_record


def write_ids(path: Path, ids: list[int]) -> Path:
    path.write_text("order_id\n" + "".join(f"{i}\n" for i in ids), encoding="utf-8")
    return path


@pytest.mark.e2e
async def test_deadline_first_recovers_99_percent_of_the_best_schedule(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    """A backlog too big for the window: ≥ 99% of the optimum, and no 429."""
    review_window, limit = 8.0, 40
    sandbox = await sandbox_factory(orders=1200, seed=11, status_mix={"reviewing": 1},
                                    review_window=review_window, rate_limit=limit,
                                    rate_window=1.0)
    source = write_ids(tmp_path / "ids.csv", list(range(100_000, 101_200)))
    report = tmp_path / "r.csv"

    done = await run_cli(["cancel", str(source), "--report", str(report),
                          "--base-url", sandbox.base_url, "--rate", "auto",
                          "--rate-window", "1", "--review-window", "8s",
                          "--concurrency", "4", "--max-retries", "2",
                          "--log-level", "debug", "--log-format", "json"],
                         limit_s=180)
    plans = [line for line in done.stderr.splitlines() if "plan.made" in line]
    record = sandbox.record()
    best = best_for_record(record, limit=limit, length=1.0,
                           review_window=review_window)
    recovered = record["refunded_credits_total"]

    assert 0 == done.code, done.stderr[-3000:]
    assert 0 == record["requests"]["throttled_429"]
    assert [] == disagreements(read_report(report), record)
    assert recovered >= 0.99 * best, (recovered, best, plans)
    assert recovered < sum(o["authorization_total"] for o in record["orders"].values())


OTHER = "/orders/list?items_per_page=1"


async def spend_budget(base_url: str, stop: asyncio.Event, per_second: float) -> int:
    """A second program using the same token: lists orders at a steady pace."""
    spent = 0
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession() as session:
        while not stop.is_set():
            async with session.get(f"{base_url}{OTHER}", headers=headers) as answer:
                await answer.read()
            spent += answer.status == 200
            await asyncio.sleep(1 / per_second)
    return spent


@pytest.mark.e2e
async def test_a_second_client_on_the_same_token_loses_no_order(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    """Another program spends part of the budget: no 429 of ours, and no
    lost order."""
    sandbox = await sandbox_factory(orders=300, seed=12, rate_limit=20,
                                    rate_window=1.0)
    ids = list(range(100_000, 100_300))
    source = write_ids(tmp_path / "ids.csv", ids)
    report = tmp_path / "r.csv"
    stop = asyncio.Event()
    other = asyncio.create_task(spend_budget(sandbox.base_url, stop, per_second=5))

    done = await run_cli(["cancel", str(source), "--report", str(report),
                          "--base-url", sandbox.base_url, "--rate-window", "1",
                          "--concurrency", "4"], limit_s=120)
    stop.set()
    spent = await other
    record = sandbox.record()
    rows = read_report(report)
    ours_throttled = [e for e in record["request_log"]
                      if e["status"] == 429 and not e["path"].endswith(OTHER)]

    around = [(round(e["t"], 3), e["status"], e["path"][-30:])
              for e in record["request_log"] for bad in ours_throttled
              if abs(e["t"] - bad["t"]) < 0.15]

    assert 0 == done.code, done.stderr[-3000:]
    assert spent > 0  # the other program really spent part of the budget
    assert [] == ours_throttled, around
    assert sorted(ids) == sorted(int(r["order_id"]) for r in rows)
    assert [] == disagreements(rows, record)


@pytest.mark.e2e
async def test_a_dry_run_sends_no_cancel_and_predicts_the_real_run(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    """--dry-run lists only; its credits at stake equal what a real run recovers."""
    sandbox = await sandbox_factory(orders=400, seed=13)
    source = write_ids(tmp_path / "ids.csv", [*range(100_000, 100_400), 999_999_999])

    dry = await run_cli(["cancel", str(source), "--dry-run", "--report",
                         str(tmp_path / "dry.csv"), "--base-url", sandbox.base_url])
    after_dry = sandbox.record()
    real = await run_cli(["cancel", str(source), "--report", str(tmp_path / "real.csv"),
                          "--base-url", sandbox.base_url, "--rate", "off"])
    dry_rows, dry_summary = read_report(tmp_path / "dry.csv"), read_json(
        tmp_path / "dry-summary.json")
    real_summary = read_json(tmp_path / "real-summary.json")

    assert (0, 0) == (dry.code, real.code), dry.stderr + real.stderr
    assert 0 == after_dry["requests"]["cancel"]
    assert after_dry["requests"]["list"] > 0
    assert all(r["deadline"] for r in dry_rows if r["outcome"] == "would_cancel")
    assert dry_summary["would_cancel_credits"]["cents"] == real_summary[
        "refunded_credits"]["cents"]
    assert Counter(r["outcome"] for r in dry_rows)["would_cancel"] == real_summary[
        "outcomes"]["cancelled"]


@pytest.mark.e2e
async def test_orders_the_list_settles_cost_no_cancel_request(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    """Listed cancelled or not cancellable: reported from the list, never sent."""
    sandbox = await sandbox_factory(orders=200, seed=14)
    source = write_ids(tmp_path / "ids.csv", list(range(100_000, 100_200)))
    report = tmp_path / "r.csv"

    done = await run_cli(["cancel", str(source), "--report", str(report),
                          "--base-url", sandbox.base_url, "--rate", "off"])
    record = sandbox.record()
    rows = read_report(report)
    from_list = [r for r in rows if r["detail"].startswith("order list:")]

    assert 0 == done.code, done.stderr
    assert [] == disagreements(rows, record)
    assert len(from_list) > 50
    assert all(record["orders"][r["order_id"]]["cancel_requests"] == 0
               for r in from_list)
    assert record["requests"]["cancel"] == len(rows) - len(from_list)


def drive_on_a_terminal(args: list[str], answer: bytes | None,
                        limit_s: float = 60) -> tuple[int, str]:
    """Run the CLI with a pseudo-terminal as its controlling terminal.

    Standard input is a pipe holding the IDs, as in ``... | batchcancel``;
    the question must come on the terminal all the same.
    """
    ids_read, ids_write = os.pipe()
    pid, master = pty.fork()
    if pid == 0:  # the child: stdin from the pipe, stdout/stderr on the pty
        os.close(ids_write)
        os.dup2(ids_read, 0)
        os.execve(sys.executable, [sys.executable, "-m", "batchcancel", *args],
                  cli_env())
    os.close(ids_read)
    os.write(ids_write, b"".join(b"%d\n" % i for i in range(100_000, 100_050)))
    os.close(ids_write)

    seen = b""
    deadline = time.monotonic() + limit_s
    answered = False
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
        if answer is not None and not answered and b"[y/N]" in seen:
            os.write(master, answer)
            answered = True
        finished, status = os.waitpid(pid, os.WNOHANG)
        if finished:
            break
    else:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise AssertionError(f"no exit within {limit_s}s: {seen.decode()[-500:]}")
    if not finished:
        _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), seen.decode(errors="replace")


@pytest.mark.e2e
async def test_the_confirmation_shows_the_stakes_and_no_sends_nothing(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    """On a terminal: count and credits shown; answering no sends no cancel."""
    sandbox = await sandbox_factory(orders=50, seed=15)
    args = ["cancel", "-", "--report", str(tmp_path / "r.csv"),
            "--base-url", sandbox.base_url, "--rate", "off"]

    code, screen = await asyncio.to_thread(drive_on_a_terminal, args, b"n\n")
    rows = read_report(tmp_path / "r.csv")

    assert "About to cancel" in screen
    assert "credits at stake" in screen
    assert 0 == sandbox.record()["requests"]["cancel"]
    assert 1 == code
    assert 50 == len(rows)


@pytest.mark.e2e
async def test_answering_yes_cancels(sandbox_factory: SandboxFactory,
                                     tmp_path: Path) -> None:
    """On a terminal, answering y goes ahead."""
    sandbox = await sandbox_factory(orders=50, seed=16)
    args = ["cancel", "-", "--report", str(tmp_path / "r.csv"),
            "--base-url", sandbox.base_url, "--rate", "off"]

    code, _ = await asyncio.to_thread(drive_on_a_terminal, args, b"y\n")

    assert 0 == code
    assert sandbox.record()["requests"]["cancel"] > 0


@pytest.mark.e2e
async def test_yes_skips_the_question(sandbox_factory: SandboxFactory,
                                      tmp_path: Path) -> None:
    """--yes on a terminal: no question, the cancels go out."""
    sandbox = await sandbox_factory(orders=50, seed=17)
    args = ["cancel", "-", "--yes", "--report", str(tmp_path / "r.csv"),
            "--base-url", sandbox.base_url, "--rate", "off"]

    code, screen = await asyncio.to_thread(drive_on_a_terminal, args, None)

    assert 0 == code, screen
    assert "[y/N]" not in screen
    assert sandbox.record()["requests"]["cancel"] > 0


@pytest.mark.e2e
async def test_without_a_terminal_the_run_does_not_ask(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    """In CI, cron or a pipe there is nobody to ask: the run proceeds."""
    sandbox = await sandbox_factory(orders=20, seed=18)

    done = await run_cli(["cancel", "-", "--report", str(tmp_path / "r.csv"),
                          "--base-url", sandbox.base_url, "--rate", "off"],
                         stdin=b"100001\n100002\n")

    assert 0 == done.code, done.stderr
    assert "[y/N]" not in done.stderr


def signal_at_the_prompt(args: list[str], signum: int) -> tuple[int, float]:
    """Start on a terminal, wait for the question, send ``signum``."""
    pid, master = pty.fork()
    if pid == 0:
        os.execve(sys.executable, [sys.executable, "-m", "batchcancel", *args],
                  cli_env())
    seen = b""
    deadline = time.monotonic() + 30
    while b"[y/N]" not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.1)
        if ready:
            seen += os.read(master, 4096)
    os.kill(pid, signum)
    sent = time.monotonic()
    while time.monotonic() < sent + 10:
        select.select([master], [], [], 0.1)
        with contextlib.suppress(OSError):
            os.read(master, 4096)
        finished, status = os.waitpid(pid, os.WNOHANG)
        if finished:
            return os.waitstatus_to_exitcode(status), time.monotonic() - sent
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError("the run hung at the prompt after the signal")


@pytest.mark.e2e
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143),
                                               (signal.SIGINT, 130)])
async def test_a_signal_at_the_prompt_stops_the_run(
    sandbox_factory: SandboxFactory, tmp_path: Path, signum: int, code: int
) -> None:
    """SIGTERM or SIGINT while the question waits: report written, no cancel.

    (The run once hung at the prompt until Enter was pressed.)"""
    sandbox = await sandbox_factory(orders=20, seed=19)
    source = write_ids(tmp_path / "ids.csv", list(range(100_000, 100_020)))
    args = ["cancel", str(source), "--report", str(tmp_path / "r.csv"),
            "--base-url", sandbox.base_url, "--rate", "off", "--grace", "1"]

    exit_code, took = await asyncio.to_thread(signal_at_the_prompt, args, signum)

    assert code == exit_code
    assert took < 5
    assert 20 == len(read_report(tmp_path / "r.csv"))
    assert 0 == sandbox.record()["requests"]["cancel"]


@pytest.mark.e2e
async def test_more_workers_than_the_limit_still_meet_no_429(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    """16 workers against 10 a second: one probe at each reopening, no 429.

    (Every waiting worker once sent its own "probe" at the reopening.)"""
    sandbox = await sandbox_factory(orders=120, seed=20, rate_limit=10,
                                    rate_window=1.0)
    source = write_ids(tmp_path / "ids.csv", list(range(100_000, 100_120)))

    done = await run_cli(["cancel", str(source), "--report", str(tmp_path / "r.csv"),
                          "--base-url", sandbox.base_url, "--rate-window", "1",
                          "--concurrency", "16"], limit_s=120)
    record = sandbox.record()

    assert 0 == done.code, done.stderr[-2000:]
    assert 0 == record["requests"]["throttled_429"]
    assert [] == disagreements(read_report(tmp_path / "r.csv"), record)
