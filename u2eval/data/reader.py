"""The case reader: streams the rows of a U2-Bench source (``u2eval.data.sources``) as ``Case`` records.

The reader keeps memory flat: ``u2eval.data.tsv`` reads one row at a time, as the csv module would (``seg_data``
cells reach 22 MB and are never decoded), files are read in name order and rows in file
order. A corrupt row is reported through ``on_error`` with its case id (or ``file:row`` when the image cannot
be decoded) and the iteration goes on.
"""

from __future__ import annotations

import ast
import hashlib
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

from u2eval.benchmark.sectors import LOCATION_OPTIONS
from u2eval.benchmark.tasks import DatasetSpec, TaskSpec
from u2eval.data import tsv
from u2eval.data.image_cells import decode_image_cell, inspect_image
from u2eval.data.rows import Layout, OnError, Row, cell_at, data_files, ignore_error, read_rows, text_cell_at
from u2eval.data.sources import DataSource
from u2eval.errors import ConfigError, DataError
from u2eval.records import Case, freeze_columns


class _Options:
    """Parses the options literals of one read: a source repeats one literal on every row."""

    _MAX_CACHED = 4096  # the real data has ~21 distinct literals; the cap keeps memory flat regardless

    def __init__(self) -> None:
        self._cache: dict[str, object] = {}

    def get(self, cell: str | None, key: str) -> tuple[str, ...]:
        if cell is None:
            raise ValueError("options cell is empty")
        if cell not in self._cache:
            if len(self._cache) >= self._MAX_CACHED:
                self._cache.clear()
            try:
                self._cache[cell] = ast.literal_eval(cell)
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as exc:
                self._cache[cell] = exc
        parsed = self._cache[cell]
        if isinstance(parsed, Exception):
            raise ValueError(f"options cell is not a Python literal ({type(parsed).__name__})")
        if not isinstance(parsed, dict):
            raise ValueError(f"options cell is a {type(parsed).__name__}, not a dict")
        if key not in parsed:
            raise ValueError(f"options have no key {key!r} (keys: {', '.join(map(str, parsed))})")
        labels = parsed[key]
        if not isinstance(labels, list | tuple) or not all(isinstance(x, str | int | float) for x in labels):
            raise ValueError(f"options[{key!r}] is not a list of labels")
        return tuple(str(x) for x in labels)


def _first_key(cell: str | None) -> str | None:
    """The first key of a keypoints literal (the KD keypoint name); None when it does not parse."""
    if cell is None:
        return None
    try:
        parsed = ast.literal_eval(cell)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None
    if isinstance(parsed, list) and parsed:
        parsed = parsed[0]
    if isinstance(parsed, dict) and parsed:
        return str(next(iter(parsed)))
    return None


def _scenario(task: TaskSpec, spec: DatasetSpec, layout: Layout, cells: list[str]) -> str:
    source = task.scenario_source  # the task file says where a case's scenario comes from
    if source == "keypoints":
        return _first_key(cell_at(cells, layout.keypoints)) or spec.keypoint or ""
    if source == "measurement":
        return spec.measurement_key or ""
    if source == "none":
        return ""
    fallback = spec.classification_task if task.capability == "classification" else spec.channel
    return (cell_at(cells, layout.scenario) or fallback or "").strip()


class _Reader:
    """State of one iter_cases call: per-dataset counts for ``limit``, the options cache."""

    def __init__(self, source: DataSource, on_error: OnError, limit: int | None) -> None:
        if limit is not None and limit < 0:
            raise ConfigError(f"limit must be >= 0, got {limit}")
        self.source = source
        self.on_error = on_error
        self.limit = limit
        self.options = _Options()

    def task_cases(self, task: TaskSpec) -> Iterator[Case]:
        counts: Counter[str] = Counter()
        for path in data_files(self.source.root, task, self.on_error):
            where = f"{task.folder}/{path.name}"
            for layout, row in read_rows(task, path, where, self.on_error):
                if self.limit is not None and row.spec is not None and counts[row.spec.id] >= self.limit:
                    continue  # skipped before any decoding
                case = self._case(task, path, where, layout, row)
                if case is not None:
                    counts[case.dataset_id] += 1
                    yield case
                    if self._all_done(task, counts):
                        return  # every dataset of the task is full: no need to read further

    def _all_done(self, task: TaskSpec, counts: Counter[str]) -> bool:
        return self.limit is not None and all(counts[i] >= self.limit for i in task.dataset_ids)

    def _case(self, task: TaskSpec, path: Path, where: str, layout: Layout, row: Row) -> Case | None:
        cells = row.cells
        try:
            image, image_b64 = decode_image_cell(cells[layout.img_data])
        except ValueError as exc:
            self.on_error(DataError(f"{where}:{row.index}", str(exc)))
            return None
        digest = hashlib.sha256(image).hexdigest()  # hashed once: the case id, the store key and cases.jsonl use it
        case_id = f"{task.key}/{path.stem}/{row.index}/{digest[:8]}"
        if row.spec is None:
            name = cells[layout.dataset_name]
            self.on_error(DataError(case_id, f"unknown dataset id in dataset_name {name!r} for task {task.key}"))
            return None
        try:
            return self._build(task, row.spec, where, layout, cells, row.index, case_id, (image, image_b64, digest))
        except ValueError as exc:
            self.on_error(DataError(case_id, str(exc)))
            return None

    def _build(
        self,
        task: TaskSpec,
        spec: DatasetSpec,
        where: str,
        layout: Layout,
        cells: list[str],
        index: int,
        case_id: str,
        image_data: tuple[bytes, str, str],  # bytes, their base64 when the cell was strict, sha256
    ) -> Case:
        image, image_b64, digest = image_data
        info = inspect_image(image)
        columns = {name: text_cell_at(cells, i, name) for name, i in layout.columns}
        scenario = _scenario(task, spec, layout, cells)
        if task.capability == "classification":
            options = self.options.get(columns["options"], scenario)
        elif task.capability == "detection":
            options = LOCATION_OPTIONS
        else:
            options = ()
        return Case(
            case_id=case_id,
            task=task.key,
            dataset_id=spec.id,
            dataset_name=cells[layout.dataset_name],
            source_file=where,
            row_index=index,
            anatomy=(columns.get("anatomy_location") or "").strip() or spec.anatomy,
            scenario=scenario,
            truth=columns[task.truth_column],
            options=options,
            image=image,
            image_format=info.format,
            image_width=info.width,
            image_height=info.height,
            columns=freeze_columns(columns),
            image_digest=digest,
            image_b64=image_b64,
        )


def iter_cases(
    source: DataSource,
    tasks: Sequence[TaskSpec],
    *,
    on_error: OnError,
    limit: int | None = None,
) -> Iterator[Case]:
    """Stream the cases of ``tasks`` (in that order), files by name, rows in file order.

    ``limit``: at most that many cases per dataset id within each task (the first ones in file order; rows
    beyond it are skipped without decoding, and their errors are not reported).

    case_id = ``{task}/{file stem}/{row index}/{sha256(image)[:8]}``, the row index counting data rows from 0.
    """
    reader = _Reader(source, on_error, limit)
    for task in tasks:
        yield from reader.task_cases(task)


def estimate_rows(source: DataSource, tasks: Sequence[TaskSpec]) -> int:
    """About how many data rows the tasks' files hold (records less headers), counted without parsing: a
    progress bar's total, read at disk speed."""
    total = 0
    for task in tasks:
        for path in data_files(source.root, task, ignore_error):
            total += max(0, tsv.count_records(path) - 1)
    return total


def count_cases(
    source: DataSource, tasks: Sequence[TaskSpec], *, on_error: OnError | None = None
) -> dict[str, dict[str, int]]:
    """Rows per task and dataset id, without decoding any image (every dataset id of a task is listed)."""
    report = on_error if on_error is not None else ignore_error
    counts: dict[str, dict[str, int]] = {}
    for task in tasks:
        per = dict.fromkeys(task.dataset_ids, 0)
        for path in data_files(source.root, task, report):
            where = f"{task.folder}/{path.name}"
            for _, row in read_rows(task, path, where, report):
                if row.spec is not None:
                    per[row.spec.id] += 1
                else:
                    report(DataError(f"{where}:{row.index}", "unknown dataset id"))
        counts[task.key] = per
    return counts
