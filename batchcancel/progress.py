"""Progress: a live bar on a terminal, a ``run.progress`` event elsewhere.

Both show the same ``Figures``, computed by pure functions from the counts
so far and two clocks.  The bar is drawn by rich, imported only once a
terminal is attached, so a run in CI or cron pays nothing for it.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple, TextIO

import structlog

from batchcancel.logs import Console
from batchcancel.outcomes import Outcome, Row
from batchcancel.report import money

log = structlog.get_logger("batchcancel")

#: Seconds of history behind "current rate": long enough to smooth the
#: bursts of a fixed rate window, short enough to show a slow-down.
RATE_SPAN = 10.0


class Position(NamedTuple):
    """What the run knows of its input and plan at one moment."""

    read: int                    # rows expected so far (distinct IDs, bad lines)
    total: int | None            # the same, once the whole input has been read
    deadline: float | None       # epoch seconds: the nearest window to close


@dataclass(frozen=True, slots=True)
class Figures:
    """One frame of progress, for the bar and the log event alike."""

    done: int
    read: int
    total: int | None
    rate: float                  # orders answered per second, lately
    eta_s: float | None
    refunded_credits: int
    outcomes: Mapping[str, int]
    window_closes_in_s: float | None

    def as_event(self) -> dict[str, Any]:
        """The keys of a ``run.progress`` event (rounded, never a sentence)."""
        return {
            "done": self.done, "read": self.read, "total": self.total,
            "rate_per_s": round(self.rate, 2),
            "eta_s": _rounded(self.eta_s),
            "refunded_credits": self.refunded_credits,
            "outcomes": dict(sorted(self.outcomes.items())),
            "window_closes_in_s": _rounded(self.window_closes_in_s),
        }


class RateMeter:
    """Rows per second over the last ``span`` seconds; times are given."""

    def __init__(self, at: float, span: float = RATE_SPAN) -> None:
        self._span = span
        self._samples: deque[tuple[float, int]] = deque([(at, 0)])

    def rate(self, at: float, done: int) -> float:
        self._samples.append((at, done))
        while len(self._samples) > 2 and at - self._samples[1][0] >= self._span:
            self._samples.popleft()
        first_at, first_done = self._samples[0]
        return (done - first_done) / (at - first_at) if at > first_at else 0.0


def time_left(done: int, total: int | None, rate: float) -> float | None:
    """Seconds until ``total`` at ``rate``; None when either is unknown."""
    if total is None:
        return None
    if done >= total:
        return 0.0
    return (total - done) / rate if rate > 0 else None


def duration(seconds: float | None) -> str:
    """``3725`` → ``"1h02m"``, ``185`` → ``"3m05s"``, ``None`` → ``"?"``."""
    if seconds is None:
        return "?"
    whole = max(0, round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def describe(figures: Figures) -> tuple[str, str]:
    """The bar's two lines of text: the pace, then what it has achieved."""
    f = figures
    if f.total is not None:
        head = f"{f.done}/{f.total} done · {f.rate:.1f}/s · {duration(f.eta_s)} left"
    else:
        head = f"{f.done} done of {f.read} read so far · {f.rate:.1f}/s"
    counts = ", ".join(f"{name} {count}" for name, count in sorted(f.outcomes.items()))
    parts = [f"{money(f.refunded_credits)} refunded", counts or "no outcome yet"]
    if f.window_closes_in_s is not None:
        parts.append(f"nearest window closes in {duration(f.window_closes_in_s)}")
    return head, " · ".join(parts)


class Progress:
    """Counts finished rows and shows them every ``interval`` seconds."""

    def __init__(self, console: Console, *, quiet: bool = False,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self._console = console
        self._quiet = quiet
        self._clock, self._wall, self._sleep = clock, wall, sleep
        self._meter = RateMeter(clock())
        self._bar: TerminalBar | None = None
        self.done = 0
        self.answered = 0  # rows that took a request: the pace of the run
        self.credits = 0
        self.outcomes: Counter[str] = Counter()

    @property
    def on_terminal(self) -> bool:
        return self._console.is_terminal

    def record(self, row: Row) -> None:
        self.done += 1
        self.answered += row.attempts > 0
        self.outcomes[row.outcome.value] += 1
        if row.outcome is Outcome.CANCELLED and row.refunded_credits:
            self.credits += row.refunded_credits

    def figures(self, position: Position) -> Figures:
        # Rows the order list settled arrive in one burst: the pace, and so
        # the time left, is that of the orders that needed a request.
        rate = self._meter.rate(self._clock(), self.answered)
        deadline = position.deadline
        return Figures(
            done=self.done, read=position.read, total=position.total, rate=rate,
            eta_s=time_left(self.done, position.total, rate),
            refunded_credits=self.credits, outcomes=dict(self.outcomes),
            window_closes_in_s=None if deadline is None else deadline - self._wall(),
        )

    async def show(self, position: Callable[[], Position], interval: float) -> None:
        """Run until cancelled, redrawing the bar or logging an event."""
        if self._quiet:
            return
        if self.on_terminal:
            self._bar = TerminalBar(self._console.stream)
            self._console.attach(self._bar)
            self.tick(position())  # a terminal shows the bar from the start
        while True:
            await self._sleep(interval)
            self.tick(position())

    def tick(self, position: Position) -> None:
        figures = self.figures(position)
        if self._bar is not None:
            if self._console.live:
                self._bar.update(figures)
        else:
            log.info("run.progress", **figures.as_event())

    def finish(self, position: Position) -> None:
        """Show the final figures once, and leave the bar on the screen."""
        if self._quiet:
            return
        self.tick(position)
        self.stop()

    def stop(self) -> None:
        """Stop drawing (the terminal gets its cursor back); idempotent."""
        self._console.detach()
        self._bar = None


class TerminalBar:
    """The live bar: rich's Live display, redrawn only when told to.

    Redrawing on the event loop's own ticks (no refresh thread) keeps every
    write to the terminal in one place, in the order it was made.
    """

    def __init__(self, stream: TextIO) -> None:
        from rich.console import Console as RichConsole

        self._rich = RichConsole(file=stream, highlight=False, markup=False,
                                 emoji=False)
        self._frame: Any = None
        self._live = self._started_live()

    def _started_live(self) -> Any:
        from rich.live import Live

        live = Live(console=self._rich, auto_refresh=False,
                    redirect_stdout=False, redirect_stderr=False)
        live.start()
        if self._frame is not None:
            live.update(self._frame, refresh=True)
        return live

    def print(self, text: str) -> None:
        from rich.text import Text

        self._rich.print(Text(text), soft_wrap=True)

    def update(self, figures: Figures) -> None:
        self._frame = _frame(figures)
        self._live.update(self._frame, refresh=True)

    def hide(self) -> None:
        # Erase the bar, so that the question is asked on a clean screen.
        self._live.transient = True
        self._live.stop()

    def unhide(self) -> None:
        # A fresh Live: a restarted one would first erase as many lines as
        # its last frame had, which are now the question and its answer.
        self._live = self._started_live()

    def close(self) -> None:
        self._live.stop()


def _frame(figures: Figures) -> Any:
    from rich.console import Group
    from rich.progress_bar import ProgressBar
    from rich.table import Table
    from rich.text import Text

    head, detail = describe(figures)
    total, done = figures.total, figures.done
    if total == 0:  # an empty input is complete; rich would divide by zero
        total = done = 1
    grid = Table.grid(padding=(0, 1))
    grid.add_row(ProgressBar(total=total, completed=done, width=30), Text(head))
    return Group(grid, Text(detail))


def _rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 1)
