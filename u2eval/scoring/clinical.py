"""The clinical report score: how a clinician would grade a report or caption against its reference.

A judge lists the findings of the reference and of the answer and pairs those that describe the same thing
(``ClinicalComparison``); the rules here, not the judge, decide what is an error and how much it weighs, so a
reading is auditable and the same comparison always gives the same score.

Clinically significant errors:
- ``missed``: a finding of the reference (present) that no answer finding is paired with;
- ``invented``: an answer finding (present) paired with nothing in the reference;
- ``negation``: a pair where one text says the finding is there and the other that it is absent (its other
  attributes are then not compared);
- ``location``: a pair the judge says is placed differently;
- ``category``: a pair whose grading categories (TI-RADS, BI-RADS, LUS score...) differ once spelled alike
  ("TI-RADS 4" = "tirads4"), or, where one side gives none, that the judge says differs;
- ``measurement``: a pair whose sizes differ by more than the tolerance: max(2 mm, 20% of the reference).
Minor errors:
- ``appearance``: echogenicity or morphology described differently;
- ``measurement_missing``: the reference gives a size and the answer's paired finding none;
- ``missed_negative`` / ``extra_negative``: an absent finding ("no ascites") on one side only.

A pair with no significant error is matched. Score = matched / (matched + significant + minor / 4), in [0, 1];
a case where neither text has a finding scores 1, and an empty answer 0 (``u2eval.scoring.judged``). It is never part of
the U2-Score (facts: the official formula scores RG and CG by BLEU-4 only); it is reported beside BLEU and ROUGE.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from u2eval.records import DiskRecord
from u2eval.scoring.judge_records import ClinicalComparison, Finding, FindingPair
from u2eval.stats import CONFIDENCE, DEFAULT_RESAMPLES, DEFAULT_SEED, percentile_interval, stratum_weights

SIGNIFICANT = ("missed", "invented", "negation", "location", "category", "measurement")
MINOR = ("appearance", "measurement_missing", "missed_negative", "extra_negative")
MINOR_WEIGHT = 0.25  # a minor error weighs a quarter of a significant one
SIZE_TOLERANCE_MM = 2.0
SIZE_TOLERANCE_SHARE = 0.2


class ClinicalError(DiskRecord):
    kind: str  # one of SIGNIFICANT or MINOR
    significant: bool
    reference: int | None = None  # the finding's index on each side, where it has one
    answer: int | None = None


class ClinicalResult(DiskRecord):
    """One case's clinical grading, made from the judge's comparison by the rules above."""

    matched: int
    significant: int
    minor: int
    score: float
    errors: list[ClinicalError]


class MalformedComparison(ValueError):
    """The judge's comparison cannot be graded (a pair names a finding that is not listed, or one twice)."""


def _category_key(category: str | None) -> str | None:
    return re.sub(r"[\W_]+", "", category).lower() if category else None


def _size_outside(reference: float, answer: float) -> bool:
    return abs(answer - reference) > max(SIZE_TOLERANCE_MM, SIZE_TOLERANCE_SHARE * abs(reference))


def _pair_errors(pair: FindingPair, ref: Finding, ans: Finding) -> list[ClinicalError]:
    where = {"reference": pair.reference, "answer": pair.answer}
    if ref.present != ans.present:  # one says it is there, the other that it is not: nothing else to compare
        return [ClinicalError(kind="negation", significant=True, **where)]
    kinds: list[str] = []
    if "location" in pair.differences:
        kinds.append("location")
    ref_cat, ans_cat = _category_key(ref.category), _category_key(ans.category)
    if ref_cat is not None and ans_cat is not None:
        if ref_cat != ans_cat:
            kinds.append("category")
    elif "category" in pair.differences:
        kinds.append("category")
    if ref.size_mm is not None and ans.size_mm is not None:
        if _size_outside(ref.size_mm, ans.size_mm):
            kinds.append("measurement")
    elif ref.size_mm is not None:
        kinds.append("measurement_missing")
    if "appearance" in pair.differences:
        kinds.append("appearance")
    return [ClinicalError(kind=k, significant=k in SIGNIFICANT, **where) for k in kinds]


def _check(comparison: ClinicalComparison) -> None:
    refs = [p.reference for p in comparison.pairs]
    answers = [p.answer for p in comparison.pairs]
    for side, indices, findings in (("reference", refs, comparison.reference), ("answer", answers, comparison.answer)):
        bad = [i for i in indices if not 0 <= i < len(findings)]
        if bad:
            raise MalformedComparison(f"a pair names {side} finding {bad[0]}, of {len(findings)} listed")
        twice = [i for i, n in Counter(indices).items() if n > 1]
        if twice:
            raise MalformedComparison(f"{side} finding {twice[0]} is paired twice")


def grade(comparison: ClinicalComparison) -> ClinicalResult:
    """One case's errors and score from the judge's comparison; MalformedComparison when it cannot be graded."""
    _check(comparison)
    errors: list[ClinicalError] = []
    matched = 0
    for pair in comparison.pairs:
        found = _pair_errors(pair, comparison.reference[pair.reference], comparison.answer[pair.answer])
        errors += found
        matched += not any(e.significant for e in found)
    paired_refs = {p.reference for p in comparison.pairs}
    paired_answers = {p.answer for p in comparison.pairs}
    for i, finding in enumerate(comparison.reference):
        if i not in paired_refs:
            kind = "missed" if finding.present else "missed_negative"
            errors.append(ClinicalError(kind=kind, significant=finding.present, reference=i))
    for i, finding in enumerate(comparison.answer):
        if i not in paired_answers:
            kind = "invented" if finding.present else "extra_negative"
            errors.append(ClinicalError(kind=kind, significant=finding.present, answer=i))
    significant = sum(e.significant for e in errors)
    minor = len(errors) - significant
    weight = matched + significant + MINOR_WEIGHT * minor
    score = 1.0 if matched + significant + minor == 0 else (matched / weight if weight else 0.0)
    return ClinicalResult(matched=matched, significant=significant, minor=minor, score=score, errors=errors)


# ------------------------------------------------------------------------------------------- aggregation


class Estimate(DiskRecord):
    """A mean with its bootstrap percentile interval (None where there is nothing to resample)."""

    estimate: float | None
    low: float | None
    high: float | None


class ClinicalDataset(DiskRecord):
    task: str
    dataset_id: str
    n_scored: int  # cases with a clinical score
    n_not_scored: int  # cases the judge could not grade (its call failed, or its reply was not a comparison)
    score: Estimate
    matched: int
    significant: int
    minor: int
    errors: dict[str, int]  # error kind -> count


class ClinicalTask(DiskRecord):
    task: str
    score: Estimate  # the mean of its datasets' means, as the task's other metrics are averaged
    datasets: list[str]


class ClinicalSummary(DiskRecord):
    """The clinical score of a run's reports and captions, per dataset and task, beside BLEU-4 and ROUGE-L."""

    judge: str
    resamples: int
    seed: int
    confidence: float
    datasets: list[ClinicalDataset]
    tasks: dict[str, ClinicalTask]
    not_scored: dict[str, str]  # case id -> why it has no clinical score


@dataclass(frozen=True)
class CaseGrade:
    """A case's clinical grade, or why it has none (``result`` None)."""

    case_id: str
    task: str
    dataset_id: str
    result: ClinicalResult | None
    why_not: str | None = None


def _estimate(values: np.ndarray, replicates: np.ndarray) -> Estimate:
    if values.size == 0:
        return Estimate(estimate=None, low=None, high=None)
    interval = percentile_interval(replicates, float(values.mean()), CONFIDENCE)
    return Estimate(estimate=interval.estimate, low=interval.low, high=interval.high)


def summarise_clinical(
    grades: Sequence[CaseGrade],
    judge: str,
    task_order: Sequence[str],
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> ClinicalSummary:
    """Per dataset the mean clinical score with a percentile interval (the dataset's cases resampled, seeded
    per dataset as every u2eval interval is), per task the mean of its datasets with the same resamples."""
    by_dataset: dict[tuple[str, str], list[CaseGrade]] = {}
    for g in sorted(grades, key=lambda g: g.case_id):
        by_dataset.setdefault((g.task, g.dataset_id), []).append(g)
    datasets: list[ClinicalDataset] = []
    task_replicates: dict[str, list[tuple[str, float, np.ndarray]]] = {}
    for (task, dataset_id), cases in sorted(
        by_dataset.items(), key=lambda kv: (_order(task_order, kv[0][0]), kv[0][1])
    ):
        scored = [g.result for g in cases if g.result is not None]
        values = np.array([r.score for r in scored], dtype=np.float64)
        weights = stratum_weights(f"clinical/{task}/{dataset_id}", values.size, resamples, seed)
        replicates = weights @ values / values.size if values.size else np.zeros(0)
        errors = Counter(e.kind for r in scored for e in r.errors)
        datasets.append(
            ClinicalDataset(
                task=task,
                dataset_id=dataset_id,
                n_scored=len(scored),
                n_not_scored=len(cases) - len(scored),
                score=_estimate(values, replicates),
                matched=sum(r.matched for r in scored),
                significant=sum(r.significant for r in scored),
                minor=sum(r.minor for r in scored),
                errors=dict(sorted(errors.items())),
            )
        )
        if values.size:
            task_replicates.setdefault(task, []).append((dataset_id, float(values.mean()), replicates))
    tasks = {}
    for task, parts in task_replicates.items():
        means = np.array([mean for _, mean, _ in parts])
        stacked = np.vstack([reps for _, _, reps in parts]).mean(axis=0)
        interval = percentile_interval(stacked, float(means.mean()), CONFIDENCE)
        tasks[task] = ClinicalTask(
            task=task,
            score=Estimate(estimate=interval.estimate, low=interval.low, high=interval.high),
            datasets=[f"{task}/{d}" for d, _, _ in parts],
        )
    not_scored = {g.case_id: g.why_not or "not graded" for g in grades if g.result is None}
    return ClinicalSummary(
        judge=judge,
        resamples=resamples,
        seed=seed,
        confidence=CONFIDENCE,
        datasets=datasets,
        tasks=tasks,
        not_scored=dict(sorted(not_scored.items())),
    )


def _order(task_order: Sequence[str], task: str) -> int:
    return task_order.index(task) if task in task_order else len(task_order)


def error_counts(results: Mapping[str, ClinicalResult]) -> dict[str, int]:
    """Error kind -> count over several cases' results."""
    return dict(sorted(Counter(e.kind for r in results.values() for e in r.errors).items()))
