"""Named metrics: each is a per-case function, an aggregate function and a direction (style lesson 8).

Corpus metrics (BLEU, macro-F1) fit the same shape: the per-case function returns sufficient statistics and
the aggregate combines them. The reference-critical ones reproduce the official scorer's arithmetic exactly
(facts §6): sklearn's macro-F1, pycocoevalcap's Bleu(4) and Rouge, and numpy's RMSE / std on min-max
normalised values, in the same operation order so that 4-decimal rounding lands on the same side.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from types import MappingProxyType
from typing import Any, Generic, TypeVar

import numpy as np
from sacrebleu.metrics.bleu import BLEU

from u2eval.benchmark.tasks import DatasetSpec
from u2eval.records import Verdict

S = TypeVar("S")

TOLERANCE = 0.1  # CVE tolerance in normalised units, inclusive (facts §6.3)
ROUGE_BETA = 1.2  # pycocoevalcap's Rouge weights recall 1.2x, not F1
_TINY = 1e-15  # pycocoevalcap BleuScorer constants: they only avoid 0/0, they are not smoothing
_SMALL = 1e-9


@dataclass(frozen=True)
class Metric(Generic[S]):
    """A metric: ``sample`` maps one counted case to statistics, ``aggregate`` folds them into a value.

    ``full_scale`` is the value a perfect model gets on the metric's own scale (1 for proportions and
    normalised errors, 100 for BLEU, ROUGE and percent-within-tolerance); ``unit_score`` uses it to put the
    value on [0, 1], higher is better, which is what enters the U2-Score.
    """

    name: str
    sample: Callable[[Verdict, DatasetSpec], S]
    aggregate: Callable[[Sequence[S]], float]
    higher_is_better: bool
    full_scale: float = 1.0

    def compute(self, verdicts: Sequence[Verdict], dataset: DatasetSpec) -> float:
        return self.aggregate([self.sample(v, dataset) for v in verdicts])

    def unit_score(self, value: float) -> float:
        """Accuracy as is, 1 - RMSE, BLEU / 100. Not clipped: the U2-Score clips."""
        scaled = value / self.full_scale
        return scaled if self.higher_is_better else 1.0 - scaled


# ---------------------------------------------------------------- classification and location


def accuracy(flags: Sequence[bool]) -> float:
    """Share of correct cases; NaN for no cases (the caller decides what an empty dataset means)."""
    return sum(flags) / len(flags) if flags else math.nan


def macro_f1(truth: Sequence[str], pred: Sequence[str], labels: Sequence[str] | None = None) -> float:
    """sklearn's ``f1_score(average="macro")``, computed the same way (the tests check it against sklearn):
    per class F1 = 2·TP / (n_true + n_pred), 0 when the class never occurs (sklearn's default "warn" gives
    0 too), averaged over the classes. ``labels=None`` is the reference behaviour: the classes are the union
    of truths and predictions, so each distinct garbage prediction is a class with F1 = 0. Passing the
    truth classes instead scores garbage only as misses.

    Not sklearn itself: importing it (and scipy) costs more than a second on every run and score."""
    if not truth:
        return math.nan
    classes = sorted(set(truth) | set(pred)) if labels is None else list(dict.fromkeys(labels))
    n_true, n_pred = Counter(truth), Counter(pred)
    hits = Counter(t for t, p in zip(truth, pred, strict=True) if t == p)
    per_class = [2 * hits[c] / (n_true[c] + n_pred[c]) if n_true[c] + n_pred[c] else 0.0 for c in classes]
    return sum(per_class) / len(per_class) if per_class else 0.0


def _label(value: str | float | None) -> str:
    # An unmatched answer is "" in reference verdicts and None in strict ones: both become one "" class,
    # which is how the reference pipeline collapses all garbage (facts §10.4).
    return "" if value is None else str(value)


def _f1_union(pairs: Sequence[tuple[str, str]]) -> float:
    return macro_f1([t for t, _ in pairs], [p for _, p in pairs])


def _f1_truth_classes(pairs: Sequence[tuple[str, str]]) -> float:
    truths = sorted({t for t, _ in pairs})
    return macro_f1([t for t, _ in pairs], [p for _, p in pairs], labels=truths)


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


def rmse(errors: Sequence[float]) -> float:
    e = np.asarray(errors, dtype=np.float64)
    with np.errstate(over="ignore"):
        return float(np.sqrt(np.mean(e**2))) if e.size else math.nan


def mae(errors: Sequence[float]) -> float:
    e = np.asarray(errors, dtype=np.float64)
    return float(np.mean(np.abs(e))) if e.size else math.nan


def std(errors: Sequence[float]) -> float:
    """Population standard deviation (ddof=0) of the signed errors, as np.std."""
    e = np.asarray(errors, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        return float(np.std(e)) if e.size else math.nan


def within_tolerance(errors: Sequence[float], tolerance: float = TOLERANCE) -> float:
    """Percent of cases with |error| <= tolerance (inclusive), 0-100."""
    e = np.asarray(errors, dtype=np.float64)
    return float(np.mean(np.abs(e) <= tolerance) * 100) if e.size else math.nan


def _error_sample(verdict: Verdict, dataset: DatasetSpec) -> float:
    if dataset.value_range is None or not isinstance(verdict.truth, float | int):
        raise ValueError(f"regression case without a numeric truth or a value_range in dataset {dataset.id}")
    prediction = verdict.prediction
    if prediction is not None and not isinstance(prediction, float | int):
        raise ValueError(f"regression prediction must be a number, got {prediction!r}")
    return signed_error(None if prediction is None else float(prediction), float(verdict.truth), dataset.value_range)


# ---------------------------------------------------------------- text: pycocoevalcap BLEU and ROUGE-L


@dataclass(frozen=True)
class BleuStats:
    """One case's contribution to corpus BLEU: lengths and clipped n-gram counts per order."""

    test_len: int
    ref_len: int
    guess: tuple[int, ...]
    correct: tuple[int, ...]


def _ngrams(tokens: Sequence[str], n: int) -> Counter[tuple[str, ...]]:
    counts: Counter[tuple[str, ...]] = Counter()
    for k in range(1, n + 1):
        counts.update(zip(*(tokens[i:] for i in range(k)), strict=False))
    return counts


def bleu_stats(hypothesis: str, references: Sequence[str], n: int = 4) -> BleuStats:
    """Per-case statistics as pycocoevalcap's cook_refs / cook_test: str.split() tokens, counts clipped by
    the maximum count over references, and the 'closest' reference length (ties go to the shorter)."""
    hyp = hypothesis.split()
    refs = [r.split() for r in references]
    max_ref: dict[tuple[str, ...], int] = {}
    for ref in refs:
        for gram, count in _ngrams(ref, n).items():
            max_ref[gram] = max(max_ref.get(gram, 0), count)
    correct = [0] * n
    for gram, count in _ngrams(hyp, n).items():
        correct[len(gram) - 1] += min(max_ref.get(gram, 0), count)
    ref_len = min((abs(len(r) - len(hyp)), len(r)) for r in refs)[1]
    guess = tuple(max(0, len(hyp) - k + 1) for k in range(1, n + 1))
    return BleuStats(len(hyp), ref_len, guess, tuple(correct))


def corpus_bleu(stats: Sequence[BleuStats], n: int = 4) -> float:
    """Corpus BLEU-n x 100 from summed statistics, as BleuScorer.compute_score(option='closest')."""
    test_len = sum(s.test_len for s in stats)
    ref_len = sum(s.ref_len for s in stats)
    product = 1.0
    for k in range(n):
        correct = sum(s.correct[k] for s in stats)
        guess = sum(s.guess[k] for s in stats)
        product *= float(correct + _TINY) / (guess + _SMALL)
    bleu: float = product ** (1.0 / n)
    ratio = (test_len + _TINY) / (ref_len + _SMALL)
    if ratio < 1:
        bleu *= math.exp(1 - 1 / ratio)
    return bleu * 100


def bleu4(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Corpus BLEU-4 x 100 with one reference per case."""
    return corpus_bleu([bleu_stats(h, [r]) for h, r in zip(hypotheses, references, strict=True)])


def _lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence, bit-parallel (Hyyrö 2004): one big-int step per token of
    ``b`` instead of a len(a) x len(b) table, so long reports stay cheap. Same value as the DP table."""
    masks: dict[str, int] = {}
    for i, token in enumerate(a):
        masks[token] = masks.get(token, 0) | (1 << i)
    full = (1 << len(a)) - 1
    v = full
    for token in b:
        u = v & masks.get(token, 0)
        v = ((v + u) | (v - u)) & full
    return len(a) - v.bit_count()


def rouge_l_case(hypothesis: str, references: Sequence[str], beta: float = ROUGE_BETA) -> float:
    """pycocoevalcap Rouge.calc_score: tokens by split(' ') (so '' is one empty token), best precision and
    best recall over references, F-beta; 0 when either is 0."""
    cand = hypothesis.split(" ")
    precisions, recalls = [], []
    for reference in references:
        ref = reference.split(" ")
        lcs = _lcs_length(ref, cand)
        precisions.append(lcs / float(len(cand)))
        recalls.append(lcs / float(len(ref)))
    p, r = max(precisions), max(recalls)
    if p == 0 or r == 0:
        return 0.0
    return ((1 + beta**2) * p * r) / float(r + beta**2 * p)


def _mean_x100(values: Sequence[float]) -> float:
    return float(np.mean(np.array(values))) * 100 if values else math.nan


def rouge_l(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Mean per-case ROUGE-L x 100."""
    return _mean_x100([rouge_l_case(h, [r]) for h, r in zip(hypotheses, references, strict=True)])


def sacrebleu_corpus(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """sacrebleu's standard corpus BLEU (13a tokeniser, exp smoothing): comparable with other papers."""
    if not hypotheses:
        return math.nan
    return float(BLEU().corpus_score(list(hypotheses), [list(references)]).score)


def sacrebleu_signature() -> str:
    """The signature of ``sacrebleu_corpus`` (sacrebleu only knows nrefs after scoring something)."""
    bleu = BLEU()
    bleu.corpus_score(["a"], [["a"]])
    signature: object = bleu.get_signature()
    return str(signature)


def _text_pair(verdict: Verdict, dataset: DatasetSpec) -> tuple[str, str]:
    # A missing answer is scored as empty text, as the reference report scorer does.
    return _label(verdict.prediction).strip(), _label(verdict.truth).strip()


def _corpus_sacrebleu(pairs: Sequence[tuple[str, str]]) -> float:
    return _sacrebleu_cached(tuple(pairs))


@lru_cache(maxsize=32)
def _sacrebleu_cached(pairs: tuple[tuple[str, str], ...]) -> float:
    # Both scoring modes usually hand over the same texts, and sacrebleu's tokeniser is the slow part.
    return sacrebleu_corpus([h for h, _ in pairs], [r for _, r in pairs])


# ---------------------------------------------------------------- the table


def _correct_sample(verdict: Verdict, dataset: DatasetSpec) -> bool:
    return bool(verdict.correct)


def _label_pair(verdict: Verdict, dataset: DatasetSpec) -> tuple[str, str]:
    return _label(verdict.truth), _label(verdict.prediction)


def _bleu_sample(verdict: Verdict, dataset: DatasetSpec) -> BleuStats:
    return _bleu_stats_cached(*_text_pair(verdict, dataset))


@lru_cache(maxsize=4096)
def _bleu_stats_cached(hypothesis: str, reference: str) -> BleuStats:
    return bleu_stats(hypothesis, [reference])  # the two modes mostly score the same texts


def _rouge_sample(verdict: Verdict, dataset: DatasetSpec) -> float:
    hypothesis, reference = _text_pair(verdict, dataset)
    return rouge_l_case(hypothesis, [reference])


METRICS: Mapping[str, Metric[Any]] = MappingProxyType(
    {
        "accuracy": Metric("accuracy", _correct_sample, accuracy, higher_is_better=True),
        "macro_f1": Metric("macro_f1", _label_pair, _f1_union, higher_is_better=True),
        "macro_f1_truth_classes": Metric("macro_f1_truth_classes", _label_pair, _f1_truth_classes, True),
        "rmse": Metric("rmse", _error_sample, rmse, higher_is_better=False),
        "mae": Metric("mae", _error_sample, mae, higher_is_better=False),
        "std": Metric("std", _error_sample, std, higher_is_better=False),
        "within_tolerance": Metric("within_tolerance", _error_sample, within_tolerance, True, full_scale=100.0),
        "bleu4": Metric("bleu4", _bleu_sample, corpus_bleu, higher_is_better=True, full_scale=100.0),
        "rouge_l": Metric("rouge_l", _rouge_sample, _mean_x100, higher_is_better=True, full_scale=100.0),
        "sacrebleu": Metric("sacrebleu", _text_pair, _corpus_sacrebleu, higher_is_better=True, full_scale=100.0),
    }
)


# What a task's [0, 1] score is, from its primary metric: the number shown and fed into the U2-Score.
_SCORE_LABELS = {"rmse": "1 − RMSE", "bleu4": "BLEU-4 / 100"}


def score_label(primary_metric: str) -> str:
    """'1 − RMSE' for CVE, 'BLEU-4 / 100' for RG and CG, 'accuracy' as it is."""
    return _SCORE_LABELS.get(primary_metric, primary_metric)


def get_metric(name: str) -> Metric[Any]:
    try:
        return METRICS[name]
    except KeyError:
        raise KeyError(f"unknown metric {name!r}; known: {', '.join(sorted(METRICS))}") from None
