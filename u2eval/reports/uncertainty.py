"""Bootstrap intervals for a run: every per-dataset metric, every task score and the U2-Score.

A :class:`CaseTable` holds, per source dataset (the bootstrap's stratum), each case's statistics for every
metric of its task, made by the metric's own ``stats`` (scoring/metrics.py). A metric over any weighting of
the cases is its ``finish`` of the weighted column sums, so the full-sample value (the plain sums, the
scorer's own number) and the B resamples (bootstrap count weights) come from the one definition, and a new
metric has intervals without code here; the tests check the full-sample values against the scorer's.

Which cases enter: a case counts where the scorer counts it in that mode (answered, and ``Verdict.counted``);
infra errors and uncounted cases add to neither numerator nor denominator, exactly as in the point estimate.
They are still drawn by the resampler (the strata are all the cases of a dataset), so how many cases count
varies between resamples as it would between samples.

Task scores follow the mode's summary: the datasets it averaged (``TaskResult.datasets``, which carries
every reference placement quirk) and its filled tasks (a constant, no interval).
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

from u2eval.benchmark.tasks import DatasetSpec, TaskSpec, get_task, task_keys
from u2eval.records import Judgement, ScoringMode
from u2eval.scoring.dataset_scores import scorable
from u2eval.scoring.metrics import column_sums, get_metric, scored_as
from u2eval.scoring.summary import ModeSummary
from u2eval.stats import FloatArray, Interval, percentile_interval, stratum_weights

__all__ = [
    "Block",
    "CaseTable",
    "RunIntervals",
    "block_metric",
    "case_table",
    "pooled_metric",
    "run_intervals",
    "task_replicates",
    "unit_scores",
]

BINARY = frozenset({"classification", "detection"})


def _resampled_metrics(task: TaskSpec) -> tuple[str, ...]:
    """The metrics a block keeps statistics for: the task's, each macro-F1 in both class sets (the quirk
    ``f1_over_union`` picks one), and those with per-case sums only."""
    names = [scored_as(n, union) for n in (*task.metrics, task.primary_metric) for union in (True, False)]
    return tuple(n for n in dict.fromkeys(names) if get_metric(n).resamplable)


@dataclass(frozen=True)
class Block:
    """The cases of one source dataset (one stratum), sorted by case id, with each metric's per-case
    statistics (``Metric.stats``; rows of cases the mode does not count are zero and never weighted)."""

    ref: str  # "task/dataset_id"
    task: TaskSpec
    dataset: DatasetSpec
    case_ids: tuple[str, ...]
    anatomy: tuple[str, ...]
    scenario: tuple[str, ...]
    answered: FloatArray  # 1 unless an infra error
    ok: FloatArray  # 1 when the answer parsed (outcome "ok")
    counted: FloatArray  # 1 when the mode scores the case
    stats: Mapping[str, FloatArray]  # metric name -> (n x k) per-case statistics

    @property
    def n(self) -> int:
        return len(self.case_ids)

    @property
    def correct(self) -> FloatArray:
        """Classification / detection: 1 right, 0 wrong (accuracy's statistic), for paired tests."""
        return self.stats["accuracy"][:, 0]


@dataclass(frozen=True)
class CaseTable:
    """One run's cases in one scoring mode, grouped into strata in official task order."""

    mode: ScoringMode
    blocks: tuple[Block, ...]
    _weights: dict[tuple[int, int], list[FloatArray]] = field(default_factory=dict, compare=False, repr=False)

    def block(self, ref: str) -> Block | None:
        return next((b for b in self.blocks if b.ref == ref), None)

    def weights(self, resamples: int, seed: int) -> list[FloatArray]:
        """Per block, the (resamples x n) bootstrap count weights; cached per (resamples, seed)."""
        key = (resamples, seed)
        if key not in self._weights:
            self._weights[key] = [stratum_weights(b.ref, b.n, resamples, seed) for b in self.blocks]
        return self._weights[key]

    @property
    def case_ids(self) -> set[str]:
        return {c for b in self.blocks for c in b.case_ids}


def _block(ref: str, judgements: Sequence[Judgement], mode: ScoringMode, scenarios: Mapping[str, str]) -> Block:
    task = get_task(judgements[0].task)
    ds = task.dataset(judgements[0].dataset_id)
    # judged: the judgements come with the judged verdicts in place of strict's (LoadedRun.judgements_for)
    verdicts = [j.reference if mode == "reference" else j.strict for j in judgements]
    counted = [j.outcome != "infra_error" and scorable(v, task) for j, v in zip(judgements, verdicts, strict=True)]
    rows = np.flatnonzero(counted)
    stats: dict[str, FloatArray] = {}
    for name in _resampled_metrics(task):
        metric = get_metric(name)
        kept = metric.table([verdicts[i] for i in rows], ds)
        table = np.zeros((len(judgements), kept.shape[1]), dtype=np.float64)
        table[rows] = kept
        stats[name] = table
    return Block(
        ref=ref,
        task=task,
        dataset=ds,
        case_ids=tuple(j.case_id for j in judgements),
        anatomy=tuple(j.anatomy for j in judgements),
        scenario=tuple(scenarios.get(j.case_id, "") for j in judgements),
        answered=np.array([j.outcome != "infra_error" for j in judgements], dtype=np.float64),
        ok=np.array([j.outcome == "ok" for j in judgements], dtype=np.float64),
        counted=np.array(counted, dtype=np.float64),
        stats=MappingProxyType(stats),
    )


def case_table(
    judgements: Iterable[Judgement],
    mode: ScoringMode,
    scenarios: Mapping[str, str] | None = None,
    only: set[str] | None = None,
) -> CaseTable:
    """Build the table of a run in ``mode``; ``scenarios`` maps case id to scenario (from cases.jsonl);
    ``only`` keeps just those case ids (the common cases of a paired comparison)."""
    groups: dict[tuple[str, str], list[Judgement]] = defaultdict(list)
    for j in judgements:
        if only is None or j.case_id in only:
            groups[(j.task, j.dataset_id)].append(j)
    order: dict[str, int] = {k: i for i, k in enumerate(task_keys())}

    def position(key: tuple[str, str]) -> tuple[int, int]:
        task = get_task(key[0])
        return order[key[0]], task.dataset_ids.index(key[1])

    blocks = []
    for key in sorted(groups, key=position):
        cases = sorted(groups[key], key=lambda j: j.case_id)
        blocks.append(_block(f"{key[0]}/{key[1]}", cases, mode, scenarios or {}))
    return CaseTable(mode=mode, blocks=tuple(blocks))


# ---------------------------------------------------------------------------------------------- metrics


def _sums(block: Block, name: str, w: FloatArray | None, m: FloatArray) -> FloatArray:
    """Rows of [counted cases, sums of the metric's statistics] over the cases kept by ``m``, weighted by each
    row of ``w`` (None: the plain sums, as the scorer takes them)."""
    if name not in block.stats:
        raise KeyError(f"no per-case statistics for metric {name!r} in {block.ref}")
    table = block.stats[name]
    if w is None:
        return column_sums(table[m > 0])
    # zero, not 0 x value, where a case is left out: an overflowed error (inf) would make the sums NaN
    return column_sums(np.where(m[:, None] > 0, table, 0.0), w * m[None, :])


def block_metric(block: Block, name: str, w: FloatArray | None = None, mask: FloatArray | None = None) -> FloatArray:
    """Metric ``name`` of the block's counted cases (times ``mask``), for each row of weights ``w`` (None: the
    full-sample value, as a 1-element array)."""
    m = block.counted if mask is None else block.counted * mask
    return get_metric(name).finish(_sums(block, name, w, m))


def pooled_metric(
    table: CaseTable,
    refs: Sequence[str],
    name: str,
    weights: Sequence[FloatArray] | None,
    masks: Mapping[str, FloatArray] | None = None,
) -> FloatArray:
    """Metric ``name`` over the counted cases of several datasets pooled (one accuracy over all their
    cases, one corpus BLEU, one RMSE), per resample; ``weights`` None gives the full-sample value."""
    metric = get_metric(name)
    if not metric.poolable:
        raise ValueError(f"metric {name!r} cannot pool datasets: its statistics differ between them")
    total: FloatArray | None = None
    for index, block in enumerate(table.blocks):
        if block.ref not in refs:
            continue
        w = None if weights is None else weights[index]
        m = block.counted if masks is None or block.ref not in masks else block.counted * masks[block.ref]
        sums = _sums(block, name, w, m)
        total = sums if total is None else total + sums
    if total is None:
        return np.full(1 if weights is None else weights[0].shape[0], np.nan)
    return metric.finish(total)


def dataset_metric_names(task: TaskSpec, f1_over_union: bool) -> dict[str, str]:
    """The per-dataset metrics with intervals, reported name -> the metric that computes it (sacreBLEU has
    none: it is not a sum of per-case counts)."""
    return {n: scored_as(n, f1_over_union) for n in task.metrics if get_metric(n).resamplable}


# ---------------------------------------------------------------------------------------------- tasks and U2


def task_replicates(
    table: CaseTable,
    refs: Sequence[str],
    task: TaskSpec,
    weights: Sequence[FloatArray] | None,
    masks: Mapping[str, FloatArray] | None = None,
    reported: Mapping[str, float | None] | None = None,
) -> FloatArray:
    """The task score (clip(unit(mean over ``refs`` of the primary metric))) per resample; ``weights`` None
    gives the full-sample value as a 1-element array; ``masks`` (per ref) narrows the counted cases.
    Datasets without a finite value are left out of the mean, as the scorer leaves them out, except those the
    summary ``reported`` a value for without a counted case (the official scorer's 0.0 for a dataset whose
    answers it all dropped): that value, in every resample, as in the score."""
    n = 1 if weights is None else weights[0].shape[0]
    values = []
    for ref in refs:
        index = next((i for i, b in enumerate(table.blocks) if b.ref == ref), None)
        mask = None if masks is None else masks.get(ref)
        if index is not None:
            block = table.blocks[index]
            if np.isfinite(block_metric(block, task.primary_metric, None, mask)).all():
                w = None if weights is None else weights[index]
                values.append(block_metric(block, task.primary_metric, w, mask))
                continue
        fixed = (reported or {}).get(ref)
        if fixed is not None and np.isfinite(fixed):
            values.append(np.full(n, fixed))
    if not values:
        return np.full(n, np.nan)
    stacked = np.vstack(values)
    stacked = np.where(np.isfinite(stacked), stacked, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a resample where no dataset has a value: NaN
        mean = np.nanmean(stacked, axis=0)
    return unit_scores(task.primary_metric, np.asarray(mean, dtype=np.float64))


def unit_scores(metric: str, values: FloatArray) -> FloatArray:
    """``Metric.unit_score`` then the U2 clip, element-wise (NaN stays NaN: nothing to score)."""
    spec = get_metric(metric)
    scaled = values / spec.full_scale
    unit = scaled if spec.higher_is_better else 1.0 - scaled
    return np.asarray(np.where(np.isnan(values), np.nan, np.clip(unit, 0.0, 1.0)), dtype=np.float64)


@dataclass(frozen=True)
class RunIntervals:
    """Intervals of one run in one mode. Estimates are the summary's numbers; datasets are on the metric's
    own scale, tasks and U2 on [0, 1]."""

    mode: ScoringMode
    resamples: int
    seed: int
    datasets: dict[str, dict[str, Interval]]
    tasks: dict[str, Interval]
    u2: Interval
    u2_over_present: Interval


def run_intervals(table: CaseTable, summary: ModeSummary, resamples: int, seed: int) -> RunIntervals:
    """Percentile intervals for ``summary`` (the same run and mode as ``table``)."""
    weights = table.weights(resamples, seed)
    reported = {f"{d.task}/{d.dataset_id}": d.metrics for d in summary.datasets}
    datasets: dict[str, dict[str, Interval]] = {}
    for block, w in zip(table.blocks, weights, strict=True):
        values = reported.get(block.ref, {})
        datasets[block.ref] = {}
        for shown, name in dataset_metric_names(block.task, summary.quirks.get("f1_over_union", False)).items():
            datasets[block.ref][shown] = percentile_interval(block_metric(block, name, w), values.get(shown))
    replicates: dict[str, FloatArray] = {}
    tasks: dict[str, Interval] = {}
    for key, result in summary.tasks.items():
        task = get_task(key)
        if result.filled or result.score is None:
            constant = np.nan if result.score is None else result.score
            replicates[key] = np.full(resamples, constant)
            tasks[key] = Interval(result.score, None, None)
            continue
        primary = {ref: metrics.get(task.primary_metric) for ref, metrics in reported.items()}
        replicates[key] = task_replicates(table, result.datasets, task, weights, reported=primary)
        tasks[key] = percentile_interval(replicates[key], result.score)
    u2 = Interval(summary.u2_score, None, None)
    if summary.u2_score is not None:
        total = sum(summary.tasks[k].weight * replicates[k] for k in task_keys())  # NaN: resample dropped
        u2 = percentile_interval(np.asarray(total, dtype=np.float64), summary.u2_score)
    present = [k for k, r in summary.tasks.items() if r.score is not None and not r.filled]
    over_present = Interval(summary.u2_over_present_tasks, None, None)
    if present:
        weight = sum(summary.tasks[k].weight for k in present)
        stacked = sum(summary.tasks[k].weight * replicates[k] for k in present) / weight
        over_present = percentile_interval(np.asarray(stacked, dtype=np.float64), summary.u2_over_present_tasks)
    return RunIntervals(table.mode, resamples, seed, datasets, tasks, u2, over_present)
