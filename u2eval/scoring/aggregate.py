"""From Judgements to per-dataset metrics, per-task scores and the U2-Score, in two modes side by side.

*strict* (the headline) scores every task file's dataset with the strict verdicts and no quirks: infra
errors are excluded and listed, unparseable answers count wrong, a run without every task is PARTIAL and
has no U2-Score (only ``u2_over_present_tasks``). *reference* uses the reference verdicts and reproduces
the official table script (facts §5.1, §9, §10) quirk by quirk; each quirk is a named switch so a test
can turn it off and see exactly what it does.

Infra errors are excluded in both modes: they have no answer to score, and a run with them is re-run.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from functools import partial

import numpy as np

from u2eval.benchmark.tasks import DatasetSpec, TaskSpec, all_tasks, task_keys
from u2eval.errors import ConfigError
from u2eval.records import Judgement, ScoringMode, Verdict
from u2eval.scoring.attribution import case_reasons, dataset_reasons
from u2eval.scoring.metrics import get_metric, scored_as
from u2eval.scoring.summary import (
    MAX_EXAMPLES,
    REPORT_DECIMALS,
    DatasetResult,
    ModeSummary,
    NotCountedGroup,
    Summary,
    TaskOutcomes,
    TaskResult,
    TokenUsage,
    differences,
    report_float,
)
from u2eval.scoring.text_metrics import sacrebleu_signature

__all__ = [
    "MODE_QUIRKS",
    "REFERENCE_QUIRKS",
    "STRICT_QUIRKS",
    "ModeSummary",
    "ScoringQuirks",
    "Summary",
    "dataset_plan",
    "official_weights",
    "reference_drops_dataset",
    "score_mode",
    "summarise",
    "task_score",
    "u2_score",
]

Ref = tuple[str, str]  # (task key, dataset id)
OUTCOMES = ("ok", "unparseable", "refused", "empty", "infra_error")


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


_QUIRK_NAMES = frozenset(f.name for f in fields(ScoringQuirks))
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
    if name not in _QUIRK_NAMES:
        raise ConfigError(f"task file, {where}: {name!r} is not a scoring quirk ({', '.join(sorted(_QUIRK_NAMES))})")
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


@dataclass(frozen=True)
class _DatasetScore:
    n_cases: int
    n_infra: int
    n_counted: int
    metrics: dict[str, float | None]  # raw values; None = nothing to compute on; may be non-finite
    dropped_by: str | None = None
    not_counted: tuple[NotCountedGroup, ...] = ()


def _metric_names(task: TaskSpec) -> list[str]:
    extra = ["sacrebleu"] if task.capability == "generation" else []
    return [*task.metrics, *extra]


def _scorable(verdict: Verdict, task: TaskSpec) -> bool:
    # A regression case needs a numeric truth (27's null IMT has none); judging should not count it anyway.
    return verdict.counted and (task.capability != "regression" or isinstance(verdict.truth, float | int))


def _answered(j: Judgement, mode: ScoringMode) -> bool:
    """Whether a case has an answer to score in this mode. A replayed file's record that strict calls an infra
    error (the kit's failure message) is what the official scored: the reference scores it too."""
    return j.outcome != "infra_error" or (mode == "reference" and j.reference.from_official_file)


def _not_counted_groups(
    judgements: Sequence[Judgement], mode: ScoringMode, task: TaskSpec, skipped_by: str | None
) -> tuple[NotCountedGroup, ...]:
    """Every case outside the denominator, grouped by reason and detail (judgements come in case-id order)."""
    groups: dict[tuple[str, str | None], list[str]] = defaultdict(list)
    for j in judgements:
        verdict = j.strict if mode == "strict" else j.reference
        if not _answered(j, mode):
            groups[("infra_error", None)].append(j.case_id)
        elif skipped_by is not None and verdict.not_counted != "dataset_skipped":
            groups[("dataset_skipped", skipped_by)].append(j.case_id)
        elif not _scorable(verdict, task):
            groups[(verdict.not_counted or "not_counted", verdict.not_counted_detail)].append(j.case_id)
    return tuple(
        NotCountedGroup(reason=reason, detail=detail, n=len(ids), case_ids=ids[:MAX_EXAMPLES])
        for (reason, detail), ids in sorted(groups.items(), key=lambda item: (item[0][0], item[0][1] or ""))
    )


def _dataset_skip(
    answered: Sequence[Judgement], task: TaskSpec, mode: ScoringMode, quirks: ScoringQuirks
) -> str | None:
    """The quirk by which the reference skips this dataset's whole file, if it does."""
    if mode != "reference":
        return None
    if any(j.reference.not_counted == "dataset_skipped" for j in answered):
        return "row_order_join"  # the replayed file's fate, decided where it was read (u2eval.scoring.official_files)
    if quirks.nan_response_skips_dataset and any(reference_drops_dataset(j, task) for j in answered):
        return "nan_response_skips_dataset"
    return None


def _score_dataset(
    task: TaskSpec, ds: DatasetSpec, judgements: Sequence[Judgement], mode: ScoringMode, quirks: ScoringQuirks
) -> _DatasetScore:
    answered = [j for j in judgements if _answered(j, mode)]
    n_infra = len(judgements) - len(answered)
    names = _metric_names(task)
    quirk = _dataset_skip(answered, task, mode, quirks)
    if quirk is not None:
        why = "an answer stage (a) cannot read (not a string) makes the scorer skip the file"
        skipped = _not_counted_groups(judgements, mode, task, why)
        return _DatasetScore(len(judgements), n_infra, 0, dict.fromkeys(names), quirk, skipped)
    verdicts = [v for j in answered if _scorable(v := (j.strict if mode == "strict" else j.reference), task)]
    # The reference text of a row pandas reads as NaN (an empty cell): BLEU and ROUGE raise, the scorer writes 0.
    nan_reference = [v for v in verdicts if task.capability == "generation" and v.truth is None]
    if nan_reference and quirks.nan_reference_zeroes_text_metrics:
        groups = _not_counted_groups(judgements, mode, task, None)
        return _DatasetScore(len(judgements), n_infra, len(verdicts), dict.fromkeys(names, 0.0), None, groups)
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
    groups = _not_counted_groups(judgements, mode, task, None)
    return _DatasetScore(len(judgements), n_infra, len(verdicts), values, None, groups)


@dataclass(frozen=True)
class _TaskScore:
    metrics: dict[str, float | None]
    datasets: list[Ref]
    score: float | None
    filled: bool = False


def _score_task(
    task: TaskSpec, plan: Sequence[Ref], scores: Mapping[Ref, _DatasetScore], q: ScoringQuirks
) -> _TaskScore:
    used = [ref for ref in plan if ref in scores and scores[ref].dropped_by is None]
    means: dict[str, float | None] = {}
    primary_refs: list[Ref] = []
    for name in _metric_names(task):
        kept = [(ref, v) for ref in used if (v := scores[ref].metrics.get(name)) is not None]
        if q.drop_nonfinite_rmse and task.capability == "regression":
            kept = [(ref, v) for ref, v in kept if math.isfinite(v)]
        with np.errstate(invalid="ignore"):
            means[name] = float(np.mean([v for _, v in kept])) if kept else None
        if name == task.primary_metric:
            primary_refs = [ref for ref, _ in kept]
    value = means[task.primary_metric]
    return _TaskScore(means, primary_refs, None if value is None else clip01(task_score(task, value)))


def _filled(task: TaskSpec, q: ScoringQuirks) -> _TaskScore | None:
    """What the table script puts in for a task without results: every raw metric 0.0, which is a perfect
    RMSE for CVE. None when the mode does not fill (strict)."""
    if not q.missing_task_as_zero:
        return None
    full = not get_metric(task.primary_metric).higher_is_better and q.missing_cve_full_credit
    score = clip01(task_score(task, 0.0)) if full else 0.0
    return _TaskScore(dict.fromkeys(_metric_names(task), 0.0), [], score, filled=True)


def _group(judgements: Iterable[Judgement], specs: Mapping[str, TaskSpec]) -> dict[Ref, list[Judgement]]:
    groups: dict[Ref, list[Judgement]] = defaultdict(list)
    seen: set[str] = set()
    for j in judgements:
        if j.case_id in seen:
            raise ValueError(f"duplicate judgement for case {j.case_id}")
        seen.add(j.case_id)
        if j.task not in specs:
            raise ValueError(f"case {j.case_id}: task {j.task!r} is not among the tasks being scored")
        specs[j.task].dataset(j.dataset_id)  # KeyError names the unknown dataset
        groups[(j.task, j.dataset_id)].append(j)
    for cases in groups.values():
        cases.sort(key=lambda j: j.case_id)  # a canonical order makes float sums independent of input order
    return groups


def _placement(
    scores: Mapping[Ref, _DatasetScore], plans: Mapping[str, tuple[list[Ref], dict[Ref, str]]]
) -> dict[Ref, tuple[str | None, str | None]]:
    """For each scored dataset: the task whose mean it enters (None: none) and the quirk responsible."""
    placed = {ref: key for key, (plan, _) in plans.items() for ref in plan}
    left_out = {ref: quirk for _, left in plans.values() for ref, quirk in left.items()}
    result: dict[Ref, tuple[str | None, str | None]] = {}
    for ref, score in scores.items():
        if score.dropped_by is not None:
            result[ref] = (None, score.dropped_by)
        else:
            result[ref] = (placed.get(ref), left_out.get(ref))
    return result


def _score_mode(
    mode: ScoringMode,
    quirks: ScoringQuirks,
    groups: Mapping[Ref, Sequence[Judgement]],
    specs: Mapping[str, TaskSpec],
    official: Mapping[str, TaskSpec],
    decimals: int,
) -> ModeSummary:
    scores = {
        (key, ds.id): _score_dataset(task, ds, groups[(key, ds.id)], mode, quirks)
        for key, task in specs.items()
        for ds in task.datasets
        if (key, ds.id) in groups
    }
    plans = {key: dataset_plan(task, quirks) for key, task in specs.items()}
    placement = _placement(scores, plans)
    datasets = [
        DatasetResult(
            task=ref[0],
            dataset_id=ref[1],
            n_cases=s.n_cases,
            n_infra_errors=s.n_infra,
            n_counted=s.n_counted,
            metrics={k: report_float(v, decimals) for k, v in s.metrics.items()},
            scored_under=placement[ref][0],
            quirk=placement[ref][1],
            not_counted=list(s.not_counted),
        )
        for ref, s in scores.items()
    ]
    measured = {key: _score_task(task, plans[key][0], scores, quirks) for key, task in specs.items()}
    return _mode_summary(mode, quirks, datasets, measured, official, groups, decimals)


def _mode_summary(
    mode: ScoringMode,
    quirks: ScoringQuirks,
    datasets: list[DatasetResult],
    measured: Mapping[str, _TaskScore],
    official: Mapping[str, TaskSpec],
    groups: Mapping[Ref, Sequence[Judgement]],
    decimals: int,
) -> ModeSummary:
    """Task scores (filled where the mode fills), the U2-Score and its two companion figures."""
    present = {k: t.score for k, t in measured.items() if t.score is not None}
    task_scores: dict[str, _TaskScore] = {}
    for key in task_keys():
        chosen = measured.get(key) if key in present else (_filled(official[key], quirks) or measured.get(key))
        if chosen is not None:
            task_scores[key] = chosen
    weights = {k: t.weight for k, t in official.items()}
    missing = [k for k in task_keys() if k not in present]
    # A task whose run lost whole datasets (corrupt files, bad rows) averages fewer datasets: say so.
    missing_datasets = {
        k: [d for d in official[k].dataset_ids if (k, d) not in groups] for k in task_keys() if k in present
    }
    missing_datasets = {k: ids for k, ids in missing_datasets.items() if ids}
    uncounted = _uncounted_datasets(datasets)
    scored = {k: t.score for k, t in task_scores.items() if t.score is not None}
    u2: float | None = None
    if len(scored) == len(task_keys()):
        u2 = u2_score(scored, weights)
        u2 = round(u2, 4) if quirks.round_4dp else u2
    over_present = None
    if present:
        over_present = sum(weights[k] * s for k, s in present.items()) / sum(weights[k] for k in present)
    # Sample shares: each present task weighted by how many of its cases were answered (not infra errors).
    answered = Counter(k for (k, _), js in groups.items() for j in js if j.outcome != "infra_error")
    share_total = sum(answered[k] for k in present)
    share = sum(answered[k] * s for k, s in present.items()) / share_total if share_total else None
    tasks = {
        key: TaskResult(
            task=key,
            weight=weights[key],
            primary_metric=official[key].primary_metric,
            datasets=[f"{t}/{d}" for t, d in ts.datasets],
            metrics={k: report_float(v, decimals) for k, v in ts.metrics.items()},
            score=report_float(ts.score, decimals),
            filled=ts.filled,
        )
        for key, ts in task_scores.items()
    }
    return ModeSummary(
        mode=mode,
        quirks=quirks.as_dict(),
        status="partial" if missing or missing_datasets or uncounted else "complete",
        missing_tasks=missing,
        missing_datasets=missing_datasets,
        uncounted_datasets=uncounted,
        datasets=datasets,
        tasks=tasks,
        u2_score=report_float(u2, decimals),
        u2_over_present_tasks=report_float(over_present, decimals),
        u2_sample_share=report_float(share, decimals),
    )


def _uncounted_datasets(datasets: Sequence[DatasetResult]) -> dict[str, str]:
    """Datasets with cases of which none counted, and why: their task's mean silently averages the others,
    so the mode is partial. A dataset a named quirk removes is accounted for by the quirk, not listed."""
    lost: dict[str, str] = {}
    for d in datasets:
        if d.n_cases == 0 or d.n_counted > 0 or d.quirk is not None:
            continue
        reasons = ", ".join(f"{g.n} {g.reason}" + (f" ({g.detail})" if g.detail else "") for g in d.not_counted)
        lost[f"{d.task}/{d.dataset_id}"] = f"{d.n_cases} cases, none counted: {reasons}"
    return lost


def _outcomes(
    groups: Mapping[Ref, Sequence[Judgement]], specs: Mapping[str, TaskSpec], decimals: int
) -> dict[str, TaskOutcomes]:
    result: dict[str, TaskOutcomes] = {}
    for key in specs:
        counts: Counter[str] = Counter(j.outcome for (k, _), js in groups.items() if k == key for j in js)
        n = sum(counts.values())
        if n == 0:
            continue
        answered = n - counts["infra_error"]
        rate = counts["ok"] / answered if answered else None
        result[key] = TaskOutcomes(
            n_cases=n, outcomes={o: counts[o] for o in OUTCOMES}, parse_rate=report_float(rate, decimals)
        )
    return result


def _official_specs(tasks: Sequence[TaskSpec]) -> tuple[dict[str, TaskSpec], dict[str, TaskSpec]]:
    order = {k: i for i, k in enumerate(task_keys())}
    specs: dict[str, TaskSpec] = {t.key: t for t in sorted(tasks, key=lambda t: order[t.key])}
    return specs, {**{t.key: t for t in all_tasks()}, **specs}


def score_mode(
    judgements: Iterable[Judgement],
    tasks: Sequence[TaskSpec],
    mode: ScoringMode,
    quirks: ScoringQuirks | None = None,
    decimals: int = REPORT_DECIMALS,
) -> ModeSummary:
    """One mode on its own, with any quirk set (default: the mode's own); ``summarise`` runs both."""
    specs, official = _official_specs(tasks)
    groups = _group(judgements, specs)
    return _score_mode(mode, MODE_QUIRKS[mode] if quirks is None else quirks, groups, specs, official, decimals)


def _infra_kinds(groups: Mapping[Ref, Sequence[Judgement]]) -> dict[str, int]:
    kinds = Counter(j.error or "missing" for js in groups.values() for j in js if j.outcome == "infra_error")
    return dict(sorted(kinds.items()))


def _usage(groups: Mapping[Ref, Sequence[Judgement]], specs: Mapping[str, TaskSpec]) -> dict[str, TokenUsage]:
    """Tokens per task and in total, over the answers whose provider reported them."""
    usage: dict[str, TokenUsage] = {}
    for key in [*specs, "total"]:
        js = [j for (k, _), group in groups.items() if key in (k, "total") for j in group]
        reporting = [j.usage for j in js if j.usage is not None and j.usage.input_tokens is not None]
        if not js:
            continue
        usage[key] = TokenUsage(
            input_tokens=sum(u.input_tokens or 0 for u in reporting),
            output_tokens=sum(u.output_tokens or 0 for u in reporting),
            cases_reporting=len(reporting),
            cases=len(js),
        )
    return usage


def summarise(
    judgements: Iterable[Judgement],
    tasks: Sequence[TaskSpec],
    decimals: int = REPORT_DECIMALS,
    subset: Sequence[str] = (),
    unreadable_rows: int = 0,
) -> Summary:
    """Score judgements in both modes. ``tasks`` are the specs being scored; every judgement must belong
    to one of them. Weights (and what a reference fill means) for tasks not given come from the task files.
    ``subset``: why the run holds only part of its tasks' cases (``subset_reasons``), which makes it partial;
    so do ``unreadable_rows`` (rows or files the run could not read: their cases are lost)."""
    specs, official = _official_specs(tasks)
    groups = _group(judgements, specs)
    modes = {
        mode: _score_mode(mode, MODE_QUIRKS[mode], groups, specs, official, decimals)
        for mode in ("strict", "reference")
    }
    infra = sorted(j.case_id for js in groups.values() for j in js if j.outcome == "infra_error")
    has_text = any(specs[k].capability == "generation" for k, _ in groups)
    explained = _explanations(groups, specs)
    return Summary(
        status="partial" if subset or unreadable_rows else modes["strict"].status,
        subset=list(subset),
        unreadable_rows=unreadable_rows,
        infra_errors_by_kind=dict(
            sorted(
                Counter(
                    j.error or "missing" for js in groups.values() for j in js if j.outcome == "infra_error"
                ).items()
            )
        ),
        usage=_usage(groups, specs),
        n_judgements=sum(len(js) for js in groups.values()),
        tasks_run=[k for k in specs if any(r[0] == k for r in groups)],
        modes=dict(modes),
        parse=_outcomes(groups, specs, decimals),
        infra_error_case_ids=infra,
        infra_error_reasons=dict(
            sorted(
                (j.case_id, j.error_message)
                for js in groups.values()
                for j in js
                if j.outcome == "infra_error" and j.error_message
            )
        ),
        sacrebleu_signature=sacrebleu_signature() if has_text else None,
        differences=differences(
            modes["strict"], modes["reference"], {k: t.primary_metric for k, t in specs.items()}, explained
        ),
    )


def _rescore_without(
    task: TaskSpec, ds: DatasetSpec, judgements: Sequence[Judgement], quirk: str
) -> dict[str, float | None]:
    """A dataset's reference metrics with one scoring quirk turned off."""
    return _score_dataset(task, ds, judgements, "reference", replace(REFERENCE_QUIRKS, **{quirk: False})).metrics


def _explanations(groups: Mapping[Ref, Sequence[Judgement]], specs: Mapping[str, TaskSpec]) -> dict[Ref, list[str]]:
    """Per dataset: the quirks (and readings) behind each case the modes judge differently, and the dataset-level
    rules that move a reference metric (``u2eval.scoring.attribution``)."""
    explained: dict[Ref, list[str]] = {}
    on = [name for name, value in REFERENCE_QUIRKS.as_dict().items() if value]
    for (key, dataset_id), judgements in groups.items():
        task, ds = specs[key], specs[key].dataset(dataset_id)
        reference = _score_dataset(task, ds, judgements, "reference", REFERENCE_QUIRKS)

        rescore = partial(_rescore_without, task, ds, judgements)
        reasons = case_reasons(judgements, task)
        if reference.dropped_by is None:
            reasons += dataset_reasons(reference.metrics, rescore, on)
        explained[(key, dataset_id)] = reasons
    return explained
