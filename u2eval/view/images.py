"""A run's images, taken from the dataset the run was made on (a run folder stores none): each case's row read
once, its image checked against the case's sha256, written as it is (the dataset's own pixels) and as a
thumbnail. Files are named by the image's digest, so a case sharing another's image shares its files and a
second ``u2eval view`` of the run reads nothing it already wrote. Rows of different files are read in parallel;
a file is streamed row by row, so memory stays flat whatever the run's size."""

from __future__ import annotations

import hashlib
import io
import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from u2eval.data import tsv
from u2eval.data.image_cells import decode_image_cell, sniff_image_format
from u2eval.records import CaseMeta

log = logging.getLogger(__name__)

IMAGES = "images"
THUMBS = "thumbs"
THUMB_EDGE = 160  # pixels, the longer side of a thumbnail in the case list


@dataclass(frozen=True)
class CaseImage:
    """Where a case's image lies under the view folder (relative paths), and its size in pixels."""

    image: str
    thumb: str
    width: int
    height: int


@dataclass(frozen=True)
class ImageExport:
    images: dict[str, CaseImage]  # case id -> its image
    missing: dict[str, str]  # case id -> why the page shows no image for it


def _names(sha256: str, fmt: str) -> tuple[str, str]:
    stem = sha256[:20]
    return f"{IMAGES}/{stem}.{fmt}", f"{THUMBS}/{stem}.jpg"


def _write(out: Path, data: bytes, sha256: str) -> CaseImage:
    fmt = (sniff_image_format(data) or "png").lower().replace("jpeg", "jpg")
    image_name, thumb_name = _names(sha256, fmt)
    with Image.open(io.BytesIO(data)) as img:
        width, height = img.size
        thumb_path = out / thumb_name
        if not thumb_path.is_file():
            img.thumbnail((THUMB_EDGE, THUMB_EDGE))
            img.convert("RGB").save(thumb_path, format="JPEG", quality=80)
    image_path = out / image_name
    if not image_path.is_file():
        image_path.write_bytes(data)
    return CaseImage(image_name, thumb_name, width, height)


def _written(case: CaseMeta, images: Mapping[str, str], thumbs: set[str]) -> CaseImage | None:
    """The files an earlier export wrote for the case's image, found by its digest; None when there are none."""
    stem = case.image_sha256[:20]
    if stem not in images or stem not in thumbs or not case.image_width or not case.image_height:
        return None
    return CaseImage(f"{IMAGES}/{images[stem]}", f"{THUMBS}/{stem}.jpg", case.image_width, case.image_height)


def _export_file(
    path: Path, wanted: Mapping[int, list[CaseMeta]], out: Path
) -> tuple[dict[str, CaseImage], dict[str, str]]:
    """The wanted rows of one TSV, numbered as the reader numbers them (from 0 after the header)."""
    found: dict[str, CaseImage] = {}
    missing: dict[str, str] = {}
    with path.open("r", encoding="utf-8", errors="surrogateescape", newline="", buffering=1 << 20) as handle:
        records = tsv.records(handle)
        header = next(records, None)
        index = {name.strip().lstrip("\ufeff"): i for i, name in enumerate(header)} if isinstance(header, list) else {}
        column = index.get("img_data", -1)
        for row, cells in enumerate(records) if column >= 0 else ():
            cases = wanted.get(row)
            if not cases or not isinstance(cells, list) or column >= len(cells):
                continue
            try:
                data, _ = decode_image_cell(cells[column])
                sha256 = hashlib.sha256(data).hexdigest()
                if sha256 != cases[0].image_sha256:
                    why = f"row {row} of {path.name} no longer holds the case's image"
                    missing.update({c.case_id: why for c in cases})
                    continue
                image = _write(out, data, sha256)
            except (ValueError, OSError, UnidentifiedImageError) as exc:
                missing.update({c.case_id: f"the image cannot be read ({exc})" for c in cases})
                continue
            found.update({c.case_id: image for c in cases})
    return found, missing


def export_images(root: Path | None, cases: Sequence[CaseMeta], out: Path, workers: int = 2) -> ImageExport:
    """The images of ``cases`` under ``out`` (``images/`` and ``thumbs/``), from the dataset under ``root``
    (None: the dataset is not there, and every case says so)."""
    for folder in (IMAGES, THUMBS):
        (out / folder).mkdir(parents=True, exist_ok=True)
    by_file: dict[str, dict[int, list[CaseMeta]]] = defaultdict(lambda: defaultdict(list))
    for case in cases:
        by_file[case.source_file][case.row_index].append(case)
    images: dict[str, CaseImage] = {}
    missing: dict[str, str] = {}
    written = {p.stem: p.name for p in (out / IMAGES).iterdir()}
    thumbs = {p.stem for p in (out / THUMBS).iterdir()}
    for name, rows in list(by_file.items()):  # written by an earlier view of the run: nothing to read again
        known = {c.case_id: _written(c, written, thumbs) for cs in rows.values() for c in cs}
        if all(image is not None for image in known.values()):
            images.update({k: v for k, v in known.items() if v is not None})
            del by_file[name]
    if root is None:
        why = "the run's dataset is not on this machine"
        return ImageExport(images, {c.case_id: why for rows in by_file.values() for cs in rows.values() for c in cs})
    present = {name: rows for name, rows in by_file.items() if (root / name).is_file()}
    for name, rows in by_file.items():
        if name not in present:
            missing.update({c.case_id: f"{root / name} is not there" for cs in rows.values() for c in cs})
    with ProcessPoolExecutor(max_workers=max(1, workers)) as pool:
        jobs = [pool.submit(_export_file, root / name, dict(rows), out) for name, rows in sorted(present.items())]
        for job in jobs:
            found, lost = job.result()
            images.update(found)
            missing.update(lost)
    for case in cases:
        if case.case_id not in images and case.case_id not in missing:
            missing[case.case_id] = f"row {case.row_index} of {case.source_file} is not in the dataset"
    return ImageExport(images, missing)
