"""The benchmark harness works: `python -m bench --smoke` writes every section.

Benchmarks are not tests, so nothing here checks a speed; this only proves
that the harness starts the sandbox, runs each measurement and writes a
RESULTS-style file, and that the smoke run leaves bench/RESULTS.md alone.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SECTIONS = ("## 1. Overhead", "## 2. Client CPU per order", "## 3. Rate fidelity",
            "## 4. Deadline yield", "## 5. Memory", "## 6. Idle cost",
            "## 7. Start-up")


def results_text() -> str | None:
    path = ROOT / "bench" / "RESULTS.md"
    return path.read_text(encoding="utf-8") if path.exists() else None


@pytest.mark.e2e
def test_smoke_run_writes_all_seven_sections(tmp_path: Path) -> None:
    """A smoke run exits 0 and writes, to a temporary file, all seven sections."""
    before = results_text()
    env = {**os.environ, "TMPDIR": str(tmp_path)}  # where its temporary file goes

    done = subprocess.run([sys.executable, "-m", "bench", "--smoke"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300,
                          check=False)
    output = Path(done.stdout.strip().removeprefix("wrote "))
    text = output.read_text(encoding="utf-8")

    assert 0 == done.returncode, done.stderr[-3000:]
    assert tmp_path == output.parent
    assert "## Machine" in text
    assert [] == [title for title in SECTIONS if title not in text]
    assert "Smoke run" in text
    assert before == results_text()
