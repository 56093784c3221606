"""Masks drawn on a case's image: a run-length mask (the truth's ``seg_data``, or the regions an answer
carried) made a small PNG, one colour where the mask is on and transparent elsewhere, as a data URL the page
lays over the image at its own size. A mask's pixels are drawn, not its extent."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence

import numpy as np
from PIL import Image

from u2eval.grounded.regions import mask_to_array
from u2eval.records import Mask

TRUTH_RGB = (0, 255, 110)
ANSWER_RGB = (255, 150, 0)


def mask_data_url(masks: Sequence[Mask], rgb: tuple[int, int, int]) -> str | None:
    """The union of ``masks`` (each at its own size, the first one's size for all) as a PNG data URL; None for
    no mask or an empty one."""
    if not masks:
        return None
    width, height = masks[0].width, masks[0].height
    on = np.zeros((height, width), dtype=bool)
    for mask in masks:
        pixels = mask_to_array(mask)
        if pixels.shape == on.shape:
            on |= pixels
    if not on.any():
        return None
    # Two colours, the first transparent: a 1-bit palette PNG, small and quick to encode (an RGBA one of a
    # full-size mask took 16 ms, most of a view's time on a grounded run).
    drawn = Image.fromarray(on.astype(np.uint8), mode="P")
    drawn.putpalette([0, 0, 0, *rgb])
    buffer = io.BytesIO()
    drawn.save(buffer, format="PNG", transparency=0, bits=1)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
