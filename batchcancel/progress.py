"""Progress: a live line on a terminal, a ``run.progress`` event elsewhere."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable

import structlog

from batchcancel.logs import Console
from batchcancel.outcomes import Outcome, Row
from batchcancel.report import dollars

log = structlog.get_logger("batchcancel")


class Progress:
    """Counts finished rows and shows them every ``interval`` seconds."""

    def __init__(self, console: Console, *, quiet: bool = False) -> None:
        self._console = console
        self._quiet = quiet
        self._started = time.monotonic()
        self.done = 0
        self.credits = 0
        self.outcomes: Counter[str] = Counter()

    @property
    def on_terminal(self) -> bool:
        return self._console.is_terminal

    def record(self, row: Row) -> None:
        self.done += 1
        self.outcomes[row.outcome.value] += 1
        if row.outcome is Outcome.CANCELLED and row.refunded_credits:
            self.credits += row.refunded_credits

    def line(self, read: int) -> str:
        elapsed = max(time.monotonic() - self._started, 1e-6)
        rate = self.done / elapsed
        counts = " ".join(f"{k}={v}" for k, v in sorted(self.outcomes.items()))
        return (f"{self.done}/{read} done, {rate:.1f}/s, "
                f"${dollars(self.credits)} refunded  {counts}")

    async def show(self, distinct_ids: Callable[[], int], interval: float) -> None:
        """Run until cancelled, redrawing the line or logging an event."""
        if self._quiet:
            return
        while True:
            await asyncio.sleep(interval)
            self.tick(distinct_ids())

    def tick(self, read: int) -> None:
        if self._console.is_terminal:
            self._console.status(self.line(read))
        else:
            log.info("run.progress", done=self.done, read=read,
                     refunded_credits=self.credits, **dict(self.outcomes))

