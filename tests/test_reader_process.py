"""Reading the dataset in a child process gives exactly what reading it in process gives."""

from __future__ import annotations

import csv
import os
import shutil
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from u2eval.benchmark.tasks import select_tasks
from u2eval.data.reader import iter_cases
from u2eval.data.reader_process import iter_cases_in_child
from u2eval.data.sources import DataSource, resolve_source
from u2eval.errors import DataError, U2EvalError
from u2eval.run.runner import RunOptions, RunProgress, run


def _corrupted_copy(sample_root: Path, tmp_path: Path) -> Path:
    """The sample with a bad image cell, an unknown dataset id and a line-wrapped (lenient) image cell, between
    good rows."""
    root = tmp_path / "data"
    shutil.copytree(sample_root, root)
    path = root / "disease_diagnosis" / "21.tsv"
    with path.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh, dialect="excel-tab"))
    header = rows[0]
    rows[2][header.index("img_data")] = "not-base64!"
    rows[4][header.index("dataset_name")] = "999.Nowhere"
    cell = rows[3][header.index("img_data")]
    rows[3][header.index("img_data")] = "\n".join(cell[i : i + 76] for i in range(0, len(cell), 76))
    with path.open("w", encoding="utf-8", newline="") as fh:
        csv.writer(fh, dialect="excel-tab", lineterminator="\n").writerows(rows)
    return root


def _events(read: object, source: DataSource, limit: int | None) -> list[tuple[str, object]]:
    events: list[tuple[str, object]] = []

    def on_error(error: DataError) -> None:
        events.append(("error", str(error)))

    for case in read(source, select_tasks(["dd", "ll", "cg"]), on_error=on_error, limit=limit):  # type: ignore[operator]
        events.append(("case", case))
    return events


@pytest.mark.parametrize("limit", [None, 2])
def test_same_cases_and_errors_in_the_same_order(sample_root: Path, tmp_path: Path, limit: int | None) -> None:
    source = resolve_source(str(_corrupted_copy(sample_root, tmp_path)))
    in_process = _events(iter_cases, source, limit)
    in_child = _events(iter_cases_in_child, source, limit)
    assert in_child == in_process
    assert [kind for kind, _ in in_child].count("error") == 2
    cases = [c for kind, c in in_child if kind == "case"]
    # strict cells cross as base64 only (the image is decoded again on arrival), the wrapped one as bytes
    assert {bool(c.image_b64) for c in cases} == {True, False}  # type: ignore[attr-defined]


def _reader_children() -> list[int]:
    """Live child processes of this one running the reader (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == os.getpid() and fields[0] != "Z" and b"u2eval.data.reader_process" in cmdline:
            found.append(int(stat.parent.name))
    return found


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_closing_early_stops_the_child(sample_root: Path) -> None:
    cases = iter_cases_in_child(resolve_source(str(sample_root)), select_tasks(None), on_error=print)
    next(cases)
    assert len(_reader_children()) == 1
    cases.close()
    assert _reader_children() == []
    assert not [t for t in threading.enumerate() if t.name == "u2eval-reader-pump"]


def test_a_failure_inside_the_child_reaches_the_parent(sample_root: Path) -> None:
    with pytest.raises(U2EvalError, match="limit must be >= 0"):
        list(iter_cases_in_child(resolve_source(str(sample_root)), select_tasks(["dd"]), on_error=print, limit=-1))


def test_a_run_reads_in_the_child_and_scores_byte_for_byte_the_same(sample_root: Path, tmp_path: Path) -> None:
    data = str(_corrupted_copy(sample_root, tmp_path))
    readers_seen: list[int] = []

    def progress(where: RunProgress) -> None:
        readers_seen.append(len(_reader_children()))

    child = run(RunOptions(model="random", data=data, tasks=("dd", "ll"), out=tmp_path / "child", seed=2), progress)
    assert max(readers_seen) == 1  # a local folder is read by the child by default
    readers_seen.clear()
    options = RunOptions(model="random", data=data, tasks=("dd", "ll"), out=tmp_path / "inline", seed=2)
    inline = run(replace(options, reader_process=False), progress)
    assert readers_seen and max(readers_seen) == 0
    for name in ("summary.json", "cases.jsonl", "judgements.jsonl"):
        assert (tmp_path / "child" / name).read_bytes() == (tmp_path / "inline" / name).read_bytes()
    assert child.data_errors == inline.data_errors and len(child.data_errors) == 2
