"""Boxes, points and masks written in a model's answer text, read under a named box convention.

Models write regions in incompatible conventions (axis order, scale, syntax). Reading one with another's
rules gives a plausible but wrong box, so the convention is always chosen explicitly, by a preset's
``box_convention:`` field or ``--box-convention``, recorded in the run manifest, and never guessed:

==============  ==========================================================  ===================================
name            syntax                                                      coordinates
==============  ==========================================================  ===================================
pixels          ``[x1, y1, x2, y2]`` boxes, ``(x, y)`` points               pixels of the image the model got
relative        ``[x1, y1, x2, y2]`` boxes, ``(x, y)`` points               0-1 of the image
qwen2-vl        ``<|box_start|>(x1,y1),(x2,y2)<|box_end|>``                 0-1000 of the image
qwen2.5-vl      JSON ``{"bbox_2d": [x1, y1, x2, y2], "label": ...}``,       pixels of the processor's resized
                ``{"point_2d": [x, y]}``                                     input (``smart_resize``)
internvl        ``<ref>label</ref><box>[[x1, y1, x2, y2]]</box>``           0-1000 of the image
gemini          JSON ``{"box_2d": [ymin, xmin, ymax, xmax], "label": ...}``,  0-1000 of the image, y first
                ``{"point": [y, x]}``, ``"mask": "data:image/png;base64,..."``
deepseek-vl2    ``<|ref|>label<|/ref|><|det|>[[x1, y1, x2, y2]]<|/det|>``  0-999 of the image
==============  ==========================================================  ===================================

The special tokens are optional where a runtime that strips special tokens would remove them (vLLM does by
default), so ``(120,45),(300,210)`` reads under ``qwen2-vl`` and ``[[580, 270, 999, 900]]`` under
``deepseek-vl2``. A coordinate outside the convention's range, or a pixel convention without a known image
size, makes the answer :class:`Ungroundable` (with the reason): a box is never clipped or rescaled by guess.

A convention may take integer parameters after a colon, e.g. ``qwen2.5-vl:max_pixels=1003520`` (the
``smart_resize`` limits of the model's processor; the defaults are the processor's own).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from u2eval.errors import ConfigError
from u2eval.grounded.box_syntax import BoxConvention, Frame, Ungroundable
from u2eval.grounded.conventions import (
    read_deepseek,
    read_gemini,
    read_internvl,
    read_pixels,
    read_qwen2,
    read_qwen25,
    read_relative,
    smart_resize,
    write_deepseek,
    write_gemini,
    write_internvl,
    write_pixels,
    write_qwen2,
    write_qwen25,
    write_relative,
)
from u2eval.records import Regions

__all__ = [
    "CONVENTIONS",
    "BoxConvention",
    "Frame",
    "Ungroundable",
    "format_regions",
    "get_convention",
    "parse_regions",
    "smart_resize",
]


@dataclass(frozen=True)
class _Entry:
    summary: str
    example: str
    parse: Callable[[str, BoxConvention, Frame | None], Regions]
    format: Callable[[Regions, BoxConvention, Frame | None], str]
    params: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))  # their defaults


CONVENTIONS: Mapping[str, _Entry] = MappingProxyType(
    {
        "pixels": _Entry(
            "[x1, y1, x2, y2] boxes and (x, y) points in pixels of the image sent",
            "The lesion is at [212, 148, 391, 310].",
            read_pixels,
            write_pixels,
        ),
        "relative": _Entry(
            "[x1, y1, x2, y2] boxes and (x, y) points as fractions 0-1 of the image",
            "The lesion is at [0.31, 0.29, 0.57, 0.61].",
            read_relative,
            write_relative,
        ),
        "qwen2-vl": _Entry(
            "Qwen2-VL: (x1,y1),(x2,y2) in box tokens, 0-1000",
            "<|object_ref_start|>lesion<|object_ref_end|><|box_start|>(310,290),(570,610)<|box_end|>",
            read_qwen2,
            write_qwen2,
        ),
        "qwen2.5-vl": _Entry(
            "Qwen2.5-VL: JSON bbox_2d / point_2d in pixels of the processor-resized input (smart_resize)",
            '```json\n[{"bbox_2d": [212, 148, 391, 310], "label": "lesion"}]\n```',
            read_qwen25,
            write_qwen25,
            MappingProxyType({"factor": 28, "min_pixels": 3136, "max_pixels": 12845056}),
        ),
        "internvl": _Entry(
            "InternVL: <ref>label</ref><box>[[x1, y1, x2, y2]]</box>, 0-1000",
            "<ref>lesion</ref><box>[[310, 290, 570, 610]]</box>",
            read_internvl,
            write_internvl,
        ),
        "gemini": _Entry(
            "Gemini: JSON box_2d [ymin, xmin, ymax, xmax] and point [y, x], 0-1000; optional box-sized PNG mask",
            '```json\n[{"box_2d": [290, 310, 610, 570], "label": "lesion"}]\n```',
            read_gemini,
            write_gemini,
        ),
        "deepseek-vl2": _Entry(
            "DeepSeek-VL2: <|ref|>label<|/ref|><|det|>[[x1, y1, x2, y2]]<|/det|>, 0-999",
            "<|ref|>lesion<|/ref|><|det|>[[310, 290, 569, 609]]<|/det|>",
            read_deepseek,
            write_deepseek,
        ),
    }
)


def get_convention(spec: str) -> BoxConvention:
    """``name`` or ``name:key=value,...`` -> a convention; anything unknown is a ConfigError naming the choices."""
    name, _, rest = spec.strip().partition(":")
    entry = CONVENTIONS.get(name)
    if entry is None:
        raise ConfigError(f"unknown box convention {name!r}; known: {', '.join(CONVENTIONS)}")
    params = dict(entry.params)
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = item.partition("=")
        if key not in entry.params:
            allowed = ", ".join(entry.params) or "none"
            raise ConfigError(f"box convention {name!r} has no parameter {key!r} (parameters: {allowed})")
        if not eq or not value.strip().isdigit() or int(value) <= 0:
            raise ConfigError(f"box convention parameter {key!r} needs a positive integer, not {value!r}")
        params[key] = int(value)
    return BoxConvention(name, MappingProxyType(params), entry.params)


def parse_regions(text: str | None, convention: BoxConvention, frame: Frame | None) -> Regions:
    """The regions written in ``text`` under ``convention``, normalised to 0-1 of the image; ``frame`` is the
    (width, height) of the image the model was sent. No region found -> empty Regions. Raises
    :class:`Ungroundable` when a region is found but cannot be placed."""
    regions = CONVENTIONS[convention.name].parse(text or "", convention, frame)
    return regions.model_copy(update={"convention": convention.spec})


def format_regions(regions: Regions, convention: BoxConvention, frame: Frame | None) -> str:
    """Regions written as a model using ``convention`` would write them (the inverse of parse_regions, up to
    the convention's rounding); box-only conventions write a point as a zero-size box at the point."""
    return CONVENTIONS[convention.name].format(regions, convention, frame)
