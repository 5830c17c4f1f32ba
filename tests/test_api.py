"""The API client: paths, headers, answers parsed, failures mapped."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import aiohttp
import pytest
from aioresponses import aioresponses

from batchcancel.api import ThanksIo, parse_answer
from batchcancel.errors import TransportError

BASE = "https://api.example.test/api/v2"
TOKEN = "tok-123"


@pytest.fixture
async def client() -> AsyncIterator[ThanksIo]:
    async with aiohttp.ClientSession() as session:
        yield ThanksIo(session, BASE, TOKEN)


async def test_cancel_is_a_put_with_the_bearer_token_and_no_body(
    client: ThanksIo,
) -> None:
    """The cancel request is PUT /orders/{id}/cancel with Bearer auth, no body."""
    with aioresponses() as mock:
        mock.put(f"{BASE}/orders/42/cancel", payload={"order": {"status": "cancelled"}})

        await client.cancel(42)

        ((method, url), calls), = mock.requests.items()
        assert ("PUT", f"{BASE}/orders/42/cancel") == (method, str(url))
        assert f"Bearer {TOKEN}" == calls[0].kwargs["headers"]["Authorization"]
        assert calls[0].kwargs.get("data") is None
        assert calls[0].kwargs["allow_redirects"] is False


@pytest.mark.parametrize("bad", [0, -1, True, "12", 1.0])
async def test_only_positive_integers_make_a_path(client: ThanksIo,
                                                  bad: object) -> None:
    """Nothing but a validated positive int can become part of the URL."""
    with pytest.raises(ValueError, match="positive integers"):
        await client.cancel(bad)  # type: ignore[arg-type]


async def test_the_cancel_answer_is_parsed(client: ThanksIo) -> None:
    """Status, authorization_total, sub-account and updated_at are read."""
    body = {"order": {"status": "Cancelled", "authorization_total": 267,
                      "grand_total": 0, "sub_account_id": 66,
                      "updated_at": "2026-12-04 10:00:05", "message": "Hi Ann"}}
    with aioresponses() as mock:
        mock.put(f"{BASE}/orders/42/cancel", payload=body)

        answer = await client.cancel(42)

    assert answer.order is not None
    assert ("cancelled", 267, 66) == (answer.order.status,
                                      answer.order.authorization_total,
                                      answer.order.sub_account_id)
    assert datetime(2026, 12, 4, 10, 0, 5, tzinfo=UTC) == answer.order.updated_at


async def test_a_429_keeps_its_retry_after(client: ThanksIo) -> None:
    """The raw Retry-After reaches the classifier."""
    with aioresponses() as mock:
        mock.put(f"{BASE}/orders/42/cancel", status=429,
                 payload={"message": "Too Many Attempts."},
                 headers={"Retry-After": "7"})

        answer = await client.cancel(42)

    assert (429, "7", "Too Many Attempts.") == (answer.http_status,
                                                answer.retry_after, answer.message)


@pytest.mark.parametrize(("exception", "kind", "sent"), [
    (TimeoutError(), "read timeout", True),
    (aiohttp.ServerDisconnectedError(), "connection lost", True),
    (aiohttp.ClientPayloadError("cut"), "unreadable body", True),
    (aiohttp.ConnectionTimeoutError(), "connect timeout", False),
])
async def test_transport_failures_are_mapped(client: ThanksIo,
                                             exception: Exception, kind: str,
                                             sent: bool) -> None:
    """aiohttp's failures become TransportError, saying if it may have been sent."""
    with aioresponses() as mock:
        mock.put(f"{BASE}/orders/42/cancel", exception=exception)

        with pytest.raises(TransportError) as caught:
            await client.cancel(42)

    assert (kind, sent) == (caught.value.kind, caught.value.sent)
    assert TOKEN not in str(caught.value)


def test_an_html_error_page_is_unreadable_not_a_crash() -> None:
    """A 502 page from a proxy is parsed as an unreadable answer."""
    answer = parse_answer(502, b"<html><body>Bad gateway</body></html>")

    assert (502, False, None) == (answer.http_status, answer.readable, answer.order)


def test_the_track_answer_nests_the_order_in_data() -> None:
    """GET /orders/{id}/track gives {"data": {"order": {...}}} in Title Case."""
    answer = parse_answer(200, b'{"data": {"id": 7, "order": {"status": "Printed"}}}')

    assert answer.order is not None
    assert "printed" == answer.order.status


@pytest.mark.parametrize(("raw", "expected"), [
    (267, 267), (267.0, 267), ("267", 267), (True, None), ("2.5", None), (None, None),
])
def test_amounts_are_whole_cents_or_unknown(raw: object, expected: int | None) -> None:
    """authorization_total is read as whole cents; anything else is unknown."""
    body = ('{"order": {"status": "cancelled", "authorization_total": %s}}'
            % ("null" if raw is None else repr(raw).replace("'", '"').lower()))

    answer = parse_answer(200, body.encode())

    assert answer.order is not None
    assert expected == answer.order.authorization_total


def test_a_deeply_nested_body_is_unreadable_not_a_crash() -> None:
    """'[' two hundred thousand times is an unreadable answer, retried."""
    answer = parse_answer(200, b"[" * 200_000)

    assert answer.readable is False
