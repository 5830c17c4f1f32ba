"""Order IDs from CSV files, plain lists and stdin, streamed line by line.

Every physical line of every input ends up as one of: an :class:`OrderRef`
(a first-seen order ID), a :class:`Duplicate`, a :class:`Rejected` row with
its reason, a header, or a blank line, skipped silently. A quoted field may
span lines; the record then counts as the line it starts on.

One source goes through these steps, each a generator over the one before::

    bytes ─► BOM sniff ─► physical lines ─► text ─► delimiter sniff
          ─► CSV records ─► header and ID column ─► checked, de-duplicated IDs

- Text: a UTF-8 BOM is dropped, a UTF-16 BOM (LE or BE) makes the whole
  source UTF-16. Otherwise each line is UTF-8 or, failing that, Windows-1252.
- Lines end at LF, CRLF or a lone CR.
- The delimiter is the one of tab, pipe, semicolon and comma that the first
  non-blank lines use most consistently; none means one column. An Excel
  ``sep=;`` first line names it outright, and is no record.
- The first non-blank record is a header only if a field is named like an
  ID column (``order_id``, ``id``, ``orderId``, ``order id``, ``order-id``,
  any case) or like the column asked for, or if it has two or more fields
  and none is an order ID. A lone ``abc`` over a list of IDs is data.

Limits, on purpose: a physical line over 128 KiB is rejected unread, and a
record may span at most 1,000 lines. Past either, or on broken quoting, each
non-blank line of the record is rejected with its own number and reading
starts afresh on the next line; those lines are never guessed into IDs.
"""

from __future__ import annotations

import codecs
import csv
import os
import re
import stat
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import chain, islice
from typing import BinaryIO, NamedTuple

from batchcancel.errors import InputError, UsageError

STDIN = "-"

# Everything str.isspace() knows, plus the invisible marks that Excel and
# web pages leave around values (BOM, zero-width space, word joiner).
_BLANK = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003"
    "\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
    "\u200b\u2060\ufeff"
)
_MAX_DIGITS = 18  # every such number fits in a signed 64-bit integer
_VALUE_WIDTH = 64
_CHUNK = 1 << 16
# csv's default field limit too, so a single line can never trip it.
_MAX_LINE = 1 << 17
_KEEP = 4 * _VALUE_WIDTH  # bytes kept of an overlong line, for its preview
_MAX_RECORD_LINES = 1000
_SNIFF_LINES = 5
# In order of preference on a tie: the rarer a character is in free text,
# the likelier it is the delimiter when both appear.
_DELIMITERS = "\t|;,"
# A lone surrogate: no decoded line can hold one, so one column never splits.
_NO_DELIMITER = "\udfff"
# Excel's own way to name the delimiter, on a first line of its own.
_SEP_LINE = re.compile(r"sep=([\t|;,])[ \u00a0]*", re.IGNORECASE)
_ID_NAMES = frozenset({"id", "orderid"})
_NAME_NOISE = re.compile(r"[\s_-]")
_NUMBER = re.compile(r"([0-9]+)(?:\.([0-9]+))?(?:[eE]([+-]?)([0-9]+))?")
_LINE_END = re.compile(rb"\r\n|\r|\n")
_FORMULA_START = ("=", "+", "-", "@")


@dataclass(frozen=True, slots=True)
class OrderRef:
    """A valid order ID, the first time it is seen."""

    order_id: int
    source: str  # "-" for stdin, else the path as given
    line: int  # 1-based physical line the record starts on


@dataclass(frozen=True, slots=True)
class Rejected:
    """An input line that is not a valid order ID."""

    source: str
    line: int
    value: str  # neutralised for spreadsheets, at most 64 characters
    reason: str


@dataclass(frozen=True, slots=True)
class Duplicate:
    """A valid order ID seen before, in this source or an earlier one."""

    order_id: int
    source: str
    line: int
    first_source: str
    first_line: int


InputItem = OrderRef | Rejected | Duplicate


def parse_order_id(raw: str) -> int | str:
    """Pure: the order ID, or the reason it is not one."""
    value = raw.strip(_BLANK)
    if not value:
        return "empty id field"
    if "\ufffd" in value:
        return "undecodable bytes"

    number = _NUMBER.fullmatch(value)
    if number is not None:
        return _exact_integer(*number.groups(default=""))
    if value.isdigit():  # digits, yet not ASCII ones
        return "non-ascii digits"
    return "not a positive integer"


def neutralise(value: str) -> str:
    """Prefix a value that a spreadsheet would run as a formula with a quote.

    That is one starting with = + - @ (also after leading whitespace), a tab
    or a carriage return.
    """
    if value.startswith(("\t", "\r")):
        return "'" + value
    if value.lstrip(_BLANK).startswith(_FORMULA_START):
        return "'" + value
    return value


def check_readable(sources: Sequence[str]) -> None:
    """Raise InputError now, before any request is sent, for a bad source.

    Missing, unreadable and directory paths are refused. Pipes and devices
    are only required to exist: opening one would block or consume it.
    """
    for name in sources:
        if name == STDIN:
            continue
        try:
            mode = os.stat(name).st_mode
            if stat.S_ISREG(mode):
                open(name, "rb").close()  # the only sure test of permission
        except OSError as exc:
            raise _unreadable(name, exc) from None

        if stat.S_ISDIR(mode):
            raise InputError(f"cannot read {name}: it is a directory")


def read_ids(
    sources: Sequence[str],
    *,
    column: str | None = None,
    stdin: BinaryIO | None = None,
) -> Iterator[InputItem]:
    """Stream every input; "-" means stdin (sys.stdin.buffer unless given).

    ``column`` is a header name (any case) or a 1-based column number.  The
    ID column of every regular file is settled before this returns, so a
    file lacking the named column, or one whose ID column would only be a
    guess, stops the run before any order is sent; stdin and pipes can only
    be read once, so they are checked when reached.
    """
    wanted = _column_spec(column)
    for name in sources:
        if name != STDIN and _rereadable(name):
            _check_column(name, wanted)

    return _read_all(tuple(sources), wanted, stdin)


# -- sources ---------------------------------------------------------------


class _Seen:
    """Where each order ID was first seen, packed into one int per ID.

    ``line * len(sources) + source index`` keeps a million IDs near 100 MB;
    a tuple per ID would take half as much again.
    """

    __slots__ = ("_first", "_sources")

    def __init__(self, sources: Sequence[str]) -> None:
        self._sources = sources
        self._first: dict[int, int] = {}

    def classify(self, order_id: int, index: int, line: int) -> InputItem:
        count = len(self._sources)
        here = line * count + index
        first = self._first.setdefault(order_id, here)
        if first == here:
            return OrderRef(order_id, self._sources[index], line)

        first_line, first_index = divmod(first, count)
        return Duplicate(order_id, self._sources[index], line,
                         self._sources[first_index], first_line)


def _read_all(sources: Sequence[str], column: int | str | None,
              stdin: BinaryIO | None) -> Iterator[InputItem]:
    seen = _Seen(sources)
    for index, name in enumerate(sources):
        with _opened(name, stdin) as stream:
            yield from _source_items(name, index, stream, column, seen)


@contextmanager
def _opened(name: str, stdin: BinaryIO | None) -> Iterator[BinaryIO]:
    if name == STDIN:
        yield sys.stdin.buffer if stdin is None else stdin
        return

    try:
        stream = open(name, "rb")  # noqa: SIM115 - the with below closes it
    except OSError as exc:
        raise _unreadable(name, exc) from None
    with stream:
        yield stream


def _chunks(name: str, stream: BinaryIO) -> Iterator[bytes]:
    # read1 returns what a pipe already holds instead of waiting for a full
    # chunk, so IDs typed or piped in slowly are sent as they arrive.
    read = getattr(stream, "read1", stream.read)
    while True:
        try:
            chunk = read(_CHUNK)
        except OSError as exc:
            raise _unreadable(name, exc) from None
        if not chunk:
            return
        yield chunk


def _unreadable(name: str, exc: OSError) -> InputError:
    return InputError(f"cannot read {name}: {exc.strerror or exc}")


def _source_items(name: str, index: int, stream: BinaryIO,
                  column: int | str | None, seen: _Seen) -> Iterator[InputItem]:
    layout: _Layout | None = None
    # A pipe may hold one line and stay open: sniff the delimiter from what
    # is there (the first line), never wait for more lines to arrive.
    sniff = _SNIFF_LINES if name != STDIN and _rereadable(name) else 1
    for record in _records(name, _text_lines(_chunks(name, stream)), sniff):
        if isinstance(record, Rejected):
            yield record
            continue
        if _is_blank(record.fields):
            continue

        if layout is None:
            layout = _layout(name, record.fields, column)
            if layout.header:
                continue
        yield _item(name, index, record, layout.column, seen)


def _item(name: str, index: int, record: _Record, column: int,
          seen: _Seen) -> InputItem:
    if column >= len(record.fields):
        return Rejected(name, record.line, _shown(record.text), "missing id field")

    raw = record.fields[column]
    parsed = parse_order_id(raw)
    if isinstance(parsed, str):
        return Rejected(name, record.line, _shown(raw), parsed)
    return seen.classify(parsed, index, record.line)


def _shown(raw: str) -> str:
    return neutralise(raw)[:_VALUE_WIDTH]


def _is_blank(fields: list[str]) -> bool:
    return not any(field.strip(_BLANK) for field in fields)


# -- numbers ---------------------------------------------------------------


def _exact_integer(whole: str, fraction: str, sign: str,
                   exponent: str) -> int | str:
    """The integer a plain or Excel-style literal writes, if it writes one.

    Works on the digit strings, so ``1E999999`` costs nothing to refuse.
    """
    digits = (whole + fraction).lstrip("0")
    if not digits:
        return "zero"

    significant = digits.rstrip("0")
    shift = len(digits) - len(significant) - len(fraction)
    exponent = exponent.lstrip("0")
    if len(exponent) > 20:
        # Such an exponent dwarfs the length of any string held in memory,
        # so its sign alone decides; int() might refuse a string this long.
        return "fractional number" if sign == "-" else "too long"

    shift += -int(exponent or "0") if sign == "-" else int(exponent or "0")
    if shift < 0:
        return "fractional number"
    if len(significant) + shift > _MAX_DIGITS:
        return "too long"
    if sign != "-" and int(exponent or "0") > len(fraction):
        # Excel writes a number it cannot show whole as 4.27E+04: digits
        # the exponent stands for were never written, and 42708 may have
        # become 42700. A cancel cannot be undone, so only a mantissa that
        # writes every digit (4.2708E4) counts.
        return "scientific notation with digits missing"
    return int(significant + "0" * shift)


# -- header and ID column --------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Layout:
    header: bool
    column: int  # 0-based index of the ID field


def _column_spec(column: str | None) -> int | str | None:
    """A 0-based index, a trimmed name, or None for the default column."""
    if column is None:
        return None

    given = column.strip(_BLANK)
    if given.isascii() and given.isdigit():
        if int(given) < 1:
            raise UsageError(f"column {column!r}: column numbers start at 1")
        return int(given) - 1
    if not given:
        raise UsageError("the ID column name is empty")
    return given


def _rereadable(name: str) -> bool:
    try:
        return stat.S_ISREG(os.stat(name).st_mode)
    except OSError:
        return False  # reading it will say what is wrong


def _check_column(name: str, column: int | str | None) -> None:
    with _opened(name, None) as stream:
        for record in _records(name, _text_lines(_chunks(name, stream))):
            if isinstance(record, _Record) and not _is_blank(record.fields):
                _layout(name, record.fields, column)
                return


def _layout(name: str, fields: list[str], column: int | str | None) -> _Layout:
    """Whether the first non-blank record is a header, and where the ID is."""
    keys = [field.strip(_BLANK).casefold() for field in fields]
    known = [i for i, key in enumerate(keys) if _NAME_NOISE.sub("", key) in _ID_NAMES]
    # "order_id" names the order more surely than a bare "id" (which may be
    # a row number or a customer's): prefer it wherever it stands.
    known.sort(key=lambda i: _NAME_NOISE.sub("", keys[i]) != "orderid")
    asked = column.casefold() if isinstance(column, str) else None
    header = bool(known) or asked in keys or (
        len(fields) >= 2 and not any(isinstance(parse_order_id(f), int) for f in fields)
    )

    if isinstance(column, int):
        return _Layout(header, column)
    filled = [i for i, field in enumerate(fields) if field.strip(_BLANK)]
    if asked is None and not known and not header and len(filled) == 1:
        # "501;" from a spreadsheet: the empty cells after it are no column.
        return _Layout(False, filled[0])
    if asked is None and len(fields) >= 2 and not known:
        # Guessing the first column of several could cancel customer numbers
        # or amounts instead of orders: an irreversible mistake, so ask.
        found = ", ".join(field.strip(_BLANK) for field in fields[:20])
        what = f"the header ({found}) names no order-ID column" if header else (
            f"{len(fields)} columns and no header row")
        raise InputError(f"{name}: {what}; say which column holds the order "
                         "IDs with --column NAME or --column NUMBER")
    if asked is None:
        return _Layout(header, known[0] if known else 0)
    if not header:
        raise InputError(f"{name}: no header row to find column {column!r} in; "
                         "give the column's number instead")
    if asked not in keys:
        found = ", ".join(field.strip(_BLANK) for field in fields[:20])
        more = ", ..." if len(fields) > 20 else ""
        raise InputError(f"{name}: no column {column!r}; columns found: {found}{more}")
    return _Layout(True, keys.index(asked))


# -- records ---------------------------------------------------------------


class _Line(NamedTuple):
    # A tuple, not a frozen dataclass: one is built per physical line.
    number: int
    text: str
    overlong: bool


class _Record(NamedTuple):
    line: int
    fields: list[str]
    text: str  # the record's first physical line


class _GiveUp(Exception):
    """The record in hand runs too long to be worth finishing."""


class _Feed:
    """The lines csv.reader pulls, remembering those of the record in hand.

    A class, not a generator: a generator that raised is finished, and the
    reader must go on pulling after a record is given up.
    """

    def __init__(self, lines: Iterator[_Line]) -> None:
        self._lines = lines
        self.taken: list[_Line] = []

    def __iter__(self) -> _Feed:
        return self

    def __next__(self) -> str:
        line = next(self._lines)
        self.taken.append(line)
        if line.overlong or len(self.taken) > _MAX_RECORD_LINES:
            raise _GiveUp
        # csv.reader needs the line end to keep it inside a quoted field.
        return line.text + "\n"

    def rejected(self, name: str) -> Iterator[Rejected]:
        for line in self.taken:
            if line.overlong:
                yield Rejected(name, line.number, _shown(line.text), "line too long")
            elif line.text.strip(_BLANK):
                yield Rejected(name, line.number, _shown(line.text),
                               "malformed quoting")


def _records(name: str, lines: Iterator[_Line],
             sniff: int = 0) -> Iterator[_Record | Rejected]:
    sample = _sample(lines, sniff or _SNIFF_LINES)
    declared = _SEP_LINE.fullmatch(sample[0].text) if sample else None
    if declared is None:
        delimiter = _delimiter(sample)
    else:
        delimiter, sample = declared[1], sample[1:]

    feed = _Feed(chain(sample, lines))
    reader = csv.reader(feed, delimiter=delimiter, quotechar='"',
                        doublequote=True, skipinitialspace=True, strict=True)
    while True:
        feed.taken.clear()
        try:
            fields = next(reader)
        except StopIteration:
            return
        except (csv.Error, _GiveUp):
            yield from feed.rejected(name)
            continue

        first = feed.taken[0]
        yield _Record(first.number, fields, first.text)


def _sample(lines: Iterator[_Line], count: int) -> list[_Line]:
    """The first lines after any leading blank ones, to sniff the delimiter."""
    for line in lines:
        if line.overlong or line.text.strip(_BLANK):
            return [line, *islice(lines, count - 1)]
    return []


def _delimiter(sample: list[_Line]) -> str:
    texts = [
        _unquoted(line.text)
        for line in sample
        if not line.overlong and line.text.strip(_BLANK)
    ]
    if not texts:
        return _NO_DELIMITER

    first = texts[0]

    def consistency(delimiter: str) -> tuple[int, int]:
        count = first.count(delimiter)
        return sum(text.count(delimiter) == count for text in texts), count

    found = [delimiter for delimiter in _DELIMITERS if delimiter in first]
    return max(found, key=consistency, default=_NO_DELIMITER)


def _unquoted(text: str) -> str:
    """The text outside double quotes, as far as one line can tell."""
    return "".join(text.split('"')[::2])


# -- bytes to lines --------------------------------------------------------


def _text_lines(chunks: Iterator[bytes]) -> Iterator[_Line]:
    lines = _physical_lines(_as_utf8(chunks))
    for number, (raw, overlong) in enumerate(lines, start=1):
        yield _Line(number, _decode(raw), overlong)


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        # Excel's "CSV" on Windows; its five unmapped bytes become U+FFFD.
        return raw.decode("cp1252", errors="replace")


def _as_utf8(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """The bytes without any BOM, UTF-16 turned into UTF-8 on the way."""
    head = b""
    for chunk in chunks:
        head += chunk
        if len(head) >= len(codecs.BOM_UTF8):
            break

    if head.startswith(codecs.BOM_UTF8):
        return chain([head[len(codecs.BOM_UTF8):]], chunks)
    if head.startswith(codecs.BOM_UTF16_LE):
        return _transcoded(chain([head[2:]], chunks), "utf-16-le")
    if head.startswith(codecs.BOM_UTF16_BE):
        return _transcoded(chain([head[2:]], chunks), "utf-16-be")
    return chain([head], chunks)


def _transcoded(chunks: Iterator[bytes], encoding: str) -> Iterator[bytes]:
    # "replace" leaves no lone surrogate, so encoding to UTF-8 cannot fail.
    decoder = codecs.getincrementaldecoder(encoding)(errors="replace")
    for chunk in chunks:
        yield decoder.decode(chunk).encode()
    yield decoder.decode(b"", final=True).encode()


def _physical_lines(chunks: Iterator[bytes]) -> Iterator[tuple[bytes, bool]]:
    """Split at LF, CRLF and lone CR; flag lines over the length limit.

    Of an overlong line only the first bytes are kept, so memory stays
    bounded whatever the input.
    """
    pending = b""
    overlong = False
    for chunk in chunks:
        pending += chunk
        # A CR at the very end may be the first half of a CRLF.
        held = b"\r" if pending.endswith(b"\r") else b""
        *complete, rest = _LINE_END.split(pending[: len(pending) - len(held)])
        for line in complete:
            if overlong or len(line) > _MAX_LINE:
                yield line[:_KEEP], True
            else:
                yield line, False
            overlong = False

        if len(rest) > _MAX_LINE:
            rest, overlong = rest[:_KEEP], True
        pending = rest + held

    if pending or overlong:
        last = pending.removesuffix(b"\r")
        yield (last[:_KEEP], True) if overlong else (last, False)
