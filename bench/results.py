"""What a benchmark run found, the machine it ran on, and RESULTS.md."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

NOTES = Path(__file__).with_name("NOTES.md")


@dataclass(frozen=True, slots=True)
class Row:
    """One figure next to its comparison from the same run."""

    figure: str
    value: str
    comparison: str = ""
    target: str = ""
    met: bool | None = None


@dataclass(slots=True)
class Section:
    """One of the seven measurements: its rows and how it was measured."""

    title: str
    rows: list[Row] = field(default_factory=list)
    method: list[str] = field(default_factory=list)


def verdict(met: bool | None) -> str:
    return {True: "met", False: "**missed**", None: ""}[met]


def machine() -> list[tuple[str, str]]:
    """The machine and versions, as label and value."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return [
        ("CPU", _cpu_model()),
        ("cores", str(os.cpu_count())),
        ("RAM", _ram()),
        ("OS", platform.platform()),
        ("Python", f"{platform.python_implementation()} {platform.python_version()}"),
        ("aiohttp", _version("aiohttp")),
        ("structlog", _version("structlog")),
        ("batchcancel", _version("batchcancel")),
        ("git commit", _commit()),
        ("load average at start", "n/a" if load is None
         else " / ".join(f"{x:.2f}" for x in load) + " (1, 5, 15 min)"),
    ]


def render(sections: list[Section], *, header: list[tuple[str, str]],
           command: str, wall_s: float, smoke: bool) -> str:
    """RESULTS.md: the machine, then each section's table and method."""
    lines = ["# batchcancel benchmark results", "",
             f"Written by `{command}` in {wall_s:.0f} s."
             + (" **Smoke run: tiny sizes, the figures mean nothing.**"
                if smoke else ""), "",
             "## Machine", "", "| | |", "|---|---|"]
    lines += [f"| {label} | {value} |" for label, value in header]
    for number, section in enumerate(sections, start=1):
        lines += ["", f"## {number}. {section.title}", "",
                  "| figure | batchcancel | comparison, same run | target | |",
                  "|---|---|---|---|---|"]
        lines += [f"| {r.figure} | {r.value} | {r.comparison} | {r.target}"
                  f" | {verdict(r.met)} |" for r in section.rows]
        lines += [""] + [f"- {text}" for text in section.method]
    lines += _summary(sections)
    if NOTES.exists():
        lines += ["", NOTES.read_text(encoding="utf-8").rstrip()]
    return "\n".join(lines) + "\n"


def _summary(sections: list[Section]) -> list[str]:
    judged = [(s.title, r) for s in sections for r in s.rows if r.met is not None]
    missed = [f"{title}: {r.figure} {r.value} (target {r.target})"
              for title, r in judged if not r.met]
    lines = ["", "## Targets", "",
             f"{len(judged) - len(missed)} of {len(judged)} targets met."]
    return lines + [f"- missed: {text}" for text in missed]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _ram() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return "unknown"


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _commit() -> str:
    root = Path(__file__).resolve().parent.parent
    try:
        head = _git(root, "rev-parse", "--short=12", "HEAD")
        dirty = _git(root, "status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + (" (with uncommitted changes)" if dirty else "")


def _git(root: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=root, capture_output=True,  # noqa: S603, S607
                          text=True, check=True, timeout=10)
    return done.stdout.strip()
