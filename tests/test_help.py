"""Help that teaches: every command has a purpose and an example, every
command and flag is in the README, errors say ``Error: ...`` and the fix,
and nothing but asked-for data reaches stdout.

The command tree is walked at run time, so a command added later is held
to the same rules without touching this file.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from support import cli_env

from batchcancel import __version__
from batchcancel.cli import main
from batchcancel.sandbox.__main__ import build_parser

README = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")


def walk(group: click.Group, path: tuple[str, ...] = ()
         ) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    """Every command under ``group``, with the words that call it."""
    for name, command in sorted(group.commands.items()):
        yield (*path, name), command
        if isinstance(command, click.Group):
            yield from walk(command, (*path, name))


COMMANDS = list(walk(main))
IDS = [" ".join(path) for path, _ in COMMANDS]


def long_flags(command: click.Command) -> list[str]:
    return [flag for param in command.params if isinstance(param, click.Option)
            for flag in (*param.opts, *param.secondary_opts) if flag.startswith("--")]


def sandbox_flags() -> list[str]:
    """The sandbox's own flags (argparse: the click command passes them on)."""
    parser: argparse.ArgumentParser = build_parser()
    return [flag for action in parser._actions for flag in action.option_strings
            if flag.startswith("--") and flag != "--help"]


def mentioned(flag: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", README) is not None


def help_text(*words: str) -> str:
    result = CliRunner().invoke(main, [*words, "--help"], env=cli_env())
    assert 0 == result.exit_code, result.output
    return result.output


def test_the_walk_finds_the_commands() -> None:
    """The tree is read, not listed by hand: at least today's commands."""
    assert {"cancel", "demo", "sandbox"} <= set(IDS)


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=IDS)
def test_each_command_has_a_purpose_and_an_example(
    path: tuple[str, ...], command: click.Command
) -> None:
    """--help starts with one line of purpose and shows an Example line."""
    purpose = (command.help or "").strip().splitlines()[0]
    listing = help_text(*path[:-1])

    assert purpose.endswith(".")
    assert re.search(r"^\s*Examples?:$", help_text(*path), re.MULTILINE)
    assert re.search(rf"^\s+{path[-1]}\s+{re.escape(purpose)}$", listing,
                     re.MULTILINE), "the purpose must fit the command list whole"


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=IDS)
def test_the_readme_documents_each_command_and_flag(
    path: tuple[str, ...], command: click.Command
) -> None:
    """`batchcancel <command>` and each of its long flags appear in the README."""
    flags = long_flags(command) + (sandbox_flags() if path == ("sandbox",) else [])

    assert f"batchcancel {' '.join(path)}" in README
    assert [] == [flag for flag in flags if not mentioned(flag)]


def test_the_readme_documents_the_top_level_flags() -> None:
    """--version and --help are in the README too."""
    assert [] == [f for f in [*long_flags(main), "--help"] if not mentioned(f)]


def test_version_prints_the_version_on_stdout() -> None:
    """`batchcancel --version` (and -V) print the version and exit 0."""
    for flag in ("--version", "-V"):
        done = subprocess.run([sys.executable, "-m", "batchcancel", flag],
                              capture_output=True, text=True, env=cli_env(),
                              timeout=30)

        assert 0 == done.returncode
        assert f"batchcancel, version {__version__}\n" == done.stdout
        assert "" == done.stderr


@pytest.mark.parametrize(("args", "env", "fix"), [
    (["cancel", "ids.csv"], {"THANKSIO_API_TOKEN": ""}, "set THANKSIO_API_TOKEN"),
    (["cancel", "missing.csv"], {}, "cannot read missing.csv"),
    (["cancel", "--rate", "fast"], {}, "write it as 2, 2/s or 60/min"),
    (["cancel", "--concurrency", "0"], {}, "concurrency must be at least 1"),
    (["cancel", "--no-such-flag"], {}, "Try 'batchcancel cancel --help' for help"),
    (["cancle"], {}, "Try 'batchcancel --help' for help"),
    (["sandbox", "--host", "8.8.8.8"], {}, "loopback"),
], ids=["no-token", "no-input", "bad-rate", "bad-number", "bad-flag",
        "bad-command", "sandbox-host"])
def test_errors_say_error_and_the_fix_with_no_traceback(
    tmp_path: Path, args: list[str], env: dict[str, str], fix: str
) -> None:
    """Exit 2, stderr has ``Error: ...`` and what to do, stdout has nothing."""
    (tmp_path / "ids.csv").write_text("100000\n", encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "batchcancel", *args,
         "--base-url" if args[0] == "cancel" else "--port",
         "http://127.0.0.1:9/api/v2" if args[0] == "cancel" else "0"],
        capture_output=True, text=True, cwd=tmp_path, timeout=30,
        env=cli_env(**env) if env.get("THANKSIO_API_TOKEN") != "" else cli_env(None))

    assert 2 == done.returncode, done.stderr
    assert "" == done.stdout
    assert re.search(r"^Error: ", done.stderr, re.MULTILINE), done.stderr
    assert fix in done.stderr
    assert "Traceback" not in done.stderr
