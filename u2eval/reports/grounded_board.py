"""The grounded columns of a leaderboard row: a run's region scores, re-computed from its stored answers.

Like the rest of the leaderboard nothing is trusted from the run folder's outputs (``grounded.json``): the
answers are re-read under the run's recorded box convention and scored against the grounded truth (the
folder's truth cache, else the dataset), and nothing is written.
"""

from __future__ import annotations

import dataclasses

from u2eval.benchmark.tasks import all_tasks
from u2eval.grounded.scorer import score_grounded
from u2eval.grounded.stats import GroundedSummary
from u2eval.records import DiskRecord, ScoringMode
from u2eval.reports.rundata import LoadedRun
from u2eval.run.folder import RunFolder

__all__ = ["GroundedCells", "grounded_cells", "grounded_columns"]

# column key -> header, in the order the files show them, after a column per sector task (grounded_columns)
_METRIC_COLUMNS = {
    "box_acc50": "box acc@0.5",
    "box_iou": "box IoU",
    "dice": "Dice",
    "mask_iou": "mask IoU",
    "point_distance": "point dist / diag",
    "point_in_mask": "point in mask",
}


def _sector_tasks() -> tuple[str, ...]:
    """The tasks answered with a sector (detection), whose sector a region gives."""
    return tuple(task.key for task in all_tasks() if task.capability == "detection")


def grounded_columns() -> dict[str, str]:
    """Column key -> header: each sector task's score from regions, then the grounded metrics."""
    return {f"{key}_regions": f"{key.upper()} (regions)" for key in _sector_tasks()} | _METRIC_COLUMNS


class GroundedCells(DiskRecord):
    """A run's grounded figures: official LL / OD / KD scores from its regions (in the board's mode) and
    the run-wide means over datasets of the grounded metrics; None where the model gave no such region."""

    box_convention: str | None
    values: dict[str, float | None]


def cells_from(summary: GroundedSummary, mode: ScoringMode) -> GroundedCells:
    sectors = summary.sectors.get(mode)
    overall = summary.overall
    values: dict[str, float | None] = {
        f"{t}_regions": sectors.tasks.get(t) if sectors else None for t in _sector_tasks()
    }
    values |= {
        "box_acc50": overall.box.acc_at_50 if overall.box else None,
        "box_iou": overall.box.mean_iou if overall.box else None,
        "dice": overall.mask.dice if overall.mask else None,
        "mask_iou": overall.mask.iou if overall.mask else None,
        "point_distance": overall.point.mean_distance if overall.point else None,
        "point_in_mask": overall.point.in_mask if overall.point else None,
    }
    return GroundedCells(box_convention=summary.box_convention, values=values)


def grounded_cells(run: LoadedRun, mode: ScoringMode) -> GroundedCells:
    """Score a run's regions (without writing anything) and keep the leaderboard's columns."""
    options = dataclasses.replace(RunFolder(run.folder).grounded_options(), enabled=True)
    summary = score_grounded(run.folder, run.answers, run.judgements, run.summary, options, write=False)
    return cells_from(summary, mode)
