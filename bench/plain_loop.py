"""The peer of batchcancel with nothing on top: the least an aiohttp loop does.

``python -m bench.plain_loop BASE_URL FIRST_ID COUNT CONCURRENCY`` sends one
``PUT {base}/orders/{id}/cancel`` for each ID, from ``CONCURRENCY`` workers
sharing one session set up as batchcancel sets up its own (the same
timeouts, connection limit, no proxy lookup, no redirects, no silent
re-send), and reads each body. No parsing, no retries, no rate gate, no
report: what is left is the cost of HTTP itself. The token comes from
``THANKSIO_API_TOKEN``.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Iterator

import aiohttp


async def cancel_all(base_url: str, ids: Iterator[int], concurrency: int) -> None:
    """Cancel every ID from ``concurrency`` workers over one session."""
    headers = {"Authorization": f"Bearer {os.environ['THANKSIO_API_TOKEN']}",
               "Accept": "application/json", "User-Agent": "plain-loop"}
    timeout = aiohttp.ClientTimeout(total=None, connect=10, sock_connect=10,
                                    sock_read=30)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector,
                                     trust_env=False) as session:
        if hasattr(session, "_retry_connection"):
            session._retry_connection = False
        workers = [_worker(session, base_url, ids, headers)
                   for _ in range(concurrency)]
        await asyncio.gather(*workers)


async def _worker(session: aiohttp.ClientSession, base_url: str,
                  ids: Iterator[int], headers: dict[str, str]) -> None:
    # One shared iterator: each worker takes the next ID when it is free.
    for order_id in ids:
        url = f"{base_url}/orders/{order_id}/cancel"
        async with session.put(url, headers=headers,
                               allow_redirects=False) as answer:
            await answer.read()


def main(argv: list[str]) -> int:
    base_url, first, count, concurrency = argv
    ids = iter(range(int(first), int(first) + int(count)))
    asyncio.run(cancel_all(base_url, ids, int(concurrency)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
