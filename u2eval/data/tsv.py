"""Tab-separated records exactly as ``csv.reader(dialect="excel-tab")`` reads them, about 10x faster.

U2-Bench rows are ~300 KB of base64 with a few short cells around it, one of which (the prompt) is quoted
because it holds line breaks. The csv module walks every character of a record in its C state machine
(~2 ms a row). Here a record's lines are split on tabs first (memchr speed), every long piece that holds no
quote, line break or NUL is swapped for a short token, the csv module parses what is left, and the pieces
are put back. Such a piece is plain text to the csv module wherever it sits (inside quotes or not), so the
swap cannot change how a record is split: the csv module's rules stay the only rules. A line that already
contains the token character, or a record the csv module rejects, is parsed again untouched.
"""

from __future__ import annotations

import csv
import itertools
import mmap
import re
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

# seg_data cells reach 22 MB (and Windows' C long caps the limit at 2**31 - 1).
FIELD_LIMIT = min(sys.maxsize, 2**31 - 1)
LONG_CELL = 1024  # shorter pieces are not worth swapping out

# A private-use character marks a token; text that contains one is never tokenised (see _Record).
_MARK = "\ue000"
_TOKEN_RE = re.compile("\ue000([0-9]+)\ue001")


def text_lines(binary_lines: Iterable[bytes]) -> Iterator[str]:
    r"""The lines of a binary file as a UTF-8 text file opened with ``newline=""`` gives them.

    Ends kept, split at \r, \n and \r\n; a stray non-UTF-8 byte kept as a surrogate so it spoils one cell
    (reported per row), not the file. Decoding line by line is ~4x cheaper than a text file's own reading
    for ~300 KB lines, and the same text: line ends are ASCII, never inside a multi-byte character.
    """
    for raw in binary_lines:  # a binary file's lines end at LF only
        if _stray_cr(raw):
            for piece in raw.splitlines(keepends=True):  # bytes split at CR, LF and CRLF only
                yield piece.decode("utf-8", "surrogateescape")
        else:
            yield raw.decode("utf-8", "surrogateescape")


def _stray_cr(raw: bytes) -> bool:
    """Whether a binary line holds a CR that ends a text line of its own (anything but one final CRLF)."""
    return b"\r" in raw and not (raw.endswith(b"\r\n") and raw.count(b"\r") == 1)


class PlacedRecords:
    """``records(text_lines(binary_lines))`` that knows where each record starts: after each record it yields,
    ``start`` is the byte offset of that record's first line (counted from where ``binary_lines`` began), so
    the record can be read again from there alone (``u2eval.data.row_places``)."""

    def __init__(self, binary_lines: Iterable[bytes], start: int = 0) -> None:
        self._starts: list[int] = []
        self._position = start
        self._records = records(self._lines(binary_lines))
        self.start = start

    def _lines(self, binary_lines: Iterable[bytes]) -> Iterator[str]:
        for raw in binary_lines:
            for piece in raw.splitlines(keepends=True) if _stray_cr(raw) else (raw,):
                self._starts.append(self._position)
                self._position += len(piece)
                yield piece.decode("utf-8", "surrogateescape")

    def __iter__(self) -> Iterator[list[str] | csv.Error]:
        return self

    def __next__(self) -> list[str] | csv.Error:
        first = len(self._starts)  # a record pulls its own lines, and no more: its first is the next one pulled
        record = next(self._records)
        self.start = self._starts[first]
        return record


def records(lines: Iterable[str], long_cell: int = LONG_CELL) -> Iterator[list[str] | csv.Error]:
    """The records of excel-tab text given as lines with their line ends (a file opened with ``newline=""``).

    Yields each record's cells, or the ``csv.Error`` that record raised, so one bad record is reported and
    the rest are still read. A blank line is an empty record, as with the csv module.
    """
    csv.field_size_limit(FIELD_LIMIT)
    source = iter(lines)
    for line in source:
        if '"' not in line:
            # No quote: the record is this line, split on tabs (what the csv module would do, only faster).
            text = line.rstrip("\r\n")
            yield text.split("\t") if text else []
        else:
            yield _Record(long_cell).read(line, source)


class _Record:
    """One record that quotes, read through the csv module with its long plain pieces tokenised."""

    def __init__(self, long_cell: int) -> None:
        self.long_cell = long_cell
        self.raw: list[str] = []  # the record's lines as read, to parse again untouched when needed
        self.pieces: list[str] = []  # the long pieces swapped out, by token number
        self.untouched = False  # a line held the token character: tokens would be ambiguous

    def read(self, first: str, source: Iterator[str]) -> list[str] | csv.Error:
        # csv.reader pulls only the lines of this one record from ``source``; the fast path then resumes.
        shortened = (self._shorten(line) for line in itertools.chain((first,), source))
        try:
            cells = next(csv.reader(shortened, dialect="excel-tab"))
        except csv.Error:
            return self._plain()
        if self.untouched:
            return self._plain()
        return [self._restore(cell) for cell in cells] if self.pieces else cells

    def _shorten(self, line: str) -> str:
        self.raw.append(line)
        if _MARK in line:
            self.untouched = True
        if self.untouched or len(line) < self.long_cell:
            return line
        body = line.rstrip("\r\n")
        parts = body.split("\t")
        for i, part in enumerate(parts):
            if len(part) >= self.long_cell and not any(c in part for c in '"\n\r\x00') and len(part) <= FIELD_LIMIT:
                parts[i] = f"{_MARK}{len(self.pieces)}\ue001"
                self.pieces.append(part)
        return "\t".join(parts) + line[len(body) :]

    def _restore(self, cell: str) -> str:
        if _MARK not in cell:
            return cell
        return _TOKEN_RE.sub(lambda m: self.pieces[int(m.group(1))], cell)

    def _plain(self) -> list[str] | csv.Error:
        try:
            return next(csv.reader(self.raw, dialect="excel-tab"))
        except csv.Error as exc:
            return exc


def count_records(path: Path) -> int:
    """How many records a file holds, without parsing or copying it: a line end outside quotes ends a record
    (a doubled quote inside quotes closes and reopens them, so it changes nothing). The file is mapped into
    memory and searched for the next quote and the next line end (~0.3 s for the 2.4 GB set), for a progress
    total; CR-only line ends and records the csv module would reject are not looked at."""
    with path.open("rb") as handle:
        try:
            data = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError:  # an empty file cannot be mapped
            return 0
    with data:
        count, position, open_quote = 0, 0, False
        quote, newline = data.find(b'"'), data.find(b"\n")
        while newline >= 0 or quote >= 0:
            if quote >= 0 and (newline < 0 or quote < newline):
                open_quote, position = not open_quote, quote + 1
                quote = data.find(b'"', position)
            else:
                count += not open_quote
                position = newline + 1
                newline = data.find(b"\n", position)
        return count + (position < len(data) and not open_quote)
