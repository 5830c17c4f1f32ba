"""Run the sandbox on its own: `python -m batchcancel.sandbox --port 0 --orders 2000`.

On start it prints one JSON line, `{"base_url": ..., "token": ..., "orders": N}`, so
a test can start it as a subprocess and read where to connect. SIGTERM and SIGINT
stop it cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import ssl
import sys
from collections.abc import Callable, Sequence

from ._config import Faults, SandboxConfig
from ._server import Sandbox, require_loopback

PROG = "python -m batchcancel.sandbox"


async def serve(
    cfg: SandboxConfig,
    host: str,
    port: int,
    ready: Callable[[str], None] | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> None:
    """Serve until cancelled; `ready` gets the start-up JSON line (default: stdout)."""
    sandbox = Sandbox(cfg)
    await sandbox.start(host=host, port=port, ssl_context=ssl_context)
    try:
        announcement = {
            "base_url": sandbox.base_url,
            "token": cfg.token,
            "orders": cfg.orders,
        }
        (ready or _print_line)(json.dumps(announcement))
        await asyncio.Event().wait()
    finally:
        await sandbox.stop()


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    """Parse flags, serve until a signal arrives, and return the exit code."""
    args = build_parser(prog).parse_args(argv)
    try:
        config = _config(args)
        require_loopback(args.host)
        tls = server_tls(args.tls_cert, args.tls_key)
        asyncio.run(_serve_until_signalled(config, args.host, args.port, tls))
    except (ValueError, OSError) as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 2
    return 0


def server_tls(cert: str | None, key: str | None) -> ssl.SSLContext | None:
    """The server side of TLS from a PEM certificate chain and its key, if given."""
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise ValueError("--tls-cert and --tls-key must be given together")

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


async def _serve_until_signalled(
    cfg: SandboxConfig, host: str, port: int, tls: ssl.SSLContext | None
) -> None:
    server = asyncio.create_task(serve(cfg, host, port, ssl_context=tls))
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, server.cancel)

    with contextlib.suppress(asyncio.CancelledError):
        await server


def _print_line(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _config(args: argparse.Namespace) -> SandboxConfig:
    faults = Faults(
        throttle_429=args.fault_429,
        server_error=args.fault_5xx,
        drop_before=args.fault_drop,
        drop_after=args.fault_drop_after,
        late_answer=args.fault_late,
        garbled_body=args.fault_garbled,
        late_delay=args.late_delay,
        endpoints=tuple(args.fault_endpoints),
    )
    return SandboxConfig(
        orders=args.orders,
        seed=args.seed,
        status_mix=args.status_mix,
        token=args.token,
        first_id=args.first_id,
        review_window=args.review_window,
        max_age=args.max_age,
        max_page_size=args.max_page_size,
        rate_limit=args.rate_limit,
        rate_window=args.rate_window,
        rate_headers=not args.no_rate_headers,
        reset_header=args.reset_header,
        retry_after=args.retry_after,
        refusal_style=args.refusal_style,
        auth_status=args.auth_status,
        created_at_format=args.created_at_format,
        faults=faults,
    )


EXAMPLE = """\
Example:
  batchcancel sandbox --port 8765 --orders 2000 --fault-5xx 0.02 &
  THANKSIO_API_TOKEN=sandbox-token batchcancel cancel ids.csv \\
      --base-url http://127.0.0.1:8765/api/v2

Fault shares are probabilities per request, from 0 to 1.
GET /_sandbox/record shows what really happened to each order.
"""


class _HelpFormat(argparse.RawDescriptionHelpFormatter,
                  argparse.ArgumentDefaultsHelpFormatter):
    """The example laid out as written, and every default shown."""


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, formatter_class=_HelpFormat, epilog=EXAMPLE,
        description="Serve a local stand-in for the thanks.io API v2, on loopback "
                    "only. Prints one JSON line (base URL, token, orders) on stdout.",
    )
    add = parser.add_argument
    add("--host", default="127.0.0.1", help="a loopback IP address")
    add("--port", type=int, default=0, help="0 picks a free port")
    add("--tls-cert", default=None, help="PEM certificate chain: serve HTTPS")
    add("--tls-key", default=None, help="PEM private key of --tls-cert")
    add("--orders", type=int, default=2000, help="orders seeded")
    add("--seed", type=int, default=1, help="seed of the orders and the faults")
    add(
        "--status-mix",
        type=_status_mix,
        default=None,
        metavar="STATUS=WEIGHT,...",
        help="seeded statuses, such as reviewing=1 (default: a realistic mix)",
    )
    add("--token", default="sandbox-token", help="the API token it accepts")
    add("--first-id", type=int, default=100_000, help="ID of the first order")
    add("--review-window", type=float, default=3600.0,
        help="seconds an order stays Reviewing")
    add("--max-age", type=float, default=None, help="oldest Reviewing age, seconds")
    add("--max-page-size", type=int, default=100,
        help="most orders per page of the order list")
    add("--rate-limit", type=int, default=None,
        help="requests per window (unset: no limit)")
    add("--rate-window", type=float, default=60.0, help="seconds")
    add("--no-rate-headers", action="store_true",
        help="send no X-RateLimit-* headers")
    add("--reset-header", action="store_true", help="send X-RateLimit-Reset")
    add("--retry-after", choices=("seconds", "date", "none"), default="seconds",
        help="the form of a 429's Retry-After")
    add("--refusal-style", choices=("200", "4xx", "mixed"), default="mixed",
        help="how a non-cancellable order answers")
    add("--auth-status", type=int, choices=(401, 403), default=401,
        help="the answer to a wrong token")
    add("--created-at-format", choices=("iso", "sql", "object", "mixed"),
        default="iso", help="the form of created_at")
    add("--fault-429", type=float, default=0.0, help="share answered 429")
    add("--fault-5xx", type=float, default=0.0, help="share answered with a 5xx page")
    add("--fault-drop", type=float, default=0.0, help="drop before applying")
    add("--fault-drop-after", type=float, default=0.0, help="apply, then drop")
    add("--fault-late", type=float, default=0.0, help="apply, answer late")
    add("--fault-garbled", type=float, default=0.0, help="apply, garble the body")
    add("--late-delay", type=float, default=2.0, help="seconds")
    add(
        "--fault-endpoints",
        nargs="+",
        choices=("cancel", "list", "track"),
        default=["cancel"],
        help="the endpoints the faults hit",
    )
    return parser


def _status_mix(text: str) -> dict[str, float]:
    """Parse "reviewing=3,cancelled=1" into weights; SandboxConfig checks them."""
    mix: dict[str, float] = {}
    for part in text.split(","):
        status, equals, weight = part.partition("=")
        if not equals:
            raise argparse.ArgumentTypeError(f"expected STATUS=WEIGHT, not {part!r}")
        try:
            mix[status.strip().lower()] = float(weight)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {weight!r}") from None
    return mix


if __name__ == "__main__":
    sys.exit(main())
