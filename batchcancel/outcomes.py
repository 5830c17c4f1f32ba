"""Outcomes and the pure classification of one answer from the API.

Nothing here does I/O.  ``classify`` turns one parsed answer into a
decision: a final outcome, another attempt, or the end of the whole run.

How "cancelled" is told apart from "already cancelled"
------------------------------------------------------
The cancel endpoint answers 200 with ``status: cancelled`` both when this
call cancelled the order and (as far as the docs let us tell) when the order
had been cancelled long before.  When the preflight's order list showed
the order not yet cancelled, the answer is this run's cancel.  Otherwise
the answer's ``updated_at`` decides: an order whose ``updated_at`` is in a
later second than the one the run started in was cancelled by this run; an
earlier (or the same) second means it was cancelled before, or may have
been, and it refunds nothing now.  When ``updated_at`` is missing or
unreadable, the order counts as cancelled by this run only if one of this
run's own earlier attempts may have been carried out (a timeout, a dropped
connection, an unreadable answer); otherwise it is ``already_cancelled``.
The rule errs towards never claiming a refund this run did not cause.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from batchcancel.ratelimit import RateHeaders


class Outcome(StrEnum):
    """The one final outcome of each distinct input ID."""

    CANCELLED = "cancelled"
    ALREADY_CANCELLED = "already_cancelled"
    NOT_CANCELLABLE = "not_cancellable"
    NOT_FOUND = "not_found"
    INVALID_INPUT = "invalid_input"
    ERROR = "error"
    NOT_ATTEMPTED = "not_attempted"
    WOULD_CANCEL = "would_cancel"  # dry run only: the list shows it cancellable


#: Outcomes that are the API's own final word on an order.
ANSWERED = frozenset({Outcome.CANCELLED, Outcome.ALREADY_CANCELLED,
                      Outcome.NOT_CANCELLABLE, Outcome.NOT_FOUND})

CANCELLED_STATUSES = frozenset({"cancelled", "canceled"})
REVIEWING = "reviewing"


def normalise_status(raw: object) -> str | None:
    """Lower-case a status string; ``canceled`` becomes ``cancelled``."""
    if not isinstance(raw, str) or not raw.strip():
        return None
    status = raw.strip().lower()
    return "cancelled" if status in CANCELLED_STATUSES else status


@dataclass(frozen=True, slots=True)
class OrderView:
    """The few fields of an order object that batchcancel ever reads."""

    status: str | None
    authorization_total: int | None
    sub_account_id: int | None
    updated_at: datetime | None


@dataclass(frozen=True, slots=True)
class Answer:
    """One HTTP answer, parsed but not judged."""

    http_status: int
    order: OrderView | None = None
    message: str | None = None
    readable: bool = True
    retry_after: str | None = None
    rate: RateHeaders | None = None


@dataclass(frozen=True, slots=True)
class Final:
    """The API has said its last word on this order."""

    outcome: Outcome
    order_status: str | None = None
    refunded_credits: int | None = None
    sub_account_id: int | None = None
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Retry:
    """Try this order again (if attempts remain)."""

    reason: str
    # The request may have been carried out although we cannot tell.
    maybe_applied: bool = False
    # A 429: every worker pauses, ``retry_after`` is the raw header.
    throttled: bool = False
    retry_after: str | None = None
    reset_in: float | None = None  # X-RateLimit-Reset, when a 429 has it


@dataclass(frozen=True, slots=True)
class StopRun:
    """The whole run must stop: the credentials (or the TLS peer) refused."""

    reason: str
    by: str = "credentials"  # RunStats.stopped_by, which picks the exit code


Decision = Final | Retry | StopRun

_ALREADY = re.compile(r"already\s+(been\s+)?cancel", re.IGNORECASE)
_REFUSED_OK = frozenset({400, 403, 409, 410, 412, 422, 423})
_AUTH = frozenset({401, 402, 403})
_RETRY_STATUS = frozenset({408, 425, 429})


def classify(answer: Answer, *, run_started: datetime,
             maybe_applied_before: bool, listed_open: bool = False,
             sent_before: bool = False) -> Decision:
    """Decide what one answer means for its order.

    ``listed_open``: the order list showed the order not cancelled when this
    run began, so a ``cancelled`` answer can only be this run's cancel.
    """
    status = answer.http_status
    if status in _AUTH and not _is_order_refusal(answer):
        return StopRun(f"credentials refused (HTTP {status})")
    if status == 429 or status in _RETRY_STATUS:
        return Retry(f"HTTP {status}", throttled=status == 429,
                     retry_after=answer.retry_after,
                     reset_in=answer.rate.reset_in if answer.rate else None)
    if status >= 500:
        return Retry(f"HTTP {status}", maybe_applied=True)
    if 300 <= status < 400:
        return Final(Outcome.ERROR, detail=f"redirect (HTTP {status}) not followed")
    if 200 <= status < 300:
        return _classify_order(answer, run_started,
                               maybe_applied_before or listed_open, listed_open,
                               sent_before)
    return _classify_refusal(answer)


_CREDENTIALS_MESSAGE = re.compile(
    r"^\s*(unauthori[sz]ed|unauthenticated|forbidden)\.?\s*$"
    r"|token|credential|api key|access key",
    re.IGNORECASE,
)


def _is_order_refusal(answer: Answer) -> bool:
    # A 403 whose message is about the order or the action ("This action is
    # unauthorized." is Laravel's wording for a policy refusal) refuses that
    # order only; a bare "Unauthorized", or one about the token, refuses the
    # credentials and stops the run.
    message = answer.message or ""
    return answer.http_status == 403 and bool(message) and not (
        _CREDENTIALS_MESSAGE.search(message))


def _classify_refusal(answer: Answer) -> Decision:
    status = answer.http_status
    message = answer.message
    if status == 404:
        if message is None:
            # An unknown *route* (a wrong base URL) also answers 404; only a
            # JSON message is taken as the API's word about the order.
            return Final(Outcome.ERROR, detail="HTTP 404 without a JSON message")
        return Final(Outcome.NOT_FOUND, detail=_clip(message))
    if message is not None and _ALREADY.search(message):
        return Final(Outcome.ALREADY_CANCELLED, refunded_credits=0,
                     detail=f"refused: {_clip(message)}")
    if status in _REFUSED_OK or message is not None:
        text = _clip(message) if message else f"HTTP {status}"
        return Final(Outcome.NOT_CANCELLABLE, detail=f"refused: {text}")
    return Final(Outcome.ERROR, detail=f"unexpected HTTP {status}")


def _classify_order(answer: Answer, run_started: datetime,
                    maybe_applied_before: bool, listed_open: bool = False,
                    sent_before: bool = False) -> Decision:
    order = answer.order
    if not answer.readable:
        return Retry("unreadable body", maybe_applied=True)
    if order is None or order.status is None:
        return Retry("answer without an order status", maybe_applied=True)

    if order.status == "cancelled":
        if listed_open:
            return _cancelled_now(order)
        return _classify_cancelled(order, run_started, maybe_applied_before,
                                   sent_before)
    if order.status == REVIEWING:
        # The API kept the order in review: nothing happened, try again.
        return Retry("order still reviewing after cancel")
    return Final(Outcome.NOT_CANCELLABLE, order_status=order.status,
                 refunded_credits=0, sub_account_id=order.sub_account_id,
                 detail=f"order is {order.status}")


def _classify_cancelled(order: OrderView, run_started: datetime,
                        maybe_applied_before: bool, sent_before: bool = False
                        ) -> Final:
    ours = cancelled_by_this_run(order.updated_at, run_started,
                                 maybe_applied_before, sent_before)
    if not ours:
        return Final(Outcome.ALREADY_CANCELLED, order_status="cancelled",
                     refunded_credits=0, sub_account_id=order.sub_account_id,
                     detail="cancelled before this run")
    return _cancelled_now(order)


def _cancelled_now(order: OrderView) -> Final:
    if order.authorization_total is None:
        return Final(Outcome.CANCELLED, order_status="cancelled",
                     sub_account_id=order.sub_account_id,
                     detail="authorization_total missing: refund unknown")
    return Final(Outcome.CANCELLED, order_status="cancelled",
                 refunded_credits=order.authorization_total,
                 sub_account_id=order.sub_account_id)


def needs_status_check(decision: Final, maybe_applied_before: bool) -> bool:
    """A refusal after an attempt that may have worked must be checked.

    "Already cancelled" or "cannot be cancelled" in 4xx form carries no order,
    so it cannot tell whether our own lost attempt is what cancelled it.
    """
    return (maybe_applied_before and decision.order_status is None
            and decision.outcome in {Outcome.ALREADY_CANCELLED,
                                     Outcome.NOT_CANCELLABLE})


def classify_status_check(answer: Answer, *, run_started: datetime,
                          refusal: Final, listed_open: bool = False,
                          sent_before: bool = False) -> Decision:
    """Decide an order from the track endpoint after ``needs_status_check``."""
    if answer.http_status in _AUTH:
        return StopRun(f"credentials refused (HTTP {answer.http_status})")
    if answer.http_status == 429 or answer.http_status >= 500:
        return Retry(f"status check: HTTP {answer.http_status}",
                     throttled=answer.http_status == 429,
                     retry_after=answer.retry_after)
    order = answer.order
    if answer.http_status == 200 and (order is None or order.status is None):
        # A garbled or empty 200 is a fault of this answer, not the API's
        # word: ask again, as for any other answer that could not be read.
        reason = "unreadable body" if not answer.readable else "no order status"
        return Retry(f"status check: {reason}")
    if answer.http_status != 200 or order is None or order.status is None:
        # No usable status: keep the refusal, and say it is unconfirmed.
        return Final(refusal.outcome, refunded_credits=0, detail=(
            f"{refusal.detail}; status check gave HTTP {answer.http_status}"))
    if order.status == "cancelled":
        if listed_open:
            return _cancelled_now(order)
        return _classify_cancelled(order, run_started, True, sent_before)
    return Final(Outcome.NOT_CANCELLABLE, order_status=order.status,
                 refunded_credits=0, sub_account_id=order.sub_account_id,
                 detail=f"{refusal.detail}; order is {order.status}")


def cancelled_by_this_run(updated_at: datetime | None, run_started: datetime,
                          maybe_applied_before: bool,
                          sent_before: bool = False) -> bool:
    """The rule of the module docstring, on its own so it can be tested.

    ``sent_before``: an interrupted run of this job sent this order a cancel
    whose answer was lost; then the job's own start second counts too.
    """
    if updated_at is None:
        return maybe_applied_before
    if sent_before:
        started = run_started.astimezone(UTC).replace(microsecond=0)
        return updated_at.astimezone(UTC) >= started
    # updated_at has whole seconds: only a later second than the start's is
    # surely after it.  (Counting the start's own second once counted the
    # cancels of a run that had ended a moment before.)
    started = run_started.astimezone(UTC).replace(microsecond=0)
    return updated_at.astimezone(UTC) > started


def _clip(message: str, limit: int = 120) -> str:
    # API messages are echoed into reports: keep them short and on one line.
    flat = " ".join(message.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


@dataclass(frozen=True, slots=True)
class Row:
    """One line of the report: a distinct order ID, or a rejected line."""

    order_id: int | None
    outcome: Outcome
    source: str
    line: int
    order_status: str | None = None
    # None means "not known": never a guess written down as zero.
    refunded_credits: int | None = 0
    http_status: int | None = None
    attempts: int = 0
    detail: str = ""
    sub_account_id: int | None = None
    input_value: str = ""
    # From the order list, when the preflight saw the order.
    credits_at_stake: int | None = None
    deadline: datetime | None = None
