"""``batchcancel reconcile``: what each outcome claims, and the whole command."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import aiohttp
import pytest
from conftest import SandboxFactory
from support import FAST, TOKEN, read_report, run_cli

from batchcancel.errors import InputError
from batchcancel.outcomes import Answer, OrderView, Outcome, Retry, StopRun
from batchcancel.reconcile import (
    Current,
    Entry,
    Kind,
    compare,
    judge_track,
    read_entries,
)
from batchcancel.sandbox._server import peer_is_loopback


def entry(outcome: Outcome, credits: int | None = 0) -> Entry:
    return Entry(100_001, outcome, "", credits, 2)


def kind_of(outcome: Outcome, current: Current, credits: int | None = 0
            ) -> Kind | None:
    found = compare(entry(outcome, credits), current)
    return None if found is None else found.kind


def test_cancelled_orders_still_cancelled_agree() -> None:
    """Reported cancelled, now cancelled with the same amount: no row."""
    assert None is kind_of(Outcome.CANCELLED, Current(True, "cancelled", 73), 73)


def test_reported_cancelled_but_now_printing_disagrees() -> None:
    """A cancel that did not hold is a not_cancelled disagreement."""
    assert Kind.NOT_CANCELLED == kind_of(Outcome.CANCELLED, Current(True, "printing"))
    assert Kind.NOT_CANCELLED == kind_of(Outcome.ALREADY_CANCELLED,
                                         Current(True, "fulfilled"))


def test_refund_other_than_the_amount_now_disagrees() -> None:
    """A cancelled row whose refund differs from authorization_total is flagged."""
    assert Kind.CREDITS_DIFFER == kind_of(Outcome.CANCELLED,
                                          Current(True, "cancelled", 99), 73)


def test_not_cancellable_rows_flag_cancelled_and_reviewing() -> None:
    """Not cancellable then, cancelled or cancellable now: both disagree."""
    assert [Kind.CANCELLED_SINCE, Kind.CANCELLABLE_AGAIN, None] == [
        kind_of(Outcome.NOT_CANCELLABLE, Current(True, status))
        for status in ("cancelled", "reviewing", "printing")]


def test_not_found_that_exists_and_status_that_vanished_disagree() -> None:
    """not_found but found, and a claimed status whose order is now 404."""
    assert [Kind.FOUND, None, Kind.GONE] == [
        kind_of(Outcome.NOT_FOUND, Current(True, "reviewing")),
        kind_of(Outcome.NOT_FOUND, Current(False)),
        kind_of(Outcome.NOT_CANCELLABLE, Current(False)),
    ]


def test_track_answers_are_judged_like_cancel_answers() -> None:
    """401 stops, 429/5xx retry, 404 means gone, 200 gives the status."""
    order = OrderView("printing", 73, None, None)
    assert isinstance(judge_track(Answer(401)), StopRun)
    assert isinstance(judge_track(Answer(429, retry_after="3")), Retry)
    assert isinstance(judge_track(Answer(502)), Retry)
    assert isinstance(judge_track(Answer(200)), Retry)
    assert Current(False) == judge_track(Answer(404))
    assert Current(True, "printing", 73) == judge_track(Answer(200, order=order))


def test_report_without_the_columns_is_refused(tmp_path: Path) -> None:
    """A CSV that is not a report is an input error naming the file."""
    path = tmp_path / "ids.csv"
    path.write_text("id,name\n1,a\n", encoding="utf-8")

    with pytest.raises(InputError, match="not a batchcancel report"):
        read_entries(path)


def test_report_rows_without_an_id_are_counted_not_checked(tmp_path: Path) -> None:
    """Invalid-input rows have no order ID: counted as rows, never an entry."""
    path = tmp_path / "r.csv"
    path.write_text("order_id,outcome,refunded_credits\n7,cancelled,73\n"
                    ",invalid_input,\n", encoding="utf-8")

    assert ([Entry(7, Outcome.CANCELLED, "", 73, 2)], 2) == read_entries(path)


def test_control_is_refused_to_peers_off_this_machine() -> None:
    """Only a loopback peer may use the sandbox's control endpoints."""
    assert [True, True, False, False] == [
        peer_is_loopback(a) for a in ("127.0.0.1", "::1", "192.0.2.7", None)]


async def test_control_status_changes_an_order(
    sandbox_factory: SandboxFactory
) -> None:
    """POST /_sandbox/status sets a status track then shows; else 404 or 400."""
    sandbox = await sandbox_factory(orders=10)
    url = sandbox.base_url.replace("/api/v2", "/_sandbox/status")
    async with aiohttp.ClientSession() as http:
        ok = await http.post(url, json={"order_id": 100_001, "status": "printing"})
        missing = await http.post(url, json={"order_id": 9, "status": "printing"})
        bad = await http.post(url, json={"order_id": 100_001, "status": "gone"})
        async with http.get(f"{sandbox.base_url}/orders/100001/track",
                            headers={"Authorization": f"Bearer {TOKEN}"}) as track:
            shown = (await track.json())["data"]["order"]["status"]

    assert (200, 404, 400, "Printing") == (ok.status, missing.status, bad.status,
                                            shown)


# -- end to end -------------------------------------------------------------


async def _force(base_url: str, order_id: str, status: str) -> None:
    url = base_url.replace("/api/v2", "/_sandbox/status")
    async with aiohttp.ClientSession() as http, http.post(
        url, json={"order_id": int(order_id), "status": status}
    ) as answer:
        assert 200 == answer.status


@pytest.mark.e2e
async def test_reconcile_finds_exactly_the_changes_made_after_the_run(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    """After cancel, reconcile exits 0; after the sandbox changes, it lists
    exactly the changed orders with the right kinds and exits 1."""
    sandbox = await sandbox_factory(orders=120, seed=21)
    ids = [str(100_000 + n) for n in range(120)] + ["999999001"]
    source = tmp_path / "ids.csv"
    source.write_text("order_id\n" + "\n".join([*ids, "junk"]) + "\n",
                      encoding="utf-8")
    report = tmp_path / "report.csv"
    ran = await run_cli(["cancel", str(source), "--report", str(report),
                         "--base-url", sandbox.base_url, *FAST])
    rows = {r["order_id"]: r for r in read_report(report) if r["order_id"]}
    common = ["--base-url", sandbox.base_url, "--rate", "off"]

    clean = await run_cli(["reconcile", str(report), *common])

    by_outcome: dict[str, list[str]] = {}
    for order_id, row in sorted(rows.items()):
        by_outcome.setdefault(row["outcome"], []).append(order_id)
    uncancelled = by_outcome["cancelled"][0]
    late_cancel = next(o for o in by_outcome["not_cancellable"]
                       if rows[o]["order_status"] != "reviewing")
    await _force(sandbox.base_url, uncancelled, "printing")
    await _force(sandbox.base_url, late_cancel, "cancelled")
    await _force(sandbox.base_url, by_outcome["already_cancelled"][0], "cancelled")
    out = tmp_path / "disagreements.csv"

    dirty = await run_cli(["reconcile", str(report), "--out", str(out), *common])
    found = read_report(out)

    assert 0 == ran.code, ran.stderr[-2000:]
    assert (0, ["order_id,kind,reported_outcome,reported_status,"
                "reported_refunded_credits,current_status,current_credits,"
                "detail,report_line"]) == (clean.code, clean.stdout.splitlines())
    assert 1 == dirty.code, dirty.stderr[-2000:]
    assert sorted([(uncancelled, "not_cancelled", "cancelled", "printing"),
                   (late_cancel, "cancelled_since", "not_cancellable",
                    "cancelled")]) == sorted(
        (r["order_id"], r["kind"], r["reported_outcome"], r["current_status"])
        for r in found)
    assert "reconcile.disagreement" in dirty.stderr
    assert TOKEN not in clean.stderr + dirty.stderr + out.read_text()


@pytest.mark.e2e
async def test_reconcile_reports_a_not_found_order_that_exists(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    """A report claiming not_found for an order the API has: a found row, exit 1;
    rows that claim nothing cost no request."""
    sandbox = await sandbox_factory(orders=5)
    report = tmp_path / "report.csv"
    report.write_text(
        "order_id,outcome,order_status,refunded_credits\n"
        "100001,not_found,,0\n999999001,not_found,,0\n"
        "100002,error,,\n100003,not_attempted,,0\n,invalid_input,,\n",
        encoding="utf-8")

    done = await run_cli(["reconcile", str(report), "--base-url", sandbox.base_url,
                          "--rate", "off"])
    found = list(csv.DictReader(io.StringIO(done.stdout)))

    assert 1 == done.code, done.stderr[-2000:]
    assert [("100001", "found", "2")] == [
        (r["order_id"], r["kind"], r["report_line"]) for r in found]
    assert 2 == sandbox.record()["requests"]["track"]
    assert "3 rows skipped" in done.stderr


async def test_reconcile_refuses_to_write_over_the_report_it_checks(
    tmp_path: Path
) -> None:
    """--out naming the report itself (here through a symlink) is refused
    before anything is read or written, and the report is left whole."""
    report = tmp_path / "report.csv"
    report.write_text("order_id,outcome\n100001,cancelled\n")
    (tmp_path / "link.csv").symlink_to(report)

    done = await run_cli(["reconcile", str(report), "--out",
                          str(tmp_path / "link.csv"), "--base-url",
                          "http://127.0.0.1:9/api/v2"])

    assert 2 == done.code
    assert done.stderr.startswith("Error: --out")
    assert "order_id,outcome\n100001,cancelled\n" == report.read_text()
