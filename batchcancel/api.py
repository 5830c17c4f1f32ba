"""The thanks.io client: the only module that knows paths, headers and bodies.

It sends one request and parses the answer into an ``Answer``; it never
decides outcomes and never retries.  Every aiohttp failure is mapped here,
and only here, into ``TransportError``.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Protocol

import aiohttp
from yarl import URL

from batchcancel.errors import TransportError
from batchcancel.outcomes import Answer, OrderView, normalise_status
from batchcancel.timestamps import parse_timestamp

DEFAULT_BASE_URL = "https://api.thanks.io/api/v2"
USER_AGENT = "batchcancel (+https://pypi.org/project/batchcancel/)"


class CancelClient(Protocol):
    """What the pipeline needs from an API client."""

    async def cancel(self, order_id: int) -> Answer:
        """Ask the API to cancel one order; raise TransportError without answer."""

    async def track(self, order_id: int) -> Answer:
        """Read one order's current status; raise TransportError without answer."""


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

    def _order_path(self, order_id: int, action: str) -> URL:
        # The path is built from the validated integer alone, so nothing an
        # input file holds can change which URL is requested.
        if type(order_id) is not int or order_id <= 0:
            raise ValueError("order IDs must be positive integers")
        return self._base / "orders" / str(order_id) / action

    async def _send(self, method: str, url: URL) -> Answer:
        try:
            async with self._session.request(
                method, url, headers=self._headers, allow_redirects=False
            ) as response:
                body = await response.read()
                return parse_answer(response.status, body, response.headers)
        except aiohttp.ConnectionTimeoutError as exc:
            raise TransportError("connect timeout", sent=False) from exc
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise TransportError("read timeout") from exc
        except aiohttp.ClientConnectorError as exc:
            raise TransportError("connect failed", type(exc).__name__,
                                 sent=False) from exc
        except aiohttp.ClientPayloadError as exc:
            raise TransportError("unreadable body", type(exc).__name__) from exc
        except (aiohttp.ClientError, asyncio.IncompleteReadError) as exc:
            raise TransportError("connection lost", type(exc).__name__) from exc


def parse_answer(status: int, body: bytes,
                 headers: Any = None) -> Answer:
    """Parse an answer's body without judging it."""
    retry_after = headers.get("Retry-After") if headers is not None else None
    try:
        document = json.loads(body) if body.strip() else None
    except (ValueError, UnicodeDecodeError):
        return Answer(status, readable=False, retry_after=retry_after)

    return Answer(
        status,
        order=_order_of(document),
        message=_message_of(document),
        readable=True,
        retry_after=retry_after,
    )


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
