"""Grounded evaluation per case: sectors of regions on the official boundaries, grounded truth from the
dataset's cells, and the region metrics against hand-computed values."""

from __future__ import annotations

import base64
import io
import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from u2eval.grounded.placement import (
    box_iou,
    mask_overlap,
    point_distance,
    point_in_mask,
    predicted_box,
    predicted_point,
    region_anchor,
    region_sector,
    truth_boxes,
    truth_from_cells,
    truth_mask,
    truth_points,
)
from u2eval.grounded.regions import mask_from_array
from u2eval.records import Box, CaseMeta, Point, Regions


def box_at(cx: float, cy: float, w: float = 0.1, h: float = 0.1) -> Box:
    return Box(x0=cx - w / 2, y0=cy - h / 2, x1=cx + w / 2, y1=cy + h / 2)


def sector_of_box(cx: float, cy: float) -> str | None:
    # (cx - 0.0625 + cx + 0.0625) / 2 is not always cx in floating point: the sector must not depend on that.
    return region_sector(Regions(boxes=[Box(x0=cx - 0.0625, y0=cy - 0.0625, x1=cx + 0.0625, y1=cy + 0.0625)]), "ll")


def case(task: str = "ll", columns: dict[str, str | None] | None = None) -> CaseMeta:
    return CaseMeta(
        case_id=f"{task}/x/0/abcd1234",
        task=task,  # type: ignore[arg-type]
        dataset_id={"ll": "04", "od": "09", "kd": "48", "dd": "21"}[task],
        dataset_name="x",
        source_file="x.tsv",
        row_index=0,
        anatomy="kidney",
        scenario="",
        truth=None,
        options=[],
        image_sha256="ab" * 32,
        image_width=100,
        image_height=50,
        columns=columns or {},
    )


def png_b64(pixels: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8) * 255).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


# ------------------------------------------------------------------------------------ sectors


def test_sector_boundaries_are_strict_less_than_at_045_and_055() -> None:
    assert sector_of_box(0.45, 0.45) == "center"  # 0.45 is not < 0.45: middle, center
    assert sector_of_box(0.4499, 0.45) == "middle left"
    assert sector_of_box(0.45, 0.4499) == "upper center"
    assert sector_of_box(0.55, 0.5) == "middle right"  # 0.55 is not < 0.55: right
    assert sector_of_box(0.5499, 0.5) == "center"
    assert sector_of_box(0.5, 0.55) == "lower center"
    assert sector_of_box(0.5, 0.5499) == "center"


def test_corners_of_the_image() -> None:
    corners = {(0.0, 0.0): "upper left", (1.0, 0.0): "upper right", (0.0, 1.0): "lower left", (1.0, 1.0): "lower right"}
    for (x, y), sector in corners.items():
        assert region_sector(Regions(points=[Point(x=x, y=y)]), "kd") == sector
        assert region_sector(Regions(boxes=[Box(x0=x, y0=y, x1=x, y1=y)]), "ll") == sector


def official_sector(cx: Fraction, cy: Fraction) -> str:
    """Facts §4.3, written out independently: rows by cy, columns by cx, strict '<' at 0.45 and 0.55,
    middle + center is 'center'. Exact fractions, so the thresholds are met exactly."""
    low, high = Fraction(45, 100), Fraction(55, 100)
    row = "upper" if cy < low else "middle" if cy < high else "lower"
    col = "left" if cx < low else "center" if cx < high else "right"
    return "center" if (row, col) == ("middle", "center") else f"{row} {col}"


@pytest.mark.parametrize(
    ("corners", "sector"),
    [
        ((0, 0, 100, 100), "upper left"),  # centre (0.05, 0.05)
        ((400, 400, 500, 500), "center"),  # centre (0.45, 0.45): not < 0.45
        ((399, 400, 500, 500), "middle left"),  # centre x 0.4495
        ((500, 500, 600, 600), "lower right"),  # centre (0.55, 0.55): not < 0.55
        ((500, 499, 600, 600), "middle right"),  # centre y 0.5495
        ((0, 900, 1000, 1000), "lower center"),  # centre (0.5, 0.95)
        ((900, 0, 1000, 1000), "middle right"),  # centre (0.95, 0.5)
        ((300, 100, 600, 700), "upper center"),  # centre (0.45, 0.4)
        ((59, 141, 841, 959), "lower center"),  # centre (0.45, 0.55), though (0.059 + 0.841) / 2 is not 0.45
    ],
)
def test_a_box_has_the_sector_of_its_centre_by_hand(corners: tuple[int, int, int, int], sector: str) -> None:
    x0, y0, x1, y1 = (v / 1000 for v in corners)
    assert region_sector(Regions(boxes=[Box(x0=x0, y0=y0, x1=x1, y1=y1)]), "od") == sector


@settings(max_examples=400, deadline=None)
@given(st.integers(0, 1000), st.integers(0, 1000), st.integers(0, 1000), st.integers(0, 1000))
def test_a_box_has_the_sector_the_official_rule_gives_its_exact_centre(a: int, b: int, c: int, d: int) -> None:
    """Boxes on a 1/1000 grid, whose centres are often exactly 0.45 or 0.55: the sector of the exact centre
    (rational arithmetic, the rule written out above) is the region's, whatever floating point does."""
    x0, x1, y0, y1 = sorted((a, c)) + sorted((b, d))
    box = Box(x0=x0 / 1000, y0=y0 / 1000, x1=x1 / 1000, y1=y1 / 1000)
    expected = official_sector(Fraction(x0 + x1, 2000), Fraction(y0 + y1, 2000))
    assert region_sector(Regions(boxes=[box]), "od") == expected


def test_a_mask_is_placed_by_its_extent_not_its_centroid() -> None:
    pixels = np.zeros((100, 100), dtype=bool)
    pixels[10:90, 10:20] = True  # a tall bar on the left...
    pixels[80:90, 10:90] = True  # ...and a foot along the bottom: extent centre (0.5, 0.5), centroid lower left
    regions = Regions(masks=[mask_from_array(pixels)])
    assert region_anchor(regions, "ll") == ("mask", 0.5, 0.5)
    assert region_sector(regions, "ll") == "center"
    ys, xs = np.nonzero(pixels)
    assert xs.mean() / 100 < 0.45 and ys.mean() / 100 > 0.55  # the centroid would have said lower left


def test_a_mask_of_several_structures_is_placed_by_its_largest_one() -> None:
    pixels = np.zeros((100, 100), dtype=bool)
    pixels[10:40, 5:35] = True  # a large structure, upper left
    pixels[85:95, 85:95] = True  # a small one, lower right: their union's extent is centred at (0.5, 0.525)
    regions = Regions(masks=[mask_from_array(pixels)])
    assert region_sector(regions, "od") == "upper left"
    assert predicted_box(regions) == Box(x0=0.05, y0=0.1, x1=0.35, y1=0.4)  # also the box it stands for
    pixels[60:99, 60:99] = True  # now the lower right one is the largest
    assert region_sector(Regions(masks=[mask_from_array(pixels)]), "od") == "lower right"


def test_the_truths_kind_decides_which_region_places_the_answer() -> None:
    regions = Regions(boxes=[box_at(0.2, 0.2)], points=[Point(x=0.8, y=0.8)])
    assert region_sector(regions, "ll") == "upper left"  # LL / OD truth is a box
    assert region_sector(regions, "kd") == "lower right"  # KD truth is a keypoint
    assert region_sector(Regions(points=[Point(x=0.8, y=0.2)]), "od") == "upper right"  # the only region
    assert region_sector(Regions(), "ll") is None
    assert region_sector(Regions(masks=[mask_from_array(np.zeros((4, 4)))]), "ll") is None


def test_the_highest_scored_box_counts_else_the_first() -> None:
    low, high = box_at(0.2, 0.2).model_copy(update={"score": 0.3}), box_at(0.8, 0.8).model_copy(update={"score": 0.9})
    assert predicted_box(Regions(boxes=[low, high])) == high
    assert predicted_box(Regions(boxes=[box_at(0.2, 0.2), box_at(0.8, 0.8)])) == box_at(0.2, 0.2)
    pixels = np.zeros((10, 10), dtype=bool)
    pixels[2:4, 6:9] = True
    from_mask = predicted_box(Regions(masks=[mask_from_array(pixels)]))
    assert from_mask == Box(x0=0.6, y0=0.2, x1=0.9, y1=0.4)
    assert predicted_point(Regions(masks=[mask_from_array(pixels)])) == Point(x=0.75, y=0.30000000000000004)


# -------------------------------------------------------------------------------------- truth


def test_truth_boxes_from_every_gt_bbox_shape() -> None:
    assert truth_boxes("{'lesion': [0.5, 0.4, 0.2, 0.2]}") == [
        box_at(0.5, 0.4, 0.2, 0.2).model_copy(update={"label": "lesion"})
    ]
    two = truth_boxes("[{'a': [0.2, 0.2, 0.1, 0.1]}, {'b': [0.8, 0.8, 0.1, 0.1]}]")
    assert [b.label for b in two] == ["a", "b"] and math.isclose(two[1].x0, 0.75)
    assert len(truth_boxes("{'a': [[0.2, 0.2, 0.1, 0.1], [0.3, 0.3, 0.1, 0.1]]}")) == 2
    for bad in (None, "", "nan", "{'a': [0.5]}", "{'a': [0.5, 0.5, 'x', 0.1]}", "[1, 2, 3]", "{'a': [nan, 1, 1, 1]}"):
        assert truth_boxes(bad) == [], bad


def test_truth_points_and_masks() -> None:
    assert truth_points("{'mitral valve annulus': [0.25, 0.75], 'apex': [0.5, 0.1]}") == [
        Point(x=0.25, y=0.75, label="mitral valve annulus"),
        Point(x=0.5, y=0.1, label="apex"),
    ]
    pixels = np.zeros((5, 6), dtype=bool)
    pixels[1:3, 2:4] = True
    mask, state, note = truth_mask(png_b64(pixels))
    assert state == "present" and note is None and mask is not None and sum(mask.counts[1::2]) == 4
    assert truth_mask(png_b64(np.zeros((5, 6), dtype=bool)))[1] == "empty"
    assert truth_mask(None)[1] == "absent" and truth_mask("  ")[1] == "absent"
    assert truth_mask(base64.b64encode(b"junk").decode())[1] == "unreadable"


def test_what_an_empty_cell_means_depends_on_the_tasks_truth() -> None:
    ll = truth_from_cells(case("ll"), {"gt_bbox": None, "keypoints": None, "seg_data": None})
    assert ll.boxes == [] and ll.mask_state == "empty"  # LL: nothing visible, nothing to segment
    assert ll.points is None  # keypoints are no LL truth
    kd = truth_from_cells(case("kd"), {"gt_bbox": None, "keypoints": "{'apex': [0.5, 0.5]}", "seg_data": None})
    assert kd.boxes is None and kd.mask_state == "absent" and kd.points == [Point(x=0.5, y=0.5, label="apex")]
    boxed = truth_from_cells(case("od"), {"gt_bbox": "{'a': [0.5, 0.5, 0.2, 0.2]}", "seg_data": None})
    assert boxed.mask_state == "absent"  # a box without a mask: no mask truth, not an empty one
    unread = truth_from_cells(case("ll"), {"gt_bbox": "{'a': [0.5, 0.5, 0.2, 0.2]}"})
    assert unread.mask_state == "unavailable"
    dd = truth_from_cells(case("dd"), {})
    assert dd.boxes is None and dd.points is None


# ------------------------------------------------------------------------------------ metrics


def test_box_iou_by_hand() -> None:
    a, b = Box(x0=0, y0=0, x1=0.5, y1=0.5), Box(x0=0.25, y0=0.25, x1=0.75, y1=0.75)
    assert box_iou(a, b) == pytest.approx(0.0625 / (0.25 + 0.25 - 0.0625))  # 1/7
    assert box_iou(a, a) == 1.0
    assert box_iou(a, Box(x0=0.5, y0=0, x1=1, y1=0.5)) == 0.0  # touching edges only
    assert box_iou(Box(x0=0.2, y0=0.2, x1=0.2, y1=0.2), Box(x0=0.2, y0=0.2, x1=0.2, y1=0.2)) == 0.0


def test_dice_and_iou_by_hand() -> None:
    truth = np.zeros((4, 4), dtype=bool)
    truth[0:2, 0:3] = True  # 6 pixels
    predicted = np.zeros((4, 4), dtype=bool)
    predicted[1:3, 1:3] = True  # 4 pixels, 2 of them in the truth (row 1, columns 1-2)
    dice, iou = mask_overlap(predicted, truth)
    assert dice == pytest.approx(2 * 2 / (4 + 6)) and iou == pytest.approx(2 / (4 + 6 - 2))
    assert mask_overlap(truth, truth) == (1.0, 1.0)
    empty = np.zeros((4, 4), dtype=bool)
    assert mask_overlap(empty, empty) == (1.0, 1.0)  # nothing there, nothing predicted: right
    assert mask_overlap(empty, truth) == (0.0, 0.0) == mask_overlap(truth, empty)
    with pytest.raises(ValueError, match="shapes differ"):
        mask_overlap(np.zeros((2, 2), dtype=bool), truth)


def test_point_distance_is_over_the_image_diagonal() -> None:
    assert point_distance(Point(x=0, y=0), Point(x=1, y=1), 100, 50) == pytest.approx(1.0)
    # 10 pixels along x of a 100 x 50 image: 10 / sqrt(100^2 + 50^2)
    assert point_distance(Point(x=0.5, y=0.5), Point(x=0.6, y=0.5), 100, 50) == pytest.approx(10 / math.hypot(100, 50))
    # 0.1 of the height is 5 pixels, not 10: the aspect ratio counts
    assert point_distance(Point(x=0.5, y=0.5), Point(x=0.5, y=0.6), 100, 50) == pytest.approx(5 / math.hypot(100, 50))


def test_point_in_mask() -> None:
    pixels = np.zeros((10, 10), dtype=bool)
    pixels[2:4, 5:7] = True
    assert point_in_mask(Point(x=0.55, y=0.25), pixels)
    assert not point_in_mask(Point(x=0.45, y=0.25), pixels)
    assert not point_in_mask(Point(x=0.55, y=1.5), pixels)  # outside the image is outside the mask
    edge = np.zeros((10, 10), dtype=bool)
    edge[9, 9] = True
    assert point_in_mask(Point(x=1.0, y=1.0), edge)  # the far edge belongs to the last pixel
