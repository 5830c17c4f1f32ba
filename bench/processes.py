"""Processes the benchmarks start: the sandbox, the CLI, the peers.

Each is a child of this process, reaped with ``os.wait4``, so its CPU time
and peak memory are its own and nobody else's. A process still running is
read from ``/proc/PID/stat``. Everything talks to 127.0.0.1 only.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

TOKEN = "bench-token-4c1e"  # noqa: S105 - the sandbox's, on loopback only
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
# Record and control requests must not go through a proxy from the environment.
_LOOPBACK = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True, slots=True)
class Finished:
    """How a child process ended and what it cost."""

    code: int
    wall_s: float
    cpu_s: float
    max_rss_kb: int
    stderr: str


class Child:
    """A started process, with its output going to temporary files."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str] | None = None,
                 stdin: IO[bytes] | None = None) -> None:
        self._err = tempfile.TemporaryFile()  # noqa: SIM115 - closed in wait()
        self.started = time.perf_counter()
        self.process = subprocess.Popen(  # noqa: S603 - our own argv
            list(argv), stdin=stdin, stdout=subprocess.DEVNULL, stderr=self._err,
            env=dict(env) if env is not None else None)

    @property
    def pid(self) -> int:
        return self.process.pid

    def cpu_s(self) -> float | None:
        """User plus system CPU seconds so far, while it runs (Linux only)."""
        return cpu_of(self.pid)

    def running(self) -> bool:
        """Whether it has not exited yet; never reaps it (wait() does that)."""
        found = os.waitid(os.P_PID, self.pid,
                          os.WEXITED | os.WNOHANG | os.WNOWAIT)
        return found is None

    def signal(self, signum: int = signal.SIGTERM) -> None:
        if self.process.returncode is None:
            self.process.send_signal(signum)

    def wait(self, limit_s: float) -> Finished:
        """Reap the process (killed after ``limit_s``) and read its costs."""
        deadline = self.started + limit_s
        peak_kb = 0
        while True:
            peak_kb = max(peak_kb, peak_rss_kb(self.pid) or 0)
            pid, status, usage = os.wait4(self.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                self.process.kill()
            time.sleep(0.02)
        wall = time.perf_counter() - self.started
        self.process.returncode = os.waitstatus_to_exitcode(status)
        self._err.seek(0)
        stderr = self._err.read().decode(errors="replace")
        self._err.close()
        return Finished(self.process.returncode, wall,
                        usage.ru_utime + usage.ru_stime,
                        peak_kb or usage.ru_maxrss, stderr)


def run(argv: Sequence[str], env: Mapping[str, str] | None = None,
        limit_s: float = 600, stdin_path: Path | None = None) -> Finished:
    """Run a command to its end and measure it."""
    if stdin_path is None:
        return Child(argv, env).wait(limit_s)
    with stdin_path.open("rb") as stdin:
        return Child(argv, env, stdin).wait(limit_s)


def cpu_of(pid: int) -> float | None:
    """A running process's user plus system CPU seconds, from /proc."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Fields after the command name, which is in parentheses and may hold
    # spaces: state is field 3, utime 14 and stime 15.
    fields = text.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def peak_rss_kb(pid: int) -> int | None:
    """A running process's peak resident memory so far (VmHWM), in KiB.

    Not ``ru_maxrss`` from ``wait4``: Linux carries the high-water mark of
    the memory a process had before ``exec`` into it, and a child spawned
    with vfork had this harness's, so a small child would show the
    harness's peak. VmHWM belongs to the program after ``exec`` alone.
    """
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return None


def cli(*args: str) -> list[str]:
    """The argv that runs batchcancel with this interpreter."""
    return [sys.executable, "-m", "batchcancel", *args]


def cli_env(base_url: str) -> dict[str, str]:
    """The environment for the CLI: the sandbox's token and loopback URL."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("BATCHCANCEL_", "THANKSIO_"))}
    env["THANKSIO_API_TOKEN"] = TOKEN
    env["THANKSIO_BASE_URL"] = base_url
    return env


class SandboxProcess:
    """``batchcancel sandbox`` in its own process, on a random loopback port."""

    def __init__(self, *flags: str) -> None:
        argv = cli("sandbox", "--host", "127.0.0.1", "--port", "0",
                   "--token", TOKEN, *flags)
        self._errors = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(  # noqa: S603 - our own argv
            argv, stdout=subprocess.PIPE, stderr=self._errors)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            self._errors.seek(0)
            raise RuntimeError(f"the sandbox did not start: {self._errors.read()!r}")
        self.base_url: str = json.loads(line)["base_url"]
        self._control = self.base_url.removesuffix("/api/v2") + "/_sandbox"

    def __enter__(self) -> SandboxProcess:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def cpu_s(self) -> float | None:
        return cpu_of(self.process.pid)

    def record(self) -> dict[str, Any]:
        """The sandbox's record of truth."""
        with _LOOPBACK.open(f"{self._control}/record", timeout=60) as answer:
            body: dict[str, Any] = json.load(answer)
        return body

    def stop(self) -> None:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._errors.close()


def measured_alongside(sandbox: SandboxProcess,
                       action: Callable[[], Finished]) -> tuple[Finished, float | None]:
    """Run ``action`` and the sandbox's CPU seconds spent meanwhile."""
    before = sandbox.cpu_s()
    finished = action()
    after = sandbox.cpu_s()
    spent = None if before is None or after is None else after - before
    return finished, spent


def write_ids(path: Path, first: int, count: int) -> Path:
    """A file of ``count`` order IDs from ``first`` on, one per line."""
    with path.open("w", encoding="ascii") as out:
        out.write("order_id\n")
        step = 100_000
        for start in range(first, first + count, step):
            stop = min(start + step, first + count)
            out.write("\n".join(map(str, range(start, stop))) + "\n")
    return path
