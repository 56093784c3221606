"""Grounded evaluation of one case: the sector a region falls in, the grounded truth of a row, and the metrics.

Which point of a region decides its sector. The official truth is the sector of the centre of the first
``gt_bbox`` structure (``keypoints`` for KD), split at 0.45 / 0.55 with strict ``<`` (facts §4.3), so a
predicted region is placed the same way: a box by its centre, a point by itself, and a mask by the centre
of the extent (bounding box, not centroid) of its largest 8-connected component. One mask may hold several
structures (a label map, or seg_data, which is the union of a row's structures), while the truth is the
first structure alone: the largest component stands for "the" structure, since which structure a row
lists first is not known from the mask. A one-component mask is placed exactly as the box around it. When
a model gives several kinds, the kind the task's truth is made of decides: box, then mask, then point for
LL / OD; point, then box, then mask for KD. Of several regions of a kind the first counts (the highest
``score`` for boxes that carry one), as the official truth uses the first structure.

Which truth a row has. ``gt_bbox`` holds ``{name: [cx, cy, w, h]}`` or a list of such dicts (normalised
centre format), ``keypoints`` ``{name: [x, y]}``, ``seg_data`` a base64 mask image. On LL / OD rows an
empty or unreadable ``gt_bbox`` means the structure is not visible, so the box truth (and, when the row
has no mask, the mask truth) is *empty*; on other rows a missing cell means the truth is unknown and no
metric of that kind is computed.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np

from u2eval.benchmark.sectors import sector_from_centre
from u2eval.benchmark.tasks import get_task
from u2eval.data.truth import literal_cell
from u2eval.grounded.regions import (
    BoolArray,
    box_centre,
    box_from_centre,
    largest_component_extent,
    mask_area,
    mask_from_image_bytes,
    point_pixel,
    union_array,
)
from u2eval.records import Box, CaseMeta, DiskRecord, Mask, Point, Regions

__all__ = [
    "IOU_HIT",
    "GroundTruth",
    "MaskState",
    "RegionKind",
    "box_iou",
    "mask_overlap",
    "point_distance",
    "point_in_mask",
    "predicted_box",
    "predicted_point",
    "region_anchor",
    "region_sector",
    "truth_boxes",
    "truth_from_cells",
    "truth_mask",
    "truth_points",
]

RegionKind = Literal["box", "mask", "point"]
MaskState = Literal["present", "empty", "absent", "unreadable", "unavailable"]
IOU_HIT = 0.5  # a box is a hit at IoU >= 0.5 (inclusive), the usual grounding threshold

# Which kind of region places a prediction, by the column the task's truth comes from.
_ORDER: Mapping[str, tuple[RegionKind, ...]] = {
    "gt_bbox": ("box", "mask", "point"),
    "keypoints": ("point", "box", "mask"),
}


# ------------------------------------------------------------------------------------- predictions


def _first_box(boxes: Sequence[Box]) -> Box | None:
    if not boxes:
        return None
    scored = [b for b in boxes if b.score is not None]
    return max(scored, key=lambda b: b.score or 0.0) if scored else boxes[0]


def _first_mask_extent(masks: Sequence[Mask]) -> Box | None:
    """The box the first non-empty mask stands for: the extent of its largest connected component."""
    for mask in masks:
        extent = largest_component_extent(mask)
        if extent is not None:
            return extent
    return None


def predicted_box(regions: Regions) -> Box | None:
    """The box a prediction stands for: its first box, else the extent of the largest component of its
    first non-empty mask."""
    return _first_box(regions.boxes) or _first_mask_extent(regions.masks)


def predicted_point(regions: Regions) -> Point | None:
    """The point a prediction stands for: its first point, else the centre of its predicted box."""
    if regions.points:
        return regions.points[0]
    box = predicted_box(regions)
    return None if box is None else Point(x=box_centre(box)[0], y=box_centre(box)[1], label=box.label)


def _centre(box: Box) -> tuple[float, float]:
    # (x0 + x1) / 2 carries float noise ((0.3875 + 0.5125) / 2 is 0.44999999999999996): rounded to 12
    # decimals, a centre meant to sit on 0.45 stays there and is judged by the strict '<' as written.
    cx, cy = box_centre(box)
    return round(cx, 12), round(cy, 12)


def region_anchor(regions: Regions, task_key: str) -> tuple[RegionKind, float, float] | None:
    """The kind of region that places the prediction and the point it is placed by; None without one."""
    for kind in _ORDER.get(get_task(task_key).truth_column, _ORDER["gt_bbox"]):
        if kind == "box" and (box := _first_box(regions.boxes)) is not None:
            return ("box", *_centre(box))
        if kind == "mask" and (extent := _first_mask_extent(regions.masks)) is not None:
            return ("mask", *_centre(extent))
        if kind == "point" and regions.points:
            return "point", regions.points[0].x, regions.points[0].y
    return None


def region_sector(regions: Regions, task_key: str) -> str | None:
    """The official sector of a prediction's regions (None when it holds no region)."""
    anchor = region_anchor(regions, task_key)
    return None if anchor is None else sector_from_centre(anchor[1], anchor[2])


# ------------------------------------------------------------------------------------------- truth


class GroundTruth(DiskRecord):
    """The grounded truth of one case. ``boxes`` / ``points`` None: that truth is unknown for the row;
    an empty list: the row says there is nothing (not visible). One line of ``grounded_truth.jsonl``."""

    case_id: str
    image_sha256: str
    boxes: list[Box] | None = None
    points: list[Point] | None = None
    mask: Mask | None = None
    mask_state: MaskState = "absent"
    note: str | None = None  # why the mask is unreadable or unavailable
    origin: Literal["source", "columns"] = "source"  # read from the dataset row, or from cases.jsonl only


def _numbers(value: object, count: int) -> list[float] | None:
    if not isinstance(value, list | tuple) or len(value) < count:
        return None
    out = []
    for item in value[:count]:
        if isinstance(item, bool) or not isinstance(item, int | float) or not math.isfinite(float(item)):
            return None
        out.append(float(item))
    return out


def _structures(cell: str | None) -> list[tuple[str, object]] | None:
    """(name, value) of every structure in a dict or list-of-dicts literal; None when it is not one."""
    data = literal_cell(cell)
    dicts = [data] if isinstance(data, dict) else data if isinstance(data, list) else None
    if dicts is None or not all(isinstance(d, dict) for d in dicts):
        return None
    return [(str(name), value) for d in dicts for name, value in d.items()]


def _values(value: object, count: int) -> list[list[float]]:
    """One coordinate list, or a list of them (several structures under one name)."""
    single = _numbers(value, count)
    if single is not None:
        return [single]
    if isinstance(value, list | tuple):
        return [v for item in value if (v := _numbers(item, count)) is not None]
    return []


def truth_boxes(cell: str | None) -> list[Box]:
    """Every structure of a ``gt_bbox`` cell as a box (normalised centre format -> corners); [] for a
    missing, malformed or empty cell."""
    return [
        box_from_centre(cx, cy, w, h, label=name)
        for name, value in _structures(cell) or []
        for cx, cy, w, h in _values(value, 4)
    ]


def truth_points(cell: str | None) -> list[Point]:
    """Every point of a ``keypoints`` cell (normalised ``[x, y]``), first structure first."""
    return [Point(x=x, y=y, label=name) for name, value in _structures(cell) or [] for x, y in _values(value, 2)]


def truth_mask(cell: str | None) -> tuple[Mask | None, MaskState, str | None]:
    """A ``seg_data`` cell (base64 mask image) -> (mask, state, note). 'absent' for a missing cell."""
    if cell is None or not cell.strip():
        return None, "absent", None
    try:
        mask = mask_from_image_bytes(base64.b64decode(cell, validate=False))
    except (ValueError, binascii.Error) as exc:
        return None, "unreadable", str(exc)
    return mask, "present" if mask_area(mask) else "empty", None


def truth_from_cells(
    case: CaseMeta, cells: Mapping[str, str | None], origin: Literal["source", "columns"] = "source"
) -> GroundTruth:
    """The truth of a case from its row's ``gt_bbox`` / ``keypoints`` / ``seg_data`` cells (a cell not in
    ``cells`` was not read). On a task whose truth is ``gt_bbox``, an empty box truth also means an empty
    mask when the row has no mask of its own."""
    truth_column = get_task(case.task).truth_column
    boxes = truth_boxes(cells.get("gt_bbox"))
    points = truth_points(cells.get("keypoints"))
    known_boxes = boxes if boxes or (truth_column == "gt_bbox" and "gt_bbox" in cells) else None
    known_points = points if points or (truth_column == "keypoints" and "keypoints" in cells) else None
    if "seg_data" in cells:
        mask, state, note = truth_mask(cells["seg_data"])
        if state == "absent" and known_boxes == [] and truth_column == "gt_bbox":
            state = "empty"  # nothing visible and nothing drawn: the structure's mask is empty
    else:
        mask, state, note = None, "unavailable", "seg_data was not read"
    return GroundTruth(
        case_id=case.case_id,
        image_sha256=case.image_sha256,
        boxes=known_boxes,
        points=known_points,
        mask=mask,
        mask_state=state,
        note=note,
        origin=origin,
    )


# ----------------------------------------------------------------------------------------- metrics


def box_iou(a: Box, b: Box) -> float:
    """Intersection over union of two normalised boxes (0 when they do not overlap or both are empty)."""
    width = min(a.x1, b.x1) - max(a.x0, b.x0)
    height = min(a.y1, b.y1) - max(a.y0, b.y0)
    inter = max(width, 0.0) * max(height, 0.0)
    union = (a.x1 - a.x0) * (a.y1 - a.y0) + (b.x1 - b.x0) * (b.y1 - b.y0) - inter
    return inter / union if union > 0 else 0.0


def mask_overlap(predicted: BoolArray, truth: BoolArray) -> tuple[float, float]:
    """(Dice, IoU) of two boolean arrays of one size. Both empty: (1.0, 1.0), the prediction is right;
    only one empty: (0.0, 0.0)."""
    if predicted.shape != truth.shape:
        raise ValueError(f"mask shapes differ: {predicted.shape} vs {truth.shape}")
    inter = int(np.count_nonzero(predicted & truth))
    total = int(np.count_nonzero(predicted)) + int(np.count_nonzero(truth))
    if total == 0:
        return 1.0, 1.0
    return 2 * inter / total, inter / (total - inter)


def predicted_mask_array(regions: Regions, width: int, height: int) -> BoolArray:
    """The union of a prediction's masks at the truth's size (nearest-neighbour resampling)."""
    return union_array(list(regions.masks), width, height)


def point_distance(predicted: Point, truth: Point, width: int, height: int) -> float:
    """Distance between two normalised points in pixels of a ``width`` x ``height`` image, divided by the
    image diagonal: 0 is the same spot, 1 opposite corners."""
    dx, dy = (predicted.x - truth.x) * width, (predicted.y - truth.y) * height
    return math.hypot(dx, dy) / math.hypot(width, height)


def point_in_mask(point: Point, mask: BoolArray) -> bool:
    """Whether a normalised point lies on a pixel of the mask; a point outside the image is not."""
    if not (0.0 <= point.x <= 1.0 and 0.0 <= point.y <= 1.0):
        return False
    height, width = mask.shape
    col, row = point_pixel(point, width, height)
    return bool(mask[row, col])
