"""The official table script's rules: its aggregation quirks (:class:`ScoringQuirks`, all off in strict), which
datasets each task averages (a quirk may leave one out or file it under another task), and the U2 formula with
the task files' weights.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields

from u2eval.benchmark.tasks import DatasetSpec, TaskSpec, all_tasks
from u2eval.errors import ConfigError
from u2eval.records import Judgement, ScoringMode
from u2eval.scoring.metrics import get_metric

Ref = tuple[str, str]  # (task key, dataset id)


@dataclass(frozen=True)
class ScoringQuirks:
    """The official scorer's quirks, each reproducible on its own. All off = strict behaviour."""

    knee_28_swap: bool = False  # KL grade (dd/28_1) is averaged into VRA as '28'; DD has 12 sets; knee view unused
    drop_leading_zero_ids: bool = False  # numeric result ids lose leading zeros: 04 leaves LL, 09 leaves OD
    cg_dataset_10_only: bool = False  # 44 is commented out of the report scorers
    cve_without_31: bool = False  # 31 is "evaluated separately", i.e. never
    round_4dp: bool = False  # per-dataset metrics written with 4 decimals, then averaged; U2 rounded to 4
    f1_over_union: bool = False  # sklearn labels=None: garbage predictions become zero-F1 classes
    drop_nonfinite_rmse: bool = False  # inf/NaN per-dataset CVE values are dropped before the mean
    nan_response_skips_dataset: bool = False  # an answer stage (a) cannot read (judging flags it) skips the file
    empty_classification_scores_zero: bool = False  # no countable case: accuracy and F1 written as 0.0
    missing_task_as_zero: bool = False  # a task without results gets raw metric 0.0 instead of failing
    missing_cve_full_credit: bool = False  # ...and for CVE that 0.0 is an RMSE: score 1 - 0 = 1
    nan_reference_zeroes_text_metrics: bool = False  # an empty reference text makes BLEU / ROUGE raise: 0.0 written

    def as_dict(self) -> dict[str, bool]:
        return asdict(self)


QUIRK_NAMES = frozenset(f.name for f in fields(ScoringQuirks))


STRICT_QUIRKS = ScoringQuirks()


REFERENCE_QUIRKS = ScoringQuirks(**{f.name: True for f in fields(ScoringQuirks)})


MODE_QUIRKS: Mapping[ScoringMode, ScoringQuirks] = {"strict": STRICT_QUIRKS, "reference": REFERENCE_QUIRKS}


def official_weights() -> dict[str, float]:
    """The U2 weights from the task files, in official task order."""
    return {t.key: t.weight for t in all_tasks()}


def clip01(value: float) -> float:
    return 0.0 if math.isnan(value) else max(0.0, min(1.0, value))


def task_score(task: TaskSpec, value: float) -> float:
    """The per-task number that enters U2, unclipped: accuracy, 1 - RMSE, BLEU-4 / 100."""
    return get_metric(task.primary_metric).unit_score(value)


def u2_score(task_scores: Mapping[str, float], weights: Mapping[str, float] | None = None) -> float:
    """Sum of weight x clip(score, 0, 1), summed in official task order (as the table script does). A task
    absent from ``task_scores`` adds 0; an unknown key is an error, never ignored."""
    weights = official_weights() if weights is None else weights
    unknown = set(task_scores) - set(weights)
    if unknown:
        raise ValueError(f"no weight for tasks {sorted(unknown)}")
    return sum(weights[k] * clip01(task_scores[k]) for k in weights if k in task_scores)


def reference_drops_dataset(judgement: Judgement, task: TaskSpec) -> bool:
    """Whether this case makes the reference skip its whole dataset: an answer that is not a string (a JSON
    number or NaN) makes stage (a) drop the line, the row-order join then fails and the classification
    scorer skips the file (facts §10.6). A None answer is *not* such a case: stage (a) turns it into "" and
    it counts wrong (§10), so ``answer is None`` is no stand-in. Judging marks the case on the reference
    verdict (``Verdict.skips_dataset``)."""
    return (
        judgement.reference.skips_dataset and task.capability == "classification" and judgement.outcome != "infra_error"
    )


def dataset_plan(task: TaskSpec, quirks: ScoringQuirks) -> tuple[list[Ref], dict[Ref, str]]:
    """The (task, dataset) results averaged into ``task``, and those of its own left out, with the quirk.
    Which datasets a quirk moves is the task files' data (``official.left_out_by`` / ``taken_by``)."""
    plan: list[Ref] = []
    left_out: dict[Ref, str] = {}
    for ds in task.datasets:
        ref = (task.key, ds.id)
        quirk = _excluding_quirk(task, ds, quirks)
        taken_by = ds.official.taken_by
        if quirk is not None:
            left_out[ref] = quirk
        elif taken_by is not None and quirk_on(quirks, taken_by.quirk, f"{task.key}/{ds.id}"):
            plan.append((taken_by.task, taken_by.dataset))  # e.g. the KL grade, filed under '28', read as VRA
            left_out[ref] = taken_by.quirk
        else:
            plan.append(ref)
    return plan, left_out


def quirk_on(quirks: ScoringQuirks, name: str, where: str) -> bool:
    """Whether the quirk a task file names is on; a name that is no quirk is a task-file error."""
    if name not in QUIRK_NAMES:
        raise ConfigError(f"task file, {where}: {name!r} is not a scoring quirk ({', '.join(sorted(QUIRK_NAMES))})")
    return bool(getattr(quirks, name))


def _excluding_quirk(task: TaskSpec, ds: DatasetSpec, quirks: ScoringQuirks) -> str | None:
    named = ds.official.left_out_by
    if named is not None and quirk_on(quirks, named, f"{task.key}/{ds.id}"):
        return named
    # Only the classification results file keeps string ids (it also holds 'anatomy'); pandas reads every
    # other one as integers, so '04' becomes '4' and no longer matches the table's list.
    numeric_ids = task.capability != "classification" and ds.id.isdigit()
    if quirks.drop_leading_zero_ids and numeric_ids and str(int(ds.id)) != ds.id:
        return "drop_leading_zero_ids"
    return None
