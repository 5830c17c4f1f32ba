"""The sandbox behaves like the API reference says, and its record of truth is exact."""

from __future__ import annotations

import asyncio
import json
import math
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from email.utils import formatdate, parsedate_to_datetime
from typing import Any

import aiohttp
import pytest
from yarl import URL

from batchcancel.sandbox import Faults, Sandbox, SandboxConfig
from batchcancel.sandbox._window import FixedWindow, retry_after

TOKEN = "sandbox-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
START = 1_800_000_000.25

Start = Callable[..., Awaitable[Sandbox]]
Json = dict[str, Any]


class FakeClock:
    """A wall clock that moves only when a test moves it."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def start_sandbox() -> AsyncIterator[Start]:
    started: list[Sandbox] = []

    async def start(clock: Callable[[], float] = time.time, **settings: Any) -> Sandbox:
        settings.setdefault("orders", 40)
        sandbox = Sandbox(SandboxConfig(**settings), clock=clock)
        await sandbox.start(host="127.0.0.1", port=0)
        started.append(sandbox)
        return sandbox

    yield start
    for sandbox in started:
        await sandbox.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(headers=AUTH) as session:
        yield session


def orders(sandbox: Sandbox) -> dict[str, Json]:
    record = sandbox.record()["orders"]
    assert isinstance(record, dict)
    return record


def ids_with(sandbox: Sandbox, status: str, **match: object) -> list[str]:
    return [
        order_id
        for order_id, order in orders(sandbox).items()
        if order["status"] == status
        and all(order[key] == value for key, value in match.items())
    ]


def requests(sandbox: Sandbox) -> Json:
    counts = sandbox.record()["requests"]
    assert isinstance(counts, dict)
    return counts


def log(sandbox: Sandbox) -> list[Json]:
    entries = sandbox.record()["request_log"]
    assert isinstance(entries, list)
    return entries


def control_url(sandbox: Sandbox, name: str) -> str:
    return sandbox.base_url.removesuffix("/api/v2") + f"/_sandbox/{name}"


async def cancel(
    http: aiohttp.ClientSession, sandbox: Sandbox, order_id: str, plural: bool = True
) -> tuple[int, Json]:
    noun = "orders" if plural else "order"
    async with http.put(f"{sandbox.base_url}/{noun}/{order_id}/cancel") as answer:
        return answer.status, await answer.json()


async def get_json(http: aiohttp.ClientSession, url: str) -> tuple[int, Json]:
    async with http.get(url) as answer:
        return answer.status, await answer.json()


async def list_all(
    http: aiohttp.ClientSession, sandbox: Sandbox, per_page: int
) -> list[Json]:
    items: list[Json] = []
    page = 1
    while True:
        url = f"{sandbox.base_url}/orders/list?items_per_page={per_page}&page={page}"
        _, body = await get_json(http, url)
        items += body["data"]
        if page >= body["meta"]["last_page"]:
            return items
        page += 1


# Cancel


async def test_cancel_of_reviewing_order_cancels_and_refunds_once(
    start_sandbox: Start, http: aiohttp.ClientSession
) -> None:
    """A Reviewing order is cancelled, and its credits are refunded exactly once."""
    sandbox = await start_sandbox(refusal_style="200")
    order_id = ids_with(sandbox, "reviewing")[0]
    amount = orders(sandbox)[order_id]["authorization_total"]

    status, body = await cancel(http, sandbox, order_id)
    again_status, again = await cancel(http, sandbox, order_id)

    assert (status, again_status) == (200, 200)
    order = body["order"]
    assert (order["status"], order["display_status"]) == ("cancelled", "Cancelled")
    assert (
        order["authorization_total"],
        order["grand_total"],
        order["method"],
    ) == (amount, 0, "api")
    assert order["updated_at"] == again["order"]["updated_at"]
    datetime.strptime(order["created_at"], "%Y-%m-%d %H:%M:%S")
    truth = orders(sandbox)[order_id]
    assert (
        truth["refunded_credits"],
        truth["cancelled_by_sandbox_api"],
        truth["cancel_requests"],
    ) == (amount, True, 2)
    assert sandbox.record()["refunded_credits_total"] == amount


async def test_older_singular_path_cancels_too(
    start_sandbox: Start, http: aiohttp.ClientSession
) -> None:
    """PUT /order/{id}/cancel works like the plural path and counts as a cancel."""
    sandbox = await start_sandbox()
    order_id = ids_with(sandbox, "reviewing")[0]

    status, body = await cancel(http, sandbox, order_id, plural=False)

    assert (status, body["order"]["status"]) == (200, "cancelled")
    assert requests(sandbox)["cancel"] == 1


async def test_already_cancelled_order_gives_no_refund_in_200_style(
    start_sandbox: Start, http: aiohttp.ClientSession
) -> None:
    """A seeded cancelled order answers 200 as it was and refunds nothing."""
    sandbox = await start_sandbox(refusal_style="200")
    order_id = ids_with(sandbox, "cancelled")[0]
    before = orders(sandbox)[order_id]

    status, body = await cancel(http, sandbox, order_id)

    assert (status, body["order"]["status"]) == (200, "cancelled")
    shown = datetime.strptime(body["order"]["updated_at"], "%Y-%m-%d %H:%M:%S")
    assert (
        math.floor(before["updated_at_epoch"]) == shown.replace(tzinfo=UTC).timestamp()
    )
    assert (
        orders(sandbox)[order_id]["refunded_credits"],
        orders(sandbox)[order_id]["cancelled_by_sandbox_api"],
    ) == (0, False)
    assert sandbox.record()["refunded_credits_total"] == 0


async def test_already_cancelled_order_answers_400_in_4xx_style(
    start_sandbox: Start, http: aiohttp.ClientSession
) -> None:
    """In the 4xx style, cancelling a cancelled order is a 400 and refunds nothing."""
    sandbox = await start_sandbox(refusal_style="4xx")
    seeded = ids_with(sandbox, "cancelled")[0]
    reviewing = ids_with(sandbox, "reviewing")[0]
    await cancel(http, sandbox, reviewing)

    answers = [
        await cancel(http, sandbox, order_id) for order_id in (seeded, reviewing)
    ]

    expected = (400, {"message": "Order has already been cancelled"})
    assert answers == [expected, expected]
    refunded = orders(sandbox)[reviewing]["authorization_total"]
    assert sandbox.record()["refunded_credits_total"] == refunded


async def test_200_style_answers_refused_cancel_with_unchanged_order(
    start_sandbox: Start, http: aiohttp.ClientSession
) -> None:
    """In the 200 style, a fulfilled order answers 200 with its lower-case status."""
    sandbox = await start_sandbox(refusal_style="200")
    order_id = ids_with(sandbox, "fulfilled")[0]

    status, body = await cancel(http, sandbox, order_id)

    assert (
        status,
        body["order"]["status"],
        body["order"]["display_status"],
    ) == (200, "fulfilled", "Fulfilled")
    assert body["order"]["grand_total"] == body["order"]["authorization_total"]
    assert (
        orders(sandbox)[order_id]["status"],
        orders(sandbox)[order_id]["refunded_credits"],
    ) == ("fulfilled", 0)


async def test_4xx_style_answers_refused_cancel_with_409_or_400(
    start_sandbox: Start, http: aiohttp.ClientSession
) -> None:
    """In the 4xx style, every non-Reviewing order answers its own 409 or 400."""
    sandbox = await start_sandbox(orders=200, refusal_style="4xx")
    refused = [
        (order_id, order)
        for order_id, order in orders(sandbox).items()
        if order["status"] not in ("reviewing", "cancelled")
    ]

    for order_id, order in refused:
        status, body = await cancel(http, sandbox, order_id)
        refusal = (order["refusal_status"], {"message": "Order cannot be cancelled"})
        assert (status, body) == refusal

    assert {order["refusal_status"] for _, order in refused} == {400, 409}
    assert sandbox.record()["refunded_credits_total"] == 0


async def test_mixed_style_draws_both_styles_from_the_seed() -> None:
    """In the mixed style, some orders refuse with 200 and some with a 4xx."""
    sandbox = Sandbox(SandboxConfig(orders=200, refusal_style="mixed"))

    styles = Counter(order["refusal_status"] for order in orders(sandbox).values())

    assert set(styles) == {200, 400, 409}


async def test_unknown_order_is_404(
    start_sandbox: Start, http: aiohttp.ClientSession
) -> None:
    """A well-formed ID the book does not hold is 404 Not Found, on cancel and track."""
    sandbox = await start_sandbox(first_id=100_000)

    status, body = await cancel(http, sandbox, "999")
    track_status, track = await get_json(http, f"{sandbox.base_url}/orders/999/track")

    expected = (404, {"message": "Not Found"})
    assert [(status, body), (track_status, track)] == [expected, expected]
    assert (requests(sandbox)["cancel"], requests(sandbox)["invalid_path"]) == (1, 0)


@pytest.mark.parametrize(
    "raw_id", ["0", "0100000", "-100000", "1e5", "abc", "100000%20", "%D9%A1%D9%A2"]
)
async def test_malformed_id_is_404_and_logged_as_invalid_path(
    start_sandbox: Start, http: aiohttp.ClientSession, raw_id: str
) -> None:
    """An ID that is not a canonical positive decimal reaches no order, only the log."""
    sandbox = await start_sandbox()
    url = URL(f"{sandbox.base_url}/orders/{raw_id}/cancel", encoded=True)

    async with http.put(url) as answer:
        assert (answer.status, await answer.json()) == (404, {"message": "Not Found"})

    assert [e["path"] for e in log(sandbox)] == [f"/api/v2/orders/{raw_id}/cancel"]
    assert (requests(sandbox)["invalid_path"], requests(sandbox)["cancel"]) == (1, 0)


# Auth


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}],
    ids=["missing", "wrong", "no-scheme"],
)
async def test_bad_token_is_401_and_changes_nothing(
    start_sandbox: Start, headers: dict[str, str]
) -> None:
    """Without the right Bearer token the answer is 401 and nothing is done."""
    sandbox = await start_sandbox()
    order_id = ids_with(sandbox, "reviewing")[0]

    async with (
        aiohttp.ClientSession(headers=headers) as session,
        session.put(f"{sandbox.base_url}/orders/{order_id}/cancel") as answer,
    ):
        assert (
            answer.status,
            await answer.json(),
        ) == (401, {"message": "Unauthenticated."})

    assert (
        orders(sandbox)[order_id]["status"],
        orders(sandbox)[order_id]["cancel_requests"],
    ) == ("reviewing", 0)
    assert (requests(sandbox)["unauthorized"], requests(sandbox)["cancel"]) == (1, 0)


async def test_auth_status_403_answers_unauthorized(start_sandbox: Start) -> None:
    """With auth_status 403 a bad token gets 403 {"message": "Unauthorized"}."""
    sandbox = await start_sandbox(auth_status=403)

    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{sandbox.base_url}/orders/list") as answer,
    ):
        assert (
            answer.status,
            await answer.json(),
        ) == (403, {"message": "Unauthorized"})


# Track and list


async def test_track_shows_title_case_status(
    start_sandbox: Start, http: aiohttp.ClientSession
) -> None:
    """Track answers data.order with a Title Case status and the order's amounts."""
    sandbox = await start_sandbox()
    order_id = ids_with(sandbox, "reviewing")[0]
    await cancel(http, sandbox, order_id)

    status, body = await get_json(http, f"{sandbox.base_url}/orders/{order_id}/track")

    data = body["data"]
    assert (
        status,
        data["id"],
        data["order"]["status"],
        data["order"]["grand_total"],
    ) == (200, int(order_id), "Cancelled", 0)
    assert (data["errors"], data["returned"]) == ([], [])


async def test_list_is_newest_first_over_all_pages(
    start_sandbox: Start, http: aiohttp.ClientSession
) -> None:
    """Paging through the list yields every order once, newest created_at first."""
    sandbox = await start_sandbox(orders=30)
    truth = orders(sandbox)

    items = await list_all(http, sandbox, per_page=7)

    expected = sorted(
        truth, key=lambda i: (truth[i]["created_at_epoch"], int(i)), reverse=True
    )
    assert [str(item["id"]) for item in items] == expected


async def test_list_meta_and_links_follow_the_real_api(
    start_sandbox: Start, http: aiohttp.ClientSession
) -> None:
    """meta.per_page is a string, and links carry only ?page=N, dropping the filter."""
    sandbox = await start_sandbox(orders=200)
    url = f"{sandbox.base_url}/orders/list?items_per_page=7&page=2&sub_account_id=66"

    _, body = await get_json(http, url)

    path = f"{sandbox.base_url}/orders/list"
    total = len([o for o in orders(sandbox).values() if o["sub_account_id"] == 66])
    assert f"{path}?page=3" == body["links"]["next"]
    assert f"{path}?page=1" == body["links"]["prev"]
    assert (
        body["meta"]["per_page"],
        body["meta"]["current_page"],
        body["meta"]["total"],
        body["meta"]["path"],
    ) == ("7", 2, total, path)
    assert {item["sub_account_id"] for item in body["data"]} == {66}


async def test_list_caps_page_size_and_defaults_to_25(
    start_sandbox: Start, http: aiohttp.ClientSession
) -> None:
    """items_per_page above max_page_size is capped; without it a page holds 25."""
    sandbox = await start_sandbox(orders=60, max_page_size=10)
    big = f"{sandbox.base_url}/orders/list?items_per_page=500"
    plain_sandbox = await start_sandbox(orders=60)

    _, capped = await get_json(http, big)
    _, plain = await get_json(http, f"{plain_sandbox.base_url}/orders/list")

    assert (
        len(capped["data"]),
        capped["meta"]["per_page"],
        capped["meta"]["last_page"],
    ) == (10, "10", 6)
    assert (len(plain["data"]), plain["meta"]["per_page"]) == (25, "25")


async def test_list_page_past_the_end_is_empty(
    start_sandbox: Start, http: aiohttp.ClientSession
) -> None:
    """A page past the last one has no data, null from/to and no next link."""
    sandbox = await start_sandbox(orders=10)

    _, body = await get_json(http, f"{sandbox.base_url}/orders/list?page=9")

    assert (
        body["data"],
        body["meta"]["from"],
        body["meta"]["to"],
        body["links"]["next"],
    ) == ([], None, None, None)


async def test_list_refuses_unknown_sub_account(
    start_sandbox: Start, http: aiohttp.ClientSession
) -> None:
    """A sub_account_id that owns no order is a 400 with a message."""
    sandbox = await start_sandbox()
    url = f"{sandbox.base_url}/orders/list?sub_account_id=12345"

    assert await get_json(http, url) == (
        400,
        {"message": "Sub Account ID does not exist"},
    )


async def test_list_item_fields(
    start_sandbox: Start, http: aiohttp.ClientSession
) -> None:
    """List items carry Title Case status, method API and cancellable for Reviewing."""
    sandbox = await start_sandbox(orders=100)

    items = await list_all(http, sandbox, per_page=100)

    for item in items:
        assert item["cancellable"] == (item["status"] == "Reviewing")
        assert item["order_total"] == item["grand_total"]
        assert (item["method"], item["message"].startswith("Thanks")) == ("API", True)
    statuses = {item["status"] for item in items}
    assert {"Reviewing", "Cancelled", "Processing", "Fulfilled"} <= statuses


@pytest.mark.parametrize(
    ("created_at_format", "parse"),
    [
        ("iso", lambda v: datetime.strptime(v, "%Y-%m-%dT%H:%M:%S.%fZ")),
        ("sql", lambda v: datetime.strptime(v, "%Y-%m-%d %H:%M:%S")),
        ("object", lambda v: datetime.strptime(v["date"], "%Y-%m-%d %H:%M:%S.%f")),
    ],
)
async def test_list_shows_created_at_in_the_configured_format(
    start_sandbox: Start,
    http: aiohttp.ClientSession,
    created_at_format: str,
    parse: Callable[[Any], datetime],
) -> None:
    """created_at in the list is the order's true creation time in the chosen form."""
    sandbox = await start_sandbox(orders=5, created_at_format=created_at_format)
    truth = orders(sandbox)

    items = await list_all(http, sandbox, per_page=5)

    for item in items:
        shown = parse(item["created_at"]).replace(tzinfo=UTC).timestamp()
        true = truth[str(item["id"])]["created_at_epoch"]
        precision = 1.0 if created_at_format == "sql" else 1e-6
        assert 0 <= true - shown < precision


async def test_mixed_created_at_format_uses_all_three(
    start_sandbox: Start, http: aiohttp.ClientSession
) -> None:
    """With the mixed format, the list shows strings of both kinds and objects."""
    sandbox = await start_sandbox(orders=60, created_at_format="mixed")

    items = await list_all(http, sandbox, per_page=60)

    kinds = {
        "object" if isinstance(v, dict) else ("iso" if "T" in v else "sql")
        for v in (item["created_at"] for item in items)
    }
    assert kinds == {"iso", "sql", "object"}


# Review window


async def test_review_window_expiry_turns_reviewing_into_processing(
    start_sandbox: Start, http: aiohttp.ClientSession
) -> None:
    """Once its window has passed on the wall clock, a Reviewing order is Processing."""
    sandbox = await start_sandbox(
        orders=10, review_window=1.0, max_age=0.2, refusal_style="200"
    )
    order_id = ids_with(sandbox, "reviewing")[0]

    await asyncio.sleep(1.05)
    status, body = await cancel(http, sandbox, order_id)

    assert (status, body["order"]["status"]) == (200, "processing")
    truth = orders(sandbox)[order_id]
    assert (
        truth["status"],
        truth["initial_status"],
        truth["refunded_credits"],
    ) == ("processing", "reviewing", 0)
    assert ids_with(sandbox, "reviewing") == []


async def test_review_window_closes_exactly_at_created_at_plus_window(
    start_sandbox: Start, http: aiohttp.ClientSession
) -> None:
    """An order is cancellable until created_at + review_window, and not at it."""
    clock = FakeClock()
    sandbox = await start_sandbox(clock=clock, orders=10, review_window=20.0)
    early, late = ids_with(sandbox, "reviewing")[:2]
    closes = [orders(sandbox)[i]["created_at_epoch"] + 20.0 for i in (early, late)]

    clock.now = closes[0] - 0.001
    early_status, early_body = await cancel(http, sandbox, early)
    clock.now = closes[1]
    _, late_body = await get_json(http, f"{sandbox.base_url}/orders/{late}/track")

    assert (early_status, early_body["order"]["status"]) == (200, "cancelled")
    assert late_body["data"]["order"]["status"] == "Processing"
    assert closes[1] == orders(sandbox)[late]["updated_at_epoch"]


# Rate limit


async def test_fixed_window_throttle_answers_429_with_retry_after_seconds(
    start_sandbox: Start, http: aiohttp.ClientSession
) -> None:
    """Past the limit, requests get 429 until the window reopens, told in seconds."""
    clock = FakeClock()
    sandbox = await start_sandbox(clock=clock, rate_limit=2, rate_window=10.0)
    list_url = f"{sandbox.base_url}/orders/list"
    seen = []

    for advance in (0.0, 0.0, 0.0, 3.5, 6.5):
        clock.now += advance
        async with http.get(list_url) as answer:
            seen.append(
                (
                    answer.status,
                    answer.headers["X-RateLimit-Remaining"],
                    answer.headers.get("Retry-After"),
                )
            )

    assert seen == [
        (200, "1", None),
        (200, "0", None),
        (429, "0", "10"),
        (429, "0", "7"),
        (200, "1", None),
    ]
    assert requests(sandbox)["throttled_429"] == 2


async def test_throttle_counts_every_endpoint(
    start_sandbox: Start, http: aiohttp.ClientSession
) -> None:
    """List, track and cancel requests share one window; bad tokens do not count."""
    sandbox = await start_sandbox(clock=FakeClock(), rate_limit=3)
    order_id = ids_with(sandbox, "reviewing")[0]
    async with aiohttp.ClientSession() as anonymous:
        await (await anonymous.get(f"{sandbox.base_url}/orders/list")).release()

    await get_json(http, f"{sandbox.base_url}/orders/list")
    await get_json(http, f"{sandbox.base_url}/orders/{order_id}/track")
    await cancel(http, sandbox, order_id)
    status, body = await cancel(http, sandbox, order_id)

    assert (status, body) == (429, {"message": "Too Many Attempts."})
    assert orders(sandbox)[order_id]["cancel_requests"] == 2


@pytest.mark.parametrize("reset_header", [False, True])
async def test_retry_after_date_form_and_reset_header(
    start_sandbox: Start, http: aiohttp.ClientSession, reset_header: bool
) -> None:
    """retry_after "date" sends the window's end as an HTTP date; Reset when asked."""
    clock = FakeClock()
    sandbox = await start_sandbox(
        clock=clock, rate_limit=1, retry_after="date", reset_header=reset_header
    )
    list_url = f"{sandbox.base_url}/orders/list"
    await get_json(http, list_url)

    async with http.get(list_url) as answer:
        headers = answer.headers

    reopens = math.ceil(START + 60.0)
    assert formatdate(reopens, usegmt=True) == headers["Retry-After"]
    assert headers.get("X-RateLimit-Reset") == (str(reopens) if reset_header else None)


async def test_retry_after_none_form_sends_no_header(
    start_sandbox: Start, http: aiohttp.ClientSession
) -> None:
    """retry_after "none" answers 429 without a Retry-After header."""
    sandbox = await start_sandbox(clock=FakeClock(), rate_limit=1, retry_after="none")
    list_url = f"{sandbox.base_url}/orders/list"
    await get_json(http, list_url)

    async with http.get(list_url) as answer:
        assert (answer.status, answer.headers.get("Retry-After")) == (429, None)


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({}, (None, None)),
        ({"rate_limit": 5, "rate_headers": False}, (None, None)),
        ({"rate_limit": 5}, ("5", "4")),
    ],
    ids=["no-limit", "headers-off", "limited"],
)
async def test_rate_headers_only_with_a_limit(
    start_sandbox: Start,
    http: aiohttp.ClientSession,
    settings: Json,
    expected: tuple[str | None, str | None],
) -> None:
    """X-RateLimit-* headers come only with a rate limit and rate_headers on."""
    sandbox = await start_sandbox(**settings)

    async with http.get(f"{sandbox.base_url}/orders/list") as answer:
        shown = (
            answer.headers.get("X-RateLimit-Limit"),
            answer.headers.get("X-RateLimit-Remaining"),
        )

    assert shown == expected


def test_fixed_window_starts_afresh_at_each_multiple_of_its_length() -> None:
    """The window admits `limit` requests, then none until the next boundary."""
    window = FixedWindow(limit=2, length=10.0, origin=100.0)
    admitted = []

    for now in (100.0, 101.0, 109.9, 110.0, 125.0, 125.5, 125.9):
        window, ok = window.admit(now)
        admitted.append(ok)

    assert admitted == [True, True, False, True, True, True, False]
    assert window.reopens_at == 130.0


def test_retry_after_rounds_up() -> None:
    """Retry-After seconds are rounded up and never below 1."""
    assert [
        retry_after("seconds", 110.0, 100.0),
        retry_after("seconds", 100.2, 100.0),
        retry_after("seconds", 100.0, 100.0),
    ] == ["10", "1", "1"]


# Faults


async def test_throttle_fault_answers_429_and_does_nothing(
    start_sandbox: Start, http: aiohttp.ClientSession
) -> None:
    """An injected 429 cancels nothing and is counted as a fault, not a throttle."""
    faults = Faults(throttle_429=1.0, retry_after_style="seconds")
    sandbox = await start_sandbox(faults=faults)
    order_id = ids_with(sandbox, "reviewing")[0]

    async with http.put(f"{sandbox.base_url}/orders/{order_id}/cancel") as answer:
        assert (answer.status, answer.headers["Retry-After"]) == (429, "1")

    assert orders(sandbox)[order_id]["status"] == "reviewing"
    assert (
        requests(sandbox)["faults"]["throttle_429"],
        requests(sandbox)["throttled_429"],
    ) == (1, 0)


async def test_throttle_fault_mixed_retry_after_forms(
    start_sandbox: Start, http: aiohttp.ClientSession
) -> None:
    """Mixed Retry-After style gives seconds, an HTTP date about 1 s on, or nothing."""
    sandbox = await start_sandbox(faults=Faults(throttle_429=1.0))
    order_id = ids_with(sandbox, "reviewing")[0]
    forms = set()

    for _ in range(20):
        async with http.put(f"{sandbox.base_url}/orders/{order_id}/cancel") as answer:
            value = answer.headers.get("Retry-After")
        if value is None:
            forms.add("none")
        elif value == "1":
            forms.add("seconds")
        else:
            ahead = parsedate_to_datetime(value).timestamp() - time.time()
            assert 0 < ahead <= 2.5
            forms.add("date")

    assert forms == {"none", "seconds", "date"}


async def test_server_error_fault_answers_html_5xx_and_does_nothing(
    start_sandbox: Start, http: aiohttp.ClientSession
) -> None:
    """An injected 5xx is an HTML page and cancels nothing."""
    sandbox = await start_sandbox(faults=Faults(server_error=1.0))
    order_id = ids_with(sandbox, "reviewing")[0]

    async with http.put(f"{sandbox.base_url}/orders/{order_id}/cancel") as answer:
        assert answer.status in (500, 502, 503)
        assert answer.content_type == "text/html"

    assert (
        orders(sandbox)[order_id]["status"],
        sandbox.record()["refunded_credits_total"],
    ) == ("reviewing", 0)


async def test_drop_before_disconnects_and_does_nothing(
    start_sandbox: Start, http: aiohttp.ClientSession
) -> None:
    """drop_before closes the connection unanswered and leaves the order Reviewing."""
    sandbox = await start_sandbox(faults=Faults(drop_before=1.0))
    order_id = ids_with(sandbox, "reviewing")[0]

    with pytest.raises(aiohttp.ServerDisconnectedError):
        await cancel(http, sandbox, order_id)

    # aiohttp sends an idempotent request once more after a disconnect, so the
    # sandbox may see two requests here; every one of them must have been dropped.
    entries = [(e["status"], e["fault"]) for e in log(sandbox)]
    assert set(entries) == {(None, "drop_before")}
    assert (
        orders(sandbox)[order_id]["status"],
        orders(sandbox)[order_id]["cancel_requests"],
    ) == ("reviewing", len(entries))


async def test_drop_after_disconnects_but_cancels(
    start_sandbox: Start, http: aiohttp.ClientSession
) -> None:
    """drop_after cancels the order, then closes the connection unanswered."""
    sandbox = await start_sandbox(faults=Faults(drop_after=1.0))
    order_id = ids_with(sandbox, "reviewing")[0]

    with pytest.raises(aiohttp.ServerDisconnectedError):
        await cancel(http, sandbox, order_id)

    truth = orders(sandbox)[order_id]
    assert (truth["status"], truth["refunded_credits"]) == (
        "cancelled",
        truth["authorization_total"],
    )
    assert {(e["status"], e["fault"]) for e in log(sandbox)} == {(None, "drop_after")}
    assert truth["authorization_total"] == sandbox.record()["refunded_credits_total"]


async def test_late_answer_times_out_the_client_but_cancels(
    start_sandbox: Start,
) -> None:
    """late_answer cancels at once and answers after late_delay, past the timeout."""
    sandbox = await start_sandbox(faults=Faults(late_answer=1.0, late_delay=0.5))
    order_id = ids_with(sandbox, "reviewing")[0]
    timeout = aiohttp.ClientTimeout(total=0.1)

    async with aiohttp.ClientSession(headers=AUTH, timeout=timeout) as session:
        with pytest.raises(TimeoutError):
            await cancel(session, sandbox, order_id)

    assert orders(sandbox)[order_id]["status"] == "cancelled"
    assert [(e["status"], e["fault"]) for e in log(sandbox)] == [(200, "late_answer")]


async def test_late_answer_reaches_a_patient_client(
    start_sandbox: Start, http: aiohttp.ClientSession
) -> None:
    """A client that waits longer than late_delay gets the normal answer."""
    sandbox = await start_sandbox(faults=Faults(late_answer=1.0, late_delay=0.2))
    order_id = ids_with(sandbox, "reviewing")[0]

    status, body = await cancel(http, sandbox, order_id)

    assert (status, body["order"]["status"]) == (200, "cancelled")


async def test_garbled_body_is_unreadable_but_cancels(
    start_sandbox: Start, http: aiohttp.ClientSession
) -> None:
    """garbled_body cancels, then answers 200 JSON that does not parse."""
    sandbox = await start_sandbox(faults=Faults(garbled_body=1.0))
    order_id = ids_with(sandbox, "reviewing")[0]

    async with http.put(f"{sandbox.base_url}/orders/{order_id}/cancel") as answer:
        assert (answer.status, answer.content_type) == (200, "application/json")
        text = await answer.text()

    with pytest.raises(json.JSONDecodeError):
        json.loads(text)
    assert orders(sandbox)[order_id]["status"] == "cancelled"


async def test_faults_strike_only_the_chosen_endpoints(
    start_sandbox: Start, http: aiohttp.ClientSession
) -> None:
    """By default faults strike cancel only; with endpoints=("list",) only the list."""
    sandbox = await start_sandbox(faults=Faults(server_error=1.0))
    list_url = f"{sandbox.base_url}/orders/list"
    order_id = ids_with(sandbox, "reviewing")[0]
    cancel_url = f"{sandbox.base_url}/orders/{order_id}/cancel"
    statuses = []

    for endpoints in (("cancel",), ("list",)):
        sandbox.set_faults(Faults(server_error=1.0, endpoints=endpoints))
        async with http.get(list_url) as listed, http.put(cancel_url) as cancelled:
            statuses.append((listed.status >= 500, cancelled.status >= 500))

    assert statuses == [(False, True), (True, False)]


async def test_apply_then_spoil_faults_do_not_strike_the_list(
    start_sandbox: Start, http: aiohttp.ClientSession
) -> None:
    """On list, drop_after, late_answer and garbled_body answer normally, uncounted."""
    faults = Faults(garbled_body=1.0, endpoints=("list", "track"))
    sandbox = await start_sandbox(faults=faults)

    status, body = await get_json(http, f"{sandbox.base_url}/orders/list")

    assert (status, len(body["data"])) == (200, 25)
    assert requests(sandbox)["faults"]["garbled_body"] == 0


async def test_fault_draws_follow_the_seed(
    start_sandbox: Start, http: aiohttp.ClientSession
) -> None:
    """Two sandboxes with one seed strike the same requests with the same faults."""
    faults = Faults(server_error=0.3, throttle_429=0.3)
    runs = []

    for _ in range(2):
        sandbox = await start_sandbox(seed=7, faults=faults)
        order_id = ids_with(sandbox, "fulfilled")[0]
        for _ in range(20):
            await (
                await http.put(f"{sandbox.base_url}/orders/{order_id}/cancel")
            ).release()
        runs.append([(e["status"], e["fault"]) for e in log(sandbox)])

    assert runs[0] == runs[1]
    assert {f for _, f in runs[0]} == {None, "server_error", "throttle_429"}


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Faults(drop_before=1.5), "must be in"),
        (lambda: Faults(drop_before=0.6, drop_after=0.6), "add up to at most 1"),
        # A wrong endpoint name is what this case is about.
        (lambda: Faults(endpoints=("send",)), "endpoints item must be one of"),  # type: ignore[arg-type]
        (lambda: Faults.from_json({"drop": 0.1}), "unknown fault settings: drop"),
    ],
    ids=["over-one", "sum-over-one", "endpoint", "unknown-name"],
)
def test_faults_reject_impossible_settings(
    build: Callable[[], object], message: str
) -> None:
    """Probabilities outside [0, 1] or adding past 1, and unknown names, are refused."""
    with pytest.raises(ValueError, match=message):
        build()


# Control endpoints


async def test_control_endpoints_set_faults_and_rate_and_show_the_record(
    start_sandbox: Start, http: aiohttp.ClientSession
) -> None:
    """POST /_sandbox/faults and /_sandbox/rate take effect; GET record shows truth."""
    sandbox = await start_sandbox(clock=FakeClock())
    order_id = ids_with(sandbox, "reviewing")[0]
    cancel_url = f"{sandbox.base_url}/orders/{order_id}/cancel"

    async with aiohttp.ClientSession() as control:
        faults = await control.post(
            control_url(sandbox, "faults"), json={"server_error": 1.0}
        )
        async with http.put(cancel_url) as faulted:
            faulted_status = faulted.status
        await control.post(control_url(sandbox, "faults"), json={})
        rate = await control.post(
            control_url(sandbox, "rate"), json={"limit": 1, "window": 30}
        )
        statuses = [(await http.put(cancel_url)).status for _ in range(2)]
        _, record = await get_json(control, control_url(sandbox, "record"))
        bad = await control.post(control_url(sandbox, "rate"), json={"limit": "x"})

    assert (faults.status, rate.status, bad.status) == (200, 200, 400)
    assert faulted_status >= 500
    assert statuses == [200, 429]
    assert record["orders"][order_id]["status"] == "cancelled"


# Request log, determinism, loopback


async def test_request_log_records_every_request(
    start_sandbox: Start, http: aiohttp.ClientSession
) -> None:
    """Each request lands in the log in arrival order, bad token and bad path too."""
    sandbox = await start_sandbox()
    base = sandbox.base_url
    await get_json(http, f"{base}/orders/list?items_per_page=3")
    async with aiohttp.ClientSession() as anonymous:
        await (await anonymous.put(f"{base}/orders/100001/cancel")).release()
    await (await http.delete(f"{base}/orders/100001/cancel")).release()
    await (await http.get(f"{base}/send/postcard")).release()

    entries = [(e["method"], e["path"], e["status"], e["fault"]) for e in log(sandbox)]

    assert entries == [
        ("GET", "/api/v2/orders/list?items_per_page=3", 200, None),
        ("PUT", "/api/v2/orders/100001/cancel", 401, None),
        ("DELETE", "/api/v2/orders/100001/cancel", 404, None),
        ("GET", "/api/v2/send/postcard", 404, None),
    ]
    counts = requests(sandbox)
    assert (
        counts["total"],
        counts["list"],
        counts["unauthorized"],
        counts["invalid_path"],
    ) == (4, 1, 1, 2)
    times = [e["t"] for e in log(sandbox)]
    assert times == sorted(times)


def test_same_seed_gives_the_same_sandbox() -> None:
    """Equal configs seeded at the same moment give equal records; seeds differ."""
    records = [
        Sandbox(SandboxConfig(orders=300, seed=seed), clock=FakeClock()).record()
        for seed in (5, 5, 6)
    ]

    assert records[0] == records[1]
    assert records[0]["orders"] != records[2]["orders"]


def test_refusal_style_does_not_move_the_book() -> None:
    """Changing the refusal style or time format changes no order's fate or amount."""
    keys = ("status", "authorization_total", "sub_account_id", "created_at_epoch")
    books = []

    configs = (
        SandboxConfig(orders=100, refusal_style="200", created_at_format="iso"),
        SandboxConfig(orders=100, refusal_style="4xx", created_at_format="mixed"),
    )
    for config in configs:
        record = orders(Sandbox(config, clock=FakeClock()))
        books.append({i: tuple(o[k] for k in keys) for i, o in record.items()})

    assert books[0] == books[1]


def test_default_mix_gives_exact_shares() -> None:
    """2000 orders in the default mix hold exactly 60% Reviewing, 10% cancelled..."""
    sandbox = Sandbox(SandboxConfig(orders=2000))

    counts = Counter(order["status"] for order in orders(sandbox).values())

    assert counts == {
        "reviewing": 1200,
        "cancelled": 200,
        "processing": 160,
        "printing": 80,
        "printed": 80,
        "fulfilled": 120,
        "shipped": 40,
        "delivered": 40,
        "paused": 40,
        "error": 40,
    }
    ids = sorted(int(i) for i in orders(sandbox))
    assert list(range(100_000, 102_000)) == ids


def test_seeded_ages_match_the_review_window() -> None:
    """Reviewing orders are younger than 0.9 windows; all others older than one."""
    clock = FakeClock()
    sandbox = Sandbox(SandboxConfig(orders=500, review_window=100.0), clock=clock)

    for order in orders(sandbox).values():
        age = START - order["created_at_epoch"]
        if order["status"] == "reviewing":
            assert 0 <= age < 90.0 + 1e-6
        else:
            assert age > 100.0


# The all-interfaces addresses are what must be refused.
@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.1", "localhost", "::"])  # noqa: S104
async def test_start_refuses_non_loopback_hosts(host: str) -> None:
    """The sandbox will not listen anywhere but a loopback IP address."""
    sandbox = Sandbox(SandboxConfig(orders=1))

    with pytest.raises(ValueError, match="loopback"):
        await sandbox.start(host=host, port=0)


# Standalone


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_standalone_announces_its_url_and_stops_on_signal(
    http: aiohttp.ClientSession, signum: signal.Signals
) -> None:
    """python -m batchcancel.sandbox prints one JSON line and exits 0 on a signal."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "batchcancel.sandbox",
        "--port",
        "0",
        "--orders",
        "7",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), timeout=10)
    announced = json.loads(line)

    _, body = await get_json(http, f"{announced['base_url']}/orders/list")
    process.send_signal(signum)
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=10)

    assert (
        announced["token"],
        announced["orders"],
        body["meta"]["total"],
    ) == (TOKEN, 7, 7)
    assert announced["base_url"].startswith("http://127.0.0.1:")
    assert (process.returncode, stderr) == (0, b"")


def test_standalone_refuses_a_public_host() -> None:
    """Asked to bind a non-loopback host, the command says why and exits 2."""
    finished = subprocess.run(
        [sys.executable, "-m", "batchcancel.sandbox", "--host", "0.0.0.0"],  # noqa: S104
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )

    assert finished.returncode == 2
    assert finished.stderr.startswith("Error: the sandbox listens on loopback")


# Fault scripts


async def send_once(
    sandbox: Sandbox, path: str, method: str = "PUT", patience: float = 2.0
) -> tuple[int | None, dict[str, str], bytes]:
    """One request, never re-sent by aiohttp; status None when no answer came."""
    limits = aiohttp.ClientTimeout(total=patience)
    async with aiohttp.ClientSession(headers=AUTH, timeout=limits) as session:
        # aiohttp re-sends an idempotent request once after a dropped
        # connection, which would spend a second step of the script.
        session._retry_connection = False  # type: ignore[attr-defined]
        try:
            async with session.request(method, sandbox.base_url + path) as answer:
                return answer.status, dict(answer.headers), await answer.read()
        except (aiohttp.ClientError, TimeoutError):
            return None, {}, b""


def retry_after_form(headers: dict[str, str]) -> str:
    value = headers.get("Retry-After")
    if value is None:
        return "reset" if "X-RateLimit-Reset" in headers else "none"
    if value == "1":
        return "seconds"
    ahead = parsedate_to_datetime(value).timestamp() - time.time()
    return "date" if 0 < ahead <= 2.5 else f"odd date {value}"


SCRIPTED = [
    # step, first answer's status, what the answer shows, whether it cancels
    ("429_seconds", 429, "seconds", False),
    ("429_date", 429, "date", False),
    ("429_none", 429, "none", False),
    ("429_reset", 429, "reset", False),
    ("server_error", "5xx", "text/html", False),
    ("drop_before", None, "", False),
    ("drop_after", None, "", True),
    ("late_answer", None, "", True),
    ("garbled_body", 200, "unreadable", True),
    ("refuse_200", 200, "no order", False),
    ("refuse_4xx", 409, "Order cannot be cancelled", False),
]


def shown(step: str, headers: dict[str, str], body: bytes) -> str:
    """What a test reads off a scripted answer, by the kind of step."""
    if step.startswith("429_"):
        return retry_after_form(headers)
    if step == "server_error":
        return headers.get("Content-Type", "").split(";")[0]
    if not body:
        return ""
    try:
        document = json.loads(body)
    except ValueError:
        return "unreadable"
    if step == "refuse_4xx":
        return str(document["message"])
    return "no order" if "order" not in document else "an order"


@pytest.mark.parametrize(
    ("step", "status", "seen", "cancels"), SCRIPTED, ids=[s[0] for s in SCRIPTED]
)
async def test_a_scripted_step_strikes_once_then_the_order_behaves_normally(
    start_sandbox: Start, step: str, status: object, seen: str, cancels: bool
) -> None:
    """Each step shapes exactly one cancel as named; the next cancel is normal."""
    sandbox = await start_sandbox(refusal_style="200")
    order_id = ids_with(sandbox, "reviewing")[0]
    sandbox.set_faults(Faults.from_json({"scripts": {order_id: [step]},
                                         "late_delay": 0.5}))
    path = f"/orders/{order_id}/cancel"

    first, headers, body = await send_once(sandbox, path, patience=0.2)
    status_after_first = orders(sandbox)[order_id]["status"]
    second, _, again = await send_once(sandbox, path)

    assert status == ("5xx" if first in (500, 502, 503) else first)
    assert seen == shown(step, headers, body)
    assert ("cancelled" if cancels else "reviewing") == status_after_first
    assert (200, "cancelled") == (second, json.loads(again)["order"]["status"])
    assert [step, None] == [e["fault"] for e in log(sandbox)]
    assert 1 == requests(sandbox)["scripted"][step]


async def test_scripts_run_in_turn_per_order_and_only_on_their_endpoint(
    start_sandbox: Start,
) -> None:
    """Steps come in script order; track scripts strike track, cancel ones cancel."""
    sandbox = await start_sandbox()
    first, second = (int(i) for i in ids_with(sandbox, "reviewing")[:2])
    sandbox.set_faults(Faults(
        scripts={first: ("server_error", "refuse_4xx")},
        track_scripts={second: ("429_none",)},
    ))

    statuses = [
        (await send_once(sandbox, f"/orders/{first}/track", "GET"))[0],
        (await send_once(sandbox, f"/orders/{second}/track", "GET"))[0],
        (await send_once(sandbox, f"/orders/{second}/cancel"))[0],
        (await send_once(sandbox, f"/orders/{first}/cancel"))[0],
        (await send_once(sandbox, f"/orders/{first}/cancel"))[0],
        (await send_once(sandbox, f"/orders/{first}/cancel"))[0],
    ]

    assert [200, 429, 200, statuses[3], 409, 200] == statuses
    assert statuses[3] in (500, 502, 503)


async def test_scripts_are_set_by_the_control_endpoint_and_restart(
    start_sandbox: Start,
) -> None:
    """POST /_sandbox/faults takes scripts keyed by string IDs and restarts them."""
    sandbox = await start_sandbox()
    order_id = ids_with(sandbox, "reviewing")[0]
    body = {"scripts": {order_id: ["429_seconds"]}}

    async with aiohttp.ClientSession() as control:
        posted = []
        for _ in range(2):
            async with control.post(control_url(sandbox, "faults"), json=body) as r:
                posted.append((r.status, (await r.json())["faults"]["scripts"]))
            posted.append((await send_once(sandbox, f"/orders/{order_id}/cancel"))[0])

    assert [(200, {order_id: ["429_seconds"]}), 429] * 2 == posted


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"scripts": {"1": ["explode"]}}, "step must be one of"),
        ({"scripts": {"x1": ["drop_after"]}}, "bad ID"),
        ({"track_scripts": {"1": "drop_after"}}, "is a list"),
        ({"scripts": ["drop_after"]}, "must map order IDs"),
    ],
    ids=["unknown-step", "bad-id", "not-a-list", "not-a-map"],
)
def test_fault_scripts_reject_what_they_cannot_mean(
    body: dict[str, object], message: str
) -> None:
    """An unknown step, a non-numeric ID or a bare string is refused by name."""
    with pytest.raises(ValueError, match=message):
        Faults.from_json(body)

def test_record_gives_the_start_that_log_times_and_windows_count_from() -> None:
    """started_at_epoch is the clock at start-up, the origin of every `t`."""
    sandbox = Sandbox(SandboxConfig(orders=3), clock=FakeClock())

    assert START == sandbox.record()["started_at_epoch"]


def test_standalone_status_mix_flag_seeds_only_the_statuses_named() -> None:
    """--status-mix reviewing=1 seeds Reviewing orders only, as the benchmarks need."""
    from batchcancel.sandbox.__main__ import _config, build_parser

    args = ["--status-mix", "Reviewing=1", "--orders", "50"]
    config = _config(build_parser().parse_args(args))
    book = orders(Sandbox(config, clock=FakeClock()))
    statuses = {order["status"] for order in book.values()}

    assert {"reviewing"} == statuses


def test_standalone_refuses_a_malformed_status_mix() -> None:
    """A --status-mix that is not STATUS=WEIGHT exits 2 before serving."""
    finished = subprocess.run(
        [sys.executable, "-m", "batchcancel.sandbox", "--status-mix", "reviewing"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )

    assert 2 == finished.returncode
    assert "STATUS=WEIGHT" in finished.stderr
