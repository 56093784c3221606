"""One synthetic row of the U2-Bench layout (``u2eval.data.synth.generate``): the 17 published columns and how
each cell is made for a task and dataset (options dicts, sector answers, keypoints, measurements, images and texts), so
``make_row`` gives exactly what ``write_dataset`` writes at that position."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from u2eval.benchmark.sectors import LOCATION_OPTIONS
from u2eval.benchmark.tasks import DatasetSpec, TaskSpec, all_tasks, get_task
from u2eval.data.sources import CARD_COLUMNS
from u2eval.data.synth.images import (
    PROFILES,
    Blob,
    Profile,
    Rng,
    Size,
    b64,
    encode_image,
    extent_box,
    mask_png,
    render,
    structure_mask,
)
from u2eval.data.synth.text import NOTES, caption_text, prompt_text, report_text
from u2eval.errors import ConfigError

COLUMNS = CARD_COLUMNS  # the synthetic rows carry every column of the card, in its order
SAMPLE_ROWS = 4
# Sources encoded as JPEG, as some real sources are; the rest are PNG like `10.FPUS23`.
JPEG_IDS = frozenset({"25", "28", "40", "69", "75"})
# CVE 27: the real data has ~15 scorable IMT values out of 100; a full-size set keeps 3 rows in 20.
_IMT_SCORABLE_PER_20 = 3


_EXTRA_OPTIONS: Mapping[str, Mapping[str, list[str]]] = {
    "10": {"DiagnosticPlane": ["AC_PLANE", "BPD_PLANE", "FL_PLANE", "NO_PLANE"]},
    "18": {"image_quality": ["good", "poor"]},
    "74is_normal": {"is_visible": ["Not-visible", "Visible"]},
    "74is_visible": {"is_normal": ["Appears abnormal", "Appears normal"]},
}
# Options whose own key comes after the extra one (so a loader must index by classification_task).
_EXTRA_FIRST = frozenset({"10", "74is_visible"})


@dataclass(frozen=True)
class _Ctx:
    task: TaskSpec
    spec: DatasetSpec
    profile: Profile
    seed: int
    sector_offset: int
    width: int
    height: int
    fmt: str
    prompt: str
    full: bool


def _options_cell(spec: DatasetSpec) -> str:
    labels: list[str] | list[int] = [int(x) for x in spec.labels] if spec.int_labels else list(spec.labels)
    own = {spec.classification_task or "class": labels}
    extra = dict(_EXTRA_OPTIONS.get(spec.id, {}))
    merged = {**extra, **own} if spec.id in _EXTRA_FIRST else {**own, **extra}
    return repr(merged)


# The classification tasks whose synthetic images show a lesion (a diagnosis needs one; a view does not).
_LESION_TASKS = frozenset({"dd"})


def _classification(ctx: _Ctx, row: int, rng: Rng, cells: dict[str, str]) -> list[Blob]:
    labels = ctx.spec.labels
    # Sample: cycle so each dataset shows several labels; full: random like a real label mix.
    label = rng.choice(labels) if ctx.full else labels[(row + len(ctx.spec.id)) % len(labels)]
    cells["classification_task"] = ctx.spec.classification_task or ""
    cells["class_label"] = repr({"Anatomy": label.title()}) if ctx.spec.truth_format == "anatomy_dict" else label
    cells["options"] = _options_cell(ctx.spec)
    if ctx.task.key not in _LESION_TASKS:
        return []
    return [Blob(rng.uniform(0.3, 0.7), rng.uniform(0.35, 0.75), 0.15, 0.12, rng.choice((-80, 90)))]


def _coordinate(band: int, boundary: bool, rng: Rng) -> float:
    """A normalised coordinate in band 0 (< 0.45), 1 ([0.45, 0.55)) or 2 (>= 0.55); boundary values sit exactly
    on the 0.45 / 0.55 thresholds that the scorer compares with a strict '<'."""
    if band == 0:
        return rng.uniform(0.08, 0.42)
    if band == 1:
        return 0.45 if boundary else rng.uniform(0.46, 0.54)
    return 0.55 if boundary else rng.uniform(0.58, 0.92)


def _sector_point(sector: int, boundary: bool, rng: Rng) -> tuple[float, float]:
    """Centre coordinates inside one of the nine sectors of LOCATION_OPTIONS (row-major order)."""
    row_band, col_band = divmod(sector, 3)
    return _coordinate(col_band, boundary, rng), _coordinate(row_band, boundary, rng)


def _detection(ctx: _Ctx, row: int, rng: Rng, cells: dict[str, str]) -> list[Blob]:
    spec = ctx.spec
    cells["seg_channel_name"] = spec.channel or ""
    turn = ctx.sector_offset + row
    sector = turn % len(LOCATION_OPTIONS)
    if LOCATION_OPTIONS[sector] == "not visible":
        return []
    cx, cy = _sector_point(sector, turn % 4 == 1, rng)
    name = spec.channel or "lesion"
    blobs = [Blob(cx, cy, rng.uniform(0.06, 0.2), rng.uniform(0.06, 0.2), rng.choice((-80, 90)), snap=True)]
    if turn % 5 == 3:  # a list of structures: the scorer reads the first one
        blobs.append(Blob(rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), 0.08, 0.08, 50))
    # gt_bbox is each structure's drawn extent and seg_data their union, as when boxes come from masks.
    masks = [structure_mask(ctx.width, ctx.height, blob) for blob in blobs]
    boxes = [{name: extent_box(mask)} for mask in masks]
    cells["gt_bbox"] = repr(boxes if len(boxes) > 1 else boxes[0])
    cells["seg_data"] = b64(mask_png(np.logical_or.reduce(masks), ctx.profile))
    return blobs


def _keypoint(ctx: _Ctx, row: int, rng: Rng, cells: dict[str, str]) -> list[Blob]:
    turn = ctx.sector_offset + row
    x, y = _sector_point(turn % 9, turn % 4 == 1, rng)
    points: dict[str, list[float]] = {ctx.spec.keypoint or "keypoint": [x, y]}
    if row % 2:
        points["left ventricular apex"] = [rng.uniform(0.4, 0.6), rng.uniform(0.1, 0.3)]
    cells["keypoints"] = repr(points)
    # Each keypoint sits on a drawn structure (the pixel holding it is the structure's centre).
    return [Blob(px, py, 0.03, 0.04, 90) for px, py in points.values()]


def _measurement(ctx: _Ctx, row: int, rng: Rng) -> str:
    spec = ctx.spec
    key = spec.measurement_key or "value"
    lo, hi = spec.value_range or (0.0, 1.0)
    if key == "IMT":
        scorable = row % 20 < _IMT_SCORABLE_PER_20 if ctx.full else row % 2 == 0
        if not scorable:  # what makes the reference scorer skip a row: absent, None, empty list, text
            return ("", "{'IMT': None}", "{'IMT': []}", "{'IMT': 'not measurable'}")[row // 2 % 4]
        return repr({key: [rng.uniform(0.4, 1.3, 2)]})
    span = hi - lo
    value: float | int = (
        rng.randint(int(lo), int(lo + span * 0.7))
        if spec.integer_value
        else rng.uniform(lo + span * 0.1, hi - span * 0.1, 1)
    )
    cell: dict[str, float | int] = {key: value}
    if key == "head_circumference":
        cell["pixel_size_mm"] = rng.uniform(0.1, 0.25)
    return repr(cell)


_FEMALE_ANATOMY = frozenset(
    {"breast", "ovary", "fetus", "fetal head", "fetal abdomen", "fetal head and pubic symphysis"}
)


def _demographic(spec: DatasetSpec, rng: Rng) -> str:
    if rng.random() < 0.4:
        return ""
    female = spec.anatomy in _FEMALE_ANATOMY
    return repr({"age": rng.randint(18, 85), "sex": "F" if female else rng.choice(("F", "M"))})


def row_cells(ctx: _Ctx, row: int) -> list[str]:
    task, spec = ctx.task, ctx.spec
    rng = Rng(ctx.seed, task.key, spec.id, row)
    cells = dict.fromkeys(COLUMNS, "")
    cells["dataset_name"] = spec.source
    cells["prompt"] = ctx.prompt
    cells["anatomy_location"] = spec.anatomy
    cells["patient_id"] = f"{spec.id}-{rng.randint(1, 9999):04d}" if rng.random() < 0.3 else ""
    cells["demographic"] = _demographic(spec, rng)
    note = rng.choice(NOTES)
    cells["notes"] = f"{note} (row {row})" if note else ""
    blobs: list[Blob] = []
    if task.capability == "classification":
        blobs = _classification(ctx, row, rng, cells)
    elif task.scenario_source == "keypoints":
        blobs = _keypoint(ctx, row, rng, cells)
    elif task.capability == "detection":
        blobs = _detection(ctx, row, rng, cells)
    elif task.capability == "regression":
        cells["measurement"] = _measurement(ctx, row, rng)
    elif task.truth_column == "report":
        # The report text is in `report`; `caption` stays empty on RG rows, as it may on the real ones.
        cells["report"] = report_text(rng)
    else:
        cells["caption"] = caption_text(spec, rng)
    pixels = render(rng, ctx.width, ctx.height, blobs)
    cells["img_data"] = b64(encode_image(pixels, ctx.fmt, ctx.profile))
    return [cells[c] for c in COLUMNS]


def _region_task(task: TaskSpec) -> bool:
    """A detection task whose truth is a region (box and mask), not a keypoint: LL and OD."""
    return task.capability == "detection" and task.scenario_source != "keypoints"


def _sector_offset(task: TaskSpec, spec: DatasetSpec, size: Size) -> int:
    """Where a dataset starts in the cycle of location answers: LL and OD datasets continue one another's
    cycle so every sector occurs even with 4 rows each. Unscaled counts: scaling only appends rows."""
    if not _region_task(task):
        return 0
    base = planned_counts(size)
    offset = 0
    for other in all_tasks():
        for d in other.datasets if _region_task(other) else ():
            if (other.key, d.id) == (task.key, spec.id):
                return offset
            offset += base[other.key][d.id]
    return offset


def dataset_context(task_key: str, dataset_id: str, size: Size, seed: int) -> _Ctx:
    task = get_task(task_key)
    spec = task.dataset(dataset_id)
    profile = PROFILES[size]
    rng = Rng(seed, task.key, spec.id, "dataset")
    width = rng.randint(*profile.width) // 8 * 8
    height = int(width * rng.uniform(*profile.aspect)) // 2 * 2
    return _Ctx(
        task=task,
        spec=spec,
        profile=profile,
        seed=seed,
        sector_offset=_sector_offset(task, spec, size),
        width=width,
        height=height,
        fmt="jpeg" if spec.id in JPEG_IDS else "png",
        prompt=prompt_text(task, spec),
        full=size == "full",
    )


def make_row(task: str, dataset_id: str, row: int, *, size: Size = "sample", seed: int = 0) -> dict[str, str]:
    """One synthetic row (column -> cell), exactly as write_dataset writes it at that position."""
    if size not in PROFILES:
        raise ConfigError(f"unknown synthetic size {size!r}; choose 'sample' or 'full'")
    return dict(zip(COLUMNS, row_cells(dataset_context(task, dataset_id, size, seed), row), strict=True))


def planned_counts(size: Size = "sample", scale: int = 1) -> dict[str, dict[str, int]]:
    """Rows per task and dataset id that write_dataset would write, without writing anything."""
    if size not in PROFILES:
        raise ConfigError(f"unknown synthetic size {size!r}; choose 'sample' or 'full'")
    return {
        task.key: {d.id: (SAMPLE_ROWS if size == "sample" else d.n_full) * scale for d in task.datasets}
        for task in all_tasks()
    }
