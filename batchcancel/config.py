"""One frozen settings value, from defaults, a TOML file, the environment
and flags (later ones win).

The CLI layer (click) does the layering; this module owns the defaults, the
checks that turn a bad value into a ``ConfigError`` with the fix in its
message, and the token, which is never a flag value.
"""

from __future__ import annotations

import ipaddress
import os
import re
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import timedelta
from fractions import Fraction
from pathlib import Path
from typing import Any

from yarl import URL

from batchcancel.budget import ErrorLimit
from batchcancel.errors import ConfigError
from batchcancel.ratelimit import DOCUMENTED_LIMIT, Rate
from batchcancel.shard import Shard, parse_shard

TOKEN_ENV = "THANKSIO_API_TOKEN"  # noqa: S105 (a variable name, not a secret)
BASE_URL_ENV = "THANKSIO_BASE_URL"
# Set by GitHub Actions: a Markdown file shown on the job's page.
STEP_SUMMARY_ENV = "GITHUB_STEP_SUMMARY"
ENV_PREFIX = "BATCHCANCEL_"
# Here rather than in api.py: importing aiohttp would slow every start-up,
# `batchcancel --version` included.
DEFAULT_BASE_URL = "https://api.thanks.io/api/v2"

#: Every setting of ``batchcancel cancel`` with its default.  The same
#: names are the keys of a ``--config`` TOML file and, upper-cased after
#: ``BATCHCANCEL_``, environment variables.  ``config/default.toml``
#: documents each one (a test keeps the two in step).
DEFAULTS: dict[str, Any] = {
    "base_url": DEFAULT_BASE_URL,
    "rate": "auto",
    "rate_window": 60.0,
    "preflight": True,
    "review_window": "1h",
    "page_size": 100,
    "sub_account": [],
    "dry_run": False,
    "yes": False,
    "concurrency": 4,
    "max_retries": 5,
    "backoff_initial": 0.5,
    "backoff_max": 30.0,
    "retry_after_cap": 300.0,
    "cooldown": 60.0,
    "connect_timeout": 10.0,
    "read_timeout": 30.0,
    "grace": 10.0,
    "outage_limit": "5m",
    "max_errors": None,
    "column": None,
    "report": "batchcancel-report.csv",
    "summary": None,
    "summary_md": None,
    "journal": None,
    "log_format": "auto",
    "log_level": "info",
    "allow_insecure_http": False,
    "token_file": None,
    "shard": None,
    "shards": None,
}

#: Settings whose default is None but whose value is a whole number.
_WHOLE_NUMBERS = frozenset({"shards"})


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything one run of ``batchcancel cancel`` needs, checked."""

    base_url: str
    rate_ceiling: Rate | None
    rate_start: Rate | None
    rate_window: float
    preflight: bool
    review_window: timedelta
    page_size: int
    sub_accounts: tuple[int, ...]
    dry_run: bool
    yes: bool
    concurrency: int
    max_retries: int
    backoff_initial: float
    backoff_max: float
    retry_after_cap: float
    cooldown: float
    connect_timeout: float
    read_timeout: float
    grace: float
    outage_limit: float
    max_errors: ErrorLimit | None
    column: str | None
    report: Path
    summary: Path
    summary_md: Path | None
    journal: Path
    log_format: str
    log_level: str
    shard: Shard | None = None


def load_config_file(path: Path) -> dict[str, Any]:
    """Read a ``--config`` TOML file; unknown keys are an error, not a shrug."""
    try:
        with path.open("rb") as file:
            document = tomllib.load(file)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text; save it as "
                          "UTF-8 (TOML files must be)") from None

    table = document.get("cancel", document)
    if not isinstance(table, dict):
        raise ConfigError(f"config file {path}: [cancel] must be a table of settings")
    unknown = sorted(set(table) - set(DEFAULTS) - {"cancel"})
    if unknown:
        raise ConfigError(
            f"config file {path}: unknown setting(s) {', '.join(unknown)}; "
            f"known settings are {', '.join(sorted(DEFAULTS))}"
        )
    for key, value in table.items():
        if key in DEFAULTS:
            _check_type(path, key, value)
    return {key: value for key, value in table.items() if key in DEFAULTS}


def _check_type(path: Path, key: str, value: Any) -> None:
    """A TOML value of the wrong kind is refused by name, not mid-run."""
    default = DEFAULTS[key]
    kinds: tuple[type, ...]
    if isinstance(default, bool):
        kinds = (bool,)
    elif key in _WHOLE_NUMBERS or isinstance(default, int):
        kinds = (int,)
    elif isinstance(default, float):
        kinds = (int, float)
    elif isinstance(default, list):
        kinds = (list,)
    elif key == "max_errors":
        kinds = (int, str)  # 10 or "5%"
    else:
        kinds = (str,)
    wrong_bool = isinstance(value, bool) and bool not in kinds
    if not isinstance(value, kinds) or wrong_bool:
        want = " or ".join(k.__name__ for k in kinds).replace("str", "a string")
        raise ConfigError(f"config file {path}: {key} must be {want}, "
                          f"not {value!r}")


def build_settings(values: Mapping[str, Any],
                   environ: Mapping[str, str] | None = None) -> Settings:
    """Check raw values (already layered by the CLI) into ``Settings``.

    ``environ`` (default: the process's) is read for JOB_COMPLETION_INDEX
    only, when ``--shards N`` is given.
    """
    shard = parse_shard(values.get("shard"), values.get("shards"),
                        os.environ if environ is None else environ)
    settings = _build(values)
    if shard is None:
        return settings
    return replace(settings, shard=shard, report=shard.named(settings.report),
                   summary=shard.named(settings.summary),
                   journal=shard.named(settings.journal))


def _build(values: Mapping[str, Any]) -> Settings:
    report = Path(values["report"])
    summary = values["summary"]
    ceiling, start = parse_rate(values["rate"], float(values["rate_window"]))
    return Settings(
        base_url=check_base_url(values["base_url"],
                                allow_http=bool(values["allow_insecure_http"])),
        rate_ceiling=ceiling,
        rate_start=start,
        rate_window=_positive("rate_window", values["rate_window"]),
        preflight=bool(values["preflight"]),
        review_window=parse_duration(str(values["review_window"])),
        page_size=_at_least("page_size", values["page_size"], 1),
        sub_accounts=tuple(_at_least("sub_account", s, 1)
                           for s in values["sub_account"] or ()),
        dry_run=bool(values["dry_run"]),
        yes=bool(values["yes"]),
        concurrency=_at_least("concurrency", values["concurrency"], 1),
        max_retries=_at_least("max_retries", values["max_retries"], 0),
        backoff_initial=_positive("backoff_initial", values["backoff_initial"]),
        backoff_max=_positive("backoff_max", values["backoff_max"]),
        retry_after_cap=_positive("retry_after_cap", values["retry_after_cap"]),
        cooldown=_positive("cooldown", values["cooldown"]),
        connect_timeout=_positive("connect_timeout", values["connect_timeout"]),
        read_timeout=_positive("read_timeout", values["read_timeout"]),
        grace=_at_least_float("grace", values["grace"], 0.0),
        outage_limit=parse_duration(str(values["outage_limit"])).total_seconds(),
        max_errors=(None if values["max_errors"] in (None, "")
                    else ErrorLimit.parse(values["max_errors"])),
        column=values["column"] or None,
        report=report,
        summary=Path(summary) if summary else _summary_beside(report),
        summary_md=Path(values["summary_md"]) if values["summary_md"] else None,
        journal=Path(values["journal"]) if values["journal"] else report.with_name(
            report.stem + "-journal.jsonl"),
        log_format=values["log_format"],
        log_level=values["log_level"],
    )


def parse_rate(text: str, window: float = 60.0) -> tuple[Rate | None, Rate | None]:
    """The (ceiling, starting pace) that ``--rate`` asks for.

    ``auto``: no ceiling, starting at the documented 60 requests a window,
    then following the account's headers.  A rate: that ceiling, from the
    start.  ``off``: neither (for the sandbox and benchmarks).
    """
    word = str(text).strip().lower()
    if word == "auto":
        return None, Rate(Fraction(DOCUMENTED_LIMIT) / Fraction(window))
    if word in {"off", "none", "unlimited"}:
        return None, None
    rate = Rate.parse(str(text))
    return rate, rate


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h)?", re.IGNORECASE)
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> timedelta:
    """``90s``, ``45m``, ``1h``, ``1h30m`` or a number of seconds."""
    compact = text.strip().replace(" ", "")
    parts = _DURATION.findall(compact)
    if not compact or "".join(n + u for n, u in parts) != compact:
        raise ConfigError(
            f"duration {text!r} is not understood; write it as 90s, 45m or 1h")
    seconds = sum(float(n) * _DURATION_UNITS[(u or "s").lower()] for n, u in parts)
    if seconds <= 0:
        raise ConfigError(f"duration {text!r} must be above zero")
    return timedelta(seconds=seconds)


def check_base_url(text: str, *, allow_http: bool) -> str:
    """Refuse plain HTTP off this machine: the token would travel in clear."""
    url = URL(str(text).strip())
    if url.scheme not in {"http", "https"} or not url.host:
        raise ConfigError(
            f"base URL {str(url)!r} must be an http(s) URL such as {DEFAULT_BASE_URL}"
        )
    if url.scheme == "http" and not allow_http and not is_loopback(url.host):
        raise ConfigError(
            f"base URL {str(url)!r} uses plain http to a host that is not this "
            "machine; use https, or pass --allow-insecure-http if you must"
        )
    if url.user or url.password or url.query_string or url.fragment:
        raise ConfigError("base URL must not carry credentials, a query or a fragment")
    return str(url).rstrip("/")


def refuse_empty_base_url(base_url: str, environ: Mapping[str, str]) -> None:
    """An exported but empty base URL variable is a mistake, not a choice.

    click takes an empty variable for an unset one, so ``THANKSIO_BASE_URL=``
    left over from a sandbox session would silently mean the real API.
    """
    if base_url != DEFAULT_BASE_URL:
        return  # a URL came from somewhere: the flag, a variable, the file
    for name in (BASE_URL_ENV, environment_name("base_url")):
        if name in environ and not environ[name].strip():
            raise ConfigError(
                f"{name} is set but empty; set it to the API base URL, or unset "
                f"it to use the real API ({DEFAULT_BASE_URL})")


def is_loopback(host: str) -> bool:
    if host.lower() in {"localhost", "localhost."}:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def read_token(token_file: str | None, environ: Mapping[str, str]) -> tuple[str, str]:
    """The API token and a warning ("" when none); never logged."""
    warning = ""
    if token_file:
        path = Path(token_file)
        try:
            token = path.read_text(encoding="utf-8").strip()
            mode = path.stat().st_mode
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read token file {path}: {exc}") from None
        if mode & (stat.S_IRGRP | stat.S_IROTH):
            warning = f"token file {path} is readable by other users; chmod 600 it"
    else:
        token = environ.get(TOKEN_ENV, "").strip()

    if not token:
        raise ConfigError(
            f"no API token: set {TOKEN_ENV} or pass --token-file PATH "
            "(the token is never accepted as a flag value)"
        )
    if any(ch.isspace() or not ch.isprintable() for ch in token):
        raise ConfigError("the API token contains spaces or control characters")
    return token, warning


def _summary_beside(report: Path) -> Path:
    return report.with_name(report.stem + "-summary.json")


def _at_least(name: str, value: Any, low: int) -> int:
    number = int(value)
    if number < low:
        raise ConfigError(f"{name} must be at least {low}, not {number}")
    return number


def _at_least_float(name: str, value: Any, low: float) -> float:
    number = float(value)
    if not number >= low:
        raise ConfigError(f"{name} must be at least {low}, not {value}")
    return number


def _positive(name: str, value: Any) -> float:
    number = float(value)
    if not number > 0 or number == float("inf"):
        raise ConfigError(f"{name} must be a positive number of seconds, not {value}")
    return number


def environment_name(setting: str) -> str:
    return ENV_PREFIX + setting.upper()
