"""The seeded order book and the two things that change an order: time and cancel.

An order is a frozen value. The book swaps in a new value when the review window of a
Reviewing order has closed (noticed lazily, whenever the order is looked at) or when a
cancel request reaches it, so every change is one pure step plus one assignment.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from enum import Enum

from ._config import STATUSES, SandboxConfig

# Amounts in cents that the API reference shows for small orders; bigger campaigns
# are drawn from a flat range.
SMALL_AMOUNTS = (49, 73, 73, 99, 99, 146, 267, 365)
SUB_ACCOUNTS = (66, 71, 88)
# (type, display_type, size)
KINDS = (
    ("postcard4x6", "4x6 Postcard", "4x6"),
    ("postcard6x9", "6x9 Postcard", "6x9"),
    ("postcard6x11", "6x11 Postcard", "6x11"),
    ("notecard", "Notecard", "5x7"),
    ("letter", "Letter", "8.5x11"),
)
HANDWRITING_STYLES = (4, 9, 14, 23)
FIRST_NAMES = ("Dana", "Luis", "Priya", "Tom", "Mei", "Ayo", "Greta", "Sam")
BUSINESSES = ("Acme Realty", "Bluebird Dental", "Oak & Pine", "Harbor Auto")
TIME_FORMATS = ("iso", "sql", "object")
SECONDS_PER_DAY = 86_400.0


class Verdict(Enum):
    """What a cancel request did to the order it named."""

    CANCELLED = "cancelled"
    ALREADY_CANCELLED = "already_cancelled"
    REFUSED = "refused"


@dataclass(frozen=True, slots=True)
class Order:
    """One order as the sandbox knows it, truth and presentation together."""

    id: int
    status: str
    initial_status: str
    created_at: float
    updated_at: float
    authorization_total: int
    sub_account_id: int | None
    kind: tuple[str, str, str]
    style: int
    message: str
    return_name: str
    recipients: int
    # 200 answers a refused cancel with the unchanged order, 400 or 409 with an error.
    refusal_status: int
    time_format: str
    refunded_credits: int = 0
    cancel_requests: int = 0
    cancelled_by_api: bool = False

    @property
    def grand_total(self) -> int:
        """The settled total, which the API drops to 0 on cancellation."""
        return 0 if self.status == "cancelled" else self.authorization_total

    def expired(self, now: float, review_window: float) -> Order:
        """This order after its review window has been checked against `now`."""
        closes_at = self.created_at + review_window
        if self.status != "reviewing" or now < closes_at:
            return self

        return replace(self, status="processing", updated_at=closes_at)

    def cancelled(self, now: float) -> tuple[Order, Verdict]:
        """This order after one cancel request, and what the request did."""
        if self.status == "cancelled":
            return self, Verdict.ALREADY_CANCELLED
        if self.status != "reviewing":
            return self, Verdict.REFUSED

        cancelled = replace(
            self,
            status="cancelled",
            updated_at=now,
            refunded_credits=self.authorization_total,
            cancelled_by_api=True,
        )
        return cancelled, Verdict.CANCELLED

    def as_record(self) -> dict[str, object]:
        """The order's line in the record of truth."""
        return {
            "status": self.status,
            "refunded_credits": self.refunded_credits,
            "authorization_total": self.authorization_total,
            "sub_account_id": self.sub_account_id,
            "cancelled_by_sandbox_api": self.cancelled_by_api,
            "cancel_requests": self.cancel_requests,
            "initial_status": self.initial_status,
            "refusal_status": self.refusal_status,
            "created_at_epoch": self.created_at,
            "updated_at_epoch": self.updated_at,
        }


class OrderBook:
    """All seeded orders, newest first for listing, by ID for everything else."""

    def __init__(self, config: SandboxConfig, rng: random.Random, now: float) -> None:
        self._review_window = config.review_window
        orders = seed_orders(config, rng, now)
        self._by_id = {order.id: order for order in orders}

        # created_at never changes, so the listing order is fixed once, here.
        newest_first = sorted(orders, key=lambda o: (o.created_at, o.id), reverse=True)
        self._newest_first = tuple(order.id for order in newest_first)
        self._by_sub_account = {
            sub: tuple(o.id for o in newest_first if o.sub_account_id == sub)
            for sub in {o.sub_account_id for o in orders}
        }

    def __contains__(self, order_id: int) -> bool:
        return order_id in self._by_id

    def sub_accounts(self) -> frozenset[int]:
        """The sub-account IDs that own at least one order."""
        return frozenset(sub for sub in self._by_sub_account if sub is not None)

    def get(self, order_id: int, now: float) -> Order | None:
        """The order as of `now`, or None when the book has no such ID."""
        order = self._by_id.get(order_id)
        if order is None:
            return None

        current = order.expired(now, self._review_window)
        self._by_id[order_id] = current
        return current

    def look(self, order_ids: Iterable[int], now: float) -> list[Order]:
        """The named orders as of `now`, skipping IDs the book does not hold."""
        found = (self.get(order_id, now) for order_id in order_ids)
        return [order for order in found if order is not None]

    def note_cancel_request(self, order_id: int) -> None:
        """Count one cancel request naming this order, whatever its answer."""
        order = self._by_id.get(order_id)
        if order is not None:
            self._by_id[order_id] = replace(
                order, cancel_requests=order.cancel_requests + 1
            )

    def cancel(self, order_id: int, now: float) -> tuple[Order, Verdict] | None:
        """Apply one cancel request; None when the book has no such ID."""
        order = self.get(order_id, now)
        if order is None:
            return None

        after, verdict = order.cancelled(now)
        self._by_id[order_id] = after
        return after, verdict

    def force(self, order_id: int, status: str, now: float) -> bool:
        """Set an order's status from outside the API; False when unknown.

        Not a cancel by the API: a forced ``cancelled`` refunds nothing that
        the record would count as this API's doing.
        """
        order = self.get(order_id, now)
        if order is None:
            return False
        self._by_id[order_id] = replace(order, status=status, updated_at=now)
        return True

    def listing(self, sub_account_id: int | None) -> tuple[int, ...]:
        """Order IDs newest first, all of them or one sub-account's."""
        if sub_account_id is None:
            return self._newest_first
        return self._by_sub_account.get(sub_account_id, ())

    def orders(self, now: float) -> list[Order]:
        """Every order as of `now`, by ascending ID."""
        return self.look(sorted(self._by_id), now)


def seed_orders(config: SandboxConfig, rng: random.Random, now: float) -> list[Order]:
    """Draw the whole order book; the same config and `now` give the same book."""
    statuses = _apportion(config.orders, config.mix(), rng)
    return [
        _seed_order(config, rng, config.first_id + index, status, now)
        for index, status in enumerate(statuses)
    ]


def _apportion(count: int, mix: Mapping[str, float], rng: random.Random) -> list[str]:
    # Exact shares (largest remainder) rather than independent draws, so a demo of
    # 2000 orders has exactly 1200 Reviewing ones; the shuffle spreads them over IDs.
    total = sum(mix.values())
    shares = {status: count * mix.get(status, 0) / total for status in STATUSES}
    counts = {status: int(share) for status, share in shares.items()}
    short = count - sum(counts.values())
    by_remainder = sorted(STATUSES, key=lambda s: counts[s] - shares[s])
    for status in by_remainder[:short]:
        counts[status] += 1

    statuses = [status for status in STATUSES for _ in range(counts[status])]
    rng.shuffle(statuses)
    return statuses


def _seed_order(
    config: SandboxConfig, rng: random.Random, order_id: int, status: str, now: float
) -> Order:
    # Every order makes the same draws in the same order whatever the config says,
    # so changing the refusal style or time format does not reshuffle the book.
    age_draw, life_draw = rng.random(), rng.random()
    amount = _draw_amount(rng)
    sub_account_id = rng.choice(SUB_ACCOUNTS) if rng.random() < 0.5 else None
    kind, style = rng.choice(KINDS), rng.choice(HANDWRITING_STYLES)
    first_name, business = rng.choice(FIRST_NAMES), rng.choice(BUSINESSES)
    refusal_coin, four_xx = rng.random(), rng.choice((400, 409))
    time_format = rng.choice(TIME_FORMATS)

    created_at, updated_at = _times(config, status, age_draw, life_draw, now)
    return Order(
        id=order_id,
        status=status,
        initial_status=status,
        created_at=created_at,
        updated_at=updated_at,
        authorization_total=amount,
        sub_account_id=sub_account_id,
        kind=kind,
        style=style,
        message=f"Thanks for choosing {business}, {first_name}! See you soon.",
        return_name=business,
        recipients=max(1, amount // 73),
        refusal_status=_refusal_status(config, refusal_coin, four_xx),
        time_format=(
            time_format
            if config.created_at_format == "mixed"
            else config.created_at_format
        ),
    )


def _times(
    config: SandboxConfig, status: str, age_draw: float, life_draw: float, now: float
) -> tuple[float, float]:
    window = config.review_window
    if status == "reviewing":
        created_at = _micro(now - age_draw * config.reviewing_max_age())
        return created_at, created_at

    # Everything else was placed before its window could still be open: up to 30
    # days ago, and at least a minute past the window's close.
    created_at = _micro(now - window - 60.0 - age_draw * 30 * SECONDS_PER_DAY)
    if status == "cancelled":
        # Cancelled by the customer while it was still Reviewing, long ago.
        return created_at, _micro(created_at + life_draw * window * 0.9)

    closed_at = created_at + window
    return created_at, _micro(closed_at + life_draw * (now - closed_at))


def _draw_amount(rng: random.Random) -> int:
    if rng.random() < 0.7:
        return rng.choice(SMALL_AMOUNTS)
    return rng.randint(1000, 5000)


def _refusal_status(config: SandboxConfig, coin: float, four_xx: int) -> int:
    if config.refusal_style == "200":
        return 200
    if config.refusal_style == "4xx":
        return four_xx
    return 200 if coin < 0.5 else four_xx


def _micro(timestamp: float) -> float:
    # Whole microseconds, so every rendering of a time shows the same instant.
    return round(timestamp, 6)
