"""A paired comparison of two runs on their common cases (joined by case id): per task and for the binary
tasks pooled, each side's accuracy, the discordant counts b and c, McNemar's test, the difference B - A
with its paired-bootstrap interval, and Holm-adjusted p-values across every per-task test of a report.

A case is paired when both runs answered it and both count it in the scoring mode. Both sides are
resampled with the same draws (the bootstrap weights depend only on the strata and their case ids),
which is what makes the interval paired. Tasks without a binary correctness (CVE, RG, CG) get the paired
difference of the task score (the mean over their own datasets, on the U2 scale) and its interval only;
the reference mode's dataset placement quirks are not applied here, its verdicts are.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from u2eval.benchmark.tasks import get_task
from u2eval.errors import ConfigError
from u2eval.records import ScoringMode
from u2eval.reports.rundata import LoadedRun
from u2eval.reports.uncertainty import BINARY, CaseTable, case_table, pooled_metric, task_replicates
from u2eval.scoring.metrics import score_label
from u2eval.scoring.summary import report_float
from u2eval.stats import DEFAULT_RESAMPLES, DEFAULT_SEED, FloatArray, holm, mcnemar_test, percentile_interval

__all__ = ["Comparison", "TaskComparison", "adjust", "compare"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TaskComparison(_Frozen):
    task: str  # a task key, or "pooled"
    kind: Literal["binary", "continuous"]
    metric: str  # accuracy, or the task score's metric
    n: int  # paired cases (answered and counted under both)
    value_a: float | None
    value_b: float | None
    b: int | None = None  # right under A, wrong under B
    c: int | None = None  # wrong under A, right under B
    test: str | None = None  # "exact" or "chi2"
    statistic: float | None = None
    p: float | None = None
    p_holm: float | None = None
    difference: float | None  # B - A
    low: float | None
    high: float | None


class Comparison(_Frozen):
    a: str
    b: str
    run_a: str
    run_b: str
    n_common: int
    tasks: list[TaskComparison]
    pooled: TaskComparison | None


def _interval(reps_a: FloatArray, reps_b: FloatArray, full_a: float, full_b: float) -> tuple[float | None, ...]:
    estimate = None if np.isnan(full_a) or np.isnan(full_b) else full_b - full_a
    interval = percentile_interval(reps_b - reps_a, estimate)
    return report_float(estimate), report_float(interval.low), report_float(interval.high)


def _binary(ta: CaseTable, tb: CaseTable, refs: list[str], label: str, resamples: int, seed: int) -> TaskComparison:
    masks_a = {ref: _counted(tb, ref) for ref in refs}  # A's cases that B also counts, and vice versa
    masks_b = {ref: _counted(ta, ref) for ref in refs}
    n = b = c = 0
    for ref in refs:
        block_a, block_b = ta.block(ref), tb.block(ref)
        assert block_a is not None and block_b is not None
        paired = block_a.counted * block_b.counted
        n += int(paired.sum())
        b += int((paired * block_a.correct * (1 - block_b.correct)).sum())
        c += int((paired * (1 - block_a.correct) * block_b.correct).sum())
    weights = ta.weights(resamples, seed)
    full_a = float(pooled_metric(ta, refs, "accuracy", None, masks_a)[0])
    full_b = float(pooled_metric(tb, refs, "accuracy", None, masks_b)[0])
    reps_a = pooled_metric(ta, refs, "accuracy", weights, masks_a)
    reps_b = pooled_metric(tb, refs, "accuracy", weights, masks_b)
    difference, low, high = _interval(reps_a, reps_b, full_a, full_b)
    test = mcnemar_test(b, c) if n else None
    return TaskComparison(
        task=label,
        kind="binary",
        metric="accuracy",
        n=n,
        value_a=report_float(full_a),
        value_b=report_float(full_b),
        b=b,
        c=c,
        test=test.method if test else None,
        statistic=report_float(test.statistic) if test else None,
        p=test.pvalue if test else None,
        difference=difference,
        low=low,
        high=high,
    )


def _counted(table: CaseTable, ref: str) -> FloatArray:
    block = table.block(ref)
    assert block is not None
    return block.counted


def _continuous(ta: CaseTable, tb: CaseTable, key: str, refs: list[str], resamples: int, seed: int) -> TaskComparison:
    task = get_task(key)
    masks_a = {ref: _counted(tb, ref) for ref in refs}
    masks_b = {ref: _counted(ta, ref) for ref in refs}
    n = sum(int((_counted(ta, ref) * _counted(tb, ref)).sum()) for ref in refs)
    weights = ta.weights(resamples, seed)
    full_a = float(task_replicates(ta, refs, task, None, masks_a)[0])
    full_b = float(task_replicates(tb, refs, task, None, masks_b)[0])
    reps_a = task_replicates(ta, refs, task, weights, masks_a)
    reps_b = task_replicates(tb, refs, task, weights, masks_b)
    difference, low, high = _interval(reps_a, reps_b, full_a, full_b)
    return TaskComparison(
        task=key,
        kind="continuous",
        metric=f"score ({score_label(task.primary_metric)})",
        n=n,
        value_a=report_float(full_a),
        value_b=report_float(full_b),
        difference=difference,
        low=low,
        high=high,
    )


def compare(
    a: LoadedRun,
    b: LoadedRun,
    label_a: str,
    label_b: str,
    mode: ScoringMode = "strict",
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    anatomy: Sequence[str] | None = None,
) -> Comparison:
    """Compare run B with run A on their common cases (optionally only those of the given anatomies)."""
    cases_a = a.cases
    common = set(cases_a) & set(b.cases)
    if anatomy:
        wanted = {x.lower() for x in anatomy}
        common = {c for c in common if cases_a[c].anatomy.lower() in wanted}
    if not common:
        raise ConfigError(f"{a.folder} and {b.folder} have no case in common: nothing to compare")
    ta = case_table(a.judgements_for(mode), mode, a.scenarios, only=common)
    tb = case_table(b.judgements_for(mode), mode, b.scenarios, only=common)
    tasks = list(dict.fromkeys(block.task.key for block in ta.blocks))
    rows = []
    for key in tasks:
        refs = [block.ref for block in ta.blocks if block.task.key == key]
        if get_task(key).capability in BINARY:
            rows.append(_binary(ta, tb, refs, key, resamples, seed))
        else:
            rows.append(_continuous(ta, tb, key, refs, resamples, seed))
    binary_refs = [block.ref for block in ta.blocks if block.task.capability in BINARY]
    pooled = _binary(ta, tb, binary_refs, "pooled", resamples, seed) if binary_refs else None
    return Comparison(
        a=label_a, b=label_b, run_a=str(a.folder), run_b=str(b.folder), n_common=len(common), tasks=rows, pooled=pooled
    )


def adjust(comparisons: Sequence[Comparison]) -> list[Comparison]:
    """Holm-adjust every per-task McNemar p-value of the report as one family (pooled rows are not in it)."""
    flat = [(i, j) for i, comparison in enumerate(comparisons) for j, _ in enumerate(comparison.tasks)]
    adjusted = holm([comparisons[i].tasks[j].p for i, j in flat])
    result = []
    for i, comparison in enumerate(comparisons):
        tasks = [
            row.model_copy(update={"p_holm": adjusted[flat.index((i, j))]}) for j, row in enumerate(comparison.tasks)
        ]
        result.append(comparison.model_copy(update={"tasks": tasks}))
    return result
