"""Reading the input in a thread of its own, so a slow or silent stdin
never blocks the event loop, and never blocks a stop.

The thread hands over batches: large ones from regular files (fast), and
one item at a time from pipes and terminals, so that an ID piped in is
sent as soon as it arrives.  At most a few batches wait at a time, which
keeps memory flat on huge inputs.  The thread is a daemon: if the run
stops while it waits on a pipe that never closes, the process can still
exit.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Iterator
from typing import Generic, TypeVar

T = TypeVar("T")

_WAITING_BATCHES = 8


class ThreadedReader(Generic[T]):
    """Runs an iterator in a daemon thread; ``await next_batch()`` gets items."""

    def __init__(self, items: Iterator[T], *, batch: int) -> None:
        self._items = items
        self._batch = batch
        self._queue: asyncio.Queue[list[T] | BaseException | None] = asyncio.Queue()
        self._room = threading.Semaphore(_WAITING_BATCHES)
        self._quit = threading.Event()
        self._loop = asyncio.get_running_loop()
        self.finished = False
        threading.Thread(target=self._pump, name="batchcancel-input",
                         daemon=True).start()

    async def next_batch(self) -> list[T] | None:
        """The next items; None at the end of the input.  Errors of the
        reading thread are raised here."""
        got = await self._queue.get()
        self._room.release()
        if isinstance(got, BaseException):
            self.finished = True
            raise got
        if got is None:
            self.finished = True
        return got

    def abandon(self) -> None:
        """Stop reading at the next item (a read already waiting goes on)."""
        self._quit.set()
        self._room.release()

    def _pump(self) -> None:
        try:
            while not self._quit.is_set():
                batch = list(itertools.islice(self._items, self._batch))
                self._hand_over(batch or None)
                if not batch:
                    return
        except BaseException as exc:
            self._hand_over(exc)

    def _hand_over(self, got: list[T] | BaseException | None) -> None:
        self._room.acquire()
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._queue.put_nowait, got)
