"""The readers and writers of each box convention (the registry and its rules: ``u2eval.box_parsing``).

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
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np
from PIL import Image

from u2eval.records import Box, Mask, Point, Regions
from u2eval.regions import mask_from_array, mask_to_array

Frame = tuple[int, int]  # (width, height) in pixels of the image the model was sent


class Ungroundable(ValueError):
    """An answer whose regions cannot be placed on the image; the message says why."""


@dataclass(frozen=True)
class BoxConvention:
    """A chosen convention and its parameters (each one given or defaulted); ``spec`` is its canonical name."""

    name: str
    params: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    defaults: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def spec(self) -> str:
        """The name, then the parameters that differ from their defaults: one spelling per convention."""
        changed = {k: v for k, v in sorted(self.params.items()) if self.defaults.get(k) != v}
        return self.name + (":" + ",".join(f"{k}={v}" for k, v in changed.items()) if changed else "")


_NUM = r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?"
_SEP = r"\s*,\s*"
_QUAD = rf"\s*({_NUM}){_SEP}({_NUM}){_SEP}({_NUM}){_SEP}({_NUM})\s*"
_PAIR = rf"\s*({_NUM}){_SEP}({_NUM})\s*"
_OBJECT = re.compile(r"\{[^{}]*\}")  # the flat JSON objects models write per region
_JSON_STRING = r'"((?:[^"\\]|\\.)*)"'


def _key_numbers(key: str, count: int) -> re.Pattern[str]:
    body = _QUAD if count == 4 else _PAIR
    return re.compile(rf'"{key}"\s*:\s*\[{body}\]')


def _key_string(key: str) -> re.Pattern[str]:
    return re.compile(rf'"{key}"\s*:\s*{_JSON_STRING}', re.DOTALL)


def _json_text(raw: str) -> str:
    try:
        value = json.loads(f'"{raw}"')
    except json.JSONDecodeError:
        return raw
    return value if isinstance(value, str) else raw


def _numbers(groups: tuple[str | None, ...]) -> list[float]:
    values = [float(g) for g in groups if g is not None]
    if not all(math.isfinite(v) for v in values):
        raise Ungroundable("a coordinate is not a finite number")
    return values


def _in_range(values: list[float], low: float, high: float, what: str) -> None:
    for value in values:
        if not low <= value <= high:
            raise Ungroundable(f"coordinate {value:g} is outside {low:g}-{high:g} ({what})")


def _need_frame(frame: Frame | None, name: str) -> Frame:
    if frame is None or frame[0] <= 0 or frame[1] <= 0:
        raise Ungroundable(f"{name} coordinates are pixels, but the image size is unknown")
    return frame


def _label(text: str | None) -> str | None:
    label = (text or "").strip()
    return label or None


# ---------------------------------------------------------------------------------- shared syntaxes


_BRACKET_QUAD = re.compile(rf"[\[(]{_QUAD}[\])]")
_BRACKET_PAIR = re.compile(rf"[\[(]{_PAIR}[\])]")


def _plain(text: str, scale_x: float, scale_y: float, what: str) -> Regions:
    """``[x1, y1, x2, y2]`` boxes and ``(x, y)`` points anywhere in the text, divided by the scales."""
    boxes = []
    for match in _BRACKET_QUAD.finditer(text):
        x1, y1, x2, y2 = _numbers(match.groups())
        _in_range([x1, x2], 0, scale_x, what)
        _in_range([y1, y2], 0, scale_y, what)
        boxes.append(_ordered(x1 / scale_x, y1 / scale_y, x2 / scale_x, y2 / scale_y))
    points = []
    for match in _BRACKET_PAIR.finditer(_BRACKET_QUAD.sub(" ", text)):
        x, y = _numbers(match.groups())
        _in_range([x], 0, scale_x, what)
        _in_range([y], 0, scale_y, what)
        points.append(Point(x=x / scale_x, y=y / scale_y))
    return Regions(boxes=boxes, points=points, source="text")


def _ordered(x1: float, y1: float, x2: float, y2: float, label: str | None = None) -> Box:
    left, right = sorted((x1, x2))
    top, bottom = sorted((y1, y2))
    return Box(x0=left, y0=top, x1=right, y1=bottom, label=label)


def _double_bracket(text: str, ref: tuple[str, str], det: tuple[str, str], scale: float, what: str) -> Regions:
    """``<ref>label</ref><det>[[x1,y1,x2,y2], ...]</det>`` with the tags optional (InternVL, DeepSeek-VL2)."""
    pattern = re.compile(
        rf"(?:{ref[0]}(.*?){ref[1]}\s*)?(?:{det[0]}\s*)?\[((?:\s*\[{_QUAD}\]\s*,?)+)\](?:\s*{det[1]})?", re.DOTALL
    )
    boxes = []
    for match in pattern.finditer(text):
        label = _label(match.group(1))
        for quad in re.finditer(rf"\[{_QUAD}\]", match.group(2)):
            x1, y1, x2, y2 = _numbers(quad.groups())
            _in_range([x1, y1, x2, y2], 0, scale, what)
            boxes.append(_ordered(x1 / scale, y1 / scale, x2 / scale, y2 / scale, label))
    return Regions(boxes=boxes, source="text")


def _fmt(value: float) -> str:
    return str(round(value)) if float(value).is_integer() else f"{value:.4f}".rstrip("0").rstrip(".")


def _points_as_boxes(regions: Regions) -> list[Box]:
    """Box-only conventions: every box, then each mask-less point as a zero-size box (its centre stays)."""
    return [*regions.boxes, *(Box(x0=p.x, y0=p.y, x1=p.x, y1=p.y, label=p.label) for p in regions.points)]


def _scaled(value: float, scale: float) -> str:
    return _fmt(round(value * scale))


# ------------------------------------------------------------------------------------- conventions


def read_pixels(text: str, conv: BoxConvention, frame: Frame | None) -> Regions:
    width, height = _need_frame(frame, "pixels")
    return _plain(text, width, height, "pixels of the image sent")


def write_pixels(regions: Regions, conv: BoxConvention, frame: Frame | None) -> str:
    width, height = _need_frame(frame, "pixels")
    parts = [f"[{_scaled(b.x0, width)}, {_scaled(b.y0, height)}, {_scaled(b.x1, width)}, {_scaled(b.y1, height)}]"
             for b in regions.boxes]  # fmt: skip
    parts += [f"({_scaled(p.x, width)}, {_scaled(p.y, height)})" for p in regions.points]
    return " ".join(parts)


def read_relative(text: str, conv: BoxConvention, frame: Frame | None) -> Regions:
    return _plain(text, 1.0, 1.0, "relative 0-1")


def write_relative(regions: Regions, conv: BoxConvention, frame: Frame | None) -> str:
    parts = [f"[{b.x0:.4f}, {b.y0:.4f}, {b.x1:.4f}, {b.y1:.4f}]" for b in regions.boxes]
    parts += [f"({p.x:.4f}, {p.y:.4f})" for p in regions.points]
    return " ".join(parts)


_QWEN2_BOX = re.compile(
    rf"(?:<\|object_ref_start\|>(.*?)<\|object_ref_end\|>\s*)?(?:<\|box_start\|>\s*)?"
    rf"\({_PAIR}\){_SEP}\({_PAIR}\)(?:\s*<\|box_end\|>)?",
    re.DOTALL,
)


def read_qwen2(text: str, conv: BoxConvention, frame: Frame | None) -> Regions:
    boxes = []
    for match in _QWEN2_BOX.finditer(text):
        x1, y1, x2, y2 = _numbers(match.groups()[1:])
        _in_range([x1, y1, x2, y2], 0, 1000, "qwen2-vl 0-1000")
        boxes.append(_ordered(x1 / 1000, y1 / 1000, x2 / 1000, y2 / 1000, _label(match.group(1))))
    return Regions(boxes=boxes, source="text")


def write_qwen2(regions: Regions, conv: BoxConvention, frame: Frame | None) -> str:
    parts = []
    for b in _points_as_boxes(regions):
        ref = f"<|object_ref_start|>{b.label}<|object_ref_end|>" if b.label else ""
        corners = f"({_scaled(b.x0, 1000)},{_scaled(b.y0, 1000)}),({_scaled(b.x1, 1000)},{_scaled(b.y1, 1000)})"
        parts.append(f"{ref}<|box_start|>{corners}<|box_end|>")
    return " ".join(parts)


_BBOX_2D = _key_numbers("bbox_2d", 4)
_POINT_2D = _key_numbers("point_2d", 2)
_LABEL = _key_string("label")


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
    width, height = _need_frame(frame, "qwen2.5-vl")
    p = conv.params
    return smart_resize(width, height, p["factor"], p["min_pixels"], p["max_pixels"])


def read_qwen25(text: str, conv: BoxConvention, frame: Frame | None) -> Regions:
    width, height = qwen25_frame(conv, frame)
    what = f"qwen2.5-vl pixels of the {width} x {height} model input"
    boxes, points = [], []
    for chunk in _OBJECT.findall(text):
        found = _LABEL.search(chunk)
        label = _label(_json_text(found.group(1))) if found else None
        for match in _BBOX_2D.finditer(chunk):
            x1, y1, x2, y2 = _numbers(match.groups())
            _in_range([x1, x2], 0, width, what)
            _in_range([y1, y2], 0, height, what)
            boxes.append(_ordered(x1 / width, y1 / height, x2 / width, y2 / height, label))
        for match in _POINT_2D.finditer(chunk):
            x, y = _numbers(match.groups())
            _in_range([x], 0, width, what)
            _in_range([y], 0, height, what)
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
    return _double_bracket(text, ("<ref>", "</ref>"), ("<box>", "</box>"), 1000, "internvl 0-1000")


def _format_double(regions: Regions, ref: tuple[str, str], det: tuple[str, str], scale: int) -> str:
    parts = []
    for b in _points_as_boxes(regions):
        quad = ", ".join(_scaled(v, scale) for v in (b.x0, b.y0, b.x1, b.y1))
        parts.append(f"{ref[0]}{b.label or 'region'}{ref[1]}{det[0]}[[{quad}]]{det[1]}")
    return " ".join(parts)


def write_internvl(regions: Regions, conv: BoxConvention, frame: Frame | None) -> str:
    return _format_double(regions, ("<ref>", "</ref>"), ("<box>", "</box>"), 1000)


_DS_REF = (r"<\|ref\|>", r"<\|/ref\|>")
_DS_DET = (r"<\|det\|>", r"<\|/det\|>")


def read_deepseek(text: str, conv: BoxConvention, frame: Frame | None) -> Regions:
    return _double_bracket(text, _DS_REF, _DS_DET, 999, "deepseek-vl2 0-999")


def write_deepseek(regions: Regions, conv: BoxConvention, frame: Frame | None) -> str:
    return _format_double(regions, ("<|ref|>", "<|/ref|>"), ("<|det|>", "<|/det|>"), 999)


_BOX_2D = _key_numbers("box_2d", 4)
_POINT_YX = _key_numbers("point", 2)
_MASK = _key_string("mask")
_DATA_URI = re.compile(r"^data:image/[a-z]+;base64,(.*)$", re.DOTALL)
_GEMINI_MASK_THRESHOLD = 127  # the probability map is 0-255; above this is inside


def _gemini_mask(uri: str, box: Box, frame: Frame | None, label: str | None) -> Mask:
    """A Gemini mask: a probability PNG covering the box only, resized to the box's pixels and placed."""
    width, height = _need_frame(frame, "gemini mask")
    found = _DATA_URI.match(uri.strip())
    if found is None:
        raise Ungroundable("gemini mask is not a base64 image data URI")
    try:
        with Image.open(io.BytesIO(base64.b64decode(found.group(1), validate=False))) as img:
            probability = img.convert("L")
    except (OSError, ValueError, binascii.Error) as exc:
        raise Ungroundable(f"gemini mask image is unreadable ({exc})") from exc
    x0, y0 = int(box.x0 * width), int(box.y0 * height)
    x1, y1 = int(box.x1 * width), int(box.y1 * height)
    full = np.zeros((height, width), dtype=np.bool_)
    if x1 > x0 and y1 > y0:
        resized = np.asarray(probability.resize((x1 - x0, y1 - y0), Image.Resampling.BILINEAR))
        full[y0:y1, x0:x1] = resized > _GEMINI_MASK_THRESHOLD
    return mask_from_array(full, label)


def read_gemini(text: str, conv: BoxConvention, frame: Frame | None) -> Regions:
    boxes, points, masks = [], [], []
    for chunk in _OBJECT.findall(text):
        found = _LABEL.search(chunk)
        label = _label(_json_text(found.group(1))) if found else None
        for match in _BOX_2D.finditer(chunk):
            ymin, xmin, ymax, xmax = _numbers(match.groups())
            _in_range([ymin, xmin, ymax, xmax], 0, 1000, "gemini 0-1000")
            box = _ordered(xmin / 1000, ymin / 1000, xmax / 1000, ymax / 1000, label)
            boxes.append(box)
            mask = _MASK.search(chunk)
            if mask is not None:
                masks.append(_gemini_mask(_json_text(mask.group(1)), box, frame, label))
        for match in _POINT_YX.finditer(chunk):
            y, x = _numbers(match.groups())
            _in_range([y, x], 0, 1000, "gemini 0-1000")
            points.append(Point(x=x / 1000, y=y / 1000, label=label))
    return Regions(boxes=boxes, masks=masks, points=points, source="text")


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
