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
    refuse_empty_base_url,
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
@_setting("outage_limit", "--outage-limit",
          help="How long the API may fail every request (no answer or 5xx) "
               "before the run gives up, leaving the rest to resume: 90s, 5m.")
@_setting("max_errors", "--max-errors",
          help="End the run once more than N orders, or more than P% of the "
               "orders so far, have ended in error: 10 or 5%.")
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
@_setting("shard", "--shard", metavar="K/N",
          help="Take shard K (from 0) of N of the input by a stable hash of "
               "each ID; outputs get a .shard-K-of-N suffix, the rate 1/N.")
@_setting("shards", "--shards", type=int, metavar="N",
          help="As --shard K/N with K from JOB_COMPLETION_INDEX "
               "(a Kubernetes Indexed Job).")
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
    # cancel's -q keeps errors only: its summary and report say the rest.
    console, settings, token = _start(values, verbose, quiet, quiet_level="error")

    from batchcancel.cancel import cancel_orders

    result = _checked(lambda: asyncio.run(cancel_orders(
        settings, token, list(inputs) or ["-"], console=console, quiet=quiet,
        confirm=terminal_confirm(console),
        step_summary=os.environ.get(STEP_SUMMARY_ENV) or None,
    )))
    if not quiet:
        from batchcancel.report import human_summary

        console.line(human_summary(result.summary))
    if result.exit_code == 2 and result.summary["stop_reason"]:
        # A job that stopped on a setting (the TLS trust store, say) ends
        # like any other usage error: one line that says what to fix.
        console.line(f"Error: {result.summary['stop_reason']}")
    elif result.exit_code == 3:
        console.line(f"Error: the API refused the token "
                     f"({result.summary['stop_reason']}); check {TOKEN_ENV} or "
                     "--token-file. The orders not settled are not_attempted: "
                     "run the same command again with the right token")
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


# -- commands that share cancel's connection settings ------------------------

_API_SETTINGS: tuple[tuple[tuple[str, ...], dict[str, Any]], ...] = (
    (("base_url", "--base-url"),
     {"envvar": [BASE_URL_ENV, environment_name("base_url")],
      "help": f"API base URL (also {BASE_URL_ENV})."}),
    (("rate", "--rate"), {"help": "auto, a ceiling such as 2/s or 60/min, or off "
                                  "(as for cancel)."}),
    (("rate_window", "--rate-window"), {"type": float,
                                        "help": "The account's rate window, s."}),
    (("max_retries", "--max-retries"), {"type": int,
                                        "help": "Further attempts per request."}),
    (("backoff_initial", "--backoff-initial"), {"type": float,
                                                "help": "First backoff, s."}),
    (("backoff_max", "--backoff-max"), {"type": float, "help": "Backoff cap, s."}),
    (("retry_after_cap", "--retry-after-cap"),
     {"type": float, "help": "Longest Retry-After honoured, s."}),
    (("cooldown", "--cooldown"), {"type": float,
                                  "help": "Pause after a 429 without Retry-After, s."}),
    (("connect_timeout", "--connect-timeout"), {"type": float, "help": "Seconds."}),
    (("read_timeout", "--read-timeout"), {"type": float, "help": "Seconds."}),
    (("log_format", "--log-format"),
     {"type": click.Choice(["auto", "console", "json"]),
      "help": "auto: console on a terminal, JSON lines otherwise."}),
    (("log_level", "--log-level"), {"type": click.Choice(LEVELS)}),
    (("allow_insecure_http", "--allow-insecure-http"),
     {"is_flag": True, "help": "Allow http:// to a non-loopback host."}),
    (("token_file", "--token-file"),
     {"type": click.Path(dir_okay=False),
      "help": f"Read the API token from this file instead of {TOKEN_ENV}."}),
)


def _api_settings(command: F) -> F:
    """The connection, rate and logging options of ``cancel``, for another
    command: same names, defaults, variables and config-file keys."""
    for (name, *flags), extra in reversed(_API_SETTINGS):
        command = _setting(name, *flags, **extra)(command)
    command = click.option(
        "--config", "config_file", is_eager=True, callback=_load_config,
        envvar="BATCHCANCEL_CONFIG", type=click.Path(dir_okay=False),
        help="TOML file of settings (see config/default.toml).")(command)
    command = click.option("-v", "--verbose", is_flag=True,
                           help="Same as --log-level debug.")(command)
    return click.option("-q", "--quiet", is_flag=True,
                        help="Only warnings and errors on stderr.")(command)


def _same_file(one: Path, other: Path) -> bool:
    """Whether two paths name one file (links and ``..`` included)."""
    try:
        return one.exists() and other.exists() and one.samefile(other)
    except OSError:
        return False


def _start(values: dict[str, Any], verbose: bool, quiet: bool, *,
           quiet_level: str = "warning") -> tuple[Console, Any, str]:
    """Settings, token and logging for a command."""
    values = {**DEFAULTS, **{k: v for k, v in values.items() if k in DEFAULTS}}
    if verbose:
        values["log_level"] = "debug"
    elif quiet:
        values["log_level"] = max(values["log_level"], quiet_level,
                                  key=LEVELS.index)
    console = Console()
    settings = _checked(lambda: build_settings(values))
    _checked(lambda: refuse_empty_base_url(settings.base_url, os.environ))
    token, warning = _checked(lambda: read_token(values["token_file"], os.environ))
    configure(console, level=settings.log_level, fmt=settings.log_format,
              secrets=[token])
    if warning:
        console.line(f"Warning: {warning}")
    return console, settings, token


@main.command("select")
@click.option("--status", "statuses", multiple=True, default=("Reviewing",),
              show_default=True,
              help="Keep orders in this status, any case (repeatable).")
@click.option("--since", help="Keep orders created at or after this ISO 8601 "
                              "time, e.g. 2026-12-03T10:00Z (no zone: UTC).")
@click.option("--until", help="Keep orders created before this ISO 8601 time.")
@click.option("--type", "kinds", multiple=True,
              help="Keep orders of this type as the list names it, e.g. "
                   "postcard6x9, letter (repeatable; any case).")
@click.option("--all-pages", is_flag=True,
              help="Read every page; do not stop at orders older than --since.")
@_setting("sub_account", "--sub-account", type=int, multiple=True,
          help="List this sub-account's orders (repeatable).")
@_setting("page_size", "--page-size", type=int,
          help="Orders per page asked of the order list.")
@_api_settings
def select(statuses: tuple[str, ...], since: str | None, until: str | None,
           kinds: tuple[str, ...], all_pages: bool, config_file: str | None,
           verbose: bool, quiet: bool, **values: Any) -> None:
    """Write the IDs of orders from the order list as CSV on stdout.

    Filtered by status (default Reviewing), creation time, sub-account and
    type.  Logs go to stderr, so the output pipes straight into cancel.

    \b
    Example:
      batchcancel select --since 2026-12-03T10:00Z | batchcancel cancel -
    """
    import structlog

    from batchcancel.selection import describe, make_selection, select_orders

    selection = _checked(lambda: make_selection(statuses, since, until, kinds))
    _console, settings, token = _start(values, verbose, quiet)
    structlog.get_logger("batchcancel").info(
        "select.started", **describe(selection, settings.sub_accounts))
    stats, code = _checked(lambda: asyncio.run(select_orders(
        settings, token, selection, sys.stdout, all_pages=all_pages)))
    if code == 3:
        _fail(f"the API refused the token; check {TOKEN_ENV} or --token-file", 3)
    if stats.pages_failed and code == 1:
        _fail(f"{stats.pages_failed} page(s) of the order list could not be read; "
              "the IDs written are right but may be incomplete: run select again",
              1)
    sys.exit(code)


@main.command()
@click.argument("report_path", metavar="REPORT",
                type=click.Path(dir_okay=False, exists=True))
@click.option("--out", "out_path", type=click.Path(dir_okay=False),
              help="Write the disagreements CSV here instead of stdout.")
@_setting("concurrency", "--concurrency", type=int,
          help="Track requests in flight at most.")
@_api_settings
def reconcile(report_path: str, out_path: str | None, config_file: str | None,
              verbose: bool, quiet: bool, **values: Any) -> None:
    """Check a report of an earlier run against each order's status now.

    Every disagreement (reported cancelled but now printing, reported not
    cancellable but now cancelled, ...) is one CSV row; exit 1 if any.

    \b
    Example:
      batchcancel reconcile report.csv --out disagreements.csv
    """
    import io

    from batchcancel.reconcile import reconcile as check_report
    from batchcancel.report import write_text_atomic

    if out_path and _same_file(Path(out_path), Path(report_path)):
        _fail(f"--out {out_path} is the report being checked; name another "
              "file for the disagreements", 2)
    _console, settings, token = _start(values, verbose, quiet)
    out: Any = io.StringIO() if out_path else sys.stdout
    stats, code = _checked(lambda: asyncio.run(check_report(
        settings, token, Path(report_path), out)))
    if out_path:
        _checked(lambda: write_text_atomic(Path(out_path), out.getvalue()))
    if code == 3:
        _fail(f"the API refused the token; check {TOKEN_ENV} or --token-file", 3)
    if not quiet:
        kinds = ", ".join(f"{k} {n}" for k, n in sorted((stats.kinds or {}).items()))
        click.echo(f"batchcancel reconcile: {stats.checked} orders checked, "
                   f"{stats.agreed} agree, {stats.skipped} rows skipped (no claim); "
                   f"disagreements: {kinds or 'none'}", err=True)
    sys.exit(code)


@main.command()
@click.argument("files", nargs=-1, required=True, metavar="REPORT...",
                type=click.Path(dir_okay=False, exists=True))
@click.option("--report", "report_path", default="batchcancel-report.csv",
              show_default=True, type=click.Path(dir_okay=False),
              help="Where the merged report goes.")
@click.option("--summary", "summary_path", type=click.Path(dir_okay=False),
              help="Where the merged summary goes "
                   "[default: REPORT-summary.json beside the report].")
@click.option("-q", "--quiet", is_flag=True, help="No summary on stderr.")
def merge(files: tuple[str, ...], report_path: str, summary_path: str | None,
          quiet: bool) -> None:
    """Combine the reports and summaries of the shards of one run.

    Each REPORT's summary is found beside it, or can be given as a .json
    file too.  Exits with the merged run's exit code (the highest of the
    shards'), or 2 when the files are not the N shards of one job.

    \b
    Example:
      batchcancel merge out/report.shard-*-of-3.csv --report report.csv
    """
    from batchcancel.merge import merge as merge_shards
    from batchcancel.report import human_summary

    report = Path(report_path)
    summary = (Path(summary_path) if summary_path
               else report.with_name(report.stem + "-summary.json"))
    document = _checked(lambda: merge_shards([Path(f) for f in files], report,
                                             summary))
    if not quiet:
        click.echo(human_summary(document), err=True)
    sys.exit(document["exit_code"])


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
