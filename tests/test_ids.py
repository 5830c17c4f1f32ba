"""Reading order IDs: decoding, dialects, headers, validation, duplicates."""

from __future__ import annotations

import codecs
import io
import os
import re
import sys
import tempfile
import threading
from itertools import islice
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from batchcancel.errors import InputError, UsageError
from batchcancel.ids import (
    Duplicate,
    InputItem,
    OrderRef,
    Rejected,
    check_readable,
    neutralise,
    parse_order_id,
    read_ids,
)


def write(tmp_path: Path, data: bytes, name: str = "ids.csv") -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def read(data: bytes, column: str | None = None) -> list[InputItem]:
    return list(read_ids(["-"], column=column, stdin=io.BytesIO(data)))


def refs(*pairs: tuple[int, int], source: str = "-") -> list[InputItem]:
    return [OrderRef(order_id, source, line) for order_id, line in pairs]


def ask_column(what: str, source: str = "-") -> str:
    """The refusal of a source whose ID column would only be a guess."""
    return (f"{source}: {what}; say which column holds the order IDs "
            "with --column NAME or --column NUMBER")


# The reader takes read1 where a stream has it, so each double below answers
# read1 and read alike; a double that kept BytesIO's read1 would hand out its
# whole buffer at once and test nothing.


class Trickle(io.BytesIO):
    """Hands out a few bytes per read, as a slow pipe does."""

    def __init__(self, data: bytes, size: int) -> None:
        super().__init__(data)
        self._size = size

    def read(self, size: int | None = -1) -> bytes:
        return super().read(self._size)

    def read1(self, size: int | None = -1) -> bytes:
        return self.read(size)


class Endless(io.BytesIO):
    """An endless list of IDs, one line per read, counting its reads."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def read(self, size: int | None = -1) -> bytes:
        self.reads += 1
        return b"%d\n" % self.reads

    def read1(self, size: int | None = -1) -> bytes:
        return self.read(size)


class Breaks(io.BytesIO):
    """Gives its data in one read, then fails as a dying disk does."""

    def read(self, size: int | None = -1) -> bytes:
        data = super().read()
        if not data:
            raise OSError(5, "Input/output error")
        return data

    def read1(self, size: int | None = -1) -> bytes:
        return self.read(size)


class RawTrickle(io.RawIOBase):
    """A raw stream, which has no read1, handing out a few bytes per read."""

    def __init__(self, data: bytes, size: int) -> None:
        super().__init__()
        self._data = data
        self._size = size
        self.reads = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        self.reads += 1
        chunk, self._data = self._data[: self._size], self._data[self._size :]
        buffer[: len(chunk)] = chunk
        return len(chunk)


# -- encodings -------------------------------------------------------------


def test_plain_utf8_list_gives_one_ref_per_line(tmp_path: Path) -> None:
    """A UTF-8 list without BOM yields each ID with its line and the path as given."""
    path = write(tmp_path, b"101\n102\n103\n")

    assert refs((101, 1), (102, 2), (103, 3), source=path) == list(read_ids([path]))


def test_utf8_bom_is_dropped_before_the_header() -> None:
    """A UTF-8 BOM does not spoil the header name or count as a character."""
    assert refs((7, 2), (8, 3)) == read(codecs.BOM_UTF8 + b"order_id\n7\n8\n")


@pytest.mark.parametrize(("bom", "encoding"), [
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
])
def test_utf16_with_bom_is_decoded_whole(bom: bytes, encoding: str) -> None:
    """Excel's "Unicode text" export, either byte order, reads like UTF-8."""
    data = bom + "order_id\tKunde\r\n501\tJosé\r\n502\tZoë\r\n".encode(encoding)

    assert refs((501, 2), (502, 3)) == read(data)
    assert [
        Rejected("-", 2, "José", "not a positive integer"),
        Rejected("-", 3, "Zoë", "not a positive integer"),
    ] == read(data, column="Kunde")


def test_utf16_survives_reads_that_split_characters() -> None:
    """A surrogate pair and a CRLF cut between reads still decode correctly."""
    data = codecs.BOM_UTF16_LE + "id\r\n😀\r\n9\r\n".encode("utf-16-le")

    items = list(read_ids(["-"], stdin=Trickle(data, 1)))

    assert [Rejected("-", 2, "😀", "not a positive integer"), *refs((9, 3))] == items


def test_utf16_odd_trailing_byte_is_undecodable() -> None:
    """A UTF-16 stream cut mid-character rejects the last line, never raises."""
    data = codecs.BOM_UTF16_LE + "5\n6".encode("utf-16-le") + b"7"

    assert [*refs((5, 1)), Rejected("-", 2, "6\ufffd", "undecodable bytes")] == read(
        data
    )


def test_windows_1252_lines_are_read() -> None:
    """A semicolon export from German Excel, in cp1252, keeps its IDs and names."""
    data = b"Bestellnummer;Kunde\r\n1001;Jos\xe9\r\nM\xfcller;Stra\xdfe\r\n"

    assert [
        *refs((1001, 2)),
        Rejected("-", 3, "Müller", "not a positive integer"),
    ] == read(data, column="Bestellnummer")
    assert [
        Rejected("-", 2, "José", "not a positive integer"),
        Rejected("-", 3, "Straße", "not a positive integer"),
    ] == read(data, column="kunde")


def test_utf8_and_cp1252_lines_may_mix() -> None:
    """Each line is decoded on its own: UTF-8 where valid, cp1252 elsewhere."""
    data = "José\n".encode() + b"Jos\xe9\n" + b"12\x81\n"

    assert [
        Rejected("-", 1, "José", "not a positive integer"),
        Rejected("-", 2, "José", "not a positive integer"),
        Rejected("-", 3, "12\ufffd", "undecodable bytes"),
    ] == read(data)


# -- lines and dialects ----------------------------------------------------


@pytest.mark.parametrize("end", [b"\n", b"\r\n", b"\r"])
def test_every_line_end_ends_a_line(end: bytes) -> None:
    """LF, CRLF and lone CR files give the same IDs on the same lines."""
    data = end.join([b"11", b"12", b"", b"13"]) + end

    assert refs((11, 1), (12, 2), (13, 4)) == read(data)


def test_mixed_line_ends_count_physical_lines() -> None:
    """A CRLF counts once, a lone CR and LF each count once."""
    assert refs((1, 1), (2, 2), (3, 3), (4, 4)) == read(b"1\r\n2\r3\n4")


def test_crlf_split_between_reads_is_one_line_end() -> None:
    """A CR ending one read and an LF starting the next are one line end."""
    items = list(read_ids(["-"], stdin=Trickle(b"21\r\n22\r\n\r23\r", 3)))

    assert refs((21, 1), (22, 2), (23, 4)) == items


@pytest.mark.parametrize("delimiter", [b",", b";", b"\t", b"|"])
def test_each_delimiter_is_detected(delimiter: bytes) -> None:
    """Comma, semicolon, tab and pipe files find the order_id column."""
    data = delimiter.join([b"name", b"order_id"]) + b"\n"
    data += delimiter.join([b"Ann", b"31"]) + b"\n"
    data += delimiter.join([b"Bo", b"32"]) + b"\n"

    assert refs((31, 2), (32, 3)) == read(data)


def test_a_delimiter_inside_quotes_does_not_count() -> None:
    """A comma between quotes does not make a semicolon file comma-separated."""
    data = b'"Smith, Ann";41\n"Doe, Jo";42\n'

    assert [
        Rejected("-", 1, "Smith, Ann", "not a positive integer"),
        Rejected("-", 2, "Doe, Jo", "not a positive integer"),
    ] == read(data, column="1")
    assert refs((41, 1), (42, 2)) == read(data, column="2")


def test_semicolon_wins_a_tie_with_comma() -> None:
    """When both appear equally, the semicolon is the delimiter, commas are text."""
    data = b"51;Smith, Ann\n52;Doe, Jo\n"

    assert refs((51, 1), (52, 2)) == read(data, column="1")
    assert [
        Rejected("-", 1, "Smith, Ann", "not a positive integer"),
        Rejected("-", 2, "Doe, Jo", "not a positive integer"),
    ] == read(data, column="2")


def test_excel_sep_line_names_the_delimiter() -> None:
    """A ``sep=;`` first line sets the delimiter and is neither header nor data."""
    data = b"sep=;\r\nname;order_id\r\nAnn, Bo;5\r\n"

    assert refs((5, 3)) == read(data)


def test_quoted_ids_are_unquoted() -> None:
    """Quoted fields, doubled quotes and quoted delimiters follow CSV rules."""
    data = b'order_id;name\n"61";"a;b"\n"62";"say ""hi"""\n 63 ;x\n'

    assert refs((61, 2), (62, 3), (63, 4)) == read(data)


def test_a_quoted_thousands_separator_is_rejected() -> None:
    """``"42,708"`` in a comma file is one field and not an order ID."""
    data = b'order_id,name\n"42,708",x\n'

    assert [Rejected("-", 2, "42,708", "not a positive integer")] == read(data)


def test_quoted_field_over_lines_counts_from_its_start() -> None:
    """A note spanning lines belongs to its record, which keeps its first line."""
    data = b'order_id,note\n71,"call back\n12345\nthanks"\n72,x\n'

    assert refs((71, 2), (72, 5)) == read(data)


def test_blank_lines_are_skipped_silently() -> None:
    """Empty, whitespace-only, NBSP-only and delimiter-only lines give nothing."""
    data = "\n  \n\u00a0\n81\n\t \u3000\n82\n".encode()
    csv_data = b"order_id;name\n;\n91;a\n ; \n92;b\n"

    assert refs((81, 4), (82, 6)) == read(data)
    assert refs((91, 3), (92, 5)) == read(csv_data)


def test_nbsp_around_an_id_is_trimmed() -> None:
    """No-break spaces that Excel leaves around a value do not reject it."""
    assert refs((101, 1)) == read("\u00a0101\u00a0\n".encode())


@pytest.mark.parametrize("blank", [chr(c) for c in range(0x3001) if chr(c).isspace()])
def test_every_unicode_space_is_trimmed(blank: str) -> None:
    """Any whitespace character around an ID is trimmed, not rejected."""
    assert 42 == parse_order_id(f"{blank}42{blank}")


def test_empty_and_missing_id_fields_are_rejected() -> None:
    """A record with other fields but no ID says which of the two it lacks."""
    data = b"name,order_id\nAnn,\nBo\nCy,5\n"

    assert [
        Rejected("-", 2, "", "empty id field"),
        Rejected("-", 3, "Bo", "missing id field"),
        *refs((5, 4)),
    ] == read(data)


# -- malformed input -------------------------------------------------------


def test_unterminated_quote_rejects_every_line_it_swallows() -> None:
    """An open quote never turns the lines after it into IDs, nor hides them."""
    data = b'1\n"2\n3\n\n4\n'

    assert [
        *refs((1, 1)),
        Rejected("-", 2, '"2', "malformed quoting"),
        Rejected("-", 3, "3", "malformed quoting"),
        Rejected("-", 5, "4", "malformed quoting"),
    ] == read(data)


def test_text_after_a_closing_quote_rejects_only_that_record() -> None:
    """``"12"3`` is malformed; reading goes on with the next line."""
    assert [Rejected("-", 1, '"12"3', "malformed quoting"), *refs((4, 2))] == read(
        b'"12"3\n4\n'
    )


def test_a_record_may_span_at_most_a_thousand_lines() -> None:
    """Past 1,000 lines a quoted record is given up and reading starts afresh."""
    data = b'"a\n' + b"x\n" * 999 + b"5\n6\n"

    assert [
        Rejected("-", 1, '"a', "malformed quoting"),
        *(Rejected("-", n, "x", "malformed quoting") for n in range(2, 1001)),
        Rejected("-", 1001, "5", "malformed quoting"),
        *refs((6, 1002)),
    ] == read(data)


def test_an_overlong_line_is_rejected_unread() -> None:
    """A line over 128 KiB is rejected with its start; the next line still counts."""
    data = b"1" * 200_000 + b"\n2\n"

    assert [Rejected("-", 1, "1" * 64, "line too long"), *refs((2, 2))] == read(data)


def test_an_overlong_last_line_is_rejected() -> None:
    """An overlong line without a line end is still reported."""
    assert [*refs((3, 1)), Rejected("-", 2, "x" * 64, "line too long")] == read(
        b"3\n" + b"x" * 300_000
    )


# -- headers and columns ---------------------------------------------------


@pytest.mark.parametrize("name", [
    "order_id", "ID", "orderId", "Order ID", "order-id", "ORDERID", " id ",
])
def test_known_id_names_make_a_header(name: str) -> None:
    """Any spelling of an order ID column name is a header, not a rejection."""
    assert refs((5, 2)) == read(name.encode() + b"\n5\n")


def test_a_lone_word_over_ids_is_data() -> None:
    """``abc`` in a one-column file may be a bad ID, so it is rejected, not hidden."""
    assert [Rejected("-", 1, "abc", "not a positive integer"), *refs((5, 2))] == read(
        b"abc\n5\n"
    )


def test_two_fields_without_an_id_are_a_header_that_is_refused() -> None:
    """``Bestellnummer;Kunde`` is a header naming no ID column, so it is refused."""
    with pytest.raises(InputError) as caught:
        read(b"Bestellnummer;Kunde\n5;Ann\n")

    assert ask_column("the header (Bestellnummer, Kunde) names no order-ID column") == (
        str(caught.value)
    )


def test_a_header_naming_no_id_column_is_read_with_a_column() -> None:
    """Given ``--column``, ``Bestellnummer;Kunde`` is still a header, then skipped."""
    data = b"Bestellnummer;Kunde\n5;Ann\n"

    assert refs((5, 2)) == read(data, column="Bestellnummer")
    assert refs((5, 2)) == read(data, column="1")
    assert [Rejected("-", 2, "Ann", "not a positive integer")] == read(data, column="2")


def test_a_first_record_with_an_id_is_data_that_is_refused() -> None:
    """``12;abc`` is a first data row of two columns, so no column is guessed."""
    with pytest.raises(InputError) as caught:
        read(b"12;abc\n13;def\n")

    assert ask_column("2 columns and no header row") == str(caught.value)


def test_a_first_record_with_an_id_is_read_with_a_column_number() -> None:
    """Given ``--column 1``, ``12;abc`` is the first data row, not a header."""
    assert refs((12, 1), (13, 2)) == read(b"12;abc\n13;def\n", column="1")


def test_header_naming_no_id_column_is_refused_at_the_call(tmp_path: Path) -> None:
    """A file whose header names no ID column fails at ``read_ids``, before any item."""
    path = write(tmp_path, b"Kunde,Betrag\n17,99\n")

    with pytest.raises(InputError) as caught:
        read_ids([path])

    assert ask_column("the header (Kunde, Betrag) names no order-ID column", path) == (
        str(caught.value)
    )


def test_headerless_two_column_file_is_refused_at_the_call(tmp_path: Path) -> None:
    """A file of two numeric columns fails at ``read_ids``, naming it and --column."""
    path = write(tmp_path, b"\n501;17\n502;18\n")

    with pytest.raises(InputError) as caught:
        read_ids([path])

    assert ask_column("2 columns and no header row", path) == str(caught.value)


def test_a_guessed_column_in_any_file_fails_before_the_first(tmp_path: Path) -> None:
    """A second file that needs --column fails before the first yields an ID."""
    good = write(tmp_path, b"1\n2\n", "good.csv")
    bad = write(tmp_path, b"3,4\n", "bad.csv")

    with pytest.raises(InputError, match=r"bad\.csv: 2 columns and no header row"):
        read_ids([good, bad])


def test_a_guessed_column_on_stdin_is_refused_when_reached() -> None:
    """Stdin cannot be read twice, so its first record raises while iterating."""
    headerless = read_ids(["-"], stdin=io.BytesIO(b"501;17\n502;18\n"))
    header = read_ids(["-"], stdin=io.BytesIO(b"Kunde;Betrag\n17;99\n"))

    with pytest.raises(InputError) as caught:
        next(headerless)
    assert ask_column("2 columns and no header row") == str(caught.value)

    with pytest.raises(InputError) as caught:
        next(header)
    assert ask_column("the header (Kunde, Betrag) names no order-ID column") == (
        str(caught.value)
    )


def test_stdin_after_a_file_is_refused_after_the_file_items(tmp_path: Path) -> None:
    """The file's IDs come first; stdin's two columns raise when stdin is reached."""
    path = write(tmp_path, b"1\n")
    items = read_ids([path, "-"], stdin=io.BytesIO(b"2;3\n"))

    assert OrderRef(1, path, 1) == next(items)
    with pytest.raises(InputError, match="-: 2 columns and no header row"):
        next(items)


def test_column_two_of_a_headerless_file_is_read(tmp_path: Path) -> None:
    """``--column 2`` on a headerless two-column file reads the second column."""
    path = write(tmp_path, b"17;501\n18;502\n")

    assert refs((501, 1), (502, 2), source=path) == list(read_ids([path], column="2"))


def test_a_thousands_separator_list_is_refused_not_read_as_ids() -> None:
    """``42,790`` alone on a line is two comma fields, refused rather than ID 42."""
    with pytest.raises(InputError) as caught:
        read(b"42,790\n1,250\n")

    assert ask_column("2 columns and no header row") == str(caught.value)


def test_a_thousands_separator_after_plain_ids_is_rejected() -> None:
    """``42,790`` under a plain first ID is one column's value, rejected, not 42."""
    assert [
        *refs((101, 1)),
        Rejected("-", 2, "42,790", "not a positive integer"),
        *refs((102, 3)),
    ] == read(b"101\n42,790\n102\n")


def test_single_column_file_needs_no_column(tmp_path: Path) -> None:
    """A one-column file with or without its ``id`` header is read at once."""
    plain = write(tmp_path, b"7\n8\n", "plain.csv")
    named = write(tmp_path, b"ID\n9\n", "named.csv")

    assert [
        OrderRef(7, plain, 1),
        OrderRef(8, plain, 2),
        OrderRef(9, named, 2),
    ] == list(read_ids([plain, named]))


def test_id_column_need_not_be_first() -> None:
    """The ID column is found by name wherever it stands."""
    assert refs((7, 2)) == read(b"name,email,order_id\nAnn,a@x,7\n")


def test_column_by_name_is_case_insensitive() -> None:
    """``--column`` names a header field in any case, trimmed."""
    data = b"order_id;Bestellnummer\n1;201\n2;202\n"

    assert refs((201, 2), (202, 3)) == read(data, column=" bestellNUMMER ")


def test_column_by_number_is_one_based() -> None:
    """``--column 2`` reads the second field, with or without a header."""
    assert refs((301, 1), (302, 2)) == read(b"x;301\ny;302\n", column="2")
    assert refs((301, 2)) == read(b"order_id;ref\n1;301\n", column="2")


def test_missing_named_column_names_the_columns_found(tmp_path: Path) -> None:
    """A header without the asked column stops reading, listing what it has."""
    path = write(tmp_path, b"order_id,name\n1,a\n")

    with pytest.raises(InputError) as caught:
        read_ids([path], column="Bestellnummer")

    assert f"{path}: no column 'Bestellnummer'; columns found: order_id, name" == str(
        caught.value
    )


def test_named_column_is_checked_in_every_file_first(tmp_path: Path) -> None:
    """A second file lacking the column fails before the first yields an ID."""
    good = write(tmp_path, b"ref\n1\n", "good.csv")
    bad = write(tmp_path, b"id\n2\n", "bad.csv")

    with pytest.raises(InputError, match=r"bad\.csv: no column 'ref'"):
        read_ids([good, bad], column="ref")


def test_named_column_needs_a_header() -> None:
    """Without a header a column can only be given by number."""
    with pytest.raises(InputError, match="-: no header row to find column 'ref' in"):
        read(b"1;2\n", column="ref")


def test_column_numbers_start_at_one() -> None:
    """``--column 0`` is a usage error, raised before anything is read."""
    with pytest.raises(UsageError, match="column numbers start at 1"):
        read_ids(["-"], column="0")


# -- order ID values -------------------------------------------------------


@pytest.mark.parametrize(("literal", "expected"), [
    ("42708", 42708),
    ("00042", 42),
    ("42708.0", 42708),
    ("42708.00", 42708),
    ("4.2708E4", 42708),
    ("4.2708e+4", 42708),
    ("42708000E-3", 42708),
    ("4.27080E4", 42708),
    ("1.23456789012E+11", 123456789012),
    ("999999999999999999", 999999999999999999),
    ("\u00a012\n", 12),
])
def test_exact_integers_are_accepted(literal: str, expected: int) -> None:
    """Plain and Excel-style literals give the integer their digits write."""
    assert expected == parse_order_id(literal)


@pytest.mark.parametrize(("literal", "reason"), [
    ("42708.5", "fractional number"),
    ("4.27085E4", "fractional number"),
    ("4.27E4", "scientific notation with digits missing"),
    ("1.23457E+11", "scientific notation with digits missing"),
    ("1E3", "scientific notation with digits missing"),
    ("1E-1", "fractional number"),
    ("1E-" + "9" * 30, "fractional number"),
    ("0", "zero"),
    ("000", "zero"),
    ("0.0E5", "zero"),
    ("1" * 19, "too long"),
    ("1000000000000000000", "too long"),
    ("1E999999", "too long"),
    ("1E" + "9" * 5000, "too long"),
    ("٤٢", "non-ascii digits"),
    ("\uff14\uff12", "non-ascii digits"),  # fullwidth
    ("¹²", "non-ascii digits"),
    ("1/../2", "not a positive integer"),
    ("%2e%2e", "not a positive integer"),
    ("12?x=1", "not a positive integer"),
    ("12#", "not a positive integer"),
    ("+5", "not a positive integer"),
    ("-5", "not a positive integer"),
    ("1_000", "not a positive integer"),
    ("1 000", "not a positive integer"),
    ("0x1F", "not a positive integer"),
    ("42,708", "not a positive integer"),
    ("42708.", "not a positive integer"),
    (".5", "not a positive integer"),
    ("", "empty id field"),
    (" \u00a0 ", "empty id field"),
    ("1\ufffd", "undecodable bytes"),
])
def test_hostile_values_get_a_reason(literal: str, reason: str | int) -> None:
    """Anything but an exact positive integer of at most 18 digits is refused."""
    assert reason == parse_order_id(literal)


def test_excel_notation_is_accepted_in_a_file() -> None:
    """Excel's number forms give exact IDs; fractions and rounded forms fail."""
    data = b"order_id\n42708.0\n4.2708E+4\n1.2E+3\n42708.5\n"

    assert [
        *refs((42708, 2)),
        Duplicate(42708, "-", 3, "-", 2),
        Rejected("-", 4, "1.2E+3", "scientific notation with digits missing"),
        Rejected("-", 5, "42708.5", "fractional number"),
    ] == read(data)


@pytest.mark.parametrize(("value", "expected"), [
    ("=HYPERLINK(\"x\")", "'=HYPERLINK(\"x\")"),
    ("+1", "'+1"),
    ("-2", "'-2"),
    ("@SUM(A1)", "'@SUM(A1)"),
    ("\t5", "'\t5"),
    ("\r5", "'\r5"),
    ("  =1", "'  =1"),
    ("\u00a0-1", "'\u00a0-1"),
    ("12-3", "12-3"),
    ("abc", "abc"),
    ("", ""),
])
def test_neutralise_quotes_formula_starts(value: str, expected: str) -> None:
    """Only a value a spreadsheet would run gets the leading single quote."""
    assert expected == neutralise(value)


def test_rejected_values_are_neutralised_and_truncated() -> None:
    """A hostile value is echoed safe for a spreadsheet and at most 64 long."""
    long = "=" + "A" * 100
    data = f"=HYPERLINK(\"http://x\")\n{long}\n-5\n".encode()

    assert [
        Rejected("-", 1, "'=HYPERLINK(\"http://x\")", "not a positive integer"),
        Rejected("-", 2, ("'" + long)[:64], "not a positive integer"),
        Rejected("-", 3, "'-5", "not a positive integer"),
    ] == read(data)


# -- sources and duplicates ------------------------------------------------


def test_duplicates_across_files_point_to_the_first(tmp_path: Path) -> None:
    """An ID seen in an earlier file is a Duplicate naming where it came first."""
    first = write(tmp_path, b"1\n2\n", "a.csv")
    second = write(tmp_path, b"order_id\n2\n3\n1\n", "b.csv")

    assert [
        OrderRef(1, first, 1),
        OrderRef(2, first, 2),
        Duplicate(2, second, 2, first, 2),
        OrderRef(3, second, 3),
        Duplicate(1, second, 4, first, 1),
    ] == list(read_ids([first, second]))


def test_stdin_is_read_where_a_dash_stands(tmp_path: Path) -> None:
    """``-`` reads the given stdin in its place among the files."""
    path = write(tmp_path, b"1\n")

    items = list(read_ids([path, "-"], stdin=io.BytesIO(b"2\n1\n")))

    assert [
        OrderRef(1, path, 1),
        OrderRef(2, "-", 1),
        Duplicate(1, "-", 2, path, 1),
    ] == items


def test_stdin_defaults_to_the_process_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a stream given, ``-`` reads sys.stdin's bytes."""
    fake = io.TextIOWrapper(io.BytesIO(b"8\n"))
    monkeypatch.setattr(sys, "stdin", fake)

    assert refs((8, 1)) == list(read_ids(["-"]))


def test_missing_file_is_an_input_error_naming_it(tmp_path: Path) -> None:
    """A missing path fails up front with its name and no traceback."""
    path = str(tmp_path / "nope.csv")

    with pytest.raises(InputError) as caught:
        check_readable(["-", path])

    assert f"cannot read {path}: No such file or directory" == str(caught.value)


def test_missing_file_also_fails_when_read(tmp_path: Path) -> None:
    """Reading a path that vanished after the check is an InputError too."""
    path = str(tmp_path / "gone.csv")

    with pytest.raises(InputError, match=r"gone\.csv: No such file or directory"):
        list(read_ids([path]))


def test_directory_is_an_input_error(tmp_path: Path) -> None:
    """A directory given as input is refused before anything is sent."""
    with pytest.raises(InputError, match=re.escape(f"{tmp_path}: it is a directory")):
        check_readable([str(tmp_path)])


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file_is_an_input_error(tmp_path: Path) -> None:
    """A file without read permission is refused up front."""
    path = write(tmp_path, b"1\n")
    os.chmod(path, 0)

    with pytest.raises(InputError, match="Permission denied"):
        check_readable([path])


def test_readable_files_pass_the_check(tmp_path: Path) -> None:
    """Files that can be read, and stdin, pass without a word."""
    check_readable([write(tmp_path, b"1\n"), "-"])


# -- streaming -------------------------------------------------------------


def test_reading_is_lazy() -> None:
    """The first IDs of an endless stream come after a handful of reads."""
    stream = Endless()

    first = list(islice(read_ids(["-"], stdin=stream), 3))

    assert refs((1, 1), (2, 2), (3, 3)) == first
    assert stream.reads <= 10


def test_items_come_before_a_read_error() -> None:
    """IDs read before the stream fails are yielded; the failure is an InputError."""
    items = read_ids(["-"], stdin=Breaks(b"".join(b"%d\n" % n for n in range(1, 11))))

    assert refs(*((n, n) for n in range(1, 11))) == list(islice(items, 10))
    with pytest.raises(InputError, match="cannot read -: Input/output error"):
        next(items)


def test_a_pipe_yields_ids_before_it_is_closed() -> None:
    """IDs written to a pipe that stays open are yielded without waiting for more."""
    read_end, write_end = os.pipe()
    received = threading.Event()
    seen_while_open: list[bool] = []

    def writer() -> None:
        # Six lines: more than the five a file's delimiter is sniffed from,
        # so no delimiter sniff has cause to wait for the pipe to close.
        os.write(write_end, b"1\n2\n3\n4\n5\n6\n")
        # A reader waiting for a full chunk would only go on once this closes.
        seen_while_open.append(received.wait(timeout=5))
        os.close(write_end)

    thread = threading.Thread(target=writer)
    thread.start()
    with open(read_end, "rb") as stream:
        items = read_ids(["-"], stdin=stream)
        first = list(islice(items, 6))
        received.set()
        rest = list(items)
    thread.join()

    assert refs(*((n, n) for n in range(1, 7))) == first
    assert [] == rest
    assert [True] == seen_while_open


def test_a_stream_without_read1_is_read_with_read() -> None:
    """A raw stream, lacking read1, is read in its small pieces all the same."""
    stream = RawTrickle(b"order_id\r\n31\r\n32", 2)

    items = list(read_ids(["-"], stdin=stream))  # type: ignore[arg-type]

    assert refs((31, 2), (32, 3)) == items
    assert 9 == stream.reads  # eight two-byte pieces, then the end


# -- fuzzing ---------------------------------------------------------------


def assert_sound(items: list[InputItem]) -> None:
    refs_seen = [item.order_id for item in items if isinstance(item, OrderRef)]
    lines = [item.line for item in items]

    assert all(0 < n < 10**18 for n in refs_seen)
    assert len(set(refs_seen)) == len(refs_seen)
    assert sorted(set(lines)) == lines
    assert all(len(item.value) <= 64 for item in items if isinstance(item, Rejected))


def read_until_refused(
    data: bytes, column: str | None = None
) -> tuple[list[InputItem], str | None]:
    """The items read from stdin, and the InputError's message if one stopped it."""
    items: list[InputItem] = []
    try:
        for item in read_ids(["-"], column=column, stdin=io.BytesIO(data)):
            items.append(item)
    except InputError as exc:
        return items, str(exc)
    return items, None


def assert_read_soundly(data: bytes) -> None:
    """Without a column: sound items, then at most a refusal naming - and --column.

    With ``--column 1`` nothing is guessed, so every input is read to its end.
    """
    items, refusal = read_until_refused(data)
    assert_sound(items)
    if refusal is not None:
        assert refusal.startswith("-: ")
        assert "--column" in refusal
        # The refusal comes at the first record, so no ID can precede it.
        assert all(isinstance(item, Rejected) for item in items)

    items, refusal = read_until_refused(data, column="1")
    assert None is refusal
    assert_sound(items)


@given(st.binary(max_size=2000))
def test_any_bytes_are_read_or_refused(data: bytes) -> None:
    """Arbitrary bytes raise at most a --column refusal; IDs stay sound."""
    assert_read_soundly(data)


@given(st.text(max_size=500), st.sampled_from(["utf-8", "utf-16", "cp1252"]))
def test_any_text_in_any_encoding_is_read_or_refused(text: str, encoding: str) -> None:
    """Arbitrary text, however encoded, raises at most a --column refusal."""
    assert_read_soundly(text.encode(encoding, errors="replace"))


CSV_SHAPED = st.text(alphabet='0123456789,;|\t"\r\n =-.eE\u00a0idor_', max_size=300)


@given(CSV_SHAPED)
def test_csv_shaped_text_is_read_or_refused(text: str) -> None:
    """Text made of CSV's own characters raises at most a --column refusal."""
    assert_read_soundly(text.encode())


@given(CSV_SHAPED)
def test_a_file_is_refused_at_the_call_or_not_at_all(text: str) -> None:
    """A file that needs --column is refused by ``read_ids`` itself, never later."""
    with tempfile.TemporaryDirectory() as tmp:
        path = write(Path(tmp), text.encode())
        try:
            items = read_ids([path])
        except InputError as exc:
            refusal: str | None = str(exc)
        else:
            refusal = None
            assert_sound(list(items))  # raises nothing once the call returned

    if refusal is not None:
        assert refusal.startswith(f"{path}: ")
        assert "--column" in refusal


@given(
    st.lists(st.integers(1, 10**18 - 1), max_size=30),
    st.sampled_from([b"\n", b"\r\n", b"\r"]),
    st.sampled_from(["utf-8", "utf-16"]),
)
def test_every_listed_id_comes_back(ids: list[int], end: bytes, encoding: str) -> None:
    """Each line of a list is an OrderRef or a Duplicate of its own ID, in order."""
    data = end.join(str(n).encode() for n in ids).decode().encode(encoding)

    items = read(data)

    assert ids == [item.order_id for item in items if not isinstance(item, Rejected)]
    assert list(range(1, len(ids) + 1)) == [item.line for item in items]


def test_a_list_with_a_trailing_separator_is_one_column() -> None:
    """Excel's "501;" rows: the empty cell after each ID is not a second column."""
    assert refs((501, 1), (502, 2)) == read(b"501;\n502;\n")


def test_order_id_wins_over_a_bare_id_column() -> None:
    """With both "id" and "order_id" in the header, order_id is the ID column."""
    assert refs((100001, 2)) == read(b"id,order_id\n5,100001\n")
