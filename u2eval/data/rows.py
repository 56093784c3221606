"""A task folder's files and rows as the reader meets them: which dataset a row belongs to (from what is certain
about its name), where each column sits in a file, and every row read one at a time, a file or row problem
reported through ``on_error`` and the iteration going on. Also the views of rows without their images that
the data check and the replay of prediction files need (``TaskRow``, ``RowIdentity``).
"""

from __future__ import annotations

import csv
import hashlib
import re
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from u2eval.benchmark.tasks import DatasetSpec, TaskSpec
from u2eval.data import tsv
from u2eval.data.sources import EXPLANATION_FILE, DataSource
from u2eval.errors import DataError

# The explanation file's description row, in case it shows up inside a data file (the HF viewer merges it).
_EXPLANATION_IMG = "base64 encoded image"


OnError = Callable[[DataError], None]


_LEADING_NUMBER = re.compile(r"(\d+)(?:_(\d+))?")


_LEADING_TOKEN = re.compile(r"\d+(?:_\d+)?|[A-Za-z]+")


_SURROGATE_RE = re.compile("[\udc80-\udcff]")


# Raw text cells each capability reads, besides the truth column; never img_data or seg_data.
_COMMON_COLUMNS = ("prompt", "anatomy_location")


_CAPABILITY_COLUMNS: Mapping[str, tuple[str, ...]] = {
    "classification": ("classification_task", "class_label", "options"),
    "detection": ("seg_channel_name", "gt_bbox", "keypoints"),
    "regression": ("measurement",),
    "generation": ("report", "caption"),
}


def _squashed(text: str) -> str:
    """Lower-case letters and digits only: 'is_normal', 'Is-Normal' and 'isnormal' compare equal."""
    return re.sub(r"[^0-9a-z]", "", text.lower())


def _ids_for_token(token: str, ids: Sequence[str]) -> list[str]:
    """The task's dataset ids a leading ``<id>`` token can mean, most certain first."""
    if token in ids:
        return [token]
    number = _LEADING_NUMBER.fullmatch(token)  # '57_1' also means 57 where the task has no '57_1'
    if number is None:  # a named set ('anatomy'), in any case
        return [i for i in ids if i.lower() == token.lower()]
    digits = number.group(1)
    # Leading zeros carry no meaning ('3.FETAL...' is 03; the official file for it is '3_FETAL_Planes_US').
    same = [i for i in ids if i.isdigit() and int(i) == int(digits)]
    if same:
        return same
    # An id the number is the start of, with a letter next: '74' -> '74is_normal' (DD) / '74is_visible' (VRA).
    return [i for i in ids if i.startswith(digits) and i[len(digits) :][:1].isalpha()]


def resolve_dataset_id(task: TaskSpec, dataset_name: str, file_stem: str = "") -> str | None:
    """The task's dataset id for a row, or None if nothing certain names one.

    From what is certain, in order: the task (only its own ids can match); the exact source name of the
    task file; the ``<id>`` before the first '.' of ``dataset_name``, whatever source name follows it
    ('57_1' -> '57' unless the task has '57_1' itself; '3' -> '03'); where that number starts several ids
    of the task ('74' -> '74is_normal', ...), the one whose suffix the file name or the dataset name carries
    (``74_is_normal.tsv``); with no ``dataset_name`` at all, the file name's own leading id.
    """
    name = dataset_name.strip()
    for spec in task.datasets:
        if spec.source == name:
            return spec.id
    token = name.split(".", 1)[0].strip() if name else file_stem
    candidates = _ids_for_token(token, task.dataset_ids) if token else []
    if not candidates and (lead := _LEADING_TOKEN.match(token)):
        # A name in the official files' style ('74_is_normal', '40_birads', '3_FETAL_Planes_US'): its leading id.
        token = lead.group(0)
        candidates = _ids_for_token(token, task.dataset_ids)
    if len(candidates) > 1:
        where = _squashed(f"{file_stem} {name}")
        candidates = [i for i in candidates if _squashed(i[len(token) :]) in where] or candidates
    return candidates[0] if len(candidates) == 1 else None


@dataclass(frozen=True)
class Layout:
    """Column positions of one file, resolved once from its header."""

    width: int
    dataset_name: int
    img_data: int
    options: int | None
    classification_task: int | None
    keypoints: int | None
    anatomy: int | None
    scenario: int | None
    truth: int
    columns: tuple[tuple[str, int | None], ...]
    header: tuple[str, ...] = ()


def _columns_read(task: TaskSpec) -> tuple[str, ...]:
    names = (*_COMMON_COLUMNS, *_CAPABILITY_COLUMNS[task.capability], task.truth_column)
    return tuple(dict.fromkeys(names))


def _required_columns(task: TaskSpec) -> tuple[str, ...]:
    extra = ("options",) if task.capability == "classification" else ()
    return ("dataset_name", "img_data", task.truth_column, *extra)


def _layout(task: TaskSpec, header: list[str], where: str) -> Layout:
    names = [h.strip().lstrip("\ufeff") for h in header]
    if len(names) == 1 and ("," in names[0] or ";" in names[0]):
        raise DataError(where, "not tab-separated (the header has no tab)")
    index = {n: i for i, n in enumerate(names)}
    missing = [c for c in _required_columns(task) if c not in index]
    if missing:
        raise DataError(where, f"missing column(s) {', '.join(missing)}")
    scenario_column = {"classification": "classification_task", "detection": "seg_channel_name"}.get(task.capability)
    return Layout(
        width=len(names),
        dataset_name=index["dataset_name"],
        img_data=index["img_data"],
        options=index.get("options"),
        classification_task=index.get("classification_task"),
        keypoints=index.get("keypoints"),
        anatomy=index.get("anatomy_location"),
        scenario=index.get(scenario_column) if scenario_column else None,
        truth=index[task.truth_column],
        columns=tuple((c, index.get(c)) for c in _columns_read(task)),
        header=tuple(names),
    )


def data_files(root: Path, task: TaskSpec, on_error: OnError) -> list[Path]:
    folder = root / task.folder
    if not folder.is_dir():
        on_error(DataError(task.folder, f"task folder missing under {root}"))
        return []
    files = sorted(p for p in folder.glob("*.tsv") if p.is_file() and p.name != EXPLANATION_FILE)
    if not files:
        on_error(DataError(task.folder, "no .tsv files in the task folder"))
    return files


@dataclass(frozen=True)
class Row:
    index: int
    cells: list[str]
    spec: DatasetSpec | None


def read_rows(task: TaskSpec, path: Path, where: str, on_error: OnError) -> Iterator[tuple[Layout, Row]]:
    """The data rows of one file with their dataset resolved; file-level problems are reported once."""
    with path.open("rb", buffering=1 << 20) as fh:
        yield from rows_of(task, path.stem, tsv.records(tsv.text_lines(fh)), where, on_error)


def rows_of(
    task: TaskSpec, file_stem: str, reader: Iterator[list[str] | csv.Error], where: str, on_error: OnError
) -> Iterator[tuple[Layout, Row]]:
    """``read_rows`` over a file's records as ``tsv.records`` reads them (its header first); each row is yielded
    as soon as its record is read, so a reader that knows where records start knows where this row does."""
    try:
        header = next(reader, None)
        if isinstance(header, csv.Error):
            raise DataError(where, f"unreadable header: {header}")
        if header is None or not any(h.strip() for h in header):
            raise DataError(where, "empty file (no header)")
        layout = _layout(task, header, where)
    except DataError as exc:
        on_error(exc)
        return
    specs: dict[str, DatasetSpec | None] = {}
    n_rows = 0
    for index, cells in _safe_rows(reader, where, on_error):
        n_rows += 1
        if not cells:
            continue  # a blank line
        if len(cells) != layout.width:
            on_error(DataError(f"{where}:{index}", f"{len(cells)} fields, the header has {layout.width}"))
            continue
        if cells[layout.img_data] == _EXPLANATION_IMG:
            continue
        name = cells[layout.dataset_name]
        if name not in specs:
            found = resolve_dataset_id(task, name, file_stem)
            specs[name] = task.dataset(found) if found is not None else None
        yield layout, Row(index, cells, specs[name])
    if n_rows == 0:
        on_error(DataError(where, "no data rows"))


def _safe_rows(
    reader: Iterator[list[str] | csv.Error], where: str, on_error: OnError
) -> Iterator[tuple[int, list[str]]]:
    """Row by row, numbered, a record the csv rules cannot read reported for that row alone."""
    for index, cells in enumerate(reader):
        if isinstance(cells, csv.Error):
            on_error(DataError(f"{where}:{index}", f"unreadable row: {cells}"))
            continue
        yield index, cells


def cell_at(cells: list[str], index: int | None) -> str | None:
    if index is None:
        return None
    value = cells[index]
    return value if value != "" else None


def text_cell_at(cells: list[str], index: int | None, column: str) -> str | None:
    value = cell_at(cells, index)
    if value is not None and not value.isascii() and _SURROGATE_RE.search(value):
        raise ValueError(f"column {column} is not valid UTF-8")
    return value


@dataclass(frozen=True)
class TaskRow:
    """A data row of a task's file, its dataset resolved (None: the row names no dataset of the task)."""

    where: str  # "folder/file.tsv"
    file_stem: str
    index: int
    dataset: DatasetSpec | None
    header: tuple[str, ...]
    cells: Sequence[str]

    def cell(self, column: str) -> str | None:
        """The cell of ``column`` (None when the file has no such column or the cell is empty)."""
        if column not in self.header:
            return None
        return self.cells[self.header.index(column)] or None


def task_files(source: DataSource, task: TaskSpec, on_error: OnError) -> list[Path]:
    """The task folder's data files, in the order they are read (a missing or empty folder is reported)."""
    return data_files(source.root, task, on_error)


def task_rows(source: DataSource, task: TaskSpec, path: Path, on_error: OnError) -> Iterator[TaskRow]:
    """The data rows of one task file as the reader sees them (file and row problems go to ``on_error``)."""
    where = f"{task.folder}/{path.name}"
    for layout, row in read_rows(task, path, where, on_error):
        yield TaskRow(where, path.stem, row.index, row.spec, layout.header, row.cells)


@dataclass(frozen=True)
class RowIdentity:
    """A data row as prediction files made elsewhere can name it, read without decoding its image."""

    task: str
    dataset_id: str
    source_file: str  # as ``Case.source_file``
    row_index: int  # as ``Case.row_index``
    position: int  # among its dataset's rows in the task folder, files by name: the order the official joins by
    image_md5: str  # md5 of the img_data cell's text: the official kit names its cached image after it
    hints: tuple[str, ...]  # cells that tell rows with the same image apart (OD's channel)
    truth: str | None  # the task's truth cell


def iter_row_identities(
    source: DataSource, tasks: Sequence[TaskSpec], *, on_error: OnError | None = None
) -> Iterator[RowIdentity]:
    """Every row of a known dataset, task by task, in the reader's order (rows of unknown datasets are
    reported, as the reader reports them)."""
    report = on_error if on_error is not None else ignore_error
    for task in tasks:
        positions: Counter[str] = Counter()
        for path in data_files(source.root, task, report):
            where = f"{task.folder}/{path.name}"
            for layout, row in read_rows(task, path, where, report):
                if row.spec is None:
                    report(DataError(f"{where}:{row.index}", "unknown dataset id"))
                    continue
                cells = row.cells
                # OD rows that share an image differ by the structure the prompt names (the kit's KD prompt names
                # a fixed fallback, never the row's keypoint, so KD has none).
                by_scenario = task.official is not None and task.official.join_by_scenario
                channel = cell_at(cells, layout.scenario) if by_scenario else None
                hints = (channel.strip(),) if channel and channel.strip() else ()
                yield RowIdentity(
                    task=task.key,
                    dataset_id=row.spec.id,
                    source_file=where,
                    row_index=row.index,
                    position=positions[row.spec.id],
                    image_md5=hashlib.md5(cells[layout.img_data].encode(), usedforsecurity=False).hexdigest(),
                    hints=hints,
                    truth=cell_at(cells, layout.truth),
                )
                positions[row.spec.id] += 1


def ignore_error(error: DataError) -> None:
    del error
