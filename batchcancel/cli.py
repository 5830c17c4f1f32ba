"""The command line: flags, settings, logging, exit codes, and the words
people read.  Everything else is a library call.

click (rather than argparse) because it brings, maintained and tested,
what this tool would otherwise hand-roll: per-option environment
variables, a defaults map for the ``--config`` file with the right
precedence (flag > environment > file > default), usage errors with exit
code 2, and help text laid out from the docstrings.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import click

from batchcancel import __version__
from batchcancel.config import (
    BASE_URL_ENV,
    DEFAULTS,
    STEP_SUMMARY_ENV,
    TOKEN_ENV,
    build_settings,
    environment_name,
    load_config_file,
    read_token,
)
from batchcancel.errors import BatchcancelError, UsageError
from batchcancel.logs import LEVELS, Console, configure

F = Callable[..., Any]


def _load_config(ctx: click.Context, _param: click.Parameter,
                 value: str | None) -> str | None:
    if value:
        try:
            ctx.default_map = load_config_file(Path(value))
        except BatchcancelError as exc:
            raise click.UsageError(str(exc), ctx) from None
    return value


def _setting(name: str, *flags: str, **kwargs: Any) -> Callable[[F], F]:
    """A ``cancel`` option whose default and variable come from config.py."""
    envvar = kwargs.pop("envvar", environment_name(name))
    return click.option(*flags, name, default=DEFAULTS[name], envvar=envvar,
                        show_default=DEFAULTS[name] is not None, **kwargs)


@click.group(context_settings={"help_option_names": ["-h", "--help"],
                               "max_content_width": 100})
@click.version_option(__version__, "-V", "--version", prog_name="batchcancel")
def main() -> None:
    """Cancel thanks.io orders in bulk while they are still in review,
    and write a refund report an accountant can trust.

    \b
    Example:
      export THANKSIO_API_TOKEN=...   # never passed as a flag
      batchcancel cancel orders.csv --report report.csv
    """


@main.command()
@click.argument("inputs", nargs=-1, metavar="[INPUT]...")
@click.option("--config", "config_file", is_eager=True, expose_value=True,
              callback=_load_config, envvar="BATCHCANCEL_CONFIG",
              type=click.Path(dir_okay=False),
              help="TOML file of settings (see config/default.toml).")
@_setting("base_url", "--base-url", envvar=[BASE_URL_ENV, environment_name("base_url")],
          help=f"API base URL (also {BASE_URL_ENV}).")
@_setting("rate", "--rate",
          help="auto (follow the account's X-RateLimit headers), a ceiling "
               "such as 2, 2/s or 60/min, or off.")
@_setting("rate_window", "--rate-window", type=float,
          help="The account's rate window in seconds, until the headers "
               "show it (the documented 60).")
@_setting("preflight", "--preflight/--no-preflight",
          help="Read the order list first: skip orders it shows settled, "
               "send the rest deadline-first.")
@_setting("review_window", "--review-window",
          help="How long an order stays cancellable: 90s, 45m, 1h.")
@_setting("page_size", "--page-size", type=int,
          help="Orders per page of the order list in the preflight.")
@_setting("sub_account", "--sub-account", type=int, multiple=True,
          help="List this sub-account's orders in the preflight (repeatable).")
@_setting("dry_run", "--dry-run", is_flag=True,
          help="Preflight only: report what would be cancelled, send no cancel.")
@_setting("yes", "-y", "--yes", is_flag=True,
          help="Do not ask for confirmation on a terminal.")
@_setting("concurrency", "--concurrency", type=int,
          help="Requests in flight at most (the worker pool size).")
@_setting("max_retries", "--max-retries", type=int,
          help="Further attempts per order after a retryable failure.")
@_setting("backoff_initial", "--backoff-initial", type=float,
          help="First backoff delay, seconds (doubles, capped, jittered).")
@_setting("backoff_max", "--backoff-max", type=float, help="Backoff cap, seconds.")
@_setting("retry_after_cap", "--retry-after-cap", type=float,
          help="Longest Retry-After honoured, seconds.")
@_setting("cooldown", "--cooldown", type=float,
          help="Pause after a 429 that has no Retry-After, seconds.")
@_setting("connect_timeout", "--connect-timeout", type=float, help="Seconds.")
@_setting("read_timeout", "--read-timeout", type=float, help="Seconds.")
@_setting("grace", "--grace", type=float,
          help="On SIGINT/SIGTERM, seconds in-flight requests get to finish.")
@_setting("column", "--column", help="ID column: a header name or a 1-based number.")
@_setting("report", "--report", type=click.Path(dir_okay=False),
          help="CSV report, one row per distinct ID and per invalid line.")
@_setting("summary", "--summary", type=click.Path(dir_okay=False),
          help="JSON summary [default: REPORT-summary.json beside the report].")
@_setting("summary_md", "--summary-md", type=click.Path(dir_okay=False),
          help="Markdown summary for people; also appended to "
               "$GITHUB_STEP_SUMMARY when that is set.")
@_setting("journal", "--journal", type=click.Path(dir_okay=False),
          help="Journal of finished orders, for resuming "
               "[default: REPORT-journal.jsonl beside the report].")
@_setting("log_format", "--log-format",
          type=click.Choice(["auto", "console", "json"]),
          help="auto: console on a terminal, JSON lines otherwise.")
@_setting("log_level", "--log-level", type=click.Choice(LEVELS))
@_setting("allow_insecure_http", "--allow-insecure-http", is_flag=True,
          help="Allow http:// to a non-loopback host (the token goes in clear).")
@_setting("token_file", "--token-file", type=click.Path(dir_okay=False),
          help=f"Read the API token from this file instead of {TOKEN_ENV}.")
@click.option("-v", "--verbose", is_flag=True, help="Same as --log-level debug.")
@click.option("-q", "--quiet", is_flag=True,
              help="No progress, no summary and only errors on stderr.")
def cancel(inputs: tuple[str, ...], config_file: str | None, verbose: bool,
           quiet: bool, **values: Any) -> None:
    """Cancel the orders whose IDs are in INPUT files or on stdin.

    INPUT is a CSV file or a file of one ID a line; with no INPUT, or
    with -, IDs are read from standard input.  The report, the JSON
    summary and the journal are written beside --report; nothing goes to
    standard output.

    \b
    Examples:
      batchcancel cancel orders.csv --report report.csv
      cut -d, -f3 export.csv | batchcancel cancel - --rate 30/min
    """
    if verbose:
        values["log_level"] = "debug"
    elif quiet:
        values["log_level"] = "error"
    console = Console()
    settings = _checked(lambda: build_settings(values))
    token, warning = _checked(lambda: read_token(values["token_file"], os.environ))
    configure(console, level=settings.log_level, fmt=settings.log_format,
              secrets=[token])
    if warning:
        console.line(f"Warning: {warning}")

    from batchcancel.cancel import cancel_orders

    result = _checked(lambda: asyncio.run(cancel_orders(
        settings, token, list(inputs) or ["-"], console=console, quiet=quiet,
        confirm=terminal_confirm(console),
        step_summary=os.environ.get(STEP_SUMMARY_ENV) or None,
    )))
    if not quiet:
        from batchcancel.report import human_summary

        console.line(human_summary(result.summary))
    if not result.summary["distinct_ids"] and not result.summary["stop_reason"]:
        console.line("Warning: the input held no valid order ID; nothing was sent")
    sys.exit(result.exit_code)


@main.command(context_settings={"ignore_unknown_options": True,
                                "allow_extra_args": True},
              add_help_option=False)
@click.pass_context
def sandbox(ctx: click.Context) -> None:
    """Serve a local stand-in for the thanks.io API on loopback.

    It prints one JSON line with its base URL and token, then serves until
    SIGINT or SIGTERM.  All flags are the sandbox's own: see
    `batchcancel sandbox --help`.

    \b
    Example:
      batchcancel sandbox --port 8765 --orders 2000 --fault-5xx 0.02
    """
    from batchcancel.sandbox.__main__ import main as sandbox_main

    sys.exit(sandbox_main(["--help"] if "-h" in ctx.args else ctx.args,
                          prog="batchcancel sandbox"))


@main.command()
@click.option("--orders", default=400, show_default=True,
              help="Orders seeded in the sandbox.")
@click.option("--seed", default=7, show_default=True, help="Seed of the sandbox.")
@click.option("-q", "--quiet", is_flag=True, help="Print only the summary.")
def demo(orders: int, seed: int, quiet: bool) -> None:
    """Run the whole main job against the embedded sandbox, faults on.

    Writes batchcancel-demo-ids.csv, batchcancel-demo-report.csv and
    batchcancel-demo-summary.json in the current folder, then checks the
    report against the sandbox's record.  No token or network needed.

    \b
    Example:
      batchcancel demo
    """
    from batchcancel.demo import run_demo
    from batchcancel.report import human_summary

    console = Console()
    configure(console, level="warning" if quiet else "info", fmt="auto")
    result, agreement = _checked(lambda: asyncio.run(
        run_demo(Path.cwd(), console, orders=orders, seed=seed, quiet=quiet)))
    console.line(human_summary(result.summary))
    verdict = "agrees" if agreement.holds else "DISAGREES"
    console.line(
        f"  sandbox check: report {verdict} with the sandbox on "
        f"{agreement.checked - len(agreement.mismatches)} of {agreement.checked} "
        f"orders; refunded {agreement.report_credits} cents reported, "
        f"{agreement.sandbox_credits} cents refunded by the sandbox"
    )
    for line in agreement.mismatches[:20]:
        console.line(f"    {line}")
    sys.exit(result.exit_code if agreement.holds else 1)


def terminal_confirm(console: Console) -> Callable[[str], bool] | None:
    """Ask on the controlling terminal, never on stdin (which may hold IDs).

    None when there is no terminal (CI, cron, a pipe to a file): the run
    then proceeds without asking.
    """
    if not console.is_terminal:
        return None
    try:
        tty = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY)
    except OSError:
        return None

    def ask(text: str) -> bool:
        console.end_status()
        try:
            os.write(tty, f"{text}\nCancel them now? [y/N] ".encode())
            answer = _read_line(tty).strip().lower()
        finally:
            os.close(tty)
            console.resume_status()
        return answer in {"y", "yes"}

    return ask


def _read_line(fd: int) -> str:
    line = b""
    while not line.endswith(b"\n") and (chunk := os.read(fd, 1)):
        line += chunk
    return line.decode(errors="replace")


def _checked(action: Callable[[], Any]) -> Any:
    """Run ``action``; turn our errors into ``Error: ...`` and exit 2."""
    try:
        return action()
    except UsageError as exc:
        _fail(str(exc), 2)
    except BatchcancelError as exc:
        _fail(str(exc), 1)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except (ValueError, OSError) as exc:
        _fail(f"{type(exc).__name__}: {exc}", 2)


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    main()
