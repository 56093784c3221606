"""The grounded truth of a run's cases, read from the dataset rows and kept compactly in the run folder.

The loader never keeps ``seg_data`` (cells reach 22 MB), so ``cases.jsonl`` holds ``gt_bbox`` and
``keypoints`` for detection cases but no mask. The grounded scorer reads the masks itself, once, from the
row each case came from (``source_file`` / ``row_index``, checked against the case's image sha256 so a
changed dataset cannot lend a case another row's mask), and keeps them in ``grounded_truth.jsonl`` as run
lengths: a mask is a few hundred integers there, never the base64 image. Re-scoring then needs only the
run folder. When the dataset cannot be read, the truth falls back to the cells in ``cases.jsonl`` and the
masks are marked ``unavailable``; a later scoring with the dataset present fills them in.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from pydantic import ValidationError

from u2eval.data import tsv
from u2eval.grounded.placement import GroundTruth, truth_from_cells
from u2eval.records import CaseMeta
from u2eval.resources import sample_dir

__all__ = ["TRUTH_FILE", "TRUTH_COLUMNS", "dataset_root", "extract_truths", "ground_truths", "read_truths"]

log = logging.getLogger(__name__)

TRUTH_FILE = "grounded_truth.jsonl"
TRUTH_COLUMNS = ("gt_bbox", "keypoints", "seg_data")


def dataset_root(dataset: Mapping[str, str | None]) -> Path | None:
    """Where the run's TSVs are now (the manifest's ``dataset``), or None when they are gone. The bundled
    sample is wherever this installation keeps it."""
    if dataset.get("kind") == "sample":
        return sample_dir()
    root = dataset.get("root")
    return Path(root) if root and Path(root).is_dir() else None


def _wanted_rows(cases: Iterable[CaseMeta]) -> dict[str, dict[int, CaseMeta]]:
    by_file: dict[str, dict[int, CaseMeta]] = defaultdict(dict)
    for case in cases:
        by_file[case.source_file][case.row_index] = case
    return by_file


def _image_sha256(cell: str) -> str | None:
    try:
        return hashlib.sha256(base64.b64decode(cell)).hexdigest()
    except (binascii.Error, ValueError):
        return None


def _read_file(path: Path, wanted: Mapping[int, CaseMeta]) -> dict[str, GroundTruth]:
    """The truth of the wanted rows of one TSV, rows numbered as the loader numbers them (from 0 after the
    header, blank and unreadable records included)."""
    found: dict[str, GroundTruth] = {}
    with path.open("r", encoding="utf-8", errors="surrogateescape", newline="", buffering=1 << 20) as handle:
        records = tsv.records(handle)
        header = next(records, None)
        if not isinstance(header, list):
            return found
        index = {name.strip().lstrip("\ufeff"): i for i, name in enumerate(header)}
        if "img_data" not in index:
            return found
        columns = [(c, index[c]) for c in TRUTH_COLUMNS if c in index]
        for row, cells in enumerate(records):
            case = wanted.get(row)
            if case is None or not isinstance(cells, list) or len(cells) != len(header):
                continue
            if _image_sha256(cells[index["img_data"]]) != case.image_sha256:
                log.warning("%s: row %d no longer holds the image of case %s", path, row, case.case_id)
                continue
            found[case.case_id] = truth_from_cells(case, {c: cells[i] or None for c, i in columns})
            if len(found) == len(wanted):
                break
    return found


def extract_truths(root: Path, cases: Sequence[CaseMeta]) -> dict[str, GroundTruth]:
    """The truth of ``cases`` read from their rows under ``root``; cases whose row is gone are left out."""
    truths: dict[str, GroundTruth] = {}
    for source_file, wanted in sorted(_wanted_rows(cases).items()):
        path = root / source_file
        if not path.is_file():
            log.warning("%s: not found; the grounded truth of its %d case(s) comes from cases.jsonl", path, len(wanted))
            continue
        truths.update(_read_file(path, wanted))
    return truths


def _from_columns(case: CaseMeta, why: str) -> GroundTruth:
    cells: dict[str, str | None] = {c: case.columns[c] for c in ("gt_bbox", "keypoints") if c in case.columns}
    truth = truth_from_cells(case, cells, origin="columns")
    return truth.model_copy(update={"note": why})


def read_truths(folder: Path) -> dict[str, GroundTruth]:
    """The cached truths of a run folder. The file is a cache: a line that does not read (a cut write, an
    edit) is left out with a warning naming it, and its case's truth is made again from the dataset."""
    path = folder / TRUTH_FILE
    if not path.is_file():
        return {}
    truths = {}
    with path.open(encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                truth = GroundTruth.model_validate_json(line)
            except ValidationError as exc:
                log.warning("%s:%d: unreadable grounded truth (%d errors); read again", path, number, exc.error_count())
                continue
            truths[truth.case_id] = truth
    return truths


def _write_truths(folder: Path, truths: Mapping[str, GroundTruth]) -> None:
    path = folder / TRUTH_FILE
    tmp = path.with_suffix(".jsonl.tmp")
    with tmp.open("w", encoding="utf-8") as out:
        out.writelines(truths[k].model_dump_json(exclude_defaults=True) + "\n" for k in sorted(truths))
    os.replace(tmp, path)


def ground_truths(
    folder: Path, cases: Sequence[CaseMeta], root: Path | None, *, write: bool = True
) -> dict[str, GroundTruth]:
    """The truth of ``cases``: from ``grounded_truth.jsonl`` where it holds them (and matches the case's
    image), else read from the dataset under ``root``, else from the cells in ``cases.jsonl``. New truths
    are saved to the folder when ``write`` (a leaderboard only reads)."""
    cached = read_truths(folder)
    truths: dict[str, GroundTruth] = {}
    todo: list[CaseMeta] = []
    for case in cases:
        known = cached.get(case.case_id)
        if known is not None and known.image_sha256 == case.image_sha256 and known.origin == "source":
            truths[case.case_id] = known
        else:
            todo.append(case)
    if todo and root is not None:
        truths.update(extract_truths(root, todo))
    why = "the dataset rows could not be read" if root is not None else "the dataset is not available"
    for case in todo:
        if case.case_id not in truths:
            truths[case.case_id] = _from_columns(case, why)
    if write and todo:
        _write_truths(folder, {**cached, **truths})
    return truths
