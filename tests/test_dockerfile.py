"""The Dockerfile, without a Docker engine: its form is checked statically,
and its build stage's steps are run as they stand in a fresh virtual
environment, whose batchcancel then cancels against the sandbox."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import SandboxFactory
from support import cli_env, read_report

from batchcancel import __version__

ROOT = Path(__file__).parent.parent
DOCKERFILE = ROOT / "Dockerfile"
VENV = "/opt/batchcancel"
COMPILERS = re.compile(r"\b(gcc|g\+\+|cc|clang|build-essential|make|"
                       r"python3?-dev|libc6?-dev)\b")


@dataclass
class Stage:
    image: str
    name: str | None
    steps: list[tuple[str, str]] = field(default_factory=list)

    def all(self, instruction: str) -> list[str]:
        return [args for kind, args in self.steps if kind == instruction]


def parse(text: str) -> list[Stage]:
    """Stages of a Dockerfile: continuations joined, comments dropped,
    ARG defaults substituted into FROM."""
    joined = re.sub(r"\\\n", " ", "\n".join(
        line for line in text.splitlines() if not line.lstrip().startswith("#")))
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in filter(str.strip, joined.splitlines()):
        kind, _, rest = line.strip().partition(" ")
        kind, rest = kind.upper(), " ".join(rest.split())
        if kind == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name] = default
        elif kind == "FROM":
            image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], rest)
            image, _, name = image.partition(" AS ")
            stages.append(Stage(image.strip(), name.strip() or None))
        else:
            stages[-1].steps.append((kind, rest))
    return stages


STAGES = parse(DOCKERFILE.read_text(encoding="utf-8"))
BUILD, FINAL = STAGES[0], STAGES[-1]


def test_there_is_a_build_stage_and_a_final_stage_on_one_pinned_base() -> None:
    """Two stages on the same base, pinned to an exact version or a digest."""
    pinned = re.compile(r"python:\d+\.\d+\.\d+-slim-[a-z]+(@sha256:[0-9a-f]{64})?$")

    assert 2 == len(STAGES)
    assert BUILD.image == FINAL.image
    assert pinned.match(FINAL.image), FINAL.image


def test_the_final_stage_runs_as_a_user_that_is_not_root() -> None:
    """USER is set, last, to a non-zero uid and gid."""
    users = FINAL.all("USER")

    assert users
    uid, _, gid = users[-1].partition(":")
    assert uid not in {"0", "root"}
    assert gid not in {"0", "root"}


def test_the_entrypoint_is_in_exec_form() -> None:
    """A JSON array, so no shell sits between docker stop and batchcancel."""
    (entrypoint,) = FINAL.all("ENTRYPOINT")

    assert ["batchcancel"] == json.loads(entrypoint)
    assert ["cancel", "-"] == json.loads(FINAL.all("CMD")[-1])


def test_the_final_stage_copies_only_the_environment_and_compiles_nothing() -> None:
    """No compiler or build tool is installed; only the venv comes across."""
    assert [f"--from={BUILD.name} {VENV} {VENV}"] == FINAL.all("COPY")
    for command in FINAL.all("RUN"):
        assert not COMPILERS.search(command), command
        assert "pip install" not in command
        assert "apt-get install" not in command
    assert any(f"{VENV}/bin" in env for env in FINAL.all("ENV"))


def test_the_build_stage_needs_no_compiler_either() -> None:
    """Dependencies come as wheels only, so a missing wheel fails the build
    instead of pulling in a compiler."""
    installs = [c for c in BUILD.all("RUN") if "pip install" in c]

    assert installs
    assert all("--only-binary=:all:" in c for c in installs)
    assert not any(COMPILERS.search(c) for c in BUILD.all("RUN"))


def build_like_the_dockerfile(tmp: Path) -> Path:
    """Copy what the build stage copies, run its RUN steps with the image's
    paths moved under ``tmp``, and return the environment's folder.

    One change: ``--no-cache-dir`` is dropped so repeated runs reuse pip's
    cache; what is installed is the same.
    """
    source, venv, wheels = tmp / "src", tmp / "opt" / "batchcancel", tmp / "wheels"
    for args in BUILD.all("COPY"):
        *items, target = args.split()
        destination = source / target
        for item in items:
            origin = ROOT / item
            if origin.is_dir():
                shutil.copytree(origin, destination,
                                ignore=shutil.ignore_patterns("__pycache__"))
            else:
                destination.mkdir(parents=True, exist_ok=True)
                shutil.copy(origin, destination / origin.name)
    python = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{python}{os.pathsep}{os.environ['PATH']}"}
    env.pop("VIRTUAL_ENV", None)
    for command in BUILD.all("RUN"):
        local = (command.replace(VENV, str(venv)).replace("/wheels", str(wheels))
                 .replace("--no-cache-dir ", ""))
        subprocess.run(["bash", "-euo", "pipefail", "-c", local], cwd=source,
                       env=env, check=True, capture_output=True, timeout=600)
    return venv


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_like_the_dockerfile(tmp_path_factory.mktemp("image"))


@pytest.mark.container
def test_the_built_environment_says_its_version_and_has_no_pip(built: Path) -> None:
    """``batchcancel --version`` runs from the environment alone."""
    done = subprocess.run([str(built / "bin" / "batchcancel"), "--version"],
                          capture_output=True, text=True, check=True,
                          env=cli_env(), cwd=built)

    assert f"batchcancel, version {__version__}" == done.stdout.strip()
    assert not (built / "bin" / "pip").exists()


@pytest.mark.container
@pytest.mark.e2e
async def test_the_built_environment_cancels_from_stdin(
    built: Path, sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    """The image's command, ``batchcancel cancel -``, against the sandbox."""
    sandbox = await sandbox_factory(orders=10, seed=51)
    command = [str(built / "bin" / "batchcancel"),
               *json.loads(FINAL.all("CMD")[-1]),
               "--base-url", sandbox.base_url, "--rate", "off"]

    # In a thread: the sandbox answers on this test's event loop.
    done = await asyncio.to_thread(
        subprocess.run, command, input=b"100000\n100001\n100002\n",
        capture_output=True, cwd=tmp_path, timeout=60,
        env=cli_env(THANKSIO_BASE_URL=sandbox.base_url))
    rows = read_report(tmp_path / "batchcancel-report.csv")

    assert 0 == done.returncode, done.stderr.decode()
    assert ["100000", "100001", "100002"] == sorted(r["order_id"] for r in rows)
    assert b"" == done.stdout, shlex.join(command)
