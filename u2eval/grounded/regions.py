"""Region records to and from arrays: run-length masks, pixel boxes and points made relative, mask images.

Pure functions over ``u2eval.records`` Box / Point / Mask, so adapters (which get tensors or pixel
coordinates), the box-convention parsers, the synthetic data and the grounded scorer share one encoding.
Coordinates are normalised (0-1, origin top left, x right, y down); pixel ``j`` covers ``[j, j + 1)``, so a
mask's extent ``[x0, x1]`` in pixels is the box ``[x0 / W, (x1 + 1) / W]``.
"""

from __future__ import annotations

import functools
import io
import math

import numpy as np
import numpy.typing as npt
from PIL import Image

from u2eval.records import Box, Mask, Point, Regions

BoolArray = npt.NDArray[np.bool_]

# The image formats a mask cell may come in: lossless ones keep every non-zero pixel; a JPEG mask (lossy)
# is thresholded at mid grey, since compression turns a clean 0 into 1-3 around edges.
_LOSSY_FORMATS = frozenset({"JPEG"})
_NPY_MAGIC = b"\x93NUMPY"
MAX_MASK_PIXELS = 200_000_000  # 8-bit masks of that size take 200 MB: anything larger is refused, not decoded
# How far outside 0-1 a normalised coordinate may be and still count as on the image: centre +- half size,
# or pixel / size, can land a few ulps past 0 or 1; 1e-9 of the image is 1e-5 pixel on a 10000-pixel side,
# so no real region hides in it. Such a value is used as it is, never clipped.
COORDINATE_TOLERANCE = 1e-9


def mask_from_array(array: npt.ArrayLike, label: str | None = None) -> Mask:
    """A 2-D array (anything non-zero is inside) -> run lengths over its row-major pixels, zeros first."""
    pixels = np.asarray(array)
    if pixels.ndim != 2:
        raise ValueError(f"a mask must be 2-D, got shape {pixels.shape}")
    height, width = pixels.shape
    flat = pixels.reshape(-1) != 0
    if flat.size == 0:
        return Mask(width=width, height=height, counts=[], label=label)
    # Positions where the value changes start a new run; the first run is zeros by convention.
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate(([0], changes, [flat.size]))
    counts = np.diff(bounds).tolist()
    if flat[0]:
        counts.insert(0, 0)
    return Mask(width=width, height=height, counts=[int(c) for c in counts], label=label)


def mask_to_array(mask: Mask) -> BoolArray:
    """The boolean (height, width) array of a run-length mask; a bad run total is an error, not a guess."""
    total = sum(mask.counts)
    if total != mask.width * mask.height or any(c < 0 for c in mask.counts):
        raise ValueError(f"mask runs cover {total} pixels, the mask has {mask.width} x {mask.height}")
    values = np.arange(len(mask.counts)) % 2 == 1  # runs alternate zeros, ones, zeros, ...
    return np.repeat(values, mask.counts).reshape(mask.height, mask.width)


def mask_area(mask: Mask) -> int:
    """Pixels inside the mask (the odd runs), without building the array."""
    return sum(mask.counts[1::2])


def box_from_pixels(
    x0: float, y0: float, x1: float, y1: float, width: int, height: int, label: str | None = None
) -> Box:
    """A box in pixel coordinates of a ``width`` x ``height`` image -> normalised, corners ordered."""
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width} x {height}")
    left, right = sorted((x0 / width, x1 / width))
    top, bottom = sorted((y0 / height, y1 / height))
    return Box(x0=left, y0=top, x1=right, y1=bottom, label=label)


def box_from_centre(cx: float, cy: float, w: float, h: float, label: str | None = None) -> Box:
    """A box given as normalised centre, width and height (the ``gt_bbox`` encoding) -> corners."""
    return Box(x0=cx - w / 2, y0=cy - h / 2, x1=cx + w / 2, y1=cy + h / 2, label=label)


def box_centre(box: Box) -> tuple[float, float]:
    return (box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2


def array_extent(pixels: BoolArray) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) of the pixels set, inclusive; None for an empty array."""
    rows = np.flatnonzero(pixels.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(pixels.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1])


def mask_extent(mask: Mask) -> Box | None:
    """The tightest normalised box around the mask's pixels (whole pixels); None for an empty mask."""
    if mask_area(mask) == 0:
        return None
    extent = array_extent(mask_to_array(mask))
    assert extent is not None
    x0, y0, x1, y1 = extent
    return box_from_pixels(x0, y0, x1 + 1, y1 + 1, mask.width, mask.height, label=mask.label)


def _row_runs(pixels: BoolArray) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """(row, first column, end column exclusive) of every horizontal run of set pixels, in raster order."""
    height, width = pixels.shape
    padded = np.zeros((height, width + 2), dtype=np.int8)
    padded[:, 1:-1] = pixels
    steps = np.diff(padded, axis=1)
    rows, starts = np.nonzero(steps == 1)
    _, ends = np.nonzero(steps == -1)
    return rows, starts, ends


def largest_component_extent(mask: Mask) -> Box | None:
    """The extent (as ``mask_extent``) of the mask's largest 8-connected component; of equal ones, the first
    in raster order. None for an empty mask. Horizontal runs of pixels are joined to the touching runs of the
    row above, so the cost follows the number of runs, not of pixels (a case asks for it several times:
    the last few answers are kept)."""
    if mask_area(mask) == 0:
        return None
    return _largest_component_extent(mask.width, mask.height, tuple(mask.counts), mask.label)


@functools.lru_cache(maxsize=8)
def _largest_component_extent(width: int, height: int, counts: tuple[int, ...], label: str | None) -> Box:
    mask = Mask(width=width, height=height, counts=list(counts), label=label)
    row_arr, start_arr, end_arr = _row_runs(mask_to_array(mask))
    rows, starts, ends = row_arr.tolist(), start_arr.tolist(), end_arr.tolist()
    parent = list(range(len(rows)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    edges = [0, *(np.flatnonzero(np.diff(row_arr)) + 1).tolist(), len(rows)]
    for above, first, last in zip(edges, edges[1:], edges[2:], strict=False):  # rows: the one above, this one
        if rows[first] != rows[above] + 1:
            continue  # an empty row between: nothing above touches
        k = above
        for i in range(first, last):  # both rows' runs are sorted: a two-pointer walk
            while k < first and ends[k] < starts[i]:
                k += 1
            j = k
            while j < first and starts[j] <= ends[i]:  # spans touch, diagonals included
                a, b = root(i), root(j)
                parent[max(a, b)] = min(a, b)  # a component's root is its first run in raster order
                j += 1
    area: dict[int, int] = {}
    extent: dict[int, list[int]] = {}
    for i, (row, start, end) in enumerate(zip(rows, starts, ends, strict=True)):
        r = root(i)
        area[r] = area.get(r, 0) + end - start
        box = extent.setdefault(r, [start, row, end, row + 1])
        box[0], box[2], box[3] = min(box[0], start), max(box[2], end), row + 1
    best = min(area, key=lambda r: (-area[r], r))
    x0, y0, x1, y1 = extent[best]
    return box_from_pixels(x0, y0, x1, y1, mask.width, mask.height, label=mask.label)


def region_problem(regions: Regions) -> str | None:
    """Why a prediction's regions cannot be placed on the image, or None when every one can: coordinates
    finite and within 0-1 (``COORDINATE_TOLERANCE``), boxes with ``x0 <= x1`` and ``y0 <= y1``, masks of at
    least 1 x 1 pixel (at most ``MAX_MASK_PIXELS``) whose runs are non-negative and cover it exactly."""
    if regions.unreadable is not None:
        return regions.unreadable
    low, high, slack = -COORDINATE_TOLERANCE, 1 + COORDINATE_TOLERANCE, COORDINATE_TOLERANCE
    for n, box in enumerate(regions.boxes, start=1):
        values = (box.x0, box.y0, box.x1, box.y1)
        shown = ", ".join(f"{v:g}" for v in values)
        if not all(math.isfinite(v) for v in values) or (box.score is not None and not math.isfinite(box.score)):
            return f"box {n} [{shown}] has a number that is not finite"
        inside = all(low <= v <= high for v in values)
        if not (inside and box.x0 <= box.x1 + slack and box.y0 <= box.y1 + slack):
            return f"box {n} [{shown}] is not a box on the image (0 <= x0 <= x1 <= 1, 0 <= y0 <= y1 <= 1)"
    for n, point in enumerate(regions.points, start=1):
        if not all(math.isfinite(v) and low <= v <= high for v in (point.x, point.y)):
            return f"point {n} ({point.x:g}, {point.y:g}) is not a point on the image (0-1)"
    for n, mask in enumerate(regions.masks, start=1):
        if mask.width < 1 or mask.height < 1 or mask.width * mask.height > MAX_MASK_PIXELS:
            return f"mask {n} of {mask.width} x {mask.height} pixels is not a usable size"
        if any(c < 0 for c in mask.counts):
            return f"mask {n} has a negative run length"
        if sum(mask.counts) != mask.width * mask.height:
            return f"mask {n}: its runs cover {sum(mask.counts)} pixels, it has {mask.width} x {mask.height}"
    return None


def resize_nearest(pixels: BoolArray, width: int, height: int) -> BoolArray:
    """A boolean array resampled to (height, width) by nearest neighbour on pixel centres."""
    src_h, src_w = pixels.shape
    if (src_w, src_h) == (width, height):
        return pixels
    if width <= 0 or height <= 0 or src_w == 0 or src_h == 0:
        raise ValueError(f"cannot resample a {src_w} x {src_h} mask to {width} x {height}")
    # Integer arithmetic: the source pixel whose span holds the target pixel's centre.
    rows = (np.arange(height, dtype=np.int64) * 2 + 1) * src_h // (2 * height)
    cols = (np.arange(width, dtype=np.int64) * 2 + 1) * src_w // (2 * width)
    resized: BoolArray = pixels[rows[:, None], cols[None, :]]
    return resized


def union_array(masks: list[Mask], width: int, height: int) -> BoolArray:
    """The union of masks as one (height, width) array, each resampled to that size first."""
    out = np.zeros((height, width), dtype=np.bool_)
    for mask in masks:
        out |= resize_nearest(mask_to_array(mask), width, height)
    return out


def ellipse_array(box: Box, width: int, height: int) -> BoolArray:
    """The pixels whose centres fall inside the ellipse inscribed in a normalised box."""
    cx, cy = box_centre(box)
    rx, ry = (box.x1 - box.x0) * width / 2, (box.y1 - box.y0) * height / 2
    ys, xs = np.ogrid[0:height, 0:width]
    if rx <= 0 or ry <= 0:
        return np.zeros((height, width), dtype=np.bool_)
    dx = (xs + 0.5 - cx * width) / rx
    dy = (ys + 0.5 - cy * height) / ry
    return np.asarray(dx * dx + dy * dy <= 1.0)


def point_pixel(point: Point, width: int, height: int) -> tuple[int, int]:
    """The (column, row) of the pixel holding a normalised point, clamped into the image."""
    col = min(max(int(np.floor(point.x * width)), 0), width - 1)
    row = min(max(int(np.floor(point.y * height)), 0), height - 1)
    return col, row


def mask_from_image_bytes(data: bytes, label: str | None = None) -> Mask:
    """A mask stored as an image (PNG, BMP, GIF, TIFF, WebP, JPEG) or a NumPy ``.npy`` array -> run lengths.

    Any non-zero pixel (in any channel) is inside; a JPEG is thresholded at 128 because it is lossy. Label
    maps (0 = background, 1..k = structures) therefore give the union of their structures. Raises
    ValueError with the reason when the bytes are none of these.
    """
    if data.startswith(_NPY_MAGIC):
        try:
            array = np.load(io.BytesIO(data), allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise ValueError(f"unreadable .npy mask: {exc}") from exc
        if array.ndim == 3:  # channels last or first: any channel set counts
            array = array.any(axis=2 if array.shape[2] <= 4 else 0)
        return mask_from_array(array, label)
    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt = img.format or ""
            if img.width * img.height > MAX_MASK_PIXELS:
                raise ValueError(f"mask of {img.width} x {img.height} pixels is too large")
            img.load()
            # A palette image by its colours, not its palette indices (index 0 may well be white).
            decoded = img.convert("RGB") if img.mode in ("P", "PA") else img
            pixels: npt.NDArray[np.generic] = np.asarray(decoded)
            alpha = decoded.mode in ("RGBA", "LA")
    except (OSError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ValueError(f"not a readable mask image ({exc})") from exc
    if pixels.ndim == 3 and alpha:
        pixels = pixels[..., :-1]  # opacity says nothing about the structure
    if pixels.ndim == 3:
        pixels = np.asarray(pixels.max(axis=2) if fmt in _LOSSY_FORMATS else pixels.any(axis=2))
    inside = np.greater_equal(pixels, 128) if fmt in _LOSSY_FORMATS else np.not_equal(pixels, 0)
    return mask_from_array(inside, label)
