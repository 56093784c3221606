"""What the box conventions share: a convention's record, the error for regions that cannot be placed, and the
syntaxes several model families write boxes in (bracketed numbers, <ref>/<box> tags, JSON objects with
box_2d / bbox_2d / point keys, loose objects that are not quite JSON).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from u2eval.records import Box, Point, Regions

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


SEP = r"\s*,\s*"


_QUAD = rf"\s*({_NUM}){SEP}({_NUM}){SEP}({_NUM}){SEP}({_NUM})\s*"


PAIR = rf"\s*({_NUM}){SEP}({_NUM})\s*"


_OBJECT = re.compile(r"\{[^{}]*\}")  # a flat object that is not quite JSON (unquoted label, ...)


_JSON_STRING = r'"((?:[^"\\]|\\.)*)"'


_JSON = json.JSONDecoder()


def _key_numbers(key: str, count: int) -> re.Pattern[str]:
    body = _QUAD if count == 4 else PAIR
    return re.compile(rf'"{key}"\s*:\s*\[{body}\]')


def _key_string(key: str) -> re.Pattern[str]:
    return re.compile(rf'"{key}"\s*:\s*{_JSON_STRING}', re.DOTALL)


def _json_text(raw: str) -> str:
    try:
        value = json.loads(f'"{raw}"')
    except json.JSONDecodeError:
        return raw
    return value if isinstance(value, str) else raw


def to_floats(groups: tuple[str | None, ...]) -> list[float]:
    values = [float(g) for g in groups if g is not None]
    if not all(math.isfinite(v) for v in values):
        raise Ungroundable("a coordinate is not a finite number")
    return values


def check_range(values: list[float], low: float, high: float, what: str) -> None:
    for value in values:
        if not low <= value <= high:
            raise Ungroundable(f"coordinate {value:g} is outside {low:g}-{high:g} ({what})")


def need_frame(frame: Frame | None, name: str) -> Frame:
    if frame is None or frame[0] <= 0 or frame[1] <= 0:
        raise Ungroundable(f"{name} coordinates are pixels, but the image size is unknown")
    return frame


def _label(text: str | None) -> str | None:
    label = (text or "").strip()
    return label or None


_BRACKET_QUAD = re.compile(rf"[\[(]{_QUAD}[\])]")


_BRACKET_PAIR = re.compile(rf"[\[(]{PAIR}[\])]")


def plain_boxes(text: str, scale_x: float, scale_y: float, what: str) -> Regions:
    """``[x1, y1, x2, y2]`` boxes and ``(x, y)`` points anywhere in the text, divided by the scales."""
    boxes = []
    for match in _BRACKET_QUAD.finditer(text):
        x1, y1, x2, y2 = to_floats(match.groups())
        check_range([x1, x2], 0, scale_x, what)
        check_range([y1, y2], 0, scale_y, what)
        boxes.append(ordered_box(x1 / scale_x, y1 / scale_y, x2 / scale_x, y2 / scale_y))
    points = []
    for match in _BRACKET_PAIR.finditer(_BRACKET_QUAD.sub(" ", text)):
        x, y = to_floats(match.groups())
        check_range([x], 0, scale_x, what)
        check_range([y], 0, scale_y, what)
        points.append(Point(x=x / scale_x, y=y / scale_y))
    return Regions(boxes=boxes, points=points, source="text")


def ordered_box(x1: float, y1: float, x2: float, y2: float, label: str | None = None) -> Box:
    left, right = sorted((x1, x2))
    top, bottom = sorted((y1, y2))
    return Box(x0=left, y0=top, x1=right, y1=bottom, label=label)


def ref_labels(text: str, ref: tuple[str, str]) -> dict[int, str]:
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


def label_before(text: str, start: int, labels: Mapping[int, str], skip: str = "") -> str | None:
    """The label of the ref tags right before ``start``, with only white space (and once ``skip``, e.g. the
    box tag) between them; None when there are none."""
    pos = _back_over_space(text, start)
    if skip and pos >= len(skip) and text.startswith(skip, pos - len(skip)):
        pos = _back_over_space(text, pos - len(skip))
    return _label(labels.get(pos))


_ITEM = re.compile(rf"\s*\[{_QUAD}\]\s*,?")


def double_bracket_boxes(text: str, ref: tuple[str, str], det: tuple[str, str], scale: float, what: str) -> Regions:
    """``<ref>label</ref><det>[[x1,y1,x2,y2], ...]</det>`` with the tags optional (InternVL, DeepSeek-VL2).

    A linear scan: after an opener (``det[0]`` or ``[[``) every complete ``[x1, y1, x2, y2]`` is read, one at
    a time, whether or not the closing bracket ever came (an answer cut at max_tokens keeps its whole boxes).
    """
    labels = ref_labels(text, ref)
    opener = re.compile(rf"{re.escape(det[0])}\s*|\[(?=\s*\[)")
    boxes = []
    pos = 0
    while (found := opener.search(text, pos)) is not None:
        pos = found.end()
        if found.group().startswith(det[0]) and _ITEM.match(text, pos) is None and text.startswith("[", pos):
            pos += 1  # <det>[[...]]: the outer bracket of the list
        label = label_before(text, found.start(), labels, skip=det[0])
        while (item := _ITEM.match(text, pos)) is not None:
            x1, y1, x2, y2 = to_floats(item.groups())
            check_range([x1, y1, x2, y2], 0, scale, what)
            boxes.append(ordered_box(x1 / scale, y1 / scale, x2 / scale, y2 / scale, label))
            pos = item.end()
    return Regions(boxes=boxes, source="text")


_OPEN = re.compile(r"[\[{]")


def json_objects(text: str) -> list[dict[str, object]]:
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


def coordinates_of(item: Mapping[str, object], key: str, count: int) -> list[float] | None:
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


def item_label(item: Mapping[str, object]) -> str | None:
    value = item.get("label")
    return _label(value) if isinstance(value, str) else None


def _fmt(value: float) -> str:
    return str(round(value)) if float(value).is_integer() else f"{value:.4f}".rstrip("0").rstrip(".")


def points_as_boxes(regions: Regions) -> list[Box]:
    """Box-only conventions: every box, then each mask-less point as a zero-size box (its centre stays)."""
    return [*regions.boxes, *(Box(x0=p.x, y0=p.y, x1=p.x, y1=p.y, label=p.label) for p in regions.points)]


def scaled_text(value: float, scale: float) -> str:
    return _fmt(round(value * scale))
