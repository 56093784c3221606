"""Region records to and from arrays: run-length masks, pixel boxes and points made relative.

Pure functions over ``u2eval.records`` Box / Point / Mask, so adapters (which get tensors or pixel
coordinates) and the grounded scorer (which wants arrays) share one encoding.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from u2eval.records import Box, Mask, Point

BoolArray = npt.NDArray[np.bool_]


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
