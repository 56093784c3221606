"""Bootstrap intervals for a run: every per-dataset metric, every task score and the U2-Score.

A :class:`CaseTable` holds, per source dataset (the bootstrap's stratum), each case's sufficient statistics
in one scoring mode, computed with the metrics' own per-case functions (``Metric.sample`` in metrics.py):
the correctness flag, the signed normalised CVE error, pycocoevalcap's BLEU counts (lengths, clipped
n-gram matches, candidate n-grams), the per-case ROUGE-L, and the truth / predicted labels for macro-F1.
A metric over any weighting of the cases is then a ratio of weighted sums, so the full-sample value
(weights all 1) and the B resamples (bootstrap count weights) come from the same code; the tests check
the full-sample values against the scorer's.

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

import numpy as np

from u2eval.benchmark.tasks import DatasetSpec, TaskSpec, get_task, task_keys
from u2eval.records import Judgement, ScoringMode, Verdict
from u2eval.reports.stats import FloatArray, Interval, percentile_interval, stratum_weights
from u2eval.scoring.metrics import _SMALL, _TINY, TOLERANCE, get_metric  # BleuScorer's constants: the formulas agree
from u2eval.scoring.summary import ModeSummary

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
_BLEU_ORDER = 4


@dataclass(frozen=True)
class Block:
    """The cases of one source dataset (one stratum), sorted by case id, with their per-case statistics."""

    ref: str  # "task/dataset_id"
    task: TaskSpec
    dataset: DatasetSpec
    case_ids: tuple[str, ...]
    anatomy: tuple[str, ...]
    scenario: tuple[str, ...]
    answered: FloatArray  # 1 unless an infra error
    ok: FloatArray  # 1 when the answer parsed (outcome "ok")
    counted: FloatArray  # 1 when the mode scores the case
    correct: FloatArray  # classification / detection: 1 right, 0 wrong
    error: FloatArray  # regression: truth - prediction, normalised by the prompt range
    bleu: FloatArray  # generation: (n, 2 + 2 * 4) test_len, ref_len, guess 1-4, correct 1-4
    rouge: FloatArray  # generation: per-case ROUGE-L F (0-1)
    labels: tuple[tuple[str, str], ...]  # classification: (truth, prediction) as macro-F1 reads them

    @property
    def n(self) -> int:
        return len(self.case_ids)


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


def _scorable(verdict: Verdict, task: TaskSpec) -> bool:
    # The scorer's rule (scoring._scorable): a regression case needs a numeric truth.
    return verdict.counted and (task.capability != "regression" or isinstance(verdict.truth, float | int))


def _case_row(
    verdict: Verdict, task: TaskSpec, ds: DatasetSpec, counted: bool
) -> tuple[float, float, list[int], float]:
    correct, error, bleu, rouge = 0.0, 0.0, [0] * (2 + 2 * _BLEU_ORDER), 0.0
    if not counted:
        return correct, error, bleu, rouge
    if task.capability in BINARY:
        correct = float(get_metric("accuracy").sample(verdict, ds))
    elif task.capability == "regression":
        error = float(get_metric("rmse").sample(verdict, ds))
    elif task.capability == "generation":
        stats = get_metric("bleu4").sample(verdict, ds)
        bleu = [stats.test_len, stats.ref_len, *stats.guess, *stats.correct]
        rouge = float(get_metric("rouge_l").sample(verdict, ds))
    return correct, error, bleu, rouge


def _block(ref: str, judgements: Sequence[Judgement], mode: ScoringMode, scenarios: Mapping[str, str]) -> Block:
    task = get_task(judgements[0].task)
    ds = task.dataset(judgements[0].dataset_id)
    rows = []
    labels = []
    for j in judgements:
        verdict = j.strict if mode == "strict" else j.reference
        counted = j.outcome != "infra_error" and _scorable(verdict, task)
        rows.append((j.outcome != "infra_error", j.outcome == "ok", counted, *_case_row(verdict, task, ds, counted)))
        labels.append(get_metric("macro_f1").sample(verdict, ds) if task.capability == "classification" else ("", ""))
    columns = list(zip(*rows, strict=True))
    return Block(
        ref=ref,
        task=task,
        dataset=ds,
        case_ids=tuple(j.case_id for j in judgements),
        anatomy=tuple(j.anatomy for j in judgements),
        scenario=tuple(scenarios.get(j.case_id, "") for j in judgements),
        answered=np.array(columns[0], dtype=np.float64),
        ok=np.array(columns[1], dtype=np.float64),
        counted=np.array(columns[2], dtype=np.float64),
        correct=np.array(columns[3], dtype=np.float64),
        error=np.array(columns[4], dtype=np.float64),
        bleu=np.array(columns[5], dtype=np.float64).reshape(len(judgements), 2 + 2 * _BLEU_ORDER),
        rouge=np.array(columns[6], dtype=np.float64),
        labels=tuple(labels),
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


def _ratio(numerator: FloatArray, denominator: FloatArray) -> FloatArray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1.0), np.nan)


def bleu_from_sums(sums: FloatArray) -> FloatArray:
    """Corpus BLEU-4 x 100 per row of summed statistics, as metrics.corpus_bleu (pycocoevalcap)."""
    test_len, ref_len = sums[:, 0], sums[:, 1]
    guess, correct = sums[:, 2 : 2 + _BLEU_ORDER], sums[:, 2 + _BLEU_ORDER :]
    product = np.prod((correct + _TINY) / (guess + _SMALL), axis=1)
    bleu = product ** (1.0 / _BLEU_ORDER)
    ratio = (test_len + _TINY) / (ref_len + _SMALL)
    with np.errstate(over="ignore", divide="ignore"):
        penalty = np.where(ratio < 1, np.exp(1 - 1 / ratio), 1.0)
    return np.asarray(bleu * penalty * 100, dtype=np.float64)


def _macro_f1(block: Block, w: FloatArray, m: FloatArray, union: bool) -> FloatArray:
    kept = [pair for pair, keep in zip(block.labels, m, strict=True) if keep]
    classes = sorted({t for t, _ in kept} | ({p for _, p in kept} if union else set()))
    if not classes:
        return np.full(w.shape[0], np.nan)
    index = {c: i for i, c in enumerate(classes)}
    truth = np.zeros((block.n, len(classes)))
    pred = np.zeros((block.n, len(classes)))
    for row, ((t, p), keep) in enumerate(zip(block.labels, m, strict=True)):
        if keep:
            truth[row, index[t]] = 1.0
            if p in index:  # a prediction outside the truth classes is only a miss
                pred[row, index[p]] = 1.0
    n_true, n_pred, hits = w @ truth, w @ pred, w @ (truth * pred)
    present = (n_true + n_pred > 0) if union else (n_true > 0)  # the classes a resample's sklearn call sees
    per_class = np.where(present, _ratio(2 * hits, n_true + n_pred), 0.0)
    per_class = np.nan_to_num(per_class, nan=0.0)
    return _ratio(per_class.sum(axis=1), present.sum(axis=1).astype(np.float64))


def _sums(block: Block, name: str, w: FloatArray, m: FloatArray) -> FloatArray:
    """(R x k) weighted sums a ratio metric is made of; column 0 is the number of counted cases."""
    e = block.error
    columns: list[FloatArray]
    if name == "accuracy":
        columns = [m * block.correct]
    elif name == "rmse":
        columns = [m * e * e]
    elif name == "mae":
        columns = [m * np.abs(e)]
    elif name == "within_tolerance":
        columns = [m * (np.abs(e) <= TOLERANCE)]
    elif name == "std":
        columns = [m * e, m * e * e]
    elif name == "rouge_l":
        columns = [m * block.rouge]
    elif name == "bleu4":
        return np.asarray(w @ np.column_stack([m, m[:, None] * block.bleu]), dtype=np.float64)
    else:
        raise KeyError(f"no bootstrap for metric {name!r}")
    with np.errstate(over="ignore", invalid="ignore"):
        return np.asarray(w @ np.column_stack([m, *columns]), dtype=np.float64)


def _finish(name: str, sums: FloatArray) -> FloatArray:
    count = sums[:, 0]
    if name == "bleu4":
        return np.where(count > 0, bleu_from_sums(sums[:, 1:]), np.nan)
    mean = _ratio(sums[:, 1], count)
    if name == "rmse":
        with np.errstate(over="ignore", invalid="ignore"):
            return np.asarray(np.sqrt(mean), dtype=np.float64)
    if name == "std":
        return np.asarray(np.sqrt(np.maximum(_ratio(sums[:, 2], count) - mean * mean, 0.0)), dtype=np.float64)
    if name in ("within_tolerance", "rouge_l"):
        return mean * 100
    return mean


def block_metric(block: Block, name: str, w: FloatArray, mask: FloatArray | None = None) -> FloatArray:
    """Metric ``name`` of the block's counted cases (times ``mask``), for each row of weights ``w``."""
    m = block.counted if mask is None else block.counted * mask
    if name in ("macro_f1", "macro_f1_truth_classes"):
        return _macro_f1(block, w, m, union=name == "macro_f1")
    return _finish(name, _sums(block, name, w, m))


def pooled_metric(
    table: CaseTable,
    refs: Sequence[str],
    name: str,
    weights: Sequence[FloatArray] | None,
    masks: Mapping[str, FloatArray] | None = None,
) -> FloatArray:
    """Metric ``name`` over the counted cases of several datasets pooled (one accuracy over all their
    cases, one corpus BLEU, one RMSE), per resample; ``weights`` None gives the full-sample value."""
    total: FloatArray | None = None
    for index, block in enumerate(table.blocks):
        if block.ref not in refs:
            continue
        w = _ones(block) if weights is None else weights[index]
        m = block.counted if masks is None or block.ref not in masks else block.counted * masks[block.ref]
        sums = _sums(block, name, w, m)
        total = sums if total is None else total + sums
    if total is None:
        return np.full(1 if weights is None else weights[0].shape[0], np.nan)
    return _finish(name, total)


def _ones(block: Block) -> FloatArray:
    return np.ones((1, block.n))


def dataset_metric_names(task: TaskSpec, mode: ScoringMode) -> list[str]:
    """The per-dataset metrics with intervals (sacreBLEU has none: it is not a sum of per-case counts)."""
    names = []
    for name in task.metrics:
        names.append("macro_f1_truth_classes" if name == "macro_f1" and mode == "strict" else name)
    return names


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
            if np.isfinite(block_metric(block, task.primary_metric, _ones(block), mask)).all():
                w = _ones(block) if weights is None else weights[index]
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
        for name in dataset_metric_names(block.task, table.mode):
            shown = "macro_f1" if name == "macro_f1_truth_classes" else name
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
