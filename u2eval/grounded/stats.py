"""The grounded result of a case (``GroundedCase``) and the run's grounded figures built from them.

Per dataset a figure is a mean over its cases; per task and over the whole run it is a mean over
datasets, as the official table averages datasets into tasks; counts are summed. Every float is reported
once, rounded (``report_float``), so the same cases always give the same ``grounded.json``.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

import numpy as np

from u2eval.benchmark.tasks import TaskSpec, get_task, task_keys
from u2eval.grounded.boxes import BoxConvention
from u2eval.grounded.placement import IOU_HIT, GroundTruth, RegionKind
from u2eval.records import DiskRecord, Judgement, ScoringMode
from u2eval.scoring.aggregate import score_mode
from u2eval.scoring.summary import Summary, report_float

__all__ = [
    "OUTCOMES",
    "BoxStats",
    "GroundedCase",
    "GroundedDataset",
    "GroundedOutcome",
    "GroundedStats",
    "GroundedSummary",
    "MaskStats",
    "PointStats",
    "SectorScores",
    "summarise_grounded",
]

MAX_EXAMPLES = 20

GroundedOutcome = Literal["region", "no_region", "ungroundable", "infra_error"]
OUTCOMES: tuple[GroundedOutcome, ...] = ("region", "no_region", "ungroundable", "infra_error")


class GroundedCase(DiskRecord):
    """One case's grounded result (``grounded_cases.jsonl``); a metric is None where it does not apply."""

    case_id: str
    task: str
    dataset_id: str
    outcome: GroundedOutcome
    reason: str | None = None
    source: str | None = None  # native, or text (read under the convention)
    sector: str | None = None  # the sector of the region (detection tasks)
    sector_correct: bool | None = None  # strict verdict of that sector
    kinds: list[RegionKind] = []  # what the answer gave: a box (its own or a mask's extent), a mask, a point
    box_iou: float | None = None
    box_empty_correct: bool | None = None  # the truth has no box: right when no box was predicted
    dice: float | None = None
    mask_iou: float | None = None
    mask_empty_correct: bool | None = None
    point_distance: float | None = None
    point_in_mask: bool | None = None


class BoxStats(DiskRecord):
    n: int  # cases whose truth has a box
    mean_iou: float | None
    acc_at_50: float | None  # share with IoU >= 0.5
    missing: int  # of those, cases with no predicted box (scored IoU 0)
    empty_truth_n: int  # cases whose truth says not visible
    empty_truth_correct: float | None  # share of those with no predicted box


class MaskStats(DiskRecord):
    n: int  # cases with a non-empty truth mask
    dice: float | None
    iou: float | None
    missing: int  # of those, cases with no predicted mask (Dice 0)
    empty_truth_n: int  # cases whose truth mask is empty
    empty_truth_correct: float | None  # share of those predicted empty too


class PointStats(DiskRecord):
    n: int  # cases with a truth point
    mean_distance: float | None  # distance / image diagonal
    missing: int
    in_mask_n: int  # cases with a non-empty truth mask
    in_mask: float | None


class GroundedStats(DiskRecord):
    """One dataset (or, as means over datasets, one task or the whole run)."""

    n_cases: int
    outcomes: dict[str, int]
    box: BoxStats | None = None
    mask: MaskStats | None = None
    point: PointStats | None = None


class GroundedDataset(DiskRecord):
    task: str
    dataset_id: str
    stats: GroundedStats


class SectorScores(DiskRecord):
    """Region-derived official scores of LL / OD / KD in one mode: ``tasks`` as the official table
    computes task scores, ``datasets`` per ``task/dataset`` accuracy."""

    tasks: dict[str, float | None]
    datasets: dict[str, float | None]
    n_counted: dict[str, int]


class GroundedSummary(DiskRecord):
    schema_version: int = 1
    box_convention: str | None
    gives: list[str]  # kinds of region the model predicted: box, mask, point
    truth: dict[str, int]  # cases with each kind of truth, masks by state
    sectors: dict[str, SectorScores]  # strict, reference
    text_sectors: dict[str, dict[str, float | None]]  # the same tasks from the text answers (summary.json)
    outcomes: dict[str, dict[str, int]]  # task -> outcome counts
    datasets: list[GroundedDataset]
    tasks: dict[str, GroundedStats]
    overall: GroundedStats  # means over every dataset with that metric
    ungroundable_examples: list[str]  # 'case_id: reason', the first few by case id
    warnings: list[str] = []  # e.g. no region source at all: the sector scores are not computed
    scored_with: dict[str, str] = {}


def _mean(values: Sequence[float]) -> float | None:
    return report_float(float(np.mean(values))) if values else None


def _share(flags: Sequence[bool]) -> float | None:
    return _mean([1.0 if f else 0.0 for f in flags])


def _box_stats(cases: Sequence[GroundedCase]) -> BoxStats | None:
    ious = [c.box_iou for c in cases if c.box_iou is not None]
    empty = [c.box_empty_correct for c in cases if c.box_empty_correct is not None]
    if not ious and not empty:
        return None
    return BoxStats(
        n=len(ious),
        mean_iou=_mean(ious),
        acc_at_50=_share([v >= IOU_HIT for v in ious]),
        missing=sum(1 for c in cases if c.box_iou is not None and "box" not in c.kinds),
        empty_truth_n=len(empty),
        empty_truth_correct=_share(empty),
    )


def _mask_stats(cases: Sequence[GroundedCase]) -> MaskStats | None:
    scored = [c for c in cases if c.dice is not None and c.mask_iou is not None]
    empty = [c.mask_empty_correct for c in cases if c.mask_empty_correct is not None]
    if not scored and not empty:
        return None
    return MaskStats(
        n=len(scored),
        dice=_mean([c.dice for c in scored if c.dice is not None]),
        iou=_mean([c.mask_iou for c in scored if c.mask_iou is not None]),
        missing=sum(1 for c in scored if "mask" not in c.kinds),
        empty_truth_n=len(empty),
        empty_truth_correct=_share(empty),
    )


def _point_stats(cases: Sequence[GroundedCase]) -> PointStats | None:
    distances = [c.point_distance for c in cases if c.point_distance is not None]
    inside = [c.point_in_mask for c in cases if c.point_in_mask is not None]
    if not distances and not inside:
        return None
    return PointStats(
        n=len(distances),
        mean_distance=_mean(distances),
        missing=sum(1 for c in cases if c.point_distance is not None and "point" not in c.kinds),
        in_mask_n=len(inside),
        in_mask=_share(inside),
    )


def _dataset_stats(cases: Sequence[GroundedCase]) -> GroundedStats:
    counts = Counter(c.outcome for c in cases)
    return GroundedStats(
        n_cases=len(cases),
        outcomes={o: counts[o] for o in OUTCOMES},
        box=_box_stats(cases),
        mask=_mask_stats(cases),
        point=_point_stats(cases),
    )


def _mean_of(parts: Sequence[DiskRecord | None]) -> dict[str, float | int | None]:
    """Field by field: counts summed, rates averaged over the parts that have them."""
    present = [p for p in parts if p is not None]
    out: dict[str, float | int | None] = {}
    for name in type(present[0]).model_fields:
        values = [getattr(p, name) for p in present]
        if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            out[name] = sum(values)
        else:
            out[name] = _mean([v for v in values if v is not None])
    return out


def _pooled(stats: Sequence[GroundedStats]) -> GroundedStats:
    """Means over datasets (as the official table averages datasets into tasks); counts summed."""
    outcomes = {o: sum(s.outcomes.get(o, 0) for s in stats) for o in OUTCOMES}
    boxes = [s.box for s in stats if s.box is not None]
    masks = [s.mask for s in stats if s.mask is not None]
    points = [s.point for s in stats if s.point is not None]
    return GroundedStats(
        n_cases=sum(s.n_cases for s in stats),
        outcomes=outcomes,
        box=BoxStats.model_validate(_mean_of(boxes)) if boxes else None,
        mask=MaskStats.model_validate(_mean_of(masks)) if masks else None,
        point=PointStats.model_validate(_mean_of(points)) if points else None,
    )


def _sector_scores(judgements: Sequence[Judgement], tasks: Sequence[TaskSpec]) -> dict[str, SectorScores]:
    if not judgements:
        return {}
    out: dict[str, SectorScores] = {}
    modes: tuple[ScoringMode, ...] = ("strict", "reference")
    for mode in modes:
        scored = score_mode(judgements, tasks, mode)
        out[mode] = SectorScores(
            tasks={k: t.score for k, t in scored.tasks.items() if k in {s.key for s in tasks}},
            datasets={f"{d.task}/{d.dataset_id}": d.metrics.get("accuracy") for d in scored.datasets},
            n_counted={f"{d.task}/{d.dataset_id}": d.n_counted for d in scored.datasets},
        )
    return out


def _truth_counts(truths: Mapping[str, GroundTruth], case_ids: Iterable[str]) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for case_id in case_ids:
        truth = truths.get(case_id)
        if truth is None:
            continue
        counts["cases"] += 1
        counts["with_box"] += bool(truth.boxes)
        counts["with_point"] += bool(truth.points)
        counts[f"mask_{truth.mask_state}"] += 1
    keys = ("cases", "with_box", "with_point", "mask_present", "mask_empty", "mask_absent", "mask_unreadable")
    return {k: counts[k] for k in (*keys, "mask_unavailable")}


def summarise_grounded(
    cases: Sequence[GroundedCase],
    judgements: Sequence[Judgement],
    truths: Mapping[str, GroundTruth],
    gives: frozenset[RegionKind],
    convention: BoxConvention | None,
    text: Summary | None,
) -> GroundedSummary:
    """The run's grounded figures from its per-case records (``grounded_cases``)."""
    groups: dict[tuple[str, str], list[GroundedCase]] = defaultdict(list)
    for case in cases:
        groups[(case.task, case.dataset_id)].append(case)
    order: dict[str, int] = {t: i for i, t in enumerate(task_keys())}
    datasets = [
        GroundedDataset(task=t, dataset_id=d, stats=_dataset_stats(groups[(t, d)]))
        for t, d in sorted(groups, key=lambda ref: (order[ref[0]], _dataset_position(ref)))
    ]
    by_task: dict[str, list[GroundedStats]] = defaultdict(list)
    for entry in datasets:
        by_task[entry.task].append(entry.stats)
    sector_tasks = sorted({j.task for j in judgements}, key=lambda k: order[k])
    detection = [get_task(k) for k in sector_tasks]
    text_sectors = {
        mode: {k: (s.tasks[k].score if k in s.tasks else None) for k in sector_tasks}
        for mode, s in (text.modes.items() if text is not None else ())
    }
    examples = [f"{c.case_id}: {c.reason}" for c in cases if c.outcome == "ungroundable"][:MAX_EXAMPLES]
    return GroundedSummary(
        box_convention=convention.spec if convention is not None else None,
        gives=sorted(gives),
        truth=_truth_counts(truths, (c.case_id for c in cases)),
        sectors=_sector_scores(judgements, detection),
        text_sectors=text_sectors,
        outcomes={t: _pooled(s).outcomes for t, s in by_task.items()},
        datasets=datasets,
        tasks={t: _pooled(s) for t, s in by_task.items()},
        overall=_pooled([d.stats for d in datasets]) if datasets else _dataset_stats([]),
        ungroundable_examples=examples,
    )


def _dataset_position(ref: tuple[str, str]) -> int:
    ids = get_task(ref[0]).dataset_ids
    return ids.index(ref[1]) if ref[1] in ids else len(ids)
