"""The best possible schedule under a fixed-window rate limit.

Computed from the sandbox's record alone, without any batchcancel code, so
the client's own scheduler cannot mark its own homework. Both the
end-to-end test of the deadline-first plan and the benchmark use it.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Mapping
from typing import Any


def best_possible(orders: Mapping[str, Mapping[str, Any]], *, first_send: float,
                  window_origin: float, limit: int, length: float,
                  review_window: float, spent_in_first_window: int) -> int:
    """The most credits any client could recover under the same rate limit.

    The sandbox admits ``limit`` requests per fixed window. From the first
    cancel on, each window offers its slots at its start (the earliest
    moment), and the first window only what the order-list requests before
    it left (any schedule that knows the deadlines must read the list
    first). Walking orders by deadline and keeping the most valuable ones
    that fit in the slots before each deadline (a min-heap) gives the
    optimum.
    """
    first_window = math.floor((first_send - window_origin) / length)
    kept: list[int] = []
    for deadline, value in _reviewing_jobs(orders, review_window):
        heapq.heappush(kept, value)
        windows = 0
        if deadline > first_send:
            # windows k >= first_window whose first instant is before the deadline
            last = math.ceil((deadline - window_origin) / length) - 1
            windows = max(0, last - first_window + 1)
        slots = max(0, windows * limit - spent_in_first_window)
        while len(kept) > slots:
            heapq.heappop(kept)
    return sum(kept)


def best_for_record(record: Mapping[str, Any], *, limit: int, length: float,
                    review_window: float) -> int:
    """`best_possible` for a run the sandbox recorded, from its first cancel."""
    log = record["request_log"]
    first_cancel = min(e["t"] for e in log if e["path"].endswith("/cancel"))
    window = math.floor(first_cancel / length)
    spent = sum(1 for e in log
                if e["t"] < first_cancel and math.floor(e["t"] / length) == window)
    origin = float(record["started_at_epoch"])
    return best_possible(record["orders"], first_send=first_cancel + origin,
                         window_origin=origin, limit=limit, length=length,
                         review_window=review_window, spent_in_first_window=spent)


def _reviewing_jobs(orders: Mapping[str, Mapping[str, Any]],
                    review_window: float) -> Iterable[tuple[float, int]]:
    return sorted((o["created_at_epoch"] + review_window, o["authorization_total"])
                  for o in orders.values() if o["initial_status"] == "reviewing")
