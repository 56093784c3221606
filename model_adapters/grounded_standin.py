"""A grounded stand-in model: answers detection cases with regions, so grounded evaluation runs end to end
without a GPU or an API key. Seeded per case, so answers do not depend on order or concurrency.

``--model grounded-standin/MODE[:CONVENTION]``:

- ``oracle``: a noisy oracle. LL / OD: the first ``gt_bbox`` structure, its centre moved by a normal jitter
  of ``noise`` x its size and its size scaled by ``exp(N(0, noise))``, returned as a box, the ellipse
  inscribed in it as a mask, and its centre as a point; nothing when the truth says not visible. KD: the
  first keypoint moved by ``noise / 10`` of the image. ``noise`` defaults to 0.1 (preset ``extra.noise``).
- ``random``: a uniformly placed box (LL / OD) or point (KD), with its mask and centre.

Without a convention the regions come back as data (``Completion.regions``, as a segmentation model's
would) and the text is the sector they fall in. With one, e.g. ``grounded-standin/oracle:gemini``, the text
holds the sector and the boxes (and points) written in that convention, and no regions as data: run it with
``--box-convention gemini`` to read them. Other tasks get the Random Guessing baseline's answer.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from model_adapters._base import Identified
from model_adapters.random import guess
from u2eval.benchmark.tasks import get_task
from u2eval.errors import ConfigError
from u2eval.grounded.boxes import BoxConvention, format_regions, get_convention
from u2eval.grounded.placement import region_sector, truth_boxes, truth_points
from u2eval.grounded.regions import box_centre, ellipse_array, mask_from_array
from u2eval.models.protocol import AdapterOptions, ModelRequest
from u2eval.records import Box, Case, Completion, ModelInfo, Point, Regions

MODES = ("oracle", "random")
DEFAULT_NOISE = 0.1


def _clip(value: float) -> float:
    return min(max(value, 0.0), 1.0)


def _clipped(box: Box) -> Box:
    return Box(x0=_clip(box.x0), y0=_clip(box.y0), x1=_clip(box.x1), y1=_clip(box.y1), label=box.label)


def _jittered(box: Box, noise: float, rng: random.Random) -> Box:
    cx, cy = box_centre(box)
    w, h = box.x1 - box.x0, box.y1 - box.y0
    cx += rng.gauss(0.0, noise * w)
    cy += rng.gauss(0.0, noise * h)
    w *= math.exp(rng.gauss(0.0, noise))
    h *= math.exp(rng.gauss(0.0, noise))
    return _clipped(Box(x0=cx - w / 2, y0=cy - h / 2, x1=cx + w / 2, y1=cy + h / 2, label=box.label))


def _random_box(rng: random.Random, label: str | None) -> Box:
    cx, cy = rng.uniform(0.05, 0.95), rng.uniform(0.05, 0.95)
    w, h = rng.uniform(0.05, 0.3), rng.uniform(0.05, 0.3)
    return _clipped(Box(x0=cx - w / 2, y0=cy - h / 2, x1=cx + w / 2, y1=cy + h / 2, label=label))


def _box_regions(case: Case, box: Box | None) -> Regions:
    if box is None:
        return Regions(source="native")
    cx, cy = box_centre(box)
    masks = []
    if case.image_width and case.image_height:
        masks.append(mask_from_array(ellipse_array(box, case.image_width, case.image_height), label=box.label))
    return Regions(boxes=[box], masks=masks, points=[Point(x=cx, y=cy, label=box.label)], source="native")


def regions_for(case: Case, mode: str, noise: float, seed: int) -> Regions:
    """The stand-in's regions for a detection case: a pure function of the case, the mode, noise and seed."""
    rng = random.Random(f"{seed}\0{case.case_id}\0grounded")
    if get_task(case.task).truth_column == "keypoints":
        truths = truth_points(case.columns.get("keypoints"))
        label = truths[0].label if truths else None
        if mode == "random":
            return Regions(points=[Point(x=rng.random(), y=rng.random(), label=label)], source="native")
        if not truths:
            return Regions(source="native")
        spread = noise / 10
        x, y = _clip(truths[0].x + rng.gauss(0.0, spread)), _clip(truths[0].y + rng.gauss(0.0, spread))
        return Regions(points=[Point(x=x, y=y, label=label)], source="native")
    boxes = truth_boxes(case.columns.get("gt_bbox"))
    if mode == "random":
        return _box_regions(case, _random_box(rng, boxes[0].label if boxes else None))
    return _box_regions(case, _jittered(boxes[0], noise, rng) if boxes else None)


class GroundedStandIn(Identified):
    def __init__(self, mode: str, convention: BoxConvention | None, noise: float, seed: int) -> None:
        model = mode + (f":{convention.spec}" if convention else "")
        info = ModelInfo(adapter="grounded-standin", model=model, revision=f"seed-{seed}-noise-{noise:g}")
        super().__init__(info, 64)
        self._mode, self._convention, self._noise, self._seed = mode, convention, noise, seed

    def answer(self, request: ModelRequest) -> Completion:
        case = request.case
        if get_task(case.task).capability != "detection":
            return Completion(case_id=case.case_id, key=request.key, text=guess(case, self._seed))
        regions = regions_for(case, self._mode, self._noise, self._seed)
        sector = region_sector(regions, case.task) or "not visible"
        if self._convention is None:
            return Completion(case_id=case.case_id, key=request.key, text=sector, regions=regions)
        frame = (case.image_width, case.image_height) if case.image_width and case.image_height else None
        written = format_regions(regions.model_copy(update={"masks": []}), self._convention, frame)
        return Completion(case_id=case.case_id, key=request.key, text=f"{sector}\n{written}".strip())

    async def generate(self, requests: Sequence[ModelRequest]) -> list[Completion]:
        return [self.answer(r) for r in requests]

    async def aclose(self) -> None:
        return None


def create(model: str, options: AdapterOptions) -> GroundedStandIn:
    mode, _, spec = model.partition(":")
    if mode not in MODES:
        raise ConfigError(f"grounded-standin mode must be one of {', '.join(MODES)}, not {mode!r}")
    noise = float(options.extra.get("noise", DEFAULT_NOISE))
    if not 0.0 <= noise <= 1.0:
        raise ConfigError(f"grounded-standin noise must be within 0-1, not {noise}")
    return GroundedStandIn(mode, get_convention(spec) if spec else None, noise, options.seed)
