"""``python -m bench``: run the seven measurements and write RESULTS.md.

``python -m bench --smoke`` runs each at a tiny size in seconds, to prove the
harness works, and writes to a temporary file unless ``--output`` is given.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from . import figures
from .results import Section, machine, render

RESULTS = Path(__file__).with_name("RESULTS.md")
STEPS = ("overhead", "fidelity", "yield", "memory", "idle", "startup")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    scale = figures.SMOKE if args.smoke else figures.Scale()
    output = args.output or (Path(tempfile.gettempdir()) / "batchcancel-bench-smoke.md"
                             if args.smoke else RESULTS)
    started = time.perf_counter()
    header = machine()

    with tempfile.TemporaryDirectory(prefix="batchcancel-bench-") as folder:
        sections = _measure(scale, Path(folder), args.only)

    command = "python -m bench" + (" --smoke" if args.smoke else "")
    text = render(sections, header=header, command=command,
                  wall_s=time.perf_counter() - started, smoke=args.smoke)
    output.write_text(text, encoding="utf-8")
    print(f"wrote {output}")
    return 0


def _steps(scale: figures.Scale, work: Path
           ) -> dict[str, Callable[[], list[Section]]]:
    return {
        "overhead": lambda: list(figures.throughput(scale, work)),
        "fidelity": lambda: [figures.fidelity(scale, work)],
        "yield": lambda: [figures.deadline_yield(scale, work)],
        "memory": lambda: [figures.memory(scale, work)],
        "idle": lambda: [figures.idle(scale, work)],
        "startup": lambda: [figures.startup(scale)],
    }


def _measure(scale: figures.Scale, work: Path, only: list[str] | None
             ) -> list[Section]:
    sections: list[Section] = []
    for name, step in _steps(scale, work).items():
        if only and name not in only:
            continue
        began = time.perf_counter()
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        sections += step()
        print(f"bench: {name} took {time.perf_counter() - began:.0f} s",
              file=sys.stderr, flush=True)
    return sections


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--smoke", action="store_true",
                        help="tiny sizes, seconds in all; figures mean nothing")
    parser.add_argument("--output", type=Path, default=None,
                        help="where to write (default: bench/RESULTS.md; with"
                        " --smoke a temporary file)")
    parser.add_argument("--only", nargs="+", choices=STEPS, default=None,
                        help="run only these measurements (for profiling)")
    return parser


if __name__ == "__main__":
    sys.exit(main())
