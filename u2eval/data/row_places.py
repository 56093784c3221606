"""Rows found again by where they start: a task's rows listed with the byte offset of each one's record (read
once, no image decoded), and one row's image read back from its offset alone. The other-image control
(``u2eval.data.controls``) reads each case's partner this way, so it never holds a dataset's images: the
7,241 cases' images are ~2 GB, a row's place is a few numbers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from u2eval.benchmark.tasks import TaskSpec
from u2eval.data import tsv
from u2eval.data.image_cells import decode_image_cell, inspect_image
from u2eval.data.rows import OnError, data_files, ignore_error, rows_of
from u2eval.data.sources import DataSource

__all__ = ["PlacedImage", "RowPlace", "image_at", "task_row_places"]


@dataclass(frozen=True)
class RowPlace:
    """Where a data row of a known dataset sits: its identity as the reader names it, and its record's offset."""

    task: str
    dataset_id: str
    source_file: str  # "folder/file.tsv", as ``Case.source_file``
    row_index: int  # as ``Case.row_index``
    path: Path
    offset: int  # of the record's first byte in ``path``
    width: int  # the file's number of columns
    img_data: int  # the image column's index
    dataset_name: int  # the dataset_name column's index
    dataset_cell: str  # that cell's text, to check that the record read back is this row

    @property
    def identity(self) -> tuple[str, int]:
        return self.source_file, self.row_index


@dataclass(frozen=True)
class PlacedImage:
    data: bytes
    b64: str  # ``data`` as base64 when the cell was strict base64, else ""
    sha256: str
    media_type: str


def task_row_places(source: DataSource, task: TaskSpec, on_error: OnError = ignore_error) -> Iterator[RowPlace]:
    """Every row of a known dataset of ``task``, in the reader's order (files by name, rows in file order), with
    its record's offset. Rows the reader could not place in a dataset are left out (the reader reports them)."""
    for path in data_files(source.root, task, on_error):
        where = f"{task.folder}/{path.name}"
        with path.open("rb", buffering=1 << 20) as handle:
            records = tsv.PlacedRecords(handle)
            for layout, row in rows_of(task, path.stem, records, where, on_error):
                if row.spec is None:
                    continue
                yield RowPlace(
                    task=task.key,
                    dataset_id=row.spec.id,
                    source_file=where,
                    row_index=row.index,
                    path=path,
                    offset=records.start,  # the row is yielded as soon as its record is read
                    width=layout.width,
                    img_data=layout.img_data,
                    dataset_name=layout.dataset_name,
                    dataset_cell=row.cells[layout.dataset_name],
                )


def image_at(place: RowPlace) -> PlacedImage:
    """The row's image, read from its record alone; ValueError (with the reason) when it cannot be read there."""
    with place.path.open("rb") as handle:
        handle.seek(place.offset)
        cells = next(tsv.records(tsv.text_lines(handle)), None)
    if not isinstance(cells, list) or len(cells) != place.width or cells[place.dataset_name] != place.dataset_cell:
        raise ValueError(f"{place.source_file}:{place.row_index} is no longer where it was (the file changed?)")
    data, b64 = decode_image_cell(cells[place.img_data])
    kind = inspect_image(data).format  # as the reader checks a case's own image
    return PlacedImage(data=data, b64=b64, sha256=hashlib.sha256(data).hexdigest(), media_type=f"image/{kind}")
