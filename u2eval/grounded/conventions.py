"""The readers and writers of each box convention (the registry and its rules: ``u2eval.grounded.boxes``).

Readers return regions normalised to 0-1 of the image, or raise :class:`Ungroundable`; writers write
regions as a model of that family would (for the stand-in model and round-trip tests).
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
import re
import warnings

import numpy as np
from PIL import Image

from u2eval.grounded.box_syntax import (
    PAIR,
    SEP,
    BoxConvention,
    Frame,
    Ungroundable,
    check_range,
    coordinates_of,
    double_bracket_boxes,
    item_label,
    json_objects,
    label_before,
    need_frame,
    ordered_box,
    plain_boxes,
    points_as_boxes,
    ref_labels,
    scaled_text,
    to_floats,
)
from u2eval.grounded.regions import mask_from_array, mask_to_array
from u2eval.records import Box, Mask, Point, Regions

# ---------------------------------------------------------------------------------- shared syntaxes


# ------------------------------------------------------------------------------------- conventions


def read_pixels(text: str, conv: BoxConvention, frame: Frame | None) -> Regions:
    width, height = need_frame(frame, "pixels")
    return plain_boxes(text, width, height, "pixels of the image sent")


def write_pixels(regions: Regions, conv: BoxConvention, frame: Frame | None) -> str:
    width, height = need_frame(frame, "pixels")
    parts = []
    for b in regions.boxes:
        x0, x1, y0, y1 = (
            scaled_text(b.x0, width),
            scaled_text(b.x1, width),
            scaled_text(b.y0, height),
            scaled_text(b.y1, height),
        )
        parts.append(f"[{x0}, {y0}, {x1}, {y1}]")
    parts += [f"({scaled_text(p.x, width)}, {scaled_text(p.y, height)})" for p in regions.points]
    return " ".join(parts)


def read_relative(text: str, conv: BoxConvention, frame: Frame | None) -> Regions:
    return plain_boxes(text, 1.0, 1.0, "relative 0-1")


def write_relative(regions: Regions, conv: BoxConvention, frame: Frame | None) -> str:
    parts = [f"[{b.x0:.4f}, {b.y0:.4f}, {b.x1:.4f}, {b.y1:.4f}]" for b in regions.boxes]
    parts += [f"({p.x:.4f}, {p.y:.4f})" for p in regions.points]
    return " ".join(parts)


_QWEN2_CORNERS = re.compile(rf"\({PAIR}\){SEP}\({PAIR}\)(?:\s*<\|box_end\|>)?")
_QWEN2_REF = ("<|object_ref_start|>", "<|object_ref_end|>")


def read_qwen2(text: str, conv: BoxConvention, frame: Frame | None) -> Regions:
    labels = ref_labels(text, _QWEN2_REF)
    boxes = []
    for match in _QWEN2_CORNERS.finditer(text):
        x1, y1, x2, y2 = to_floats(match.groups())
        check_range([x1, y1, x2, y2], 0, 1000, "qwen2-vl 0-1000")
        label = label_before(text, match.start(), labels, skip="<|box_start|>")
        boxes.append(ordered_box(x1 / 1000, y1 / 1000, x2 / 1000, y2 / 1000, label))
    return Regions(boxes=boxes, source="text")


def write_qwen2(regions: Regions, conv: BoxConvention, frame: Frame | None) -> str:
    parts = []
    for b in points_as_boxes(regions):
        ref = f"<|object_ref_start|>{b.label}<|object_ref_end|>" if b.label else ""
        x0, y0, x1, y1 = (scaled_text(v, 1000) for v in (b.x0, b.y0, b.x1, b.y1))
        corners = f"({x0},{y0}),({x1},{y1})"
        parts.append(f"{ref}<|box_start|>{corners}<|box_end|>")
    return " ".join(parts)


def smart_resize(
    width: int, height: int, factor: int = 28, min_pixels: int = 3136, max_pixels: int = 12845056
) -> Frame:
    """The (width, height) the Qwen2-VL / Qwen2.5-VL image processor resizes an image to: each side a
    multiple of ``factor`` (rounded half to even), then scaled down to at most ``max_pixels`` or up to at
    least ``min_pixels`` keeping the aspect ratio."""
    if width <= 0 or height <= 0:
        raise Ungroundable(f"image size {width} x {height} is not positive")
    if max(width, height) / min(width, height) > 200:
        raise Ungroundable(f"aspect ratio of {width} x {height} exceeds the processor's limit of 200")
    new_h = max(factor, round(height / factor) * factor)
    new_w = max(factor, round(width / factor) * factor)
    if new_h * new_w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        new_h = max(factor, math.floor(height / beta / factor) * factor)
        new_w = max(factor, math.floor(width / beta / factor) * factor)
    elif new_h * new_w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        new_h = math.ceil(height * beta / factor) * factor
        new_w = math.ceil(width * beta / factor) * factor
    return new_w, new_h


def qwen25_frame(conv: BoxConvention, frame: Frame | None) -> Frame:
    width, height = need_frame(frame, "qwen2.5-vl")
    p = conv.params
    return smart_resize(width, height, p["factor"], p["min_pixels"], p["max_pixels"])


def read_qwen25(text: str, conv: BoxConvention, frame: Frame | None) -> Regions:
    width, height = qwen25_frame(conv, frame)
    what = f"qwen2.5-vl pixels of the {width} x {height} model input"
    boxes, points = [], []
    for item in json_objects(text):
        label = item_label(item)
        if (quad := coordinates_of(item, "bbox_2d", 4)) is not None:
            x1, y1, x2, y2 = quad
            check_range([x1, x2], 0, width, what)
            check_range([y1, y2], 0, height, what)
            boxes.append(ordered_box(x1 / width, y1 / height, x2 / width, y2 / height, label))
        if (pair := coordinates_of(item, "point_2d", 2)) is not None:
            x, y = pair
            check_range([x], 0, width, what)
            check_range([y], 0, height, what)
            points.append(Point(x=x / width, y=y / height, label=label))
    return Regions(boxes=boxes, points=points, source="text")


def write_qwen25(regions: Regions, conv: BoxConvention, frame: Frame | None) -> str:
    width, height = qwen25_frame(conv, frame)
    items: list[dict[str, object]] = []
    for b in regions.boxes:
        box = [round(b.x0 * width), round(b.y0 * height), round(b.x1 * width), round(b.y1 * height)]
        items.append({"bbox_2d": box, **({"label": b.label} if b.label else {})})
    for p in regions.points:
        items.append({"point_2d": [round(p.x * width), round(p.y * height)], **({"label": p.label} if p.label else {})})
    return "```json\n" + json.dumps(items, ensure_ascii=False) + "\n```"


def read_internvl(text: str, conv: BoxConvention, frame: Frame | None) -> Regions:
    return double_bracket_boxes(text, ("<ref>", "</ref>"), ("<box>", "</box>"), 1000, "internvl 0-1000")


def _format_double(regions: Regions, ref: tuple[str, str], det: tuple[str, str], scale: int) -> str:
    parts = []
    for b in points_as_boxes(regions):
        quad = ", ".join(scaled_text(v, scale) for v in (b.x0, b.y0, b.x1, b.y1))
        parts.append(f"{ref[0]}{b.label or 'region'}{ref[1]}{det[0]}[[{quad}]]{det[1]}")
    return " ".join(parts)


def write_internvl(regions: Regions, conv: BoxConvention, frame: Frame | None) -> str:
    return _format_double(regions, ("<ref>", "</ref>"), ("<box>", "</box>"), 1000)


_DS_REF = ("<|ref|>", "<|/ref|>")
_DS_DET = ("<|det|>", "<|/det|>")


def read_deepseek(text: str, conv: BoxConvention, frame: Frame | None) -> Regions:
    return double_bracket_boxes(text, _DS_REF, _DS_DET, 999, "deepseek-vl2 0-999")


def write_deepseek(regions: Regions, conv: BoxConvention, frame: Frame | None) -> str:
    return _format_double(regions, _DS_REF, _DS_DET, 999)


_DATA_URI = re.compile(r"^data:image/[a-z]+;base64,(.*)$", re.DOTALL)
_GEMINI_MASK_THRESHOLD = 127  # the probability map is 0-255; above this is inside
# A Gemini mask covers its box only, so it never needs more pixels than a large image: anything bigger is
# refused before it is decoded (a 20000 x 20000 1-bit PNG is 50 kB of base64 and 400 MB decoded).
GEMINI_MASK_MAX_PIXELS = 4096 * 4096


def _gemini_mask(uri: str, box: Box, frame: Frame | None, label: str | None) -> Mask:
    """A Gemini mask: a probability PNG covering the box only, resized to the box's pixels and placed."""
    width, height = need_frame(frame, "gemini mask")
    found = _DATA_URI.match(uri.strip())
    if found is None:
        raise Ungroundable("gemini mask is not a base64 image data URI")
    try:
        data = base64.b64decode(found.group(1), validate=False)
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))  # reads the header only
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise Ungroundable(f"gemini mask image is too large ({exc})") from exc
    except (OSError, ValueError, binascii.Error) as exc:
        raise Ungroundable(f"gemini mask image is unreadable ({exc})") from exc
    with img:
        if img.width * img.height > GEMINI_MASK_MAX_PIXELS:
            raise Ungroundable(f"gemini mask of {img.width} x {img.height} pixels is too large")
        try:
            probability = img.convert("L")
        except (OSError, ValueError) as exc:
            raise Ungroundable(f"gemini mask image is unreadable ({exc})") from exc
    x0, y0 = int(box.x0 * width), int(box.y0 * height)
    x1, y1 = int(box.x1 * width), int(box.y1 * height)
    full = np.zeros((height, width), dtype=np.bool_)
    if x1 > x0 and y1 > y0:
        resized = np.asarray(probability.resize((x1 - x0, y1 - y0), Image.Resampling.BILINEAR))
        full[y0:y1, x0:x1] = resized > _GEMINI_MASK_THRESHOLD
    return mask_from_array(full, label)


def read_gemini(text: str, conv: BoxConvention, frame: Frame | None) -> Regions:
    """Boxes, points and masks of Gemini's JSON. A mask that cannot be used (no image size, unreadable, too
    large) is left out with a note: its box needs none of that and still places the answer."""
    boxes, points, masks, notes = [], [], [], []
    for item in json_objects(text):
        label = item_label(item)
        if (quad := coordinates_of(item, "box_2d", 4)) is not None:
            ymin, xmin, ymax, xmax = quad
            check_range([ymin, xmin, ymax, xmax], 0, 1000, "gemini 0-1000")
            box = ordered_box(xmin / 1000, ymin / 1000, xmax / 1000, ymax / 1000, label)
            boxes.append(box)
            uri = item.get("mask")
            if isinstance(uri, str):
                try:
                    masks.append(_gemini_mask(uri, box, frame, label))
                except Ungroundable as exc:
                    notes.append(f"mask left out: {exc}")
        if (pair := coordinates_of(item, "point", 2)) is not None:
            y, x = pair
            check_range([y, x], 0, 1000, "gemini 0-1000")
            points.append(Point(x=x / 1000, y=y / 1000, label=label))
    return Regions(boxes=boxes, masks=masks, points=points, source="text", notes=notes)


def _gemini_mask_uri(mask: Mask, box: Box) -> str | None:
    """A mask as Gemini writes it: the box's window of the mask as a 0/255 PNG."""
    pixels = mask_to_array(mask)
    x0, y0 = int(box.x0 * mask.width), int(box.y0 * mask.height)
    x1, y1 = int(box.x1 * mask.width), int(box.y1 * mask.height)
    if x1 <= x0 or y1 <= y0:
        return None
    window = pixels[y0:y1, x0:x1].astype(np.uint8) * 255
    buffer = io.BytesIO()
    Image.fromarray(window, mode="L").save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def write_gemini(regions: Regions, conv: BoxConvention, frame: Frame | None) -> str:
    items: list[dict[str, object]] = []
    for i, b in enumerate(regions.boxes):
        item: dict[str, object] = {"box_2d": [round(v * 1000) for v in (b.y0, b.x0, b.y1, b.x1)]}
        if i < len(regions.masks):
            uri = _gemini_mask_uri(regions.masks[i], b)
            if uri is not None:
                item["mask"] = uri
        items.append(item | ({"label": b.label} if b.label else {}))
    for p in regions.points:
        items.append({"point": [round(p.y * 1000), round(p.x * 1000)], **({"label": p.label} if p.label else {})})
    return "```json\n" + json.dumps(items, ensure_ascii=False) + "\n```"
