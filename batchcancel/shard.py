"""Shards: a stable share of the input for each of N runs of one job.

An order ID belongs to shard ``sha256(decimal ID) mod N``: the same in
every process, on every machine and every Python version (unlike
``hash()``, which is salted per process).  Every shard reads the whole
input and keeps its own IDs; a duplicate goes where its ID goes, so it is
counted once, by the shard that owns the ID.  Invalid lines have no ID to
hash: shard 0 reports all of them, so that the merged reports hold each
input line exactly once.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from batchcancel.errors import ConfigError
from batchcancel.ids import InputItem, Rejected

INDEX_ENV = "JOB_COMPLETION_INDEX"
_SPEC = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")


@dataclass(frozen=True, slots=True)
class Shard:
    """Shard ``index`` (from 0) of ``count``."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def label(self) -> str:
        return f"shard-{self.index}-of-{self.count}"

    def owns(self, order_id: int) -> bool:
        return shard_of(order_id, self.count) == self.index

    def keeps(self, item: InputItem) -> bool:
        if isinstance(item, Rejected):
            return self.index == 0
        return self.owns(item.order_id)

    def filter(self, items: Iterator[InputItem]) -> Iterator[InputItem]:
        return (item for item in items if self.keeps(item))

    def named(self, path: Path) -> Path:
        """``report.csv`` → ``report.shard-1-of-3.csv``, so shards sharing a
        folder never overwrite each other's files."""
        return path.with_name(f"{path.stem}.{self.label}{path.suffix}")


def shard_of(order_id: int, count: int) -> int:
    """The shard an order ID belongs to (pure, stable everywhere)."""
    digest = hashlib.sha256(str(order_id).encode("ascii")).digest()
    return int.from_bytes(digest[:8], "big") % count


def parse_shard(spec: str | None, shards: int | None,
                environ: Mapping[str, str]) -> Shard | None:
    """``--shard K/N``, or ``--shards N`` with K from JOB_COMPLETION_INDEX."""
    if spec and shards:
        raise ConfigError("give --shard K/N or --shards N, not both")
    if spec:
        match = _SPEC.fullmatch(spec)
        if match is None:
            raise ConfigError(f"--shard {spec!r} is not K/N, e.g. 0/3 "
                              "(shards are numbered from 0)")
        return _checked(int(match[1]), int(match[2]), "--shard")
    if shards is None:
        return None
    text = environ.get(INDEX_ENV, "").strip()
    if not (text.isascii() and text.isdigit()):
        raise ConfigError(
            f"--shards {shards} takes the shard number from {INDEX_ENV}, which is "
            f"{'not set' if not text else repr(text)}; run it as a Kubernetes "
            "Indexed Job, or give --shard K/N instead")
    return _checked(int(text), shards, INDEX_ENV)


def _checked(index: int, count: int, where: str) -> Shard:
    if count < 1:
        raise ConfigError(f"the shard count must be at least 1, not {count}")
    if not 0 <= index < count:
        raise ConfigError(f"{where}: shard {index} is out of range for {count} "
                          f"shards (0 to {count - 1})")
    return Shard(index, count)
