"""The journal: durable final rows, resume, and refusing the wrong job."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from batchcancel.errors import JournalError
from batchcancel.journal import JobIdentity, Journal, identity
from batchcancel.outcomes import Outcome, Row

STARTED = datetime(2026, 12, 4, 10, 0, tzinfo=UTC)
LATER = datetime(2026, 12, 4, 11, 0, tzinfo=UTC)
JOB = JobIdentity("inputs-1", "account-1", "https://api.example.test/api/v2")


def reopened(path: Path, job: JobIdentity = JOB) -> Journal:
    """Open the journal again, as a resumed run would, and close it."""
    journal = Journal(path, job, LATER)
    journal.close()
    return journal


def row(order_id: int, outcome: Outcome = Outcome.CANCELLED,
        credits: int | None = 267) -> Row:
    return Row(order_id=order_id, outcome=outcome, source="ids.csv", line=order_id,
               refunded_credits=credits, attempts=1)


def test_rows_recorded_are_finished_on_resume(tmp_path: Path) -> None:
    """What one run records, the next run of the same job finds finished."""
    path = tmp_path / "j.jsonl"
    first = Journal(path, JOB, STARTED)
    first.record(row(1))
    first.record(row(2, Outcome.NOT_FOUND, 0))
    first.close()

    again = reopened(path)

    assert again.resumed
    assert {1: row(1), 2: row(2, Outcome.NOT_FOUND, 0)} == again.finished
    assert STARTED == again.started_at  # the job's first start is kept


@pytest.mark.parametrize("outcome", [Outcome.NOT_ATTEMPTED, Outcome.ERROR])
def test_orders_without_the_apis_final_word_are_sent_again(
    tmp_path: Path, outcome: Outcome
) -> None:
    """not_attempted and error rows are not finished: a resume tries them
    again while their window may still be open, and knows they were sent."""
    path = tmp_path / "j.jsonl"
    first = Journal(path, JOB, STARTED)
    first.sending(1)
    first.record(row(1, outcome, None))
    first.close()

    again = reopened(path)

    assert {} == again.finished
    assert {1} == again.sent_before


def test_a_torn_last_line_is_ignored(tmp_path: Path) -> None:
    """A kill in the middle of a write loses that one row, nothing else."""
    path = tmp_path / "j.jsonl"
    first = Journal(path, JOB, STARTED)
    first.record(row(1))
    first.close()
    with path.open("a") as file:
        file.write('{"kind": "row", "order_id": 2, "outc')

    again = Journal(path, JOB, LATER)
    again.record(row(3))
    again.close()

    assert [1, 3] == sorted(reopened(path).finished)


def test_damage_before_the_last_line_is_refused(tmp_path: Path) -> None:
    """A broken line in the middle is not a torn write: refuse, do not guess."""
    path = tmp_path / "j.jsonl"
    first = Journal(path, JOB, STARTED)
    first.record(row(1))
    first.record(row(2))
    first.close()
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], "garbage", lines[2]]) + "\n")

    with pytest.raises(JournalError, match="line 2 is damaged"):
        Journal(path, JOB, LATER)


@pytest.mark.parametrize(("other", "words"), [
    (JobIdentity("inputs-2", "account-1", JOB.base_url), "other input"),
    (JobIdentity("inputs-1", "account-2", JOB.base_url), "another account"),
    (JobIdentity("inputs-1", "account-1", "http://127.0.0.1:1/api/v2"),
     "another base URL"),
])
def test_a_journal_of_another_job_is_refused(tmp_path: Path, other: JobIdentity,
                                             words: str) -> None:
    """Other input, another token or another base URL: refused, named."""
    path = tmp_path / "j.jsonl"
    Journal(path, JOB, STARTED).close()

    with pytest.raises(JournalError, match=words):
        Journal(path, other, LATER)


def test_two_runs_on_one_journal_are_refused(tmp_path: Path) -> None:
    """While one run holds the journal, a second one cannot open it."""
    path = tmp_path / "j.jsonl"
    holder = Journal(path, JOB, STARTED)

    with pytest.raises(JournalError, match="another run is using"):
        Journal(path, JOB, LATER)
    holder.close()


def test_the_identity_never_holds_the_token(tmp_path: Path) -> None:
    """The account is a hash of the token, and the journal file never has it."""
    source = tmp_path / "ids.csv"
    source.write_text("1\n")
    job = identity([str(source)], "s3cret-token-value", "https://a.test/api/v2")
    path = tmp_path / "j.jsonl"
    journal = Journal(path, job, STARTED)
    journal.record(row(1))
    journal.close()

    assert "s3cret-token-value" not in path.read_text()
    assert "s3cret-token-value" not in repr(job)


def test_changed_input_content_is_another_job(tmp_path: Path) -> None:
    """Editing the input file makes it another job, whose journal is refused."""
    source = tmp_path / "ids.csv"
    source.write_text("1\n")
    before = identity([str(source)], "t", "https://a.test/api/v2")
    source.write_text("1\n2\n")

    assert before != identity([str(source)], "t", "https://a.test/api/v2")


def test_a_row_with_every_field_set_comes_back_whole(tmp_path: Path) -> None:
    """Each field of a journaled row, deadline and sub-account included, survives."""
    path = tmp_path / "j.jsonl"
    full = Row(order_id=7, outcome=Outcome.NOT_CANCELLABLE, source="a.csv", line=3,
               order_status="processing", refunded_credits=None, http_status=409,
               attempts=2, detail="order list: processing", sub_account_id=88,
               input_value="0007", credits_at_stake=129, deadline=LATER)
    first = Journal(path, JOB, STARTED)
    first.record(full)
    first.close()

    assert {7: full} == reopened(path).finished
