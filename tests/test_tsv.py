"""u2eval.data.tsv reads every text exactly as csv.reader(dialect="excel-tab") does, errors included."""

from __future__ import annotations

import csv
import io

from hypothesis import given, settings
from hypothesis import strategies as st

from u2eval.data.tsv import FIELD_LIMIT, records, text_lines


def _csv_module(text: str) -> list[list[str] | str]:
    """What the csv module reads, record by record, an error standing for its record (as the loader did)."""
    csv.field_size_limit(FIELD_LIMIT)
    reader = csv.reader(io.StringIO(text, newline=""), dialect="excel-tab")
    out: list[list[str] | str] = []
    while True:
        try:
            out.append(next(reader))
        except StopIteration:
            return out
        except csv.Error as exc:
            out.append(f"error: {exc}")


def _fast(text: str, long_cell: int = 1024) -> list[list[str] | str]:
    got = records(io.StringIO(text, newline=""), long_cell=long_cell)
    return [r if isinstance(r, list) else f"error: {r}" for r in got]


# Few characters, so that quotes, tabs, line ends, NULs and the token characters meet in every arrangement;
# pieces from 1 character long are tokenised, so short texts exercise the swap.
_TEXT = st.text(alphabet='ab1"\t\n\r \x00\ue000\ue001', max_size=60)


@settings(max_examples=4000, deadline=None)
@given(_TEXT, st.integers(min_value=1, max_value=4))
def test_same_records_as_the_csv_module(text: str, long_cell: int) -> None:
    assert _fast(text, long_cell) == _csv_module(text)


def test_the_shapes_u2bench_files_have() -> None:
    text = (
        "dataset_name\timg_data\treport\n"
        "10.FPUS23\tiVBORw0KGgo=\tplain\r\n"
        '39.X\tAAAA\t"a report\twith a tab\nand a newline, ""quoted"""\n'
        "\n"
        "44.Y\t/9j/\t\n"
        '44.Y\t/9j/\t"never closed\n'
    )
    got = _fast(text, long_cell=4)
    assert got == _csv_module(text)
    assert got[1] == ["10.FPUS23", "iVBORw0KGgo=", "plain"]
    assert got[2] == ["39.X", "AAAA", 'a report\twith a tab\nand a newline, "quoted"']
    assert got[3] == []
    assert got[4] == ["44.Y", "/9j/", ""]


def test_long_unquoted_rows_take_the_fast_path_unchanged() -> None:
    cell = "A" * 400_000
    got = list(records([f"1\t{cell}\tz\n", f"2\t{cell}\n"]))
    assert got == [["1", cell, "z"], ["2", cell]]


def test_a_quoted_record_with_a_long_image_cell() -> None:
    image = "iVBORw0KGgo" + "A" * 300_000
    text = f'10.FPUS23\t{image}\t"Where is it?\n\nAnswer ""upper left"" or similar."\tx\n{image[:5]}\n'
    got = _fast(text)
    assert got == _csv_module(text)
    assert got[0] == ["10.FPUS23", image, 'Where is it?\n\nAnswer "upper left" or similar.', "x"]


def test_text_that_looks_like_a_token_is_left_alone() -> None:
    text = '"q"\t\ue0000\ue001\tlong-plain-piece\n'
    assert _fast(text, long_cell=4) == _csv_module(text) == [["q", "\ue0000\ue001", "long-plain-piece"]]


# Bytes a file may hold: line ends of every kind, quotes, tabs, a two-byte character, a broken one.
_BYTES = st.lists(
    st.sampled_from([b"a", b"\t", b'"', b"\n", b"\r", b"\r\n", b"\xc3\xa9", b"\xff", b"\xe2\x82", b"\x00"]), max_size=40
).map(b"".join)


@settings(max_examples=3000, deadline=None)
@given(_BYTES, st.integers(min_value=1, max_value=4))
def test_binary_lines_read_as_a_text_file_would(data: bytes, long_cell: int) -> None:
    text_file = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", errors="surrogateescape", newline="")
    assert list(text_lines(io.BytesIO(data))) == list(text_file)
    text = data.decode("utf-8", "surrogateescape")
    got = [r if isinstance(r, list) else f"error: {r}" for r in records(text_lines(io.BytesIO(data)), long_cell)]
    assert got == _csv_module(text)
