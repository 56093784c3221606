"""Grounded scoring of a run: every case's regions, their official sector, and the grounded metrics.

Kept apart from the U2-Score on purpose: nothing here touches ``summary.json``; the results go to
``grounded.json`` (figures) and ``grounded_cases.jsonl`` (one line per case), both pure functions of the
run folder, the box convention and the grounded truth (``u2eval.grounded.truth``).

A case's regions are the ones its completion carries (``Completion.regions``: a segmentation head, a
stand-in), else the ones its text holds under the run's box convention. Outcomes:

- ``region``: the answer holds a region; its sector is the region's (``u2eval.grounded.placement``).
- ``no_region``: it holds none (no box in the text, an empty mask, a refusal). Its place is "not visible":
  a grounded model that marks nothing says the structure is not there.
- ``ungroundable``: it holds a region that cannot be placed (a coordinate out of the convention's range,
  pixels without an image size, a stored box that is NaN or off the image, a mask whose runs do not cover
  it: ``u2eval.grounded.regions.region_problem``), or scoring the case failed. Judged as an empty answer: wrong in
  both modes, never guessed. A bad region never stops the scoring, of the run or of its U2-Score.
- ``infra_error``: no answer; excluded, as everywhere (the text pass's judgement stands).

A run that carries no regions at all (no answer has regions as data) and has no box convention to read its
text has nothing to place: its sector scores from regions are not computed (None, with a warning), rather
than every detection case being judged "not visible".

The place is judged by ``judge_placed`` (u2eval.scoring.judging) against the same truth and by the same
reading as a text answer, so the region scores of LL / OD / KD are the official ones in both modes (the
reference mode therefore also scores a region in the lower center sector as the official scorer scores the
words "lower center": wrong). This pass runs after the text pass, over its judgements, and never changes them.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from u2eval.benchmark.sectors import NOT_VISIBLE
from u2eval.benchmark.tasks import TaskSpec, get_task
from u2eval.grounded.boxes import BoxConvention, Frame, Ungroundable, parse_regions
from u2eval.grounded.placement import (
    GroundTruth,
    RegionKind,
    box_iou,
    mask_overlap,
    point_distance,
    point_in_mask,
    predicted_box,
    predicted_mask_array,
    predicted_point,
    region_sector,
)
from u2eval.grounded.regions import BoolArray, mask_to_array, region_problem
from u2eval.grounded.stats import GroundedCase, GroundedOutcome, GroundedSummary, summarise_grounded
from u2eval.grounded.truth import ground_truths
from u2eval.provenance import version
from u2eval.records import CaseMeta, Completion, Judgement, Regions
from u2eval.scoring.judging import judge_placed
from u2eval.scoring.summary import Summary

__all__ = [
    "GROUNDED_CASES_FILE",
    "GROUNDED_FILE",
    "GroundedOptions",
    "answer_regions",
    "grounded_cases",
    "read_grounded",
    "score_grounded",
]

log = logging.getLogger(__name__)

GROUNDED_FILE = "grounded.json"
GROUNDED_CASES_FILE = "grounded_cases.jsonl"
NO_REGIONS_WARNING = (
    "no answer carries regions and the run has no box convention to read them from its text: the sector "
    "scores from regions are not computed (give --box-convention if the model writes boxes)"
)


@dataclass(frozen=True)
class GroundedOptions:
    """Whether a scoring includes the grounded part, the box convention for answers in text, and where the
    dataset rows are (for the masks)."""

    enabled: bool = True
    convention: BoxConvention | None = None
    source_root: Path | None = None


# --------------------------------------------------------------------------------------- per case


def _frame(case: CaseMeta, completion: Completion) -> Frame | None:
    if completion.image_sent is not None:
        return completion.image_sent.width, completion.image_sent.height
    if case.image_width and case.image_height:
        return case.image_width, case.image_height
    return None


def answer_regions(
    case: CaseMeta, completion: Completion, convention: BoxConvention | None
) -> tuple[GroundedOutcome, Regions | None, str | None]:
    """(outcome, regions, reason) of one answer: its own regions, else those its text holds. Regions that
    cannot be placed (``region_problem``) make the answer ungroundable; a note on usable regions (a mask left
    out) is the reason of a ``region`` outcome."""
    if completion.is_infra_error:
        return "infra_error", None, None
    regions = completion.regions
    if regions is None:
        if convention is None:
            return "no_region", None, "no regions in the answer and no box convention to read its text"
        try:
            regions = parse_regions(completion.text, convention, _frame(case, completion))
        except Ungroundable as exc:
            return "ungroundable", None, str(exc)
    problem = region_problem(regions)
    if problem is not None:
        return "ungroundable", None, problem
    has_region = predicted_point(regions) is not None or any(m.counts[1::2] for m in regions.masks)
    return ("region" if has_region else "no_region"), regions, "; ".join(regions.notes) or None


def _read_safely(
    case: CaseMeta, completion: Completion, convention: BoxConvention | None
) -> tuple[GroundedOutcome, Regions | None, str | None]:
    """``answer_regions``, with any failure of it an ungroundable answer: one odd answer never stops scoring."""
    try:
        return answer_regions(case, completion, convention)
    except Exception as exc:  # noqa: BLE001 - whatever an answer holds, the run keeps its scores
        log.warning("%s: its regions could not be read (%s: %s)", case.case_id, type(exc).__name__, exc)
        return "ungroundable", None, f"its regions could not be read ({type(exc).__name__}: {exc})"


def has_region_source(answers: Sequence[tuple[CaseMeta, Completion]], convention: BoxConvention | None) -> bool:
    """Whether the run can give regions at all: a box convention to read text, or an answer with regions."""
    return convention is not None or any(completion.regions is not None for _, completion in answers)


def _sector_judgement(
    case: CaseMeta, judged: Judgement, outcome: GroundedOutcome, regions: Regions | None, task: TaskSpec
) -> tuple[str | None, Judgement]:
    """(the regions' sector, the judgement of that place); an infra error keeps the text pass's judgement."""
    if outcome == "infra_error":
        return None, judged
    sector = region_sector(regions, task.key) if regions is not None else None
    return sector, judge_placed(case, task, None if outcome == "ungroundable" else sector or NOT_VISIBLE)


def _kinds(regions: Regions | None) -> list[RegionKind]:
    if regions is None:
        return []
    kinds: list[RegionKind] = []
    if predicted_box(regions) is not None:
        kinds.append("box")
    if any(m.counts[1::2] for m in regions.masks):
        kinds.append("mask")
    if predicted_point(regions) is not None:
        kinds.append("point")
    return kinds


def _gives(answers: Iterable[Regions | None]) -> frozenset[RegionKind]:
    """The kinds of region the run predicts at all: a metric of a kind it never gives is not computed (a
    box model has no Dice), while a case without a kind the run does give scores as a miss."""
    kinds: set[RegionKind] = set()
    for regions in answers:
        kinds.update(_kinds(regions))
        if regions is not None and regions.masks:
            kinds.add("mask")  # a model that returns (empty) masks is a mask model
    return frozenset(kinds)


def _box_metrics(regions: Regions | None, truth: GroundTruth) -> dict[str, object]:
    if truth.boxes is None:
        return {}
    box = predicted_box(regions) if regions is not None else None
    if not truth.boxes:
        return {"box_empty_correct": box is None}
    return {"box_iou": max(box_iou(box, t) for t in truth.boxes) if box is not None else 0.0}


def _mask_metrics(regions: Regions | None, truth: GroundTruth, shown: BoolArray | None) -> dict[str, object]:
    if truth.mask_state == "empty":
        predicted = regions is not None and any(m.counts[1::2] for m in regions.masks)
        return {"mask_empty_correct": not predicted}
    if shown is None:
        return {}
    height, width = shown.shape
    guess = predicted_mask_array(regions, width, height) if regions is not None else np.zeros_like(shown)
    dice, iou = mask_overlap(guess, shown)
    return {"dice": dice, "mask_iou": iou}


def _point_metrics(
    case: CaseMeta, regions: Regions | None, truth: GroundTruth, shown: BoolArray | None
) -> dict[str, object]:
    point = predicted_point(regions) if regions is not None else None
    out: dict[str, object] = {}
    size = (case.image_width, case.image_height) if case.image_width and case.image_height else None
    if truth.mask is not None and size is None:
        size = (truth.mask.width, truth.mask.height)
    if truth.points and size is not None:
        # No point at all is as far off as a point can be: the diagonal.
        out["point_distance"] = point_distance(point, truth.points[0], *size) if point is not None else 1.0
    if shown is not None:
        out["point_in_mask"] = point is not None and point_in_mask(point, shown)
    return out


def _metrics(
    case: CaseMeta, regions: Regions | None, truth: GroundTruth | None, gives: frozenset[RegionKind]
) -> dict[str, object]:
    if truth is None:
        return {}
    # The truth mask as pixels, decoded once for Dice and point-in-mask (None unless it has some).
    shown = mask_to_array(truth.mask) if truth.mask_state == "present" and truth.mask is not None else None
    out: dict[str, object] = {}
    if "box" in gives:
        out |= _box_metrics(regions, truth)
    if "mask" in gives:
        out |= _mask_metrics(regions, truth, shown)
    if "point" in gives:
        out |= _point_metrics(case, regions, truth, shown)
    return out


def _case_fields(
    case: CaseMeta,
    judged: Judgement,
    read: tuple[GroundedOutcome, Regions | None, str | None],
    truth: GroundTruth | None,
    gives: frozenset[RegionKind],
    place: bool,
) -> tuple[dict[str, object], Judgement | None]:
    outcome, regions, reason = read
    task = get_task(case.task)
    fields: dict[str, object] = {
        "case_id": case.case_id,
        "task": case.task,
        "dataset_id": case.dataset_id,
        "outcome": outcome,
        "reason": reason,
        "source": regions.source if regions is not None and outcome == "region" else None,
        "kinds": _kinds(regions),
    }
    judgement = None
    if task.capability == "detection" and place:
        sector, judgement = _sector_judgement(case, judged, outcome, regions, task)
        fields |= {"sector": sector, "sector_correct": judgement.strict.correct}
    if outcome != "infra_error" and truth is not None:
        fields |= _metrics(case, regions, truth, gives)
    return fields, judgement


def grounded_cases(
    answers: Sequence[tuple[CaseMeta, Completion]],
    truths: Mapping[str, GroundTruth],
    convention: BoxConvention | None,
    judgements: Sequence[Judgement],
) -> tuple[list[GroundedCase], list[Judgement], frozenset[RegionKind]]:
    """The grounded record of every detection case and of any other case that answered with a region; for
    detection cases also the judgement of the region's sector (none when the run has no region source at
    all: ``has_region_source``). Also the kinds of region the run gives. ``judgements``: the text pass's, one
    per answer. A case whose scoring fails is recorded as ungroundable with the reason; it never stops the
    others."""
    judged = {j.case_id: j for j in judgements}
    place = has_region_source(answers, convention)
    read = [_read_safely(case, completion, convention) for case, completion in answers]
    gives = _gives(regions for _, regions, _ in read)
    records: list[GroundedCase] = []
    placed: list[Judgement] = []
    for (case, _), one in zip(answers, read, strict=True):
        if get_task(case.task).capability != "detection" and one[0] != "region":
            continue  # a classification or text answer without a region has nothing grounded to score
        try:
            fields, judgement = _case_fields(case, judged[case.case_id], one, truths.get(case.case_id), gives, place)
            record = GroundedCase.model_validate(fields)
        except Exception as exc:  # noqa: BLE001 - one case's failure must not cost the run its scores
            log.warning("%s: grounded scoring failed (%s: %s)", case.case_id, type(exc).__name__, exc)
            why = f"grounded scoring failed ({type(exc).__name__}: {exc})"
            failed: tuple[GroundedOutcome, Regions | None, str | None] = ("ungroundable", None, why)
            fields, judgement = _case_fields(case, judged[case.case_id], failed, None, gives, place)  # no truth
            record = GroundedCase.model_validate(fields)
        records.append(record)
        if judgement is not None:
            placed.append(judgement)
    records.sort(key=lambda r: r.case_id)
    return records, placed, gives


# ------------------------------------------------------------------------------------------ folder


def _needs_truth(case: CaseMeta, completion: Completion, convention: BoxConvention | None) -> bool:
    """Detection cases always (their truth is a region); any other case only when it answered with one."""
    if get_task(case.task).capability == "detection":
        return True
    return _read_safely(case, completion, convention)[0] == "region"


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def score_grounded(
    folder: Path,
    answers: Sequence[tuple[CaseMeta, Completion]],
    judgements: Sequence[Judgement],
    text: Summary | None,
    options: GroundedOptions,
    *,
    write: bool = True,
) -> GroundedSummary:
    """Grounded scoring of a run's answers (each case with its completion), after the text pass (its
    ``judgements`` and ``text`` summary); writes ``grounded.json`` and ``grounded_cases.jsonl`` (and the truth
    cache) unless ``write`` is False."""
    needed = [case for case, completion in answers if _needs_truth(case, completion, options.convention)]
    truths = ground_truths(folder, needed, options.source_root, write=write)
    records, placed, gives = grounded_cases(answers, truths, options.convention, judgements)
    summary = summarise_grounded(records, placed, truths, gives, options.convention, text)
    warnings = [] if has_region_source(answers, options.convention) else [NO_REGIONS_WARNING]
    summary = summary.model_copy(update={"scored_with": {"u2eval": version()}, "warnings": warnings})
    if write:
        payload = json.dumps(summary.model_dump(mode="json"), indent=2, sort_keys=True, ensure_ascii=False)
        _write_atomic(folder / GROUNDED_FILE, payload + "\n")
        lines = (r.model_dump_json(exclude_defaults=True) + "\n" for r in records)
        _write_atomic(folder / GROUNDED_CASES_FILE, "".join(lines))
    return summary


def read_grounded(folder: Path) -> GroundedSummary | None:
    path = folder / GROUNDED_FILE
    if not path.is_file():
        return None
    return GroundedSummary.model_validate_json(path.read_text(encoding="utf-8"))
