"""Progress: the figures, the off-terminal event, and the live bar on a
pseudo-terminal against the sandbox."""

from __future__ import annotations

import asyncio
import fcntl
import io
import json
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
from conftest import SandboxFactory
from structlog.testing import capture_logs
from support import cli_env, read_report, run_cli

from batchcancel.ids import OrderRef
from batchcancel.logs import Console
from batchcancel.outcomes import Outcome, Row
from batchcancel.plan import Planned, Schedule
from batchcancel.progress import (
    Figures,
    Position,
    Progress,
    RateMeter,
    describe,
    duration,
    time_left,
)
from batchcancel.report import money

EVENT_KEYS = {"done", "read", "total", "rate_per_s", "eta_s", "refunded_credits",
              "outcomes", "window_closes_in_s"}


def row(outcome: Outcome, credits: int = 0, attempts: int = 1) -> Row:
    return Row(order_id=1, outcome=outcome, source="ids.csv", line=2,
               refunded_credits=credits, attempts=attempts)


class Clock:
    def __init__(self, at: float = 100.0) -> None:
        self.at = at

    def __call__(self) -> float:
        return self.at


def test_money_has_thousands_separators_and_exact_cents() -> None:
    """Integer cents become dollars with commas, never through a float."""
    assert "$1,234.56" == money(123456)
    assert "$0.07" == money(7)
    assert "-$1,000,000.00" == money(-100_000_000)


def test_the_rate_is_that_of_the_last_span() -> None:
    """1/s for ten seconds, then 5/s: after ten more, the rate is 5/s."""
    meter = RateMeter(0.0, span=10.0)
    for second in range(1, 21):
        done = second if second <= 10 else 10 + 5 * (second - 10)
        rate = meter.rate(float(second), done)

    assert 5.0 == pytest.approx(rate)


def test_time_left_is_unknown_without_a_total_or_a_pace() -> None:
    """No total (still reading) or no pace yet: no guess."""
    assert time_left(10, None, 2.0) is None
    assert time_left(10, 20, 0.0) is None
    assert 5.0 == time_left(10, 20, 2.0)
    assert 0.0 == time_left(20, 20, 0.0)


def test_durations_read_like_a_clock() -> None:
    """Hours and minutes, minutes and seconds, or seconds."""
    assert "1h02m" == duration(3725)
    assert "3m05s" == duration(185)
    assert "42s" == duration(42.2)
    assert "?" == duration(None)


def test_the_bar_text_carries_every_figure() -> None:
    """Done of total, pace, time left, dollars, counts and the nearest window."""
    figures = Figures(done=120, read=500, total=500, rate=3.9, eta_s=97,
                      refunded_credits=123456, outcomes={"cancelled": 100,
                                                         "not_found": 20},
                      window_closes_in_s=723)

    head, detail = describe(figures)

    assert "120/500 done · 3.9/s · 1m37s left" == head
    assert ("$1,234.56 refunded · cancelled 100, not_found 20 · "
            "nearest window closes in 12m03s") == detail


def test_while_reading_the_bar_shows_what_was_read_so_far() -> None:
    """Streaming: the total is not known, so the count read so far is shown."""
    figures = Figures(done=3, read=40, total=None, rate=1.0, eta_s=None,
                      refunded_credits=0, outcomes={}, window_closes_in_s=None)

    assert "3 done of 40 read so far · 1.0/s" == describe(figures)[0]


def test_off_a_terminal_each_tick_is_a_run_progress_event() -> None:
    """The event carries the bar's figures as keys."""
    clock = Clock()
    progress = Progress(Console(io.StringIO()), clock=clock, wall=lambda: 1000.0)
    progress.record(row(Outcome.CANCELLED, 250))
    progress.record(row(Outcome.NOT_FOUND))
    progress.record(row(Outcome.ALREADY_CANCELLED, attempts=0))
    clock.at += 2

    with capture_logs() as events:
        progress.tick(Position(read=4, total=4, deadline=1090.0))

    event = events[0]
    assert "run.progress" == event["event"]
    assert EVENT_KEYS <= set(event)
    assert (3, 4, 4) == (event["done"], event["read"], event["total"])
    assert 1.0 == event["rate_per_s"]  # two answered rows in two seconds
    assert 1.0 == event["eta_s"]
    assert 250 == event["refunded_credits"]
    assert {"already_cancelled": 1, "cancelled": 1, "not_found": 1} == event[
        "outcomes"]
    assert 90.0 == event["window_closes_in_s"]


async def test_off_a_terminal_events_come_every_interval() -> None:
    """show() waits an interval, then logs, until it is cancelled."""
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) > 3:
            raise asyncio.CancelledError

    progress = Progress(Console(io.StringIO()), sleep=sleep)
    with capture_logs() as events, pytest.raises(asyncio.CancelledError):
        await progress.show(lambda: Position(0, None, None), interval=5.0)

    assert [5.0] * 4 == waits
    assert 3 == len([e for e in events if e["event"] == "run.progress"])


async def test_quiet_shows_nothing() -> None:
    """--quiet: no event, no bar."""
    progress = Progress(Console(io.StringIO()), quiet=True)
    with capture_logs() as events:
        await progress.show(lambda: Position(0, None, None), interval=0.0)
        progress.finish(Position(0, 0, None))

    assert [] == events


# -- end to end -------------------------------------------------------------

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def on_a_terminal(args: list[str], limit_s: float = 60) -> tuple[int, str]:
    """Run the CLI with stdout and stderr on a 160-column pseudo-terminal."""
    pid, master = pty.fork()
    if pid == 0:  # the child
        fcntl.ioctl(1, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
        os.execve(sys.executable, [sys.executable, "-m", "batchcancel", *args],
                  cli_env(TERM="xterm"))
    seen = b""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
    else:
        os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), seen.decode(errors="replace")


def frames_text(raw: str) -> list[str]:
    """Every piece of text written, escapes and carriage returns taken out."""
    return [piece.strip() for line in raw.split("\n")
            for piece in ANSI.sub("\r", line).split("\r") if piece.strip()]


def final_screen(raw: str) -> list[str]:
    """What the terminal shows at the end: a small emulator of the only
    controls rich and the log use (CR, LF, erase line, cursor up)."""
    screen: list[list[str]] = [[]]
    row = col = 0
    for token in re.split(r"(\x1b\[[0-9;?]*[A-Za-z]|\r|\n)", raw):
        if token == "\n":
            row, col = row + 1, 0
            screen.extend([] for _ in range(row + 1 - len(screen)))
        elif token == "\r":
            col = 0
        elif token == "\x1b[2K":
            screen[row] = []
        elif re.fullmatch(r"\x1b\[\d*A", token):
            row = max(0, row - int(token[2:-1] or 1))
        elif token and not token.startswith("\x1b"):
            line = screen[row] + [" "] * max(0, col - len(screen[row]))
            line[col:col + len(token)] = token
            screen[row], col = line, col + len(token)
    return ["".join(cells).rstrip() for cells in screen if "".join(cells).strip()]


@pytest.mark.e2e
async def test_on_a_terminal_the_bar_shows_the_figures_and_the_end(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    """The bar has done/total, pace, time left, dollars, counts and the
    nearest window; it ends at total/total; log lines stay whole."""
    sandbox = await sandbox_factory(orders=60, seed=31)
    source = tmp_path / "ids.csv"
    source.write_text("".join(f"{100_000 + n}\n" for n in range(60)))
    args = ["cancel", str(source), "--yes", "--report", str(tmp_path / "r.csv"),
            "--base-url", sandbox.base_url, "--rate", "30/s"]

    code, raw = await asyncio.to_thread(on_a_terminal, args)
    written, screen = frames_text(raw), final_screen(raw)
    record = sandbox.record()
    refunded = sum(o["refunded_credits"] for o in record["orders"].values())

    assert 0 == code, raw[-2000:]
    assert any(re.search(r"^\d+/60 done · [\d.]+/s · \S+ left$", t) for t in written)
    assert any(re.search(r"^\$\d[\d,]*\.\d\d refunded · .*\bcancelled \d+.* · "
                         r"nearest window closes in \d+[hm]\d\d[ms]$", t)
               for t in written)
    bar = [i for i, ln in enumerate(screen) if "60/60 done" in ln]
    assert 1 == len(bar), screen
    assert screen[bar[0] + 1].startswith(f"{money(refunded)} refunded · ")
    for line in screen[:bar[0]]:  # above the bar: whole log lines only
        assert re.match(r"\d{4}-\d\d-\d\dT\S+ \[(info|warning) *\] [a-z_.]+ ",
                        line), screen
    assert any("preflight.finished" in ln for ln in screen)
    assert any("run.finished" in ln for ln in screen)
    assert screen[-1].startswith("  report: ")
    assert 60 == len(read_report(tmp_path / "r.csv"))


@pytest.mark.e2e
async def test_quiet_on_a_terminal_prints_nothing_but_errors(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    """--quiet: no bar, no summary, no info or warning event."""
    sandbox = await sandbox_factory(orders=20, seed=32)
    source = tmp_path / "ids.csv"
    source.write_text("".join(f"{100_000 + n}\n" for n in range(20)))
    args = ["cancel", str(source), "--yes", "--quiet", "--report",
            str(tmp_path / "r.csv"), "--base-url", sandbox.base_url, "--rate", "off"]

    code, raw = await asyncio.to_thread(on_a_terminal, args)

    assert 0 == code
    assert "" == raw


@pytest.mark.e2e
async def test_off_a_terminal_the_run_ends_with_a_progress_event(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    """JSON lines on stderr hold a final run.progress with the bar's keys."""
    sandbox = await sandbox_factory(orders=30, seed=33)

    done = await run_cli(["cancel", "-", "--report", str(tmp_path / "r.csv"),
                          "--base-url", sandbox.base_url, "--rate", "off"],
                         stdin=b"".join(b"%d\n" % (100_000 + n) for n in range(30)))
    events = [json.loads(line) for line in done.stderr.splitlines()
              if line.startswith("{")]
    progress = [e for e in events if e["event"] == "run.progress"]

    assert 0 == done.code, done.stderr
    assert "" == done.stdout
    assert progress
    assert EVENT_KEYS <= set(progress[-1])
    assert (30, 30) == (progress[-1]["done"], progress[-1]["total"])
    assert 30 == sum(progress[-1]["outcomes"].values())


def test_starting_up_imports_neither_rich_nor_aiohttp_nor_structlog() -> None:
    """--version and --help stay fast: the heavy imports wait for a run."""
    code = ("import sys, batchcancel.cli; "
            "print([m for m in ('aiohttp', 'rich', 'structlog') if m in sys.modules])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True,
                          text=True, check=True)

    assert "[]" == done.stdout.strip()


def test_the_nearest_window_is_that_of_an_order_still_waiting() -> None:
    """Handed-out and passed orders no longer count; none left: None."""
    orders = [Planned(OrderRef(n, "in", n), deadline, 100)
              for n, deadline in ((1, 50.0), (2, 20.0), (3, 5.0), (4, None))]
    schedule = Schedule(orders, now=0.0, rate=1.0)

    assert 5.0 == schedule.nearest_deadline(0.0)
    assert 20.0 == schedule.nearest_deadline(6.0)  # order 3's window has passed

    first = schedule.next(0.0, 1.0)
    assert first is not None
    assert 3 == first.ref.order_id
    assert 20.0 == schedule.nearest_deadline(0.0)
    assert schedule.nearest_deadline(60.0) is None
