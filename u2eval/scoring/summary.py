"""The summary of a scored run: what ``summary.json`` holds, and the strict-vs-reference differences table.

Everything here is deterministic: lists come in official task order then task-file dataset order, floats
are rounded once when they are reported, non-finite values are reported as null, and nothing depends on
time or input order, so the same judgements always give byte-identical JSON.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, SerializerFunctionWrapHandler, model_serializer

from u2eval.records import ScoringMode, without_unset
from u2eval.scoring.clinical import ClinicalSummary
from u2eval.scoring.cost_records import CostSummary
from u2eval.scoring.judged import JudgeSummary

REPORT_DECIMALS = 6
_SAME = 1e-12  # values closer than this are the same number

Status = Literal["complete", "partial"]


def report_float(value: float | None, decimals: int = REPORT_DECIMALS) -> float | None:
    """A float as reported: rounded, -0.0 folded into 0.0, and NaN / inf as None (JSON has neither)."""
    if value is None or not math.isfinite(value):
        return None
    return round(value, decimals) + 0.0


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


MAX_EXAMPLES = 5  # case ids listed per reason; judgements.jsonl names every case


class NotCountedGroup(_Frozen):
    """Cases of one dataset left out of a mode's denominator for one reason (``Verdict.not_counted``)."""

    reason: str
    detail: str | None
    n: int
    case_ids: list[str]  # the first MAX_EXAMPLES, in case-id order


class DatasetResult(_Frozen):
    """One dataset's metrics in one mode. ``scored_under`` is the task whose mean it enters (None: it enters
    none); ``quirk`` names the reference quirk that moved or removed it; ``not_counted`` says, for every case
    outside ``n_counted``, why."""

    task: str
    dataset_id: str
    n_cases: int
    n_infra_errors: int
    n_counted: int
    metrics: dict[str, float | None]
    scored_under: str | None
    quirk: str | None = None
    not_counted: list[NotCountedGroup] = []


class TaskResult(_Frozen):
    """A task in one mode: per-dataset means of every metric, and the [0, 1] score that enters U2."""

    task: str
    weight: float
    primary_metric: str
    datasets: list[str]
    metrics: dict[str, float | None]
    score: float | None
    filled: bool = False  # no results, filled in as the official table script does (reference quirk)


class ModeSummary(_Frozen):
    mode: ScoringMode
    quirks: dict[str, bool]
    status: Status
    missing_tasks: list[str]
    missing_datasets: dict[str, list[str]]  # task -> its datasets with no case in the run
    # "task/dataset" -> why: datasets with cases of which none counted (their task averages the others)
    uncounted_datasets: dict[str, str] = {}
    datasets: list[DatasetResult]
    tasks: dict[str, TaskResult]
    u2_score: float | None  # None when a task is missing and the mode does not fill it
    u2_over_present_tasks: float | None  # official weights renormalised over the tasks with results
    u2_sample_share: float | None  # tasks weighted by their share of the scored cases (secondary figure)


class TaskOutcomes(_Frozen):
    n_cases: int
    outcomes: dict[str, int]
    parse_rate: float | None  # ok / (all - infra errors)


class Difference(_Frozen):
    """A dataset whose strict and reference results differ, and why."""

    task: str
    dataset_id: str
    primary_metric: str
    strict_value: float | None
    reference_value: float | None
    strict_n_counted: int
    reference_n_counted: int
    strict_scored_under: str | None
    reference_scored_under: str | None
    differing_metrics: list[str]
    strict_metrics: dict[str, float | None] = {}  # the differing metrics' values, as each mode reports them
    reference_metrics: dict[str, float | None] = {}
    reasons: list[str]


class TokenUsage(_Frozen):
    """Tokens summed over the answers that report them (``cases_reporting`` of ``cases``)."""

    input_tokens: int
    output_tokens: int
    cases_reporting: int
    cases: int


class Summary(_Frozen):
    """A run's scores in every mode. ``judge`` and ``clinical`` exist once a judge has read the run (``u2eval
    judge``); absent, they are left out of summary.json, which stays as it was before judges existed."""

    schema_version: int = 1
    headline_mode: ScoringMode = "strict"
    status: Status
    n_judgements: int
    tasks_run: list[str]
    modes: dict[str, ModeSummary]
    parse: dict[str, TaskOutcomes]
    infra_error_case_ids: list[str]
    sacrebleu_signature: str | None
    differences: list[Difference]
    # What scored it: u2eval's version and the sha256 of each task file used (set by the runner), so a
    # re-score with other code or other task definitions is visible in the file itself.
    scored_with: dict[str, str] = {}
    # Why the run holds only part of its tasks' cases (``subset_reasons``); then status is "partial" too.
    subset: list[str] = []
    unreadable_rows: int = 0  # rows or files the run could not read (their cases are lost): "partial" too
    infra_errors_by_kind: dict[str, int] = {}  # the infra errors' kinds (rate_limit, timeout, missing, ...)
    infra_error_reasons: dict[str, str] = {}  # case id -> what its last attempt was told, in words
    usage: dict[str, TokenUsage] = {}  # per task and "total"
    judge: JudgeSummary | None = None  # who judged the run (the ``judged`` mode in ``modes``) and how it went
    clinical: ClinicalSummary | None = None  # the reports' and captions' clinical score (never in the U2-Score)
    cost: CostSummary | None = None  # what the answers cost at the run's list prices, beside the estimate

    @model_serializer(mode="wrap")
    def _without_absent_judge(self, handler: SerializerFunctionWrapHandler) -> dict[str, object]:
        return without_unset(handler(self), ("judge", "clinical", "cost"))


def subset_reasons(limit: int | None, selection: str | None) -> list[str]:
    """Why a run covers only part of the cases of its tasks, from its manifest: a per-dataset ``--limit``,
    and the manifest's ``dataset.selection`` (an anatomy filter, a shard). None: every case was asked."""
    reasons = [f"limit {limit} per dataset"] if limit is not None else []
    return reasons + [part for part in (selection or "").split("; ") if part]


def _differs(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return (a is None) != (b is None)
    return abs(a - b) > _SAME


def differences(
    strict: ModeSummary,
    reference: ModeSummary,
    primary: dict[str, str],
    explained: Mapping[tuple[str, str], list[str]] | None = None,
) -> list[Difference]:
    """One row per dataset where the modes disagree on placement, denominator or any metric value, with every
    reason: the placement quirk, the denominators, and ``explained`` (the quirks and readings behind the cases
    the modes judge differently, and the dataset-level rules that move a metric: ``u2eval.scoring.attribution``)."""
    ref_rows = {(d.task, d.dataset_id): d for d in reference.datasets}
    rows: list[Difference] = []
    for s in strict.datasets:
        r = ref_rows.get((s.task, s.dataset_id))
        if r is None:
            continue
        reasons: list[str] = []
        if s.scored_under != r.scored_under:
            where = f"under {r.scored_under}" if r.scored_under else "nowhere"
            reasons.append(f"{r.quirk or 'placement'}: averaged {where} in reference, under {s.scored_under} in strict")
        if s.n_counted != r.n_counted:
            reasons.append(f"denominator: {s.n_counted} counted in strict, {r.n_counted} in reference")
        differing = sorted(
            name for name in set(s.metrics) | set(r.metrics) if _differs(s.metrics.get(name), r.metrics.get(name))
        )
        if not reasons and not differing:
            continue
        reasons += (explained or {}).get((s.task, s.dataset_id), [])
        metric = primary[s.task]
        rows.append(
            Difference(
                task=s.task,
                dataset_id=s.dataset_id,
                primary_metric=metric,
                strict_value=s.metrics.get(metric),
                reference_value=r.metrics.get(metric),
                strict_n_counted=s.n_counted,
                reference_n_counted=r.n_counted,
                strict_scored_under=s.scored_under,
                reference_scored_under=r.scored_under,
                differing_metrics=differing,
                strict_metrics={name: s.metrics.get(name) for name in differing},
                reference_metrics={name: r.metrics.get(name) for name in differing},
                reasons=reasons,
            )
        )
    return rows
