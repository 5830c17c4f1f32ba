"""``batchcancel select``: the filter, the paging, and ``select | cancel``."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import SandboxFactory
from support import FAST, TOKEN, cli_env, read_report, run_cli

from batchcancel.errors import ConfigError
from batchcancel.plan import Listed, PageView, parse_listed, walk_pages
from batchcancel.selection import Selection, make_selection, parse_moment

NOON = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def listed(order_id: int, status: str = "reviewing", *,
           created: datetime | None = NOON, kind: str | None = "postcard4x6"
           ) -> Listed:
    return Listed(order_id=order_id, status=status, cancellable=None,
                  created_at=created, authorization_total=73,
                  sub_account_id=None, kind=kind)


def test_default_selection_keeps_reviewing_orders_only() -> None:
    """By default only Reviewing orders are selected, whatever their type."""
    selection = make_selection(["Reviewing"], None, None, [])

    assert (True, False) == (selection.matches(listed(1)),
                             selection.matches(listed(2, "printing")))


def test_status_is_matched_in_any_case() -> None:
    """--status PRINTING matches the list's Title Case "Printing"."""
    selection = make_selection(["PRINTING", "cancelled"], None, None, [])

    assert selection.matches(listed(1, "printing"))
    assert selection.matches(listed(2, "cancelled"))


def test_since_is_inclusive_and_until_exclusive() -> None:
    """An order created exactly at --since is in; one exactly at --until is out."""
    selection = Selection(frozenset({"reviewing"}), since=NOON,
                          until=NOON + timedelta(hours=1))

    assert [True, True, False, False] == [
        selection.matches(listed(1, created=NOON)),
        selection.matches(listed(2, created=NOON + timedelta(minutes=59))),
        selection.matches(listed(3, created=NOON + timedelta(hours=1))),
        selection.matches(listed(4, created=NOON - timedelta(seconds=1))),
    ]


def test_an_order_without_a_time_is_left_out_of_a_time_range() -> None:
    """No created_at and a --since: the order cannot be shown to be in range."""
    selection = Selection(frozenset({"reviewing"}), since=NOON)

    assert not selection.matches(listed(1, created=None))


def test_type_filter_matches_the_list_type_in_any_case() -> None:
    """--type Letter keeps letters and drops postcards."""
    selection = make_selection(["reviewing"], None, None, ["Letter"])

    assert (True, False) == (selection.matches(listed(1, kind="letter")),
                             selection.matches(listed(2, kind="postcard6x9")))


def test_short_iso_time_with_z_is_read_as_utc() -> None:
    """2026-12-03T10:00Z, the issue's own example, is 10:00 UTC."""
    assert datetime(2026, 12, 3, 10, 0, tzinfo=UTC) == parse_moment(
        "--since", "2026-12-03T10:00Z")


def test_time_without_zone_is_utc_and_offsets_are_converted() -> None:
    """No zone means UTC; +01:00 is converted to UTC."""
    assert (datetime(2026, 12, 3, 10, 0, tzinfo=UTC),
            datetime(2026, 12, 3, 9, 0, tzinfo=UTC)) == (
        parse_moment("--since", "2026-12-03T10:00"),
        parse_moment("--since", "2026-12-03T10:00+01:00"))


def test_unreadable_time_and_empty_range_are_usage_errors() -> None:
    """A word for a time, or --since after --until, is refused before any request."""
    with pytest.raises(ConfigError, match="ISO 8601"):
        make_selection(["reviewing"], "yesterday", None, [])
    with pytest.raises(ConfigError, match="before --until"):
        make_selection(["reviewing"], "2026-12-03T11:00Z", "2026-12-03T10:00Z", [])


def test_list_type_is_read_in_lower_case() -> None:
    """The list's "type" becomes Listed.kind, lower case; a non-string is None."""
    assert ("postcard6x9", None) == (
        parse_listed({"id": 1, "type": " Postcard6x9 "}, None).kind,  # type: ignore[union-attr]
        parse_listed({"id": 2, "type": 7}, None).kind)  # type: ignore[union-attr]


@dataclass(frozen=True)
class FakePage:
    orders: tuple[Listed, ...]
    last_page: int | None
    per_page: int | None
    raw_count: int


async def test_paging_stops_at_the_first_page_older_than_since() -> None:
    """Newest first: the page holding an order older than --since is the last read."""
    pages = [
        [listed(10, created=NOON + timedelta(minutes=30))],
        [listed(9, created=NOON - timedelta(minutes=5))],
        [listed(8, created=NOON - timedelta(hours=2))],
    ]
    asked: list[int] = []

    async def fetch(page: int, size: int, sub: int | None) -> PageView | None:
        asked.append(page)
        return FakePage(tuple(pages[page - 1]), 3, size, 1)

    seen = [view async for _, view in walk_pages(
        fetch, sub_accounts=(None,), per_page=1, cutoff=NOON)]

    assert [1, 2] == asked
    assert 2 == len(seen)


async def test_without_a_cutoff_every_page_up_to_the_last_is_read() -> None:
    """--all-pages (no cutoff) reads to last_page, whatever the times say."""
    asked: list[int] = []

    async def fetch(page: int, size: int, sub: int | None) -> PageView | None:
        asked.append(page)
        old = listed(page, created=NOON - timedelta(days=page))
        return FakePage((old,), 3, size, 1)

    async for _ in walk_pages(fetch, sub_accounts=(None,), per_page=1,
                              cutoff=None):
        pass

    assert [1, 2, 3] == asked


# -- end to end -------------------------------------------------------------


async def _pipe(left: list[str], right: list[str], limit_s: float = 120
                ) -> tuple[int, int, str, str]:
    """Run ``batchcancel LEFT | batchcancel RIGHT`` through a real OS pipe."""
    read_end, write_end = os.pipe()
    env = cli_env()
    first = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "batchcancel", *left, stdout=write_end,
        stderr=asyncio.subprocess.PIPE, env=env)
    second = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "batchcancel", *right, stdin=read_end,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
    os.close(read_end)
    os.close(write_end)
    (_, err1), (_, err2) = await asyncio.wait_for(
        asyncio.gather(first.communicate(), second.communicate()), limit_s)
    assert first.returncode is not None
    assert second.returncode is not None
    return first.returncode, second.returncode, err1.decode(), err2.decode()


@pytest.mark.e2e
async def test_select_since_piped_into_cancel_cancels_exactly_those_orders(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    """select --since | cancel - cancels exactly the Reviewing orders created
    since then, and no other order gets even a request."""
    sandbox = await sandbox_factory(orders=600, seed=11, max_page_size=40)
    since = datetime.now(UTC) - timedelta(minutes=25)
    stamp = since.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    before = sandbox.record()["orders"]
    wanted = {oid for oid, o in before.items() if o["initial_status"] == "reviewing"
              and o["created_at_epoch"] >= since.timestamp()}
    report = tmp_path / "report.csv"

    left_code, right_code, left_err, right_err = await _pipe(
        ["select", "--since", stamp, "--base-url", sandbox.base_url,
         "--rate", "off", "--page-size", "100"],
        ["cancel", "-", "--report", str(report), "--base-url", sandbox.base_url,
         *FAST])
    after = sandbox.record()["orders"]

    assert (0, 0) == (left_code, right_code), left_err[-2000:] + right_err[-2000:]
    assert 0 < len(wanted) < sum(o["initial_status"] == "reviewing"
                                 for o in before.values())
    assert wanted == {oid for oid, o in after.items() if o["cancelled_by_sandbox_api"]}
    assert wanted == {oid for oid, o in after.items() if o["cancel_requests"]}
    assert wanted == {r["order_id"] for r in read_report(report)
                      if r["outcome"] == "cancelled"}
    assert TOKEN not in left_err + right_err


@pytest.mark.e2e
async def test_select_stops_paging_early_and_filters_type_and_sub_account(
    sandbox_factory: SandboxFactory
) -> None:
    """Paged per sub-account, filtered by type, stopped once past --since."""
    sandbox = await sandbox_factory(orders=600, seed=4)
    since = datetime.now(UTC) - timedelta(minutes=10)
    orders = sandbox.record()["orders"]
    wanted = sorted(
        oid for oid, o in orders.items() if o["initial_status"] == "reviewing"
        and o["created_at_epoch"] >= since.timestamp()
        and o["sub_account_id"] in {66, 88}
    )
    started = time.monotonic()

    done = await run_cli(["select", "--since", since.isoformat(), "--sub-account",
                          "66", "--sub-account", "88", "--status", "REVIEWING",
                          "--base-url", sandbox.base_url, "--rate", "off",
                          "--page-size", "10", "--log-format", "json"])
    lists = sandbox.record()["requests"]["list"]

    assert 0 == done.code, done.stderr[-2000:]
    assert ["order_id", *wanted] == [done.stdout.splitlines()[0],
                                     *sorted(done.stdout.splitlines()[1:])]
    assert lists < 600 / 10 / 3  # far fewer pages than the whole list
    assert time.monotonic() - started < 60
    assert '"select.finished"' in done.stderr


@pytest.mark.e2e
async def test_select_type_filter_against_the_sandbox(
    sandbox_factory: SandboxFactory
) -> None:
    """--type Letter with two statuses writes exactly those orders' IDs."""
    sandbox = await sandbox_factory(orders=600, seed=9)
    orders = sandbox.record()["orders"]
    statuses = {"processing", "fulfilled"}
    candidates = [oid for oid, o in orders.items() if o["status"] in statuses]

    done = await run_cli(["select", "--type", "Letter", "--status", "processing",
                          "--status", "Fulfilled", "--base-url", sandbox.base_url,
                          "--rate", "off"])
    ids = set(done.stdout.splitlines()[1:])
    kinds = {oid: await _track_type(sandbox.base_url, oid) for oid in candidates}

    assert 0 == done.code, done.stderr[-2000:]
    assert ids
    assert {oid for oid, kind in kinds.items() if kind[0] == "letter"} == ids


async def _track_type(base_url: str, order_id: str) -> tuple[str, str]:
    import aiohttp

    async with aiohttp.ClientSession() as session, session.get(
        f"{base_url}/orders/{order_id}/track",
        headers={"Authorization": f"Bearer {TOKEN}"},
    ) as response:
        order = (await response.json())["data"]["order"]
    return order["type"], order["status"]


@pytest.mark.e2e
async def test_select_with_a_refused_token_exits_3_with_an_error(
    sandbox_factory: SandboxFactory
) -> None:
    """A refused token: exit 3, an Error line, only the header on stdout."""
    sandbox = await sandbox_factory(orders=20)

    done = await run_cli(["select", "--base-url", sandbox.base_url, "--rate", "off"],
                         env=cli_env(token="wrong-token"))

    assert (3, "order_id\n") == (done.code, done.stdout)
    assert "Error: the API refused the token" in done.stderr
    assert "Traceback" not in done.stderr
