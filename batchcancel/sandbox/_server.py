"""The sandbox server: routes, auth, the rate limit, faults, and the record of truth.

Every request goes through one handler, so every request, even one with a bad token
or a hostile path, lands in the request log. The handler first decides the whole
answer (`Answer`) without awaiting anything, then delivers it: late, dropped or on
time. Deciding without awaiting keeps each request's effect on the order book atomic.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import math
import random
import re
import ssl
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import cast

from aiohttp import web

from ._config import (
    APPLY_THEN_SPOIL,
    FAULT_NAMES,
    SCRIPT_STEPS,
    STATUSES,
    Endpoint,
    FaultName,
    Faults,
    SandboxConfig,
    ScriptStep,
)
from ._orders import OrderBook, Verdict
from ._views import cancel_view, list_item, list_page, track_view
from ._window import FixedWindow, http_date, retry_after

Headers = tuple[tuple[str, str], ...]

JSON_TYPE = "application/json"
NOT_FOUND = {"message": "Not Found"}
TOO_MANY = {"message": "Too Many Attempts."}
CANNOT = "Order cannot be cancelled"
# A refusal inside a 200, the way thanks.io reports some failures elsewhere.
REFUSED_IN_200 = {"failure": True, "message": CANNOT, "errors": [CANNOT]}
AUTH_MESSAGES = {401: "Unauthenticated.", 403: "Unauthorized"}
DEFAULT_PAGE_SIZE = 25
# The order IDs the API could have: positive, canonical, ASCII decimal.
ORDER_ID = r"([1-9][0-9]{0,17})"
CANCEL_PATH = re.compile(rf"/api/v2/orders?/{ORDER_ID}/cancel")
TRACK_PATH = re.compile(rf"/api/v2/orders/{ORDER_ID}/track")
LIST_PATH = "/api/v2/orders/list"
CONTROL_ROUTES = {
    ("GET", "/_sandbox/record"): "record",
    ("POST", "/_sandbox/faults"): "faults",
    ("POST", "/_sandbox/rate"): "rate",
    ("POST", "/_sandbox/status"): "status",
}
# The request counts in the record, beside the per-fault ones.
COUNTED = (
    "total",
    "cancel",
    "list",
    "track",
    "control",
    "throttled_429",
    "unauthorized",
    "invalid_path",
)
ERROR_PAGE = (
    "<!DOCTYPE html>\n<html><head><title>{status} Server Error</title></head>"
    "<body><h1>{status} Server Error</h1><p>sandbox fault</p></body></html>\n"
)


@dataclass(frozen=True, slots=True)
class Route:
    """What a request asks for: an API endpoint (with an order ID) or a control."""

    endpoint: Endpoint | None = None
    order_id: int | None = None
    control: str | None = None


@dataclass(frozen=True, slots=True)
class Answer:
    """A decided answer, with how it is to be delivered."""

    status: int
    body: bytes
    content_type: str = JSON_TYPE
    headers: Headers = ()
    fault: FaultName | ScriptStep | None = None
    drop: bool = False
    delay: float = 0.0


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One request as it reached the sandbox; `status` is None when none was sent."""

    t: float
    method: str
    path: str
    status: int | None = None
    fault: FaultName | ScriptStep | None = None


def match_route(method: str, path: str) -> Route | None:
    """The route a request's method and decoded path name, or None for no route."""
    control = CONTROL_ROUTES.get((method, path))
    if control is not None:
        return Route(control=control)

    if method == "PUT" and (found := CANCEL_PATH.fullmatch(path)):
        return Route(endpoint="cancel", order_id=int(found.group(1)))
    if method == "GET" and (found := TRACK_PATH.fullmatch(path)):
        return Route(endpoint="track", order_id=int(found.group(1)))
    if method == "GET" and path == LIST_PATH:
        return Route(endpoint="list")
    return None


class Sandbox:
    """A local stand-in for the thanks.io REST API v2 with a record of truth."""

    def __init__(
        self, config: SandboxConfig, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.config = config
        self._clock = clock

        # One seed, two streams: faults drawn per request must not move the book.
        master = random.Random(config.seed)
        book_rng = random.Random(master.getrandbits(64))
        self._fault_rng = random.Random(master.getrandbits(64))

        self._started = clock()
        self._book = OrderBook(config, book_rng, self._started)
        self._faults = config.faults
        self._rate_limit: int | None = None
        self._rate_window = config.rate_window
        self._window: FixedWindow | None = None
        self.set_rate_limit(config.rate_limit, config.rate_window)
        self._counts: Counter[str] = Counter()
        self._scripted: Counter[ScriptStep] = Counter()
        # How many steps of each (endpoint, order) script have been served.
        self._turns: Counter[tuple[Endpoint, int]] = Counter()
        self._log: list[LogEntry] = []
        self._runner: web.AppRunner | None = None
        self._base_url: str | None = None
        self._stopping = asyncio.Event()

    @property
    def base_url(self) -> str:
        """The API root clients talk to, such as "http://127.0.0.1:43123/api/v2"."""
        if self._base_url is None:
            raise RuntimeError("the sandbox has not been started")
        return self._base_url

    @property
    def faults(self) -> Faults:
        """The faults in force now."""
        return self._faults

    async def start(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """Listen on a loopback address; port 0 picks a free port.

        With `ssl_context` the sandbox speaks HTTPS and its base URL says so.
        """
        require_loopback(host)
        if self._runner is not None:
            raise RuntimeError("the sandbox has already been started")

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # A short shutdown grace: late answers are woken by stop() anyway.
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        await web.TCPSite(runner, host, port, ssl_context=ssl_context).start()

        self._runner = runner
        self._started = self._clock()
        self.set_rate_limit(self._rate_limit, self._rate_window)
        bound_port = runner.addresses[0][1]
        shown_host = f"[{host}]" if ":" in host else host
        scheme = "http" if ssl_context is None else "https"
        self._base_url = f"{scheme}://{shown_host}:{bound_port}/api/v2"

    async def stop(self) -> None:
        """Stop listening; answers still held back by a late fault go out at once."""
        self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def set_faults(self, faults: Faults) -> None:
        """Replace the faults in force, from the next request on.

        Scripts start again from their first step.
        """
        self._faults = faults
        self._turns.clear()

    def set_rate_limit(self, limit: int | None, window: float | None = None) -> None:
        """Replace the throttle (None turns it off) and start counting afresh."""
        length = self._rate_window if window is None else window
        # Checked here as well as in the config: the control endpoint calls this.
        if limit is not None and (type(limit) is not int or limit < 1):
            raise ValueError("rate limit must be an integer of at least 1, or None")
        if not (length > 0 and math.isfinite(length)):
            raise ValueError("rate window must be positive")

        self._rate_limit, self._rate_window = limit, length
        self._window = None
        if limit is not None:
            window_now = FixedWindow(limit=limit, length=length, origin=self._started)
            self._window = window_now.at(self._clock())

    def record(self) -> dict[str, object]:
        """The record of truth: every order's fate, request counts, the request log."""
        orders = self._book.orders(self._clock())
        requests: dict[str, object] = {key: self._counts[key] for key in COUNTED}
        requests["faults"] = {name: self._counts[name] for name in FAULT_NAMES}
        requests["scripted"] = {step: self._scripted[step] for step in SCRIPT_STEPS}
        return {
            "started_at_epoch": self._started,
            "orders": {str(order.id): order.as_record() for order in orders},
            "refunded_credits_total": sum(o.refunded_credits for o in orders),
            "requests": requests,
            "request_log": [asdict(entry) for entry in self._log],
        }

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        now = self._clock()
        position = len(self._log)
        self._log.append(
            LogEntry(round(now - self._started, 6), request.method, request.raw_path)
        )
        self._counts["total"] += 1

        answer = await self._decide(request, now)
        status = None if answer.drop else answer.status
        self._log[position] = replace(
            self._log[position], status=status, fault=answer.fault
        )
        return await self._deliver(request, answer)

    async def _decide(self, request: web.Request, now: float) -> Answer:
        route = match_route(request.method, request.path)
        if route is None:
            self._counts["invalid_path"] += 1
            return self._json(404, NOT_FOUND, now)
        if route.control is not None:
            self._counts["control"] += 1
            if not peer_is_loopback(request.remote):
                return _plain_json(403, {"message": "control is for loopback only"})
            return await self._control(route.control, request)

        # Only the control branch awaits; from here on nothing does.
        if not self._authorized(request):
            self._counts["unauthorized"] += 1
            status = self.config.auth_status
            return self._json(status, {"message": AUTH_MESSAGES[status]}, now)

        assert route.endpoint is not None  # every non-control route names one
        self._counts[route.endpoint] += 1
        if route.order_id is not None and route.endpoint == "cancel":
            self._book.note_cancel_request(route.order_id)
        throttled = self._throttle(now)
        if throttled is not None:
            return throttled

        step = self._next_step(route)
        if step is not None:
            return self._serve_step(route, request, now, step)
        return self._serve(route, request, now, self._draw_fault(route.endpoint))

    def _authorized(self, request: web.Request) -> bool:
        scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and credentials == self.config.token

    def _throttle(self, now: float) -> Answer | None:
        if self._window is None:
            return None

        self._window, admitted = self._window.admit(now)
        if admitted:
            return None

        self._counts["throttled_429"] += 1
        wait = retry_after(self.config.retry_after, self._window.reopens_at, now)
        extra: Headers = () if wait is None else (("Retry-After", wait),)
        return self._json(429, TOO_MANY, now, extra)

    def _draw_fault(self, endpoint: Endpoint) -> FaultName | None:
        faults = self._faults
        if endpoint not in faults.endpoints:
            return None

        # One draw per request against the running sum: at most one fault strikes,
        # each with exactly its own probability.
        draw = self._fault_rng.random()
        ceiling = 0.0
        for name, probability in faults.probabilities():
            ceiling += probability
            if draw < ceiling:
                return self._strike(name, endpoint)
        return None

    def _strike(self, name: FaultName, endpoint: Endpoint) -> FaultName | None:
        if endpoint != "cancel" and name in APPLY_THEN_SPOIL:
            return None

        self._counts[name] += 1
        return name

    def _next_step(self, route: Route) -> ScriptStep | None:
        if route.order_id is None or route.endpoint not in ("cancel", "track"):
            return None

        faults = self._faults
        scripts = faults.scripts if route.endpoint == "cancel" else faults.track_scripts
        steps = scripts.get(route.order_id, ())
        turn = self._turns[(route.endpoint, route.order_id)]
        if turn >= len(steps):
            return None

        self._turns[(route.endpoint, route.order_id)] += 1
        self._scripted[steps[turn]] += 1
        return steps[turn]

    def _serve_step(
        self, route: Route, request: web.Request, now: float, step: ScriptStep
    ) -> Answer:
        if step.startswith("429_"):
            return self._scripted_429(step, now)
        if step == "refuse_200":
            return replace(self._json(200, REFUSED_IN_200, now), fault=step)
        if step == "refuse_4xx":
            return replace(self._json(409, {"message": CANNOT}, now), fault=step)

        # The rest are the probabilistic faults, struck on purpose.
        fault = cast(FaultName, step)
        if fault not in APPLY_THEN_SPOIL:
            return self._refuse_by_fault(fault, now)
        return self._spoil(self._answer(route, request, now), fault)

    def _scripted_429(self, step: ScriptStep, now: float) -> Answer:
        headers = dict(self._rate_headers(now))
        if step == "429_seconds":
            headers["Retry-After"] = "1"
        elif step == "429_date":
            headers["Retry-After"] = http_date(math.ceil(now) + 1)
        elif step == "429_reset":
            # A throttle that names only when its window reopens, as an epoch.
            headers["X-RateLimit-Limit"] = str(self._rate_limit or 60)
            headers["X-RateLimit-Remaining"] = "0"
            headers["X-RateLimit-Reset"] = str(math.ceil(now) + 1)
        body = _encode(TOO_MANY)
        return Answer(429, body, headers=tuple(headers.items()), fault=step)

    def _serve(
        self, route: Route, request: web.Request, now: float, fault: FaultName | None
    ) -> Answer:
        if fault is not None and fault not in APPLY_THEN_SPOIL:
            return self._refuse_by_fault(fault, now)
        return self._spoil(self._answer(route, request, now), fault)

    def _answer(self, route: Route, request: web.Request, now: float) -> Answer:
        if route.endpoint == "list":
            return self._list(request, now)
        if route.endpoint == "track":
            return self._track(route.order_id, now)
        return self._cancel(route.order_id, now)

    def _refuse_by_fault(self, fault: FaultName, now: float) -> Answer:
        if fault == "drop_before":
            return Answer(status=0, body=b"", fault=fault, drop=True)
        if fault == "server_error":
            status = self._fault_rng.choice((500, 502, 503))
            page = ERROR_PAGE.format(status=status).encode()
            return Answer(status, page, "text/html", self._rate_headers(now), fault)

        style: str = self._faults.retry_after_style
        if style == "mixed":
            style = self._fault_rng.choice(("seconds", "date", "none"))
        waits = {"seconds": "1", "date": http_date(math.ceil(now) + 1)}
        wait = waits.get(style)
        extra: Headers = () if wait is None else (("Retry-After", wait),)
        return replace(self._json(429, TOO_MANY, now, extra), fault=fault)

    def _spoil(self, answer: Answer, fault: FaultName | ScriptStep | None) -> Answer:
        if fault == "drop_after":
            return replace(answer, fault=fault, drop=True)
        if fault == "late_answer":
            return replace(answer, fault=fault, delay=self._faults.late_delay)
        if fault == "garbled_body":
            # Cut mid-way, so the body is JSON that never closes.
            body = answer.body[: max(1, len(answer.body) // 2)]
            return replace(answer, status=200, body=body, fault=fault)
        return answer

    def _cancel(self, order_id: int | None, now: float) -> Answer:
        outcome = None if order_id is None else self._book.cancel(order_id, now)
        if outcome is None:
            return self._json(404, NOT_FOUND, now)

        order, verdict = outcome
        if verdict is Verdict.CANCELLED or order.refusal_status == 200:
            return self._json(200, {"order": cancel_view(order)}, now)
        if verdict is Verdict.ALREADY_CANCELLED:
            return self._json(400, {"message": "Order has already been cancelled"}, now)
        return self._json(order.refusal_status, {"message": CANNOT}, now)

    def _track(self, order_id: int | None, now: float) -> Answer:
        order = None if order_id is None else self._book.get(order_id, now)
        if order is None:
            return self._json(404, NOT_FOUND, now)
        return self._json(200, {"data": track_view(order)}, now)

    def _list(self, request: web.Request, now: float) -> Answer:
        query = request.query
        asked_size = parse_positive_int(query.get("items_per_page"))
        per_page = min(asked_size or DEFAULT_PAGE_SIZE, self.config.max_page_size)
        page = parse_positive_int(query.get("page")) or 1

        sub_text = query.get("sub_account_id", "")
        sub_account_id = parse_positive_int(sub_text)
        if sub_text and sub_account_id not in self._book.sub_accounts():
            message = {"message": "Sub Account ID does not exist"}
            return self._json(400, message, now)

        order_ids = self._book.listing(sub_account_id)
        shown = order_ids[(page - 1) * per_page : page * per_page]
        items = [list_item(order) for order in self._book.look(shown, now)]
        path = f"{request.url.origin()}{LIST_PATH}"
        body = list_page(items, len(order_ids), page, per_page, path)
        return self._json(200, body, now)

    async def _control(self, control: str, request: web.Request) -> Answer:
        if control == "record":
            return _plain_json(200, self.record())

        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise ValueError("the body must be a JSON object")
            if control == "faults":
                self.set_faults(Faults.from_json(body))
                return _plain_json(200, {"faults": asdict(self._faults)})
            if control == "status":
                return self._force_status(body)
            self.set_rate_limit(body.get("limit"), body.get("window"))
        except (ValueError, TypeError) as exc:
            return _plain_json(400, {"message": str(exc)})
        rate = {"limit": self._rate_limit, "window": self._rate_window}
        return _plain_json(200, rate)

    def force_status(self, order_id: int, status: str) -> bool:
        """Put an order in ``status`` as if the world had moved on (a customer
        cancelled it, it went to print); False when the book lacks it."""
        return self._book.force(order_id, status, self._clock())

    def _force_status(self, body: dict[str, object]) -> Answer:
        order_id, status = body.get("order_id"), body.get("status")
        if type(order_id) is not int or status not in STATUSES:
            raise ValueError(f"need an integer order_id and a status in {STATUSES}")
        if not self.force_status(order_id, str(status)):
            return _plain_json(404, NOT_FOUND)
        return _plain_json(200, {"order_id": order_id, "status": status})

    def _json(
        self, status: int, body: object, now: float, extra: Headers = ()
    ) -> Answer:
        return Answer(status, _encode(body), headers=self._rate_headers(now) + extra)

    def _rate_headers(self, now: float) -> Headers:
        if self._window is None or not self.config.rate_headers:
            return ()

        window = self._window.at(now)
        headers: Headers = (
            ("X-RateLimit-Limit", str(window.limit)),
            ("X-RateLimit-Remaining", str(window.remaining)),
        )
        if self.config.reset_header:
            headers += (("X-RateLimit-Reset", str(math.ceil(window.reopens_at))),)
        return headers

    async def _deliver(
        self, request: web.Request, answer: Answer
    ) -> web.StreamResponse:
        if answer.delay > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), answer.delay)

        if answer.drop:
            if request.transport is not None:
                request.transport.close()
            # aiohttp finds the connection closed when it tries to send this and
            # gives up quietly, which is the point.
            return web.Response()
        return web.Response(
            status=answer.status,
            body=answer.body,
            content_type=answer.content_type,
            headers=dict(answer.headers),
        )


def require_loopback(host: str) -> None:
    """Refuse to serve on anything but a loopback IP address."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is None or not address.is_loopback:
        raise ValueError(
            f"the sandbox listens on loopback IP addresses only (such as 127.0.0.1),"
            f" not {host!r}"
        )


def peer_is_loopback(remote: str | None) -> bool:
    """True for a request from this machine (control endpoints take no token)."""
    try:
        return remote is not None and ipaddress.ip_address(remote).is_loopback
    except ValueError:
        return False


def parse_positive_int(text: str | None) -> int | None:
    """A canonical positive decimal integer from a query value, or None."""
    if text is None or not re.fullmatch(ORDER_ID, text):
        return None
    return int(text)


def _plain_json(status: int, body: object) -> Answer:
    return Answer(status, _encode(body))


def _encode(body: object) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()
