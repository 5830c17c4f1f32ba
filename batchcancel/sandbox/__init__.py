"""A local stand-in for the thanks.io REST API v2, with a record of truth.

End-to-end tests, the demo and the benchmarks run the client against it on loopback
and compare the client's report with `Sandbox.record()`, order by order. It is written
from the API reference alone and imports nothing from the rest of batchcancel: if the
client and the sandbox shared code, a wrong belief about the API would pass every test.

Endpoints, all under /api/v2 and all needing `Authorization: Bearer <token>`:

- `PUT /orders/{id}/cancel` and the older `PUT /order/{id}/cancel`;
- `GET /orders/{id}/track`;
- `GET /orders/list?items_per_page=N&page=K&sub_account_id=S`.

How a cancel is answered, by the order's state and its refusal style:

============================  ==========================  ============================
order is                      refusal style "200"         refusal style "4xx"
============================  ==========================  ============================
Reviewing, window open        200, order now cancelled    200, order now cancelled
already cancelled (any way)   200, order as it was        400 "Order has already been
                                                          cancelled"
any other status              200, order unchanged        409 or 400 "Order cannot be
                                                          cancelled" (fixed per order)
unknown ID                    404 "Not Found"             404 "Not Found"
============================  ==========================  ============================

Style "mixed" gives each order one of the two styles, drawn from the seed. A Reviewing
order whose window has passed is Processing by then, so it is refused like any other.
Only the first cancel of a Reviewing order refunds credits (its
`authorization_total`).

The record of truth, `Sandbox.record()` (also `GET /_sandbox/record`), is plain JSON:

- `started_at_epoch`: when the sandbox started listening (wall-clock epoch seconds);
  request times in `request_log` count from it, and the fixed rate windows start at
  it and every window length after;
- `orders`: by order ID as a string, each with `status`, `refunded_credits`,
  `authorization_total`, `sub_account_id`, `cancelled_by_sandbox_api`,
  `cancel_requests`, `initial_status`, `refusal_status` (200, 400 or 409: how this
  order answers a refused cancel), `created_at_epoch` and `updated_at_epoch`;
- `refunded_credits_total`: the sum of `refunded_credits`;
- `requests`: `total`, `cancel`, `list`, `track`, `control`, `throttled_429`,
  `unauthorized`, `invalid_path`, and `faults` with one count per fault;
- `request_log`: one `{t, method, path, status, fault}` per request in arrival order;
  `t` is seconds since start, `path` the raw request target (query included), and
  `status` is null for a dropped connection (and while an answer is being decided).

Times are wall-clock UTC, or whatever `Sandbox(config, clock=...)` is given, which
lets tests move time instead of sleeping. Stored times keep their microseconds; the
"YYYY-MM-DD HH:MM:SS" renderings cut them, so a deadline read from one is early,
never late.

Other behaviour worth knowing:

- Any path or method that is not one of the routes above, including an order ID
  that is not a canonical positive decimal, is answered 404 `{"message": "Not Found"}`
  before the token is checked, and is not counted against the rate limit.
- `requests.throttled_429` in the record counts the rate limit's 429s only; injected
  ones are in `requests.faults.throttle_429`. `requests.total` counts every request,
  control requests included, so it equals the length of `request_log`.
- A cancel request counts in its order's `cancel_requests` when it carries the right
  token, whatever its answer (throttled and faulted ones too).
- With `rate_headers=False` no rate header is sent at all, not even on a 429.
- Fault scripts (`Faults.scripts`, `Faults.track_scripts`) map an order ID to the
  faults its successive cancel (or track) requests meet, one step per request, after
  which the order is served normally. Steps: `429_seconds`, `429_date`, `429_none`,
  `429_reset` (429 with `X-RateLimit-Reset` as an epoch and no `Retry-After`),
  `server_error`, `drop_before`, `drop_after`, `late_answer`, `garbled_body`, and
  two refusals that do no work: `refuse_200` (200 whose body holds an error and no
  order) and `refuse_4xx` (409 "Order cannot be cancelled"). A request the rate
  limit refuses spends no step, and while a step is due no probability is drawn.
  `requests.scripted` in the record counts the steps served; setting faults again
  starts every script afresh. The apply-then-spoil steps strike track too.
- `Sandbox.start(..., ssl_context=...)` serves HTTPS (still on loopback only).
- On list and track the apply-then-spoil faults (`drop_after`, `late_answer`,
  `garbled_body`) do not strike: those requests are answered normally.
- Control endpoints under /_sandbox/ need no token: `GET /_sandbox/record`,
  `POST /_sandbox/faults` (a JSON object of `Faults` fields, replacing all faults) and
  `POST /_sandbox/rate` (`{"limit": int | null, "window": float}`) and
  `POST /_sandbox/status` (`{"order_id": int, "status": "printing"}`: the order's
  status changes as if by the world, not the API; `Sandbox.force_status` in
  Python). They answer 403 to any peer that is not loopback.
"""

from ._config import Faults, SandboxConfig
from ._server import Sandbox

__all__ = ["Faults", "Sandbox", "SandboxConfig"]
