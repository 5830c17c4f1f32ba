"""End to end: every input kind people produce, down to the report's rows.

One sandbox and one CLI run read every file of ``INPUTS`` (the table below
reads as the specification). Each file's rows must come out exactly: line
number, outcome, reason and the echoed value, with formulas neutralised. No
rejected value may ever reach the sandbox.
"""

from __future__ import annotations

import codecs
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio
from support import FAST, TOKEN, cli_env, expected_outcome, read_report, run_cli

from batchcancel.sandbox import Sandbox, SandboxConfig

pytestmark = pytest.mark.e2e

FIRST_ID = 42_700
LONG = "9" * 400
NBSP = "\u00a0"
NOT_ID = "not a positive integer"


@dataclass(frozen=True, slots=True)
class Input:
    """One input file and the rows it must give: (line, order ID or value, reason).

    A row with an order ID is a valid one and its outcome is the sandbox's;
    a row with a reason is ``invalid_input`` with that reason and that
    ``input_value`` echoed.
    """

    name: str
    data: bytes
    rows: tuple[tuple[int, str, str], ...]


def utf16(text: str, codec: str, bom: bytes) -> bytes:
    return bom + text.encode(codec)


INPUTS = [
    Input("utf8.csv", b"order_id\n42701\n42702\n",
          ((2, "42701", ""), (3, "42702", ""))),
    Input("utf8-bom.csv", codecs.BOM_UTF8 + b"order_id,campaign\r\n42703,spring\r\n",
          ((2, "42703", ""),)),
    Input("utf16le.tsv",
          utf16("order_id\tname\r\n42704\tJos\u00e9\r\n", "utf-16-le",
                codecs.BOM_UTF16_LE),
          ((2, "42704", ""),)),
    Input("utf16be.csv",
          utf16("order_id;name\r\n42705;Zo\u00eb\r\n", "utf-16-be",
                codecs.BOM_UTF16_BE),
          ((2, "42705", ""),)),
    Input("cp1252.csv",
          "name;order_id\r\nZo\u00eb M\u00fcller;42706\r\nRen\u00e9;42707\r\n"
          .encode("cp1252"),
          ((2, "42706", ""), (3, "42707", ""))),
    Input("lone-cr.csv", b"order_id\r42710\r42711\r",
          ((2, "42710", ""), (3, "42711", ""))),
    Input("quoted.csv", b'order_id,note\n"42712","a, b"\n" 42713 ",c\n',
          ((2, "42712", ""), (3, "42713", ""))),
    Input("blanks.txt",
          f"42714\n\n   \n{NBSP}{NBSP}\n\t\n{NBSP}42715{NBSP}\n".encode(),
          ((1, "42714", ""), (6, "42715", ""))),
    Input("excel.csv", b"order_id\n42708.0\n4.2709E4\n4.27E4\n42716.5\n",
          ((2, "42708", ""), (3, "42709", ""),
           (4, "4.27E4", "scientific notation with digits missing"),
           (5, "42716.5", "fractional number"))),
    Input("formulas.csv", b"order_id\n=1+1\n+SUM(A1)\n@x\n-1\n42717\n",
          ((2, "'=1+1", NOT_ID), (3, "'+SUM(A1)", NOT_ID), (4, "'@x", NOT_ID),
           (5, "'-1", NOT_ID), (6, "42717", ""))),
    Input("tricks.txt",
          "\n".join(["1/../2", "%2e%2e", "12?x=1", "12#", "+5", "1_000",
                     "\u0664\u0662", "\uff14\uff12", "0", LONG, "42718", ""])
          .encode(),
          ((1, "1/../2", NOT_ID), (2, "%2e%2e", NOT_ID), (3, "12?x=1", NOT_ID),
           (4, "12#", NOT_ID), (5, "'+5", NOT_ID), (6, "1_000", NOT_ID),
           (7, "\u0664\u0662", "non-ascii digits"),
           (8, "\uff14\uff12", "non-ascii digits"), (9, "0", "zero"),
           # A long value is echoed cut to 64 characters.
           (10, LONG[:64], "too long"), (11, "42718", ""))),
]


@dataclass(frozen=True, slots=True)
class Run:
    record: dict[str, Any]
    rows: list[dict[str, str]]
    code: int
    stderr: str


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def one_run(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Run]:
    """All inputs, in one run of the CLI against one sandbox."""
    folder = tmp_path_factory.mktemp("inputs")
    sandbox = Sandbox(SandboxConfig(orders=40, seed=2, first_id=FIRST_ID,
                                    token=TOKEN))
    await sandbox.start("127.0.0.1", 0)
    for each in INPUTS:
        (folder / each.name).write_bytes(each.data)
    try:
        done = await run_cli(
            ["cancel", *(each.name for each in INPUTS), "--report", "report.csv",
             "--base-url", sandbox.base_url, *FAST],
            env=cli_env(THANKSIO_BASE_URL=sandbox.base_url), cwd=folder)
        yield Run(sandbox.record(), read_report(folder / "report.csv"), done.code,
                  done.stderr)
    finally:
        await sandbox.stop()


def rows_of(run: Run, name: str) -> list[tuple[int, str, str, str]]:
    return [(int(r["line"]), r["outcome"], r["order_id"] or r["input_value"],
             r["detail"] if r["outcome"] == "invalid_input" else "")
            for r in sorted(run.rows, key=lambda r: int(r["line"]))
            if r["source"] == name]


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("each", INPUTS, ids=[each.name for each in INPUTS])
async def test_each_input_kind_gives_its_exact_rows(one_run: Run, each: Input) -> None:
    """A file's rows: line numbers, outcomes, reasons and echoed values."""
    orders = one_run.record["orders"]
    want = [(line, "invalid_input", value, reason) if reason
            else (line, expected_outcome(orders.get(value)), value, "")
            for line, value, reason in each.rows]

    assert want == rows_of(one_run, each.name)


@pytest.mark.asyncio(loop_scope="module")
async def test_no_rejected_value_reaches_the_sandbox(one_run: Run) -> None:
    """Every request names a valid ID of the table; the run ends with exit 0."""
    valid = {value for each in INPUTS for _, value, reason in each.rows
             if not reason}
    named = {entry["path"].split("/")[4] for entry in one_run.record["request_log"]
             if entry["path"].startswith("/api/v2/orders/")
             and not entry["path"].startswith("/api/v2/orders/list")}
    expected_rows = sum(len(each.rows) for each in INPUTS)

    assert 0 == one_run.code, one_run.stderr[-2000:]
    assert named <= valid
    assert set() != named
    assert expected_rows == len(one_run.rows)
