"""Region encodings: run-length masks, extents, resampling, pixel conversions and mask images."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from u2eval.grounded.regions import (
    array_extent,
    box_from_centre,
    box_from_pixels,
    ellipse_array,
    largest_component_extent,
    mask_area,
    mask_extent,
    mask_from_array,
    mask_from_image_bytes,
    mask_to_array,
    point_pixel,
    region_problem,
    resize_nearest,
    union_array,
)
from u2eval.records import Box, Mask, Point, Regions


def _png(array: np.ndarray, mode: str | None = None) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buffer, format="PNG")
    return buffer.getvalue()


@settings(max_examples=200, deadline=None)
@given(arrays(np.bool_, st.tuples(st.integers(1, 12), st.integers(1, 12))))
def test_run_lengths_round_trip_and_count_the_area(pixels: np.ndarray) -> None:
    mask = mask_from_array(pixels)
    assert np.array_equal(mask_to_array(mask), pixels)
    assert mask_area(mask) == int(pixels.sum())
    assert sum(mask.counts) == pixels.size and all(c >= 0 for c in mask.counts)
    assert all(c > 0 for c in mask.counts[1:])  # only the leading zero run may be empty


def test_run_lengths_by_hand() -> None:
    # Row-major 2 x 3: [[1, 1, 0], [0, 1, 1]] -> zeros first (none), two ones, two zeros, two ones.
    assert mask_from_array([[1, 1, 0], [0, 1, 1]]).counts == [0, 2, 2, 2]
    assert mask_from_array([[0, 0], [0, 0]]).counts == [4]
    with pytest.raises(ValueError, match="2-D"):
        mask_from_array([1, 0, 1])
    with pytest.raises(ValueError, match="runs cover 5 pixels"):
        mask_to_array(Mask(width=2, height=2, counts=[2, 3]))


def test_extent_is_in_whole_pixels_and_none_when_empty() -> None:
    pixels = np.zeros((10, 20), dtype=bool)
    pixels[2:5, 4:9] = True  # rows 2-4, columns 4-8
    assert array_extent(pixels) == (4, 2, 8, 4)
    box = mask_extent(mask_from_array(pixels, label="lesion"))
    assert box == Box(x0=4 / 20, y0=2 / 10, x1=9 / 20, y1=5 / 10, label="lesion")
    assert mask_extent(mask_from_array(np.zeros((3, 3)))) is None


def test_nearest_resampling_by_hand() -> None:
    pixels = np.array([[True, False], [False, True]])
    assert np.array_equal(resize_nearest(pixels, 4, 4), np.kron(pixels, np.ones((2, 2), dtype=bool)))
    assert resize_nearest(pixels, 2, 2) is pixels
    # Down: each target pixel takes the source pixel under its centre (columns 1 and 3 of 0..3).
    wide = np.array([[False, True, False, False]])
    assert resize_nearest(wide, 2, 1).tolist() == [[True, False]]
    with pytest.raises(ValueError):
        resize_nearest(pixels, 0, 3)


def test_union_resamples_each_mask_to_the_target() -> None:
    small = mask_from_array([[1, 0], [0, 0]])
    big = mask_from_array(np.eye(4, dtype=bool))
    union = union_array([small, big], 4, 4)
    expected = np.eye(4, dtype=bool)
    expected[:2, :2] = True
    assert np.array_equal(union, expected)


def test_boxes_and_points_from_pixels_and_centre_format() -> None:
    assert box_from_pixels(30, 40, 10, 20, 100, 50) == Box(x0=0.1, y0=0.4, x1=0.3, y1=0.8)
    assert box_from_centre(0.5, 0.4, 0.2, 0.4) == Box(x0=0.4, y0=0.2, x1=0.6, y1=0.6000000000000001)
    with pytest.raises(ValueError):
        box_from_pixels(0, 0, 1, 1, 0, 10)
    assert point_pixel(Point(x=0.0, y=0.999), 10, 10) == (0, 9)
    assert point_pixel(Point(x=1.0, y=-0.5), 10, 10) == (9, 0)  # clamped into the image


def test_ellipse_fills_its_box_symmetrically() -> None:
    pixels = ellipse_array(Box(x0=0.2, y0=0.2, x1=0.8, y1=0.8), 50, 50)
    assert array_extent(pixels) == (10, 10, 39, 39)
    assert np.array_equal(pixels, pixels[::-1, ::-1])
    assert abs(pixels.sum() - np.pi * 15 * 15) < 2 * np.pi * 15  # area of a 30-pixel circle, within its rim
    assert not ellipse_array(Box(x0=0.5, y0=0.5, x1=0.5, y1=0.7), 10, 10).any()


def test_mask_images_in_every_encoding() -> None:
    truth = np.zeros((6, 8), dtype=bool)
    truth[1:4, 2:6] = True
    as_u8 = truth.astype(np.uint8)
    encodings = {
        "1-bit png": _png(truth),
        "0/255 png": _png(as_u8 * 255),
        "label map": _png(as_u8 * 2),
        "rgb png": _png(np.stack([as_u8 * 255, as_u8 * 0, as_u8 * 0], axis=2)),
        "rgba png, opaque everywhere": _png(np.stack([as_u8 * 255] * 3 + [np.full_like(as_u8, 255)], axis=2)),
    }
    npy = io.BytesIO()
    np.save(npy, as_u8)
    encodings["npy"] = npy.getvalue()
    for name, data in encodings.items():
        assert np.array_equal(mask_to_array(mask_from_image_bytes(data)), truth), name


def test_a_jpeg_mask_is_thresholded_not_taken_as_every_non_zero_pixel() -> None:
    ys, xs = np.ogrid[0:32, 0:32]
    truth = (xs - 15.3) ** 2 + (ys - 16.7) ** 2 <= 81  # a disc: its edges cut through the 8x8 JPEG blocks
    buffer = io.BytesIO()
    Image.fromarray(truth.astype(np.uint8) * 255).save(buffer, format="JPEG", quality=60)
    decoded = mask_to_array(mask_from_image_bytes(buffer.getvalue()))
    raw = np.asarray(Image.open(io.BytesIO(buffer.getvalue())))
    assert (raw[~truth] > 0).any()  # compression noise outside the disc...
    assert (decoded == truth).mean() > 0.98  # ...which the threshold removes


def test_unreadable_mask_bytes_say_why() -> None:
    with pytest.raises(ValueError, match="not a readable mask image"):
        mask_from_image_bytes(b"certainly not an image")
    with pytest.raises(ValueError, match="npy"):
        mask_from_image_bytes(b"\x93NUMPY garbage")


def test_a_palette_mask_is_read_by_its_colours_not_its_indices() -> None:
    truth = np.zeros((6, 8), dtype=bool)
    truth[1:4, 2:6] = True
    image = Image.fromarray(np.where(truth, 0, 1).astype(np.uint8), mode="P")  # index 1 outside, 0 inside
    image.putpalette([255, 255, 255, 0, 0, 0] + [0] * 762)  # index 0 is white, index 1 black
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    assert np.array_equal(mask_to_array(mask_from_image_bytes(buffer.getvalue())), truth)


def _components_by_flood_fill(pixels: np.ndarray) -> list[tuple[int, tuple[int, int, int, int]]]:
    """(area, (x0, y0, x1, y1) inclusive) of each 8-connected component, in raster order of first pixel."""
    seen = np.zeros_like(pixels, dtype=bool)
    out = []
    height, width = pixels.shape
    for y in range(height):
        for x in range(width):
            if not pixels[y, x] or seen[y, x]:
                continue
            stack, members = [(y, x)], []
            seen[y, x] = True
            while stack:
                cy, cx = stack.pop()
                members.append((cy, cx))
                for ny in range(cy - 1, cy + 2):
                    for nx in range(cx - 1, cx + 2):
                        if 0 <= ny < height and 0 <= nx < width and pixels[ny, nx] and not seen[ny, nx]:
                            seen[ny, nx] = True
                            stack.append((ny, nx))
            ys, xs = zip(*members, strict=True)
            out.append((len(members), (min(xs), min(ys), max(xs), max(ys))))
    return out


@settings(max_examples=300, deadline=None)
@given(arrays(np.bool_, st.tuples(st.integers(1, 14), st.integers(1, 14))))
def test_the_largest_component_matches_a_flood_fill(pixels: np.ndarray) -> None:
    got = largest_component_extent(mask_from_array(pixels))
    components = _components_by_flood_fill(pixels)
    if not components:
        assert got is None
        return
    area, (x0, y0, x1, y1) = max(components, key=lambda c: c[0])  # max keeps the first of equal ones
    height, width = pixels.shape
    assert got is not None
    assert (got.x0, got.y0, got.x1, got.y1) == (x0 / width, y0 / height, (x1 + 1) / width, (y1 + 1) / height)


def test_diagonal_neighbours_are_one_component() -> None:
    pixels = np.zeros((4, 4), dtype=bool)
    pixels[0, 0] = pixels[1, 1] = pixels[2, 2] = True  # a diagonal line: one component of 3
    pixels[0, 3] = True
    assert largest_component_extent(mask_from_array(pixels)) == Box(x0=0.0, y0=0.0, x1=0.75, y1=0.75)


def test_what_makes_regions_unplaceable() -> None:
    good = Regions(
        boxes=[Box(x0=0.0, y0=0.1, x1=1.0, y1=1.0 + 1e-12)],  # a few ulps past 1: float noise, accepted
        points=[Point(x=0.0, y=1.0)],
        masks=[Mask(width=2, height=1, counts=[1, 1])],
    )
    assert region_problem(good) is None
    bad = {
        "not finite": Regions(boxes=[Box(x0=float("nan"), y0=0, x1=1, y1=1)]),
        "score": Regions(boxes=[Box(x0=0, y0=0, x1=1, y1=1, score=float("inf"))]),
        "outside": Regions(boxes=[Box(x0=-0.01, y0=0, x1=0.5, y1=0.5)]),
        "reversed": Regions(boxes=[Box(x0=0.6, y0=0, x1=0.5, y1=0.5)]),
        "beyond": Regions(boxes=[Box(x0=0, y0=0, x1=1.001, y1=0.5)]),
        "point": Regions(points=[Point(x=0.5, y=float("nan"))]),
        "point outside": Regions(points=[Point(x=1.5, y=0.5)]),
        "empty mask": Regions(masks=[Mask(width=0, height=0, counts=[])]),
        "short runs": Regions(masks=[Mask(width=2, height=2, counts=[1, 1])]),
        "negative run": Regions(masks=[Mask(width=2, height=1, counts=[3, -1])]),
        "unreadable": Regions(unreadable="stored regions do not load (x)"),
    }
    for name, regions in bad.items():
        assert region_problem(regions) is not None, name
