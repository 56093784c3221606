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
from dataclasses import dataclass, replace
from functools import partial

import numpy as np

from u2eval.benchmark.tasks import DatasetSpec, TaskSpec, all_tasks, task_keys
from u2eval.records import Judgement, ScoringMode
from u2eval.scoring.attribution import case_reasons, dataset_reasons
from u2eval.scoring.dataset_scores import DatasetScore, metric_names, score_dataset
from u2eval.scoring.judged import JudgedScores
from u2eval.scoring.metrics import get_metric
from u2eval.scoring.summary import (
    REPORT_DECIMALS,
    DatasetResult,
    ModeSummary,
    Summary,
    TaskOutcomes,
    TaskResult,
    TokenUsage,
    differences,
    report_float,
)
from u2eval.scoring.table_rules import (
    MODE_QUIRKS,
    QUIRK_NAMES,
    REFERENCE_QUIRKS,
    STRICT_QUIRKS,
    Ref,
    ScoringQuirks,
    clip01,
    dataset_plan,
    task_score,
    u2_score,
)
from u2eval.scoring.text_metrics import sacrebleu_signature

__all__ = ["ModeSummary", "Summary", "score_mode", "summarise"]

OUTCOMES = ("ok", "unparseable", "refused", "empty", "infra_error")


@dataclass(frozen=True)
class _TaskScore:
    metrics: dict[str, float | None]
    datasets: list[Ref]
    score: float | None
    filled: bool = False


def _score_task(
    task: TaskSpec, plan: Sequence[Ref], scores: Mapping[Ref, DatasetScore], q: ScoringQuirks
) -> _TaskScore:
    used = [ref for ref in plan if ref in scores and scores[ref].dropped_by is None]
    means: dict[str, float | None] = {}
    primary_refs: list[Ref] = []
    for name in metric_names(task):
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
    return _TaskScore(dict.fromkeys(metric_names(task), 0.0), [], score, filled=True)


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
    scores: Mapping[Ref, DatasetScore], plans: Mapping[str, tuple[list[Ref], dict[Ref, str]]]
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
        (key, ds.id): score_dataset(task, ds, groups[(key, ds.id)], mode, quirks)
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
    switches: Mapping[str, bool] | None = None,
    judged: JudgedScores | None = None,
) -> Summary:
    """Score judgements in both modes. ``tasks`` are the specs being scored; every judgement must belong
    to one of them. Weights (and what a reference fill means) for tasks not given come from the task files.
    ``subset``: why the run holds only part of its tasks' cases (``subset_reasons``), which makes it partial;
    so do ``unreadable_rows`` (rows or files the run could not read: their cases are lost). ``switches``: quirks
    set by hand for the reference mode (``u2eval.scoring.switches``; the judgements were read with them too);
    the reference mode lists them among its quirks. ``judged``: a judge's readings of the run (the ``judged``
    mode, scored as strict over the judged verdicts, and the clinical score); strict and reference are the
    same with or without it."""
    switches = switches or {}
    reference = replace(REFERENCE_QUIRKS, **{k: v for k, v in switches.items() if k in QUIRK_NAMES})
    specs, official = _official_specs(tasks)
    groups = _group(judgements, specs)
    modes = {
        mode: _score_mode(mode, STRICT_QUIRKS if mode == "strict" else reference, groups, specs, official, decimals)
        for mode in ("strict", "reference")
    }
    if judged is not None:
        modes["judged"] = _judged_mode(judged, groups, specs, official, decimals)
    reading = {k: v for k, v in switches.items() if k not in QUIRK_NAMES}  # in force while judging
    if reading:
        quirks = modes["reference"].quirks | reading
        modes["reference"] = modes["reference"].model_copy(update={"quirks": dict(sorted(quirks.items()))})
    infra = sorted(j.case_id for js in groups.values() for j in js if j.outcome == "infra_error")
    has_text = any(specs[k].capability == "generation" for k, _ in groups)
    explained = _explanations(groups, specs, reference)
    return Summary(
        status="partial" if subset or unreadable_rows else modes["strict"].status,
        subset=list(subset),
        unreadable_rows=unreadable_rows,
        infra_errors_by_kind=_infra_kinds(groups),
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
        judge=judged.judge if judged is not None else None,
        clinical=judged.clinical if judged is not None else None,
    )


def _judged_mode(
    judged: JudgedScores,
    groups: Mapping[Ref, Sequence[Judgement]],
    specs: Mapping[str, TaskSpec],
    official: Mapping[str, TaskSpec],
    decimals: int,
) -> ModeSummary:
    """The judged mode: the strict rules over the judged verdicts; partial while a case awaits its reading."""
    swapped = {
        ref: [j.model_copy(update={"strict": judged.verdicts.get(j.case_id, j.strict)}) for j in js]
        for ref, js in groups.items()
    }
    mode = _score_mode("strict", STRICT_QUIRKS, swapped, specs, official, decimals)
    status = "partial" if judged.judge.not_judged else mode.status
    return mode.model_copy(update={"mode": "judged", "status": status})


def _rescore_without(
    task: TaskSpec, ds: DatasetSpec, judgements: Sequence[Judgement], quirks: ScoringQuirks, quirk: str
) -> dict[str, float | None]:
    """A dataset's reference metrics with one scoring quirk turned off."""
    return score_dataset(task, ds, judgements, "reference", replace(quirks, **{quirk: False})).metrics


def _explanations(
    groups: Mapping[Ref, Sequence[Judgement]], specs: Mapping[str, TaskSpec], quirks: ScoringQuirks
) -> dict[Ref, list[str]]:
    """Per dataset: the quirks (and readings) behind each case the modes judge differently, and the dataset-level
    rules that move a reference metric (``u2eval.scoring.attribution``)."""
    explained: dict[Ref, list[str]] = {}
    on = [name for name, value in quirks.as_dict().items() if value]
    for (key, dataset_id), judgements in groups.items():
        task, ds = specs[key], specs[key].dataset(dataset_id)
        reference = score_dataset(task, ds, judgements, "reference", quirks)
        rescore = partial(_rescore_without, task, ds, judgements, quirks)
        reasons = case_reasons(judgements, task)
        if reference.dropped_by is None:
            reasons += dataset_reasons(reference.metrics, rescore, on)
        explained[(key, dataset_id)] = reasons
    return explained
