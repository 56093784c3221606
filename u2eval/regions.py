"""Region records to and from arrays: run-length masks, pixel boxes and points made relative, mask images.

Pure functions over ``u2eval.records`` Box / Point / Mask, so adapters (which get tensors or pixel
coordinates), the box-convention parsers, the synthetic data and the grounded scorer share one encoding.
Coordinates are normalised (0-1, origin top left, x right, y down); pixel ``j`` covers ``[j, j + 1)``, so a
mask's extent ``[x0, x1]`` in pixels is the box ``[x0 / W, (x1 + 1) / W]``.
"""

from __future__ import annotations

import io

import numpy as np
import numpy.typing as npt
from PIL import Image

from u2eval.records import Box, Mask, Point

BoolArray = npt.NDArray[np.bool_]

# The image formats a mask cell may come in: lossless ones keep every non-zero pixel; a JPEG mask (lossy)
# is thresholded at mid grey, since compression turns a clean 0 into 1-3 around edges.
_LOSSY_FORMATS = frozenset({"JPEG"})
_NPY_MAGIC = b"\x93NUMPY"
_MAX_MASK_PIXELS = 200_000_000  # 8-bit masks of that size take 200 MB: anything larger is refused, not decoded


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


def point_from_pixels(x: float, y: float, width: int, height: int, label: str | None = None) -> Point:
    """A point in pixel coordinates -> normalised."""
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width} x {height}")
    return Point(x=x / width, y=y / height, label=label)


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
            if img.width * img.height > _MAX_MASK_PIXELS:
                raise ValueError(f"mask of {img.width} x {img.height} pixels is too large")
            img.load()
            pixels: npt.NDArray[np.generic] = np.asarray(img)
            alpha = img.mode in ("RGBA", "LA", "PA")
    except (OSError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ValueError(f"not a readable mask image ({exc})") from exc
    if pixels.ndim == 3 and alpha:
        pixels = pixels[..., :-1]  # opacity says nothing about the structure
    if pixels.ndim == 3:
        pixels = np.asarray(pixels.max(axis=2) if fmt in _LOSSY_FORMATS else pixels.any(axis=2))
    inside = np.greater_equal(pixels, 128) if fmt in _LOSSY_FORMATS else np.not_equal(pixels, 0)
    return mask_from_array(inside, label)
