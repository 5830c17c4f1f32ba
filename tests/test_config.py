"""Settings: defaults, the TOML file, the environment and flags, checked."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from batchcancel.config import (
    DEFAULT_BASE_URL,
    DEFAULTS,
    build_settings,
    check_base_url,
    load_config_file,
    read_token,
    refuse_empty_base_url,
)
from batchcancel.errors import ConfigError

DEFAULT_TOML = Path(__file__).parent.parent / "config" / "default.toml"


def test_default_toml_documents_every_setting_with_its_default() -> None:
    """config/default.toml names each setting, set or commented, at its default."""
    text = DEFAULT_TOML.read_text(encoding="utf-8")
    live = tomllib.loads(text)
    commented = set(re.findall(r"^# (\w+) = ", text, flags=re.MULTILINE))

    assert set(DEFAULTS) == set(live) | commented
    assert {k: v for k, v in DEFAULTS.items() if k in live} == live
    assert all(DEFAULTS[name] is None for name in commented)


def test_the_default_toml_loads_as_a_config_file() -> None:
    """The documented file is itself a valid --config file."""
    assert load_config_file(DEFAULT_TOML)["rate"] == "auto"


def test_an_unknown_key_in_a_config_file_is_refused(tmp_path: Path) -> None:
    """A typo in a config file is an error that names the known settings."""
    path = tmp_path / "c.toml"
    path.write_text('rat = "2/s"\n')

    with pytest.raises(ConfigError, match=r"unknown setting\(s\) rat.*known settings"):
        load_config_file(path)


def test_broken_toml_is_a_clear_error(tmp_path: Path) -> None:
    """A config file that is not TOML is refused with its name."""
    path = tmp_path / "c.toml"
    path.write_text("rate = = 2\n")

    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config_file(path)


@pytest.mark.parametrize("url", [
    "https://api.thanks.io/api/v2", "http://127.0.0.1:8080/api/v2",
    "http://localhost:9/api/v2", "http://[::1]:9/api/v2",
])
def test_https_and_loopback_http_are_accepted(url: str) -> None:
    """The real API over https and the sandbox over loopback http both pass."""
    assert check_base_url(url, allow_http=False) == url


def test_plain_http_to_another_host_is_refused() -> None:
    """The token must not cross a network in clear without an explicit flag."""
    with pytest.raises(ConfigError, match="allow-insecure-http"):
        check_base_url("http://api.thanks.io/api/v2", allow_http=False)

    assert check_base_url("http://api.thanks.io/api/v2", allow_http=True)


@pytest.mark.parametrize("url", ["ftp://x/y", "api.thanks.io", "https://u:p@h/x",
                                 "https://h/x?token=1"])
def test_odd_base_urls_are_refused(url: str) -> None:
    """Only a plain http(s) URL without credentials or query is a base URL."""
    with pytest.raises(ConfigError):
        check_base_url(url, allow_http=True)


def test_summary_defaults_to_beside_the_report() -> None:
    """Without --summary the summary is REPORT-summary.json next to the report."""
    settings = build_settings({**DEFAULTS, "report": "out/r.csv"})

    assert Path("out/r-summary.json") == settings.summary


def test_the_token_comes_from_the_environment() -> None:
    """THANKSIO_API_TOKEN is read and trimmed."""
    assert read_token(None, {"THANKSIO_API_TOKEN": " abc \n"}) == ("abc", "")


def test_a_missing_token_says_where_to_put_it() -> None:
    """No token: the error names the variable and the file flag."""
    with pytest.raises(ConfigError, match=r"THANKSIO_API_TOKEN.*--token-file"):
        read_token(None, {})


def test_a_token_file_readable_by_others_gives_a_warning(tmp_path: Path) -> None:
    """A world-readable token file still works, with a chmod 600 warning."""
    path = tmp_path / "token"
    path.write_text("s3cret\n")
    path.chmod(0o644)

    token, warning = read_token(str(path), {})

    assert "s3cret" == token
    assert "chmod 600" in warning
    assert "s3cret" not in warning


def test_a_private_token_file_gives_no_warning(tmp_path: Path) -> None:
    """A token file only its owner can read is quiet."""
    path = tmp_path / "token"
    path.write_text("s3cret")
    path.chmod(0o600)

    assert ("s3cret", "") == read_token(str(path), {})


@pytest.mark.parametrize(("line", "message"), [
    ("concurrency = []", "concurrency must be int"),
    ("concurrency = 2.7", "concurrency must be int"),
    ("concurrency = true", "concurrency must be int"),
    ("read_timeout = []", "read_timeout must be int or float"),
    ("summary = []", "summary must be a string"),
    ("token_file = 7", "token_file must be a string"),
    ("cancel = 5", "must be a table"),
])
def test_a_value_of_the_wrong_kind_is_refused_by_name(
    tmp_path: Path, line: str, message: str
) -> None:
    """Wrong TOML types give a clear error naming the setting, not a traceback."""
    path = tmp_path / "c.toml"
    path.write_text(line + "\n")

    with pytest.raises(ConfigError, match=message):
        load_config_file(path)


@pytest.mark.parametrize("name", ["THANKSIO_BASE_URL", "BATCHCANCEL_BASE_URL"])
def test_an_empty_base_url_variable_never_means_the_real_api(name: str) -> None:
    """A base URL variable exported empty is refused, not read as unset."""
    with pytest.raises(ConfigError, match=f"{name} is set but empty"):
        refuse_empty_base_url(DEFAULT_BASE_URL, {name: " "})


def test_a_base_url_given_elsewhere_wins_over_an_empty_variable() -> None:
    """With --base-url given, an empty variable is not in the way."""
    refuse_empty_base_url("http://127.0.0.1:9/api/v2", {"THANKSIO_BASE_URL": ""})


def test_a_config_file_that_is_not_utf8_is_a_clear_error(tmp_path: Path) -> None:
    """Binary junk as --config is a configuration error, not a traceback."""
    path = tmp_path / "c.toml"
    path.write_bytes(b"rate = \xff\xfe\n")

    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config_file(path)
