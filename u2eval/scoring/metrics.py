"""Named metrics, each defined once for the score and its bootstrap (style lesson 8).

A metric reads one number row per counted case (``sample`` then ``stats``: an n x k table whose column sums are
all it needs) and makes its value from those sums (``finish``: rows of [count, sum_1 .. sum_k] to values). The
scorer's value is ``finish`` of the plain sums; a bootstrap resample is ``finish`` of the sums weighted by how
often each case was drawn (reports/uncertainty.py), so a new metric gets its interval with no more code.
``mean_metric`` makes the common kind (a mean of a per-case value) from one function.

The reference-critical ones reproduce the official scorer's arithmetic to the bit (facts §6): sklearn's
macro-F1, pycocoevalcap's Bleu(4) and Rouge (text_metrics.py), numpy's RMSE and std on min-max normalised
values. Column sums are taken as numpy's mean takes them (pairwise, over a contiguous column) so that
4-decimal rounding lands on the same side. Where sums cannot give the scorer's bits (np.std's two passes) the
metric keeps the scorer's formula as ``exact`` for the score and uses the sums only for resamples.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from types import MappingProxyType
from typing import Any, Generic, TypeVar

import numpy as np
import numpy.typing as npt

from u2eval.benchmark.tasks import DatasetSpec
from u2eval.records import Verdict
from u2eval.scoring.text_metrics import (
    BLEU_ORDER,
    BleuStats,
    bleu_from_sums,
    bleu_stats,
    rouge_l_case,
    sacrebleu_corpus,
    sacrebleu_signature,
)

__all__ = [
    "METRICS",
    "TOLERANCE",
    "Metric",
    "get_metric",
    "mean_metric",
    "normalise",
    "reported_as",
    "sacrebleu_signature",
    "score_label",
    "scored_as",
    "signed_error",
]

S = TypeVar("S")
FloatArray = npt.NDArray[np.float64]

TOLERANCE = 0.1  # CVE tolerance in normalised units, inclusive (facts §6.3)


def column_sums(table: FloatArray, weights: FloatArray | None = None) -> FloatArray:
    """Rows of [count, sum of each column] of a per-case table: one row of plain sums (``weights`` None, taken
    as np.mean takes them), or one row per row of (R x n) case weights."""
    if weights is None and table.shape[0] == 1:  # one case (judging's per-case text metrics): its own row
        return np.concatenate(([1.0], table[0]))[None, :]
    if weights is None:
        columns = np.ascontiguousarray(table.T)  # each column contiguous: summed pairwise, as np.mean sums
        return np.concatenate(([float(table.shape[0])], np.add.reduce(columns, axis=1)))[None, :]
    with np.errstate(over="ignore", invalid="ignore"):
        return np.asarray(weights @ np.column_stack([np.ones(table.shape[0]), table]), dtype=np.float64)


@dataclass(frozen=True)
class Metric(Generic[S]):
    """A metric: ``sample`` maps one counted case to what it reads, ``stats`` turns samples into the (n x k)
    table, ``finish`` turns rows of [count, column sums] into values (NaN where the count is 0).

    ``full_scale`` is the value a perfect model gets on the metric's own scale (1 for proportions and
    normalised errors, 100 for BLEU, ROUGE and percent-within-tolerance); ``unit_score`` uses it to put the
    value on [0, 1], higher is better, which is what enters the U2-Score. ``stats`` None: a metric that is
    not made of per-case sums (sacreBLEU), scored by ``exact`` and without an interval. ``poolable`` False:
    the table's columns differ between datasets (macro-F1's classes), so datasets cannot be summed together.
    """

    name: str
    sample: Callable[[Verdict, DatasetSpec], S]
    stats: Callable[[Sequence[S]], FloatArray] | None
    finish: Callable[[FloatArray], FloatArray]
    higher_is_better: bool
    full_scale: float = 1.0
    exact: Callable[[Sequence[S]], float] | None = None
    poolable: bool = True

    @property
    def resamplable(self) -> bool:
        return self.stats is not None

    def of_samples(self, samples: Sequence[S]) -> float:
        """The metric's value over these samples (NaN for none)."""
        if self.exact is not None:
            return self.exact(samples)
        if not samples or self.stats is None:
            return math.nan
        return float(self.finish(column_sums(self.stats(samples)))[0])

    def compute(self, verdicts: Sequence[Verdict], dataset: DatasetSpec) -> float:
        return self.of_samples([self.sample(v, dataset) for v in verdicts])

    def table(self, verdicts: Sequence[Verdict], dataset: DatasetSpec) -> FloatArray:
        """The (n x k) statistics of these cases, for resampling."""
        if self.stats is None:
            raise ValueError(f"metric {self.name!r} has no per-case statistics to resample")
        return self.stats([self.sample(v, dataset) for v in verdicts])

    def unit_score(self, value: float) -> float:
        """Accuracy as is, 1 - RMSE, BLEU / 100. Not clipped: the U2-Score clips."""
        scaled = value / self.full_scale
        return scaled if self.higher_is_better else 1.0 - scaled


def _ratio(numerator: FloatArray, count: FloatArray) -> FloatArray:
    """numerator / count, NaN where the count is 0 (divided only where it is not: no warning to silence)."""
    out: FloatArray = np.full(numerator.shape, np.nan)
    np.divide(numerator, count, out=out, where=count > 0)
    return out


def mean_metric(
    name: str,
    value: Callable[[Verdict, DatasetSpec], float],
    higher_is_better: bool,
    full_scale: float = 1.0,
    then: Callable[[FloatArray], FloatArray] | None = None,
) -> Metric[float]:
    """A metric that is the mean of one per-case number (then ``then`` of the mean: x100, a square root)."""

    def stats(samples: Sequence[float]) -> FloatArray:
        return np.asarray(samples, dtype=np.float64).reshape(-1, 1)

    def finish(sums: FloatArray) -> FloatArray:
        mean = _ratio(sums[:, 1], sums[:, 0])
        return mean if then is None else np.asarray(then(mean), dtype=np.float64)

    return Metric(name, value, stats, finish, higher_is_better, full_scale)


def _label(value: str | float | None) -> str:
    # An unmatched answer is "" in reference verdicts and None in strict ones: both become one "" class,
    # which is how the reference pipeline collapses all garbage (facts §10.4).
    return "" if value is None else str(value)


# ---------------------------------------------------------------- classification and location


def _correct(verdict: Verdict, dataset: DatasetSpec) -> float:
    return 1.0 if verdict.correct else 0.0


def _label_pair(verdict: Verdict, dataset: DatasetSpec) -> tuple[str, str]:
    return _label(verdict.truth), _label(verdict.prediction)


def _class_counts(pairs: Sequence[tuple[str, str]]) -> FloatArray:
    """Per case, one-hot [truth class | predicted class | hit] over the classes of these cases (the union of
    truths and predictions, sorted): their sums are each class's true count, predicted count and hits."""
    classes = sorted({t for t, _ in pairs} | {p for _, p in pairs})
    index = {c: i for i, c in enumerate(classes)}
    width = len(classes)
    table = np.zeros((len(pairs), 3 * width), dtype=np.float64)
    for row, (truth, pred) in enumerate(pairs):
        table[row, index[truth]] = 1.0
        table[row, width + index[pred]] = 1.0
        if truth == pred:
            table[row, 2 * width + index[truth]] = 1.0
    return table


def _macro_f1_finish(over_union: bool) -> Callable[[FloatArray], FloatArray]:
    """sklearn's ``f1_score(average="macro")``: per class F1 = 2·TP / (n_true + n_pred), averaged over the
    classes sklearn sees: the union of truths and predictions (``labels=None``, the reference: each distinct
    garbage prediction is a class with F1 = 0) or the truth classes only (garbage is only a miss). A class
    absent from the counted cases does not enter. Python floats summed in class order, as sklearn's mean.

    Not sklearn itself: importing it (and scipy) costs more than a second on every run and score."""

    def finish(sums: FloatArray) -> FloatArray:
        width = (sums.shape[1] - 1) // 3
        n_true, n_pred, hits = sums[:, 1 : 1 + width], sums[:, 1 + width : 1 + 2 * width], sums[:, 1 + 2 * width :]
        present = (n_true + n_pred > 0) if over_union else (n_true > 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            per_class = np.where(present, 2 * hits / np.where(present, n_true + n_pred, 1.0), 0.0)
        total = np.zeros(sums.shape[0])
        for column in range(width):  # added in class order, one class at a time, as Python's sum adds the list
            total = total + per_class[:, column]
        classes = present.sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where((classes > 0) & (sums[:, 0] > 0), total / np.maximum(classes, 1), np.nan)

    return finish


# ---------------------------------------------------------------- clinical value estimation


def normalise(value: float, value_range: tuple[float, float]) -> float:
    """Min-max normalisation by the prompt's range, no clipping (out-of-range answers give < 0 or > 1)."""
    low, high = value_range
    if high == low:
        return 0.0
    return (value - low) / (high - low)


def signed_error(prediction: float | None, truth: float, value_range: tuple[float, float]) -> float:
    """truth - prediction in normalised units (the reference's sign). A counted case without a number
    (strict mode) is scored as the worst in-range answer: the end of the range farthest from the truth."""
    t = normalise(truth, value_range)
    p = (0.0 if t >= 0.5 else 1.0) if prediction is None else normalise(prediction, value_range)
    return t - p


def _error(verdict: Verdict, dataset: DatasetSpec) -> float:
    if dataset.value_range is None or not isinstance(verdict.truth, float | int):
        raise ValueError(f"regression case without a numeric truth or a value_range in dataset {dataset.id}")
    prediction = verdict.prediction
    if prediction is not None and not isinstance(prediction, float | int):
        raise ValueError(f"regression prediction must be a number, got {prediction!r}")
    return signed_error(None if prediction is None else float(prediction), float(verdict.truth), dataset.value_range)


def _squared_error(verdict: Verdict, dataset: DatasetSpec) -> float:
    e = _error(verdict, dataset)
    return e * e  # the product numpy's e**2 gives for np.mean(e**2); a float overflows to inf, as numpy's does


def _within(verdict: Verdict, dataset: DatasetSpec) -> float:
    return 1.0 if abs(_error(verdict, dataset)) <= TOLERANCE else 0.0


def _error_moments(errors: Sequence[float]) -> FloatArray:
    e = np.asarray(errors, dtype=np.float64)
    with np.errstate(over="ignore"):
        return np.column_stack([e, e * e])


def _std_from_moments(sums: FloatArray) -> FloatArray:
    mean = _ratio(sums[:, 1], sums[:, 0])
    with np.errstate(over="ignore", invalid="ignore"):
        return np.asarray(np.sqrt(np.maximum(_ratio(sums[:, 2], sums[:, 0]) - mean * mean, 0.0)), dtype=np.float64)


def _np_std(errors: Sequence[float]) -> float:
    """Population standard deviation (ddof=0) of the signed errors, as np.std: two passes."""
    e = np.asarray(errors, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        return float(np.std(e)) if e.size else math.nan


# ---------------------------------------------------------------- text


def _text_pair(verdict: Verdict, dataset: DatasetSpec) -> tuple[str, str]:
    # A missing answer is scored as empty text, as the reference report scorer does.
    return _label(verdict.prediction).strip(), _label(verdict.truth).strip()


def _bleu_sample(verdict: Verdict, dataset: DatasetSpec) -> BleuStats:
    return _bleu_stats_cached(*_text_pair(verdict, dataset))


@lru_cache(maxsize=4096)
def _bleu_stats_cached(hypothesis: str, reference: str) -> BleuStats:
    return bleu_stats(hypothesis, [reference])  # the two modes mostly score the same texts


def _bleu_table(stats: Sequence[BleuStats]) -> FloatArray:
    return np.array([s.row() for s in stats], dtype=np.float64).reshape(len(stats), 2 + 2 * BLEU_ORDER)


def _bleu_finish(sums: FloatArray) -> FloatArray:
    return np.array([bleu_from_sums(row[1:]) if row[0] > 0 else math.nan for row in sums], dtype=np.float64)


def _rouge(verdict: Verdict, dataset: DatasetSpec) -> float:
    hypothesis, reference = _text_pair(verdict, dataset)
    return rouge_l_case(hypothesis, [reference])


def _corpus_sacrebleu(pairs: Sequence[tuple[str, str]]) -> float:
    return _sacrebleu_cached(tuple(pairs))


@lru_cache(maxsize=32)
def _sacrebleu_cached(pairs: tuple[tuple[str, str], ...]) -> float:
    # Both scoring modes usually hand over the same texts, and sacrebleu's tokeniser is the slow part.
    return sacrebleu_corpus([h for h, _ in pairs], [r for _, r in pairs])


def _no_finish(sums: FloatArray) -> FloatArray:
    raise ValueError("sacrebleu is scored whole (its own tokeniser), not from per-case sums")


def _times_100(mean: FloatArray) -> FloatArray:
    return mean * 100


# ---------------------------------------------------------------- the table

METRICS: Mapping[str, Metric[Any]] = MappingProxyType(
    {
        "accuracy": mean_metric("accuracy", _correct, higher_is_better=True),
        "macro_f1": Metric("macro_f1", _label_pair, _class_counts, _macro_f1_finish(True), True, poolable=False),
        "macro_f1_truth_classes": Metric(
            "macro_f1_truth_classes", _label_pair, _class_counts, _macro_f1_finish(False), True, poolable=False
        ),
        "rmse": mean_metric("rmse", _squared_error, higher_is_better=False, then=np.sqrt),
        "mae": mean_metric("mae", lambda v, d: abs(_error(v, d)), higher_is_better=False),
        "std": Metric("std", _error, _error_moments, _std_from_moments, False, exact=_np_std),
        "within_tolerance": mean_metric("within_tolerance", _within, True, full_scale=100.0, then=_times_100),
        "bleu4": Metric("bleu4", _bleu_sample, _bleu_table, _bleu_finish, True, full_scale=100.0),
        "rouge_l": mean_metric("rouge_l", _rouge, True, full_scale=100.0, then=_times_100),
        "sacrebleu": Metric("sacrebleu", _text_pair, None, _no_finish, True, 100.0, exact=_corpus_sacrebleu),
    }
)


def get_metric(name: str) -> Metric[Any]:
    try:
        return METRICS[name]
    except KeyError:
        raise KeyError(f"unknown metric {name!r}; known: {', '.join(sorted(METRICS))}") from None


def scored_as(reported: str, f1_over_union: bool) -> str:
    """The metric that computes the value reported as ``reported``: a task's 'macro_f1' is sklearn's union
    of classes only under the reference quirk ``f1_over_union``, and over the truth classes otherwise."""
    return "macro_f1_truth_classes" if reported == "macro_f1" and not f1_over_union else reported


def reported_as(metric: str) -> str:
    """The name a value of ``metric`` is reported under (the inverse of :func:`scored_as`)."""
    return "macro_f1" if metric == "macro_f1_truth_classes" else metric


# What a task's [0, 1] score is, from its primary metric: the number shown and fed into the U2-Score.
_SCORE_LABELS = {"rmse": "1 − RMSE", "bleu4": "BLEU-4 / 100"}


def score_label(primary_metric: str) -> str:
    """'1 − RMSE' for CVE, 'BLEU-4 / 100' for RG and CG, 'accuracy' as it is."""
    return _SCORE_LABELS.get(primary_metric, primary_metric)
