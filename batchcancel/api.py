"""The thanks.io client: the only module that knows paths, headers and bodies.

It sends one request and parses the answer into an ``Answer``; it never
decides outcomes and never retries.  Every aiohttp failure is mapped here,
and only here, into ``TransportError``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import aiohttp
from yarl import URL

from batchcancel.config import DEFAULT_BASE_URL as DEFAULT_BASE_URL
from batchcancel.errors import CertificateRefused, TransportError
from batchcancel.outcomes import Answer, OrderView, normalise_status
from batchcancel.plan import Listed, parse_listed
from batchcancel.ratelimit import RateHeaders
from batchcancel.timestamps import parse_timestamp

USER_AGENT = "batchcancel (+https://pypi.org/project/batchcancel/)"


class CancelClient(Protocol):
    """What the pipeline needs from an API client."""

    async def cancel(self, order_id: int) -> Answer:
        """Ask the API to cancel one order; raise TransportError without answer."""

    async def track(self, order_id: int) -> Answer:
        """Read one order's current status; raise TransportError without answer."""

    async def list_orders(self, page: int, per_page: int,
                          sub_account_id: int | None = None) -> ListAnswer:
        """One page of the order list; raise TransportError without answer."""


class ThanksIo:
    """A thin client over one shared ``aiohttp.ClientSession``."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str,
                 token: str) -> None:
        self._session = session
        self._base = URL(base_url.rstrip("/"))
        self._headers = {
            "Authorization": f"Bearer {token}",
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
        }

    async def cancel(self, order_id: int) -> Answer:
        return await self._send("PUT", self._order_path(order_id, "cancel"))

    async def track(self, order_id: int) -> Answer:
        return await self._send("GET", self._order_path(order_id, "track"))

    async def list_orders(self, page: int, per_page: int,
                          sub_account_id: int | None = None) -> ListAnswer:
        """One page of ``GET /orders/list``, newest orders first."""
        # Built here, not taken from ``links.next``, which drops the page
        # size and the sub-account filter.
        query = {"items_per_page": str(per_page), "page": str(page)}
        if sub_account_id is not None:
            query["sub_account_id"] = str(sub_account_id)
        url = (self._base / "orders" / "list").with_query(query)
        status, body, headers = await self._exchange("GET", url)
        return parse_list_answer(status, body, headers)

    def _order_path(self, order_id: int, action: str) -> URL:
        # The path is built from the validated integer alone, so nothing an
        # input file holds can change which URL is requested.
        if type(order_id) is not int or order_id <= 0:
            raise ValueError("order IDs must be positive integers")
        return self._base / "orders" / str(order_id) / action

    async def _send(self, method: str, url: URL) -> Answer:
        return parse_answer(*await self._exchange(method, url))

    async def _exchange(self, method: str, url: URL
                        ) -> tuple[int, bytes, Mapping[str, str]]:
        try:
            async with self._session.request(
                method, url, headers=self._headers, allow_redirects=False
            ) as response:
                return response.status, await response.read(), response.headers
        except aiohttp.ConnectionTimeoutError as exc:
            raise TransportError("connect timeout", sent=False) from exc
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise TransportError("read timeout") from exc
        except aiohttp.ClientConnectorCertificateError as exc:
            reason = getattr(exc.certificate_error, "verify_message", "") or str(
                exc.certificate_error)
            raise CertificateRefused(exc.host, reason) from exc
        except aiohttp.ClientConnectorError as exc:
            raise TransportError("connect failed", type(exc).__name__,
                                 sent=False) from exc
        except aiohttp.ClientPayloadError as exc:
            raise TransportError("unreadable body", type(exc).__name__) from exc
        except (aiohttp.ClientError, asyncio.IncompleteReadError) as exc:
            raise TransportError("connection lost", type(exc).__name__) from exc


def parse_answer(status: int, body: bytes,
                 headers: Mapping[str, str] | None = None) -> Answer:
    """Parse an answer's body without judging it."""
    headers = headers if headers is not None else {}
    retry_after = headers.get("Retry-After")
    rate = parse_rate_headers(headers)
    try:
        document = json.loads(body) if body.strip() else None
    except (ValueError, UnicodeDecodeError, RecursionError):
        return Answer(status, readable=False, retry_after=retry_after, rate=rate)

    return Answer(
        status,
        order=_order_of(document),
        message=_message_of(document),
        readable=True,
        retry_after=retry_after,
        rate=rate,
    )


def parse_rate_headers(headers: Mapping[str, str],
                       now: float | None = None) -> RateHeaders | None:
    """``X-RateLimit-*`` headers; None when the answer has none."""
    limit = _header_int(headers, "X-RateLimit-Limit")
    remaining = _header_int(headers, "X-RateLimit-Remaining")
    if limit is None and remaining is None:
        return None
    reset = _header_int(headers, "X-RateLimit-Reset")
    if reset is not None and reset > 1_000_000_000:
        # An epoch time (the common form); small values are seconds to wait.
        reset_in: float | None = max(0.0, reset - (now or time.time()))
    else:
        reset_in = None if reset is None else float(reset)
    return RateHeaders(limit, remaining, reset_in)


def _header_int(headers: Mapping[str, str], name: str) -> int | None:
    value = (headers.get(name) or "").strip()
    return int(value) if value.isascii() and value.isdigit() else None


def _order_of(document: object) -> OrderView | None:
    if not isinstance(document, dict):
        return None
    order = document.get("order")
    data = document.get("data")
    if order is None and isinstance(data, dict):
        order = data.get("order")  # the track endpoint nests it in "data"
    if not isinstance(order, dict):
        return None
    return OrderView(
        status=normalise_status(order.get("status")),
        authorization_total=_whole_number(order.get("authorization_total")),
        sub_account_id=_whole_number(order.get("sub_account_id")),
        updated_at=parse_timestamp(order.get("updated_at")),
    )


def _message_of(document: object) -> str | None:
    if isinstance(document, dict):
        message = document.get("message")
        if isinstance(message, str) and message.strip():
            return message
    return None


def _whole_number(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        return int(value.strip())
    return None


@dataclass(frozen=True, slots=True)
class ListPage:
    """One page of the order list."""

    orders: tuple[Listed, ...]
    current_page: int | None
    last_page: int | None
    per_page: int | None
    raw_count: int


@dataclass(frozen=True, slots=True)
class ListAnswer:
    """An answer of the order list, parsed but not judged."""

    http_status: int
    page: ListPage | None = None
    message: str | None = None
    readable: bool = True
    retry_after: str | None = None
    rate: RateHeaders | None = None


def parse_list_answer(status: int, body: bytes,
                      headers: Mapping[str, str] | None = None) -> ListAnswer:
    headers = headers if headers is not None else {}
    retry_after, rate = headers.get("Retry-After"), parse_rate_headers(headers)
    try:
        document = json.loads(body) if body.strip() else None
    except (ValueError, UnicodeDecodeError, RecursionError):
        return ListAnswer(status, readable=False, retry_after=retry_after, rate=rate)
    return ListAnswer(status, page=_page_of(document), message=_message_of(document),
                      retry_after=retry_after, rate=rate)


def _page_of(document: object) -> ListPage | None:
    if not isinstance(document, dict) or not isinstance(document.get("data"), list):
        return None
    items = [item for item in document["data"] if isinstance(item, dict)]
    meta = document.get("meta")
    meta = meta if isinstance(meta, dict) else {}
    orders = (parse_listed(item, parse_timestamp(item.get("created_at")),
                           parse_timestamp(item.get("updated_at")))
              for item in items)
    return ListPage(
        orders=tuple(order for order in orders if order is not None),
        current_page=_whole_number(meta.get("current_page")),
        last_page=_whole_number(meta.get("last_page")),
        # Documented as an integer, seen as a string ("25"): read both.
        per_page=_whole_number(meta.get("per_page")),
        raw_count=len(document["data"]),
    )
