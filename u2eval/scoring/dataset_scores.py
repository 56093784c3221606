"""One source dataset's metrics in one scoring mode: which of its cases count (and, for those that do not, why,
grouped for the summary), and the metrics over those that do, with the reference's dataset-level quirks.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from u2eval.benchmark.tasks import DatasetSpec, TaskSpec
from u2eval.records import Judgement, ScoringMode, Verdict
from u2eval.scoring.metrics import get_metric, scored_as
from u2eval.scoring.summary import (
    MAX_EXAMPLES,
    NotCountedGroup,
)
from u2eval.scoring.table_rules import (
    ScoringQuirks,
    reference_drops_dataset,
)


@dataclass(frozen=True)
class DatasetScore:
    n_cases: int
    n_infra: int
    n_counted: int
    metrics: dict[str, float | None]  # raw values; None = nothing to compute on; may be non-finite
    dropped_by: str | None = None
    not_counted: tuple[NotCountedGroup, ...] = ()


def metric_names(task: TaskSpec) -> list[str]:
    extra = ["sacrebleu"] if task.capability == "generation" else []
    return [*task.metrics, *extra]


def scorable(verdict: Verdict, task: TaskSpec) -> bool:
    # A regression case needs a numeric truth (27's null IMT has none); judging should not count it anyway.
    return verdict.counted and (task.capability != "regression" or isinstance(verdict.truth, float | int))


def has_answer(j: Judgement, mode: ScoringMode) -> bool:
    """Whether a case has an answer to score in this mode. A replayed file's record that strict calls an infra
    error (the kit's failure message) is what the official scored: the reference scores it too."""
    return j.outcome != "infra_error" or (mode == "reference" and j.reference.from_official_file)


def not_counted_groups(
    judgements: Sequence[Judgement], mode: ScoringMode, task: TaskSpec, skipped_by: str | None
) -> tuple[NotCountedGroup, ...]:
    """Every case outside the denominator, grouped by reason and detail (judgements come in case-id order)."""
    groups: dict[tuple[str, str | None], list[str]] = defaultdict(list)
    for j in judgements:
        verdict = j.reference if mode == "reference" else j.strict  # judged: strict over the judged verdicts
        if not has_answer(j, mode):
            groups[("infra_error", None)].append(j.case_id)
        elif skipped_by is not None and verdict.not_counted != "dataset_skipped":
            groups[("dataset_skipped", skipped_by)].append(j.case_id)
        elif not scorable(verdict, task):
            groups[(verdict.not_counted or "not_counted", verdict.not_counted_detail)].append(j.case_id)
    return tuple(
        NotCountedGroup(reason=reason, detail=detail, n=len(ids), case_ids=ids[:MAX_EXAMPLES])
        for (reason, detail), ids in sorted(groups.items(), key=lambda item: (item[0][0], item[0][1] or ""))
    )


def dataset_skip(answered: Sequence[Judgement], task: TaskSpec, mode: ScoringMode, quirks: ScoringQuirks) -> str | None:
    """The quirk by which the reference skips this dataset's whole file, if it does."""
    if mode != "reference":
        return None
    if any(j.reference.not_counted == "dataset_skipped" for j in answered):
        return "row_order_join"  # the replayed file's fate, decided where it was read (u2eval.scoring.official_files)
    if quirks.nan_response_skips_dataset and any(reference_drops_dataset(j, task) for j in answered):
        return "nan_response_skips_dataset"
    return None


def score_dataset(
    task: TaskSpec, ds: DatasetSpec, judgements: Sequence[Judgement], mode: ScoringMode, quirks: ScoringQuirks
) -> DatasetScore:
    answered = [j for j in judgements if has_answer(j, mode)]
    n_infra = len(judgements) - len(answered)
    names = metric_names(task)
    quirk = dataset_skip(answered, task, mode, quirks)
    if quirk is not None:
        why = "an answer stage (a) cannot read (not a string) makes the scorer skip the file"
        skipped = not_counted_groups(judgements, mode, task, why)
        return DatasetScore(len(judgements), n_infra, 0, dict.fromkeys(names), quirk, skipped)
    verdicts = [v for j in answered if scorable(v := (j.reference if mode == "reference" else j.strict), task)]
    # The reference text of a row pandas reads as NaN (an empty cell): BLEU and ROUGE raise, the scorer writes 0.
    nan_reference = [v for v in verdicts if task.capability == "generation" and v.truth is None]
    if nan_reference and quirks.nan_reference_zeroes_text_metrics:
        groups = not_counted_groups(judgements, mode, task, None)
        return DatasetScore(len(judgements), n_infra, len(verdicts), dict.fromkeys(names, 0.0), None, groups)
    verdicts = [v.model_copy(update={"truth": ""}) if v in nan_reference else v for v in verdicts]
    values: dict[str, float | None] = {}
    for name in names:
        metric_name = scored_as(name, quirks.f1_over_union)
        if verdicts:
            value: float | None = get_metric(metric_name).compute(verdicts, ds)
        elif quirks.empty_classification_scores_zero and task.capability == "classification" and answered:
            value = 0.0  # the scorer read a file but kept no case; with no answers there is no file, no result
        else:
            value = None
        if quirks.round_4dp and value is not None and math.isfinite(value):
            value = float(f"{value:.4f}")  # what the scorer writes to its results file
        values[name] = value
    groups = not_counted_groups(judgements, mode, task, None)
    return DatasetScore(len(judgements), n_infra, len(verdicts), values, None, groups)
