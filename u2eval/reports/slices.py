"""Cut a run by task, source dataset, anatomy or scenario: n, score, 95% interval and parse rate per slice.

A slice's score is its task's primary metric on the [0, 1] scale that enters U2 (accuracy, 1 - RMSE,
BLEU-4 / 100):

- ``task``: the task score exactly as the summary computes it (the mean over its datasets);
- ``dataset``: that dataset's metric;
- ``anatomy`` / ``scenario``: the metric over the slice's cases *pooled* across the task's datasets (one
  accuracy over all breast cases of DD, one corpus BLEU, one RMSE), since a slice cuts across datasets.

Intervals come from the same stratified bootstrap as the run's (resampling within each source dataset),
so a slice's interval reflects how many of its cases each dataset holds.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from u2eval.benchmark.tasks import get_task
from u2eval.reports.uncertainty import CaseTable, block_metric, pooled_metric, task_replicates, unit_scores
from u2eval.scoring.summary import ModeSummary, report_float
from u2eval.stats import FloatArray, percentile_interval

__all__ = ["SLICE_KINDS", "SliceBy", "SliceRow", "slice_rows"]

SliceBy = Literal["task", "dataset", "anatomy", "scenario"]
SLICE_KINDS: tuple[SliceBy, ...] = ("task", "dataset", "anatomy", "scenario")


class SliceRow(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    task: str
    value: str  # the task key, "task/dataset", the anatomy or the scenario
    n_cases: int
    n_counted: int
    metric: str
    score: float | None
    low: float | None
    high: float | None
    parse_rate: float | None  # ok answers / answered cases (infra errors left out)


def _row(
    table: CaseTable, task: str, value: str, masks: dict[str, FloatArray], estimate: FloatArray, reps: FloatArray
) -> SliceRow:
    blocks = [b for b in table.blocks if b.ref in masks]
    n = sum(float(masks[b.ref].sum()) for b in blocks)
    counted = sum(float((masks[b.ref] * b.counted).sum()) for b in blocks)
    answered = sum(float((masks[b.ref] * b.answered).sum()) for b in blocks)
    ok = sum(float((masks[b.ref] * b.ok).sum()) for b in blocks)
    interval = percentile_interval(reps, report_float(float(estimate[0])))
    return SliceRow(
        task=task,
        value=value,
        n_cases=int(n),
        n_counted=int(counted),
        metric=get_task(task).primary_metric,
        score=interval.estimate,
        low=report_float(interval.low),
        high=report_float(interval.high),
        parse_rate=report_float(ok / answered if answered else None),
    )


def slice_rows(table: CaseTable, summary: ModeSummary, by: SliceBy, resamples: int, seed: int) -> list[SliceRow]:
    """One row per slice, in official task order then the slice values' sorted order."""
    if by not in SLICE_KINDS:
        raise ValueError(f"cannot slice by {by!r}; choose from {', '.join(SLICE_KINDS)}")
    weights = table.weights(resamples, seed)
    rows: list[SliceRow] = []
    tasks = list(dict.fromkeys(b.task.key for b in table.blocks))
    for key in tasks:
        task = get_task(key)
        blocks = [(i, b) for i, b in enumerate(table.blocks) if b.task.key == key]
        if by == "task":
            result = summary.tasks.get(key)
            refs = result.datasets if result is not None and not result.filled else [b.ref for _, b in blocks]
            masks = {b.ref: np.ones(b.n) for _, b in blocks}
            full = task_replicates(table, refs, task, None)
            rows.append(_row(table, key, key, masks, full, task_replicates(table, refs, task, weights)))
        elif by == "dataset":
            for i, b in blocks:
                ones = np.ones((1, b.n))
                full = unit_scores(task.primary_metric, block_metric(b, task.primary_metric, ones))
                reps = unit_scores(task.primary_metric, block_metric(b, task.primary_metric, weights[i]))
                rows.append(_row(table, key, b.ref, {b.ref: np.ones(b.n)}, full, reps))
        else:
            values = sorted({v for _, b in blocks for v in (b.anatomy if by == "anatomy" else b.scenario)})
            for value in values:
                masks = {
                    b.ref: np.array([v == value for v in (b.anatomy if by == "anatomy" else b.scenario)], dtype=float)
                    for _, b in blocks
                }
                masks = {ref: m for ref, m in masks.items() if m.any()}
                refs = list(masks)
                full = unit_scores(task.primary_metric, pooled_metric(table, refs, task.primary_metric, None, masks))
                reps = unit_scores(task.primary_metric, pooled_metric(table, refs, task.primary_metric, weights, masks))
                rows.append(_row(table, key, value or "(none)", masks, full, reps))
    return rows
