"""Helpers for end-to-end tests: a sandbox on loopback and the real CLI."""

from __future__ import annotations

import asyncio
import csv
import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TOKEN = "tok-e2e-5f1c9d0b7a"  # distinctive, so a leak is easy to find

FAST = [
    "--concurrency", "16", "--rate", "off", "--max-retries", "10",
    "--backoff-initial", "0.02", "--backoff-max", "0.2", "--cooldown", "0.5",
    "--read-timeout", "0.5", "--connect-timeout", "2",
]


@dataclass(frozen=True, slots=True)
class Finished:
    code: int
    stdout: str
    stderr: str


def cli_env(token: str | None = TOKEN, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("BATCHCANCEL_", "THANKSIO_"))}
    if token is not None:
        env["THANKSIO_API_TOKEN"] = token
    env.update(extra)
    return env


async def run_cli(args: Sequence[str], *, env: Mapping[str, str] | None = None,
                  stdin: bytes | None = None, cwd: Path | None = None,
                  limit_s: float = 120) -> Finished:
    """Run ``python -m batchcancel ARGS`` and wait for it (bounded)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "batchcancel", *args,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=dict(env or cli_env()), cwd=cwd,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(stdin), limit_s)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return Finished(process.returncode, out.decode(), err.decode())


def read_report(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def expected_outcome(truth: Mapping[str, Any] | None) -> str:
    """What the report must say of an order, given the sandbox's record."""
    if truth is None:
        return "not_found"
    if truth["cancelled_by_sandbox_api"]:
        return "cancelled"
    if truth["status"] == "cancelled":
        return "already_cancelled"
    return "not_cancellable"


def disagreements(rows: list[dict[str, str]], record: Mapping[str, Any]) -> list[str]:
    """Every way the report differs from the sandbox, order by order."""
    orders = record["orders"]
    problems = []
    for row in rows:
        if not row["order_id"]:
            continue
        truth = orders.get(row["order_id"])
        want = expected_outcome(truth)
        if row["outcome"] != want:
            problems.append(f"{row['order_id']}: {row['outcome']} != {want}")
        refunded = truth["refunded_credits"] if truth else 0
        if row["outcome"] == "cancelled" and row["refunded_credits"] != str(refunded):
            problems.append(f"{row['order_id']}: credits {row['refunded_credits']}"
                            f" != {refunded}")
    return problems


def every_file_text(folder: Path) -> str:
    """All that a run left in ``folder``, as text, for a search."""
    return "".join(path.read_text(errors="replace") for path in folder.iterdir())
