"""The journal: every final outcome, durable before it is counted.

A JSON-lines file next to the report (or ``--journal PATH``).  Its first
line says which job it belongs to: a fingerprint of the input files, of
the account (a hash of the token, never the token) and the base URL, and
when the job first started.  Each further line is one final row.

Running the same command again resumes: orders already in the journal are
not sent again, their rows are replayed into the new report, and the
job's first start stays the reference for "cancelled by this job".  A torn
last line (a kill in the middle of a write) is ignored; its order is sent
again, and the API's answer (``cancelled`` after this job's start) counts
it once.  Rows are flushed to the operating system at once, which a
``kill -9`` cannot undo; ``fsync`` follows every second and at the end,
against a power cut.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from batchcancel.errors import JournalError
from batchcancel.outcomes import Outcome, Row

VERSION = 1
#: The API's final word on an order.  ``not_attempted`` and ``error`` rows
#: are not journaled, so a resumed run sends those orders again: their
#: review window may still be open, and the ``sent`` line tells the next
#: run that a cancel may already have been carried out.
FINAL = frozenset({Outcome.CANCELLED, Outcome.ALREADY_CANCELLED,
                   Outcome.NOT_CANCELLABLE, Outcome.NOT_FOUND})
_FSYNC_EVERY = 1.0


@dataclass(frozen=True, slots=True)
class JobIdentity:
    """What a journal must match to be resumed."""

    inputs: str
    account: str
    base_url: str


def identity(inputs: Sequence[str], token: str, base_url: str) -> JobIdentity:
    return JobIdentity(_fingerprint(inputs), _digest(token.encode())[:16], base_url)


def _fingerprint(inputs: Sequence[str]) -> str:
    # Regular files by content; stdin cannot be read twice, so it stands in
    # by name only (a resumed stdin job must be fed the same IDs).
    digest = hashlib.sha256()
    for name in inputs:
        digest.update(name.encode() + b"\0")
        if name != "-" and Path(name).is_file():
            with open(name, "rb") as file:
                for chunk in iter(lambda: file.read(1 << 20), b""):
                    digest.update(chunk)
    return digest.hexdigest()


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Journal:
    """An open, locked journal: ``finished`` rows and ``record`` for more."""

    def __init__(self, path: Path, job: JobIdentity, started_at: datetime) -> None:
        self.path = path
        self._file: IO[str] = self._lock(path)
        self.finished: dict[int, Row] = {}
        # Orders an earlier run of this job sent a cancel for: if such an
        # order is now cancelled, the lost answer was this job's cancel.
        self.sent_before: set[int] = set()
        self.started_at = started_at
        self.resumed = False
        try:
            header = self._load(job)
        except BaseException:
            self._file.close()  # releases the lock too
            raise
        if header is None:
            self._write({"kind": "job", "version": VERSION, **asdict(job),
                         "started_at": started_at.isoformat()})
            self._sync()
        self._synced = time.monotonic()

    def record(self, row: Row) -> None:
        if row.outcome not in FINAL or row.order_id is None:
            return
        if row.order_id in self.finished:
            return  # replayed from this journal, already on disk
        self._write({"kind": "row", **_row_to_json(row)})
        if time.monotonic() - self._synced >= _FSYNC_EVERY:
            self._sync()

    def sending(self, order_id: int) -> None:
        """Note, before its first request goes, that this order is sent."""
        if order_id not in self.sent_before:
            self.sent_before.add(order_id)
            self._write({"kind": "sent", "order_id": order_id})

    def close(self) -> None:
        if not self._file.closed:
            self._sync()
            self._file.close()

    def _lock(self, path: Path) -> IO[str]:
        try:
            file = path.open("a+", encoding="utf-8")
        except OSError as exc:
            raise JournalError(f"cannot open the journal {path}: {exc.strerror}"
                               ) from None
        try:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            file.close()
            raise JournalError(f"another run is using the journal {path}; "
                               "wait for it to finish") from None
        return file

    def _load(self, job: JobIdentity) -> dict[str, Any] | None:
        self._file.seek(0)
        lines = self._file.read().splitlines()
        if not lines:
            return None
        header = _parse(lines[0])
        if header is None or header.get("kind") != "job":
            raise JournalError(f"{self.path} is not a batchcancel journal")
        _check_same_job(self.path, header, job)
        self.started_at = datetime.fromisoformat(header["started_at"])
        self.resumed = True
        for number, line in enumerate(lines[1:], start=2):
            record = _parse(line)
            if record is None:
                if number == len(lines):
                    break  # torn by a kill mid-write: that order is sent again
                raise JournalError(f"{self.path}: line {number} is damaged")
            if record.get("kind") == "sent":
                self.sent_before.add(int(record.get("order_id", 0)))
                continue
            row = _row_from_json(record)
            self.finished[row.order_id or 0] = row
        if len(lines) > 1 and not _parse(lines[-1]):
            self._drop_torn_line()
        return header

    def _drop_torn_line(self) -> None:
        # Cut the half-written line off, so that it never ends up in the
        # middle of the journal, where it would read as damage.
        data = self.path.read_bytes()
        keep = data.rstrip(b"\n").rfind(b"\n") + 1
        os.truncate(self._file.fileno(), keep)
        self._file.seek(0, os.SEEK_END)

    def _write(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._file.flush()

    def _sync(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._synced = time.monotonic()


def _check_same_job(path: Path, header: dict[str, Any], job: JobIdentity) -> None:
    what = {"inputs": "other input", "account": "another account (token)",
            "base_url": "another base URL"}
    for key, meaning in what.items():
        if header.get(key) != getattr(job, key):
            raise JournalError(
                f"the journal {path} was written for {meaning}; "
                "use another --journal (or --report) for this job, or delete it"
            )


def _parse(line: str) -> dict[str, Any] | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


_ROW_FIELDS = tuple(field.name for field in fields(Row))


def _row_to_json(row: Row) -> dict[str, Any]:
    # Every field of a row is a scalar, so a shallow copy is the whole row.
    # asdict() deep-copies each value, which cost a tenth of the client's
    # CPU at full speed (bench/NOTES.md).
    data = {name: getattr(row, name) for name in _ROW_FIELDS}
    data["outcome"] = row.outcome.value
    data["deadline"] = row.deadline.isoformat() if row.deadline else None
    return data


def _row_from_json(record: dict[str, Any]) -> Row:
    record = {k: v for k, v in record.items() if k != "kind"}
    try:
        record["outcome"] = Outcome(record["outcome"])
        if record.get("deadline"):
            record["deadline"] = datetime.fromisoformat(record["deadline"])
        return Row(**record)
    except (KeyError, TypeError, ValueError) as exc:
        raise JournalError(f"a journal row cannot be read: {exc}") from None
