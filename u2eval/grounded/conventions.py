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
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np
from PIL import Image

from u2eval.grounded.regions import mask_from_array, mask_to_array
from u2eval.records import Box, Mask, Point, Regions

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


# Every pattern here is matched at one position at a time or has a single way to match: model answers are
# long (max_tokens) and often cut short, so nothing may backtrack more than linearly on them.
_NUM = r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?"
_SEP = r"\s*,\s*"
_QUAD = rf"\s*({_NUM}){_SEP}({_NUM}){_SEP}({_NUM}){_SEP}({_NUM})\s*"
_PAIR = rf"\s*({_NUM}){_SEP}({_NUM})\s*"
_OBJECT = re.compile(r"\{[^{}]*\}")  # a flat object that is not quite JSON (unquoted label, ...)
_JSON_STRING = r'"((?:[^"\\]|\\.)*)"'
_JSON = json.JSONDecoder()


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


def _ref_labels(text: str, ref: tuple[str, str]) -> dict[int, str]:
    """End position of every closed ``ref`` tag pair -> the text between them; one pass, so a run of opening
    tags without their closer costs linear time. A closer pairs with the nearest opener before it."""
    labels: dict[int, str] = {}
    opened: int | None = None
    for tag in re.finditer(f"{re.escape(ref[0])}|{re.escape(ref[1])}", text):
        if tag.group() == ref[0]:
            opened = tag.end()
        elif opened is not None:
            labels[tag.end()] = text[opened : tag.start()]
            opened = None
    return labels


def _back_over_space(text: str, pos: int) -> int:
    while pos > 0 and text[pos - 1].isspace():
        pos -= 1
    return pos


def _label_before(text: str, start: int, labels: Mapping[int, str], skip: str = "") -> str | None:
    """The label of the ref tags right before ``start``, with only white space (and once ``skip``, e.g. the
    box tag) between them; None when there are none."""
    pos = _back_over_space(text, start)
    if skip and pos >= len(skip) and text.startswith(skip, pos - len(skip)):
        pos = _back_over_space(text, pos - len(skip))
    return _label(labels.get(pos))


_ITEM = re.compile(rf"\s*\[{_QUAD}\]\s*,?")


def _double_bracket(text: str, ref: tuple[str, str], det: tuple[str, str], scale: float, what: str) -> Regions:
    """``<ref>label</ref><det>[[x1,y1,x2,y2], ...]</det>`` with the tags optional (InternVL, DeepSeek-VL2).

    A linear scan: after an opener (``det[0]`` or ``[[``) every complete ``[x1, y1, x2, y2]`` is read, one at
    a time, whether or not the closing bracket ever came (an answer cut at max_tokens keeps its whole boxes).
    """
    labels = _ref_labels(text, ref)
    opener = re.compile(rf"{re.escape(det[0])}\s*|\[(?=\s*\[)")
    boxes = []
    pos = 0
    while (found := opener.search(text, pos)) is not None:
        pos = found.end()
        if found.group().startswith(det[0]) and _ITEM.match(text, pos) is None and text.startswith("[", pos):
            pos += 1  # <det>[[...]]: the outer bracket of the list
        label = _label_before(text, found.start(), labels, skip=det[0])
        while (item := _ITEM.match(text, pos)) is not None:
            x1, y1, x2, y2 = _numbers(item.groups())
            _in_range([x1, y1, x2, y2], 0, scale, what)
            boxes.append(_ordered(x1 / scale, y1 / scale, x2 / scale, y2 / scale, label))
            pos = item.end()
    return Regions(boxes=boxes, source="text")


_OPEN = re.compile(r"[\[{]")


def _json_objects(text: str) -> list[dict[str, object]]:
    """Every JSON object in the text, nested ones included, in the order they start; objects that are
    almost JSON (``{"box_2d": [...], label: x}``) are read key by key where no JSON object is found.

    Decoding is tried at each ``{`` / ``[`` not inside a value already decoded, so a list cut short at
    max_tokens still gives its complete objects."""
    found: list[tuple[int, int, dict[str, object]]] = []
    covered = bytearray(len(text))  # 1 where a decoded value holding objects lies
    pos = 0
    while (opened := _OPEN.search(text, pos)) is not None:
        start = opened.start()
        try:
            value, end = _JSON.raw_decode(text, start)
        except (ValueError, RecursionError):  # not JSON from here (or nested past the recursion limit)
            pos = start + 1
            continue
        objects = _objects_in(value)
        found += [(start, order, item) for order, item in enumerate(objects)]
        if objects:
            covered[start:end] = b"\x01" * (end - start)
        pos = end
    for chunk in _OBJECT.finditer(text):
        if not covered[chunk.start()]:
            found.append((chunk.start(), 0, _loose_object(chunk.group())))
    return [item for _, _, item in sorted(found, key=lambda f: (f[0], f[1]))]


def _objects_in(value: object) -> list[dict[str, object]]:
    """The dicts of a decoded JSON value, outer before inner, in document order (no recursion)."""
    out: list[dict[str, object]] = []
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            out.append(item)
            stack.extend(reversed(list(item.values())))
        elif isinstance(item, list):
            stack.extend(reversed(item))
    return out


_LOOSE_KEYS = ("box_2d", "bbox_2d", "point", "point_2d")


def _loose_object(chunk: str) -> dict[str, object]:
    """The region keys of a flat object that is not valid JSON, read one by one."""
    out: dict[str, object] = {}
    for key in _LOOSE_KEYS:
        match = _key_numbers(key, 4 if key.endswith("box_2d") else 2).search(chunk)
        if match is not None:
            out[key] = [float(g) for g in match.groups()]
    for key in ("label", "mask"):
        text = _key_string(key).search(chunk)
        if text is not None:
            out[key] = _json_text(text.group(1))
    return out


def _coordinates(item: Mapping[str, object], key: str, count: int) -> list[float] | None:
    """``item[key]`` when it is a list of ``count`` numbers (else None: not a region of that kind)."""
    value = item.get(key)
    if not isinstance(value, list) or len(value) != count:
        return None
    values = [float(v) for v in value if isinstance(v, int | float) and not isinstance(v, bool)]
    if len(values) != count:
        return None
    if not all(math.isfinite(v) for v in values):
        raise Ungroundable("a coordinate is not a finite number")
    return values


def _item_label(item: Mapping[str, object]) -> str | None:
    value = item.get("label")
    return _label(value) if isinstance(value, str) else None


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


_QWEN2_CORNERS = re.compile(rf"\({_PAIR}\){_SEP}\({_PAIR}\)(?:\s*<\|box_end\|>)?")
_QWEN2_REF = ("<|object_ref_start|>", "<|object_ref_end|>")


def read_qwen2(text: str, conv: BoxConvention, frame: Frame | None) -> Regions:
    labels = _ref_labels(text, _QWEN2_REF)
    boxes = []
    for match in _QWEN2_CORNERS.finditer(text):
        x1, y1, x2, y2 = _numbers(match.groups())
        _in_range([x1, y1, x2, y2], 0, 1000, "qwen2-vl 0-1000")
        label = _label_before(text, match.start(), labels, skip="<|box_start|>")
        boxes.append(_ordered(x1 / 1000, y1 / 1000, x2 / 1000, y2 / 1000, label))
    return Regions(boxes=boxes, source="text")


def write_qwen2(regions: Regions, conv: BoxConvention, frame: Frame | None) -> str:
    parts = []
    for b in _points_as_boxes(regions):
        ref = f"<|object_ref_start|>{b.label}<|object_ref_end|>" if b.label else ""
        corners = f"({_scaled(b.x0, 1000)},{_scaled(b.y0, 1000)}),({_scaled(b.x1, 1000)},{_scaled(b.y1, 1000)})"
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
    width, height = _need_frame(frame, "qwen2.5-vl")
    p = conv.params
    return smart_resize(width, height, p["factor"], p["min_pixels"], p["max_pixels"])


def read_qwen25(text: str, conv: BoxConvention, frame: Frame | None) -> Regions:
    width, height = qwen25_frame(conv, frame)
    what = f"qwen2.5-vl pixels of the {width} x {height} model input"
    boxes, points = [], []
    for item in _json_objects(text):
        label = _item_label(item)
        if (quad := _coordinates(item, "bbox_2d", 4)) is not None:
            x1, y1, x2, y2 = quad
            _in_range([x1, x2], 0, width, what)
            _in_range([y1, y2], 0, height, what)
            boxes.append(_ordered(x1 / width, y1 / height, x2 / width, y2 / height, label))
        if (pair := _coordinates(item, "point_2d", 2)) is not None:
            x, y = pair
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


_DS_REF = ("<|ref|>", "<|/ref|>")
_DS_DET = ("<|det|>", "<|/det|>")


def read_deepseek(text: str, conv: BoxConvention, frame: Frame | None) -> Regions:
    return _double_bracket(text, _DS_REF, _DS_DET, 999, "deepseek-vl2 0-999")


def write_deepseek(regions: Regions, conv: BoxConvention, frame: Frame | None) -> str:
    return _format_double(regions, _DS_REF, _DS_DET, 999)


_DATA_URI = re.compile(r"^data:image/[a-z]+;base64,(.*)$", re.DOTALL)
_GEMINI_MASK_THRESHOLD = 127  # the probability map is 0-255; above this is inside
# A Gemini mask covers its box only, so it never needs more pixels than a large image: anything bigger is
# refused before it is decoded (a 20000 x 20000 1-bit PNG is 50 kB of base64 and 400 MB decoded).
GEMINI_MASK_MAX_PIXELS = 4096 * 4096


def _gemini_mask(uri: str, box: Box, frame: Frame | None, label: str | None) -> Mask:
    """A Gemini mask: a probability PNG covering the box only, resized to the box's pixels and placed."""
    width, height = _need_frame(frame, "gemini mask")
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
    for item in _json_objects(text):
        label = _item_label(item)
        if (quad := _coordinates(item, "box_2d", 4)) is not None:
            ymin, xmin, ymax, xmax = quad
            _in_range([ymin, xmin, ymax, xmax], 0, 1000, "gemini 0-1000")
            box = _ordered(xmin / 1000, ymin / 1000, xmax / 1000, ymax / 1000, label)
            boxes.append(box)
            uri = item.get("mask")
            if isinstance(uri, str):
                try:
                    masks.append(_gemini_mask(uri, box, frame, label))
                except Ungroundable as exc:
                    notes.append(f"mask left out: {exc}")
        if (pair := _coordinates(item, "point", 2)) is not None:
            y, x = pair
            _in_range([y, x], 0, 1000, "gemini 0-1000")
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
