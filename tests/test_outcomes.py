"""Classification: what one answer from the cancel endpoint means."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from batchcancel.outcomes import (
    Answer,
    Final,
    OrderView,
    Outcome,
    Retry,
    StopRun,
    cancelled_by_this_run,
    classify,
    classify_status_check,
    normalise_status,
)

STARTED = datetime(2026, 12, 4, 10, 0, 0, 400_000, tzinfo=UTC)
AFTER = STARTED + timedelta(seconds=3)
BEFORE = STARTED - timedelta(days=2)


def order(status: str | None, *, total: int | None = 267,
          updated: datetime | None = AFTER, sub: int | None = 66) -> OrderView:
    return OrderView(status=normalise_status(status), authorization_total=total,
                     sub_account_id=sub, updated_at=updated)


def judge(answer: Answer, *, maybe_applied: bool = False) -> object:
    return classify(answer, run_started=STARTED, maybe_applied_before=maybe_applied)


@pytest.mark.parametrize("raw", ["cancelled", "Cancelled", " CANCELED ", "canceled"])
def test_every_spelling_of_cancelled_is_one_status(raw: str) -> None:
    """Status is compared without case, and "canceled" means "cancelled"."""
    assert normalise_status(raw) == "cancelled"


def test_a_cancel_by_this_run_refunds_the_authorization_total() -> None:
    """200 + cancelled, updated during the run: refunded = authorization_total."""
    decision = judge(Answer(200, order("cancelled", total=267)))

    assert decision == Final(Outcome.CANCELLED, order_status="cancelled",
                             refunded_credits=267, sub_account_id=66)


def test_cancelled_long_before_the_run_refunds_nothing() -> None:
    """200 + cancelled with an old updated_at is already_cancelled, 0 credits."""
    decision = judge(Answer(200, order("cancelled", updated=BEFORE)))

    assert isinstance(decision, Final)
    assert (Outcome.ALREADY_CANCELLED, 0) == (decision.outcome,
                                              decision.refunded_credits)


def test_updated_in_the_same_second_as_the_start_is_not_claimed() -> None:
    """A cancel in the start's own second may be the previous run's: not ours.

    (Claiming it once counted the refunds of a run that had just ended.)"""
    same_second = STARTED.replace(microsecond=0)
    next_second = same_second + timedelta(seconds=1)

    assert not cancelled_by_this_run(same_second, STARTED, maybe_applied_before=False)
    assert cancelled_by_this_run(next_second, STARTED, maybe_applied_before=False)


def test_listed_open_makes_a_cancelled_answer_ours_whatever_the_clock() -> None:
    """The order list showed it open before the run: the cancel is this run's."""
    decision = classify(Answer(200, order("cancelled", updated=None)),
                        run_started=STARTED, maybe_applied_before=False,
                        listed_open=True)

    assert isinstance(decision, Final)
    assert (Outcome.CANCELLED, 267) == (decision.outcome, decision.refunded_credits)


@pytest.mark.parametrize(("maybe_applied", "expected"), [
    (True, Outcome.CANCELLED),
    (False, Outcome.ALREADY_CANCELLED),
])
def test_without_updated_at_only_our_own_earlier_attempt_counts(
    maybe_applied: bool, expected: Outcome
) -> None:
    """No updated_at: a cancel is ours only after our own ambiguous attempt."""
    decision = judge(Answer(200, order("cancelled", updated=None)),
                     maybe_applied=maybe_applied)

    assert isinstance(decision, Final)
    assert expected == decision.outcome


def test_an_ambiguous_attempt_never_claims_an_old_cancel() -> None:
    """After a timeout, an order cancelled two days ago is still not ours."""
    decision = judge(Answer(200, order("cancelled", updated=BEFORE)),
                     maybe_applied=True)

    assert isinstance(decision, Final)
    assert Outcome.ALREADY_CANCELLED == decision.outcome


def test_grand_total_is_never_read_as_the_refund() -> None:
    """The refund comes from authorization_total; missing means unknown, not 0."""
    decision = judge(Answer(200, order("cancelled", total=None)))

    assert isinstance(decision, Final)
    assert (Outcome.CANCELLED, None) == (decision.outcome, decision.refunded_credits)


@pytest.mark.parametrize("status", ["fulfilled", "Processing", "printed",
                                    "paused", "error", "teleported"])
def test_a_200_with_another_status_is_not_cancellable(status: str) -> None:
    """A 200 alone proves nothing: any other status, known or not, is refused."""
    decision = judge(Answer(200, order(status)))

    assert decision == Final(Outcome.NOT_CANCELLABLE, order_status=status.lower(),
                             refunded_credits=0, sub_account_id=66,
                             detail=f"order is {status.lower()}")


@pytest.mark.parametrize(("http", "message"), [
    (400, "Order cannot be cancelled"),
    (409, "Order is being printed"),
    (422, "Cannot cancel"),
])
def test_a_4xx_refusal_is_not_cancellable_with_its_message(http: int,
                                                           message: str) -> None:
    """A refusal in 4xx form is final and records the API's message."""
    decision = judge(Answer(http, message=message))

    assert decision == Final(Outcome.NOT_CANCELLABLE, detail=f"refused: {message}")


def test_a_4xx_saying_already_cancelled_is_already_cancelled() -> None:
    """A refusal that says the order was already cancelled refunds nothing."""
    decision = judge(Answer(400, message="Order has already been cancelled"))

    assert isinstance(decision, Final)
    assert Outcome.ALREADY_CANCELLED == decision.outcome


def test_404_with_a_message_is_not_found() -> None:
    """An unknown order answers 404 {"message": "Not Found"}."""
    decision = judge(Answer(404, message="Not Found"))

    assert decision == Final(Outcome.NOT_FOUND, detail="Not Found")


def test_404_without_a_json_message_is_an_error() -> None:
    """A bare 404 may be a wrong base URL, so it is never taken as not_found."""
    decision = judge(Answer(404, readable=False))

    assert isinstance(decision, Final)
    assert Outcome.ERROR == decision.outcome


@pytest.mark.parametrize(("http", "message"), [
    (401, "Unauthenticated."), (403, "Unauthorized"), (403, None), (402, None),
])
def test_refused_credentials_stop_the_run(http: int, message: str | None) -> None:
    """401, 403 (about the token) and 402 end the whole run."""
    assert isinstance(judge(Answer(http, message=message)), StopRun)


def test_429_is_a_shared_cooldown_with_its_retry_after() -> None:
    """A 429 asks every worker to pause, carrying the raw Retry-After."""
    decision = judge(Answer(429, message="Too Many Attempts.", retry_after="3"))

    assert decision == Retry("HTTP 429", throttled=True, retry_after="3")


@pytest.mark.parametrize("http", [500, 502, 503, 504])
def test_5xx_is_retried_and_may_have_been_applied(http: int) -> None:
    """A 5xx page is retried; the cancel may still have happened behind it."""
    assert judge(Answer(http, readable=False)) == Retry(f"HTTP {http}",
                                                        maybe_applied=True)


def test_an_unreadable_200_is_retried_as_maybe_applied() -> None:
    """A garbled 200 body may hide a cancel that happened."""
    assert judge(Answer(200, readable=False)) == Retry("unreadable body",
                                                       maybe_applied=True)


def test_a_200_without_an_order_is_retried() -> None:
    """JSON that has no order in it cannot be understood yet: try again."""
    decision = judge(Answer(200, message="ok"))

    assert isinstance(decision, Retry)


def test_still_reviewing_after_cancel_is_retried() -> None:
    """The order is still cancellable: its credits are worth another try."""
    assert judge(Answer(200, order("Reviewing"))) == Retry(
        "order still reviewing after cancel")


def test_redirects_are_errors_not_followed() -> None:
    """A 3xx is never followed: the token must not travel to another host."""
    decision = judge(Answer(302))

    assert isinstance(decision, Final)
    assert Outcome.ERROR == decision.outcome


def test_a_403_about_the_action_refuses_only_that_order() -> None:
    """Laravel's "This action is unauthorized." refuses the order, not the token.

    (It once stopped a whole run at its first order.)"""
    decision = judge(Answer(403, message="This action is unauthorized."))

    assert decision == Final(Outcome.NOT_CANCELLABLE,
                             detail="refused: This action is unauthorized.")


@pytest.mark.parametrize("message", ["Unauthorized", "Unauthorized.",
                                     "Invalid API token", "Unauthenticated."])
def test_a_403_about_the_token_stops_the_run(message: str) -> None:
    """A 403 that speaks of the credentials ends the run."""
    assert isinstance(judge(Answer(403, message=message)), StopRun)


REFUSED = Final(Outcome.ALREADY_CANCELLED, refunded_credits=0,
                detail="refused: Order has already been cancelled")


@pytest.mark.parametrize(
    "answer",
    [Answer(200, readable=False), Answer(200, message="Order cannot be cancelled")],
    ids=["unreadable", "no-order"],
)
def test_a_status_check_that_shows_no_order_is_asked_again(answer: Answer) -> None:
    """A 200 track answer without a readable order is retried, never final."""
    decision = classify_status_check(answer, run_started=STARTED, refusal=REFUSED)

    assert isinstance(decision, Retry), decision
