"""Judging: one case's answer -> a :class:`~u2eval.records.Judgement` with a strict and a reference verdict.

Pure functions of (case, completion, task spec, quirks). What the verdicts hold, per capability:

- classification: prediction and truth are label strings, lower-cased with whitespace collapsed (strict)
  or as the official stage (b) normalises them (reference). Strict: an answer naming no single option has
  prediction None and counts wrong. Reference: unmatched answers are "" (all garbage is one class).
- detection: the sector strings of :data:`u2eval.tasks.LOCATION_OPTIONS`.
- regression: prediction is the raw parsed number in the dataset's unit, **not** normalised (the metrics
  normalise with ``DatasetSpec.value_range``); truth the measurement. ``correct`` is None.
- generation: prediction is the hypothesis text ("" when there is none), truth the reference text;
  ``correct`` is None.

Outcomes: an infra error (``completion.is_infra_error``) is ``infra_error`` and never counts in strict
mode. The error kinds 'refused' and 'empty' are the model's own outcomes and count wrong. Otherwise the
strict parser's outcome.

Infra errors in reference mode: the official kit saved its error message as the answer and scored it, so
the reference verdict scores :data:`~u2eval.reference_parsing.REFERENCE_ERROR_TEXT` (the kit's
"API call failed: 500") through the official pipeline (``infra_error_as_answer``). The scorer of this
project leaves infra errors out of both modes anyway; the verdict shows what the official table did.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from u2eval.parsing import (
    EMPTY,
    REFUSED,
    Parsed,
    label_truth,
    location_truth,
    measurement_truth,
    parse_location,
    parse_number,
    parse_option,
    parse_text,
)
from u2eval.records import CaseMeta, Completion, Judgement, Outcome, TaskKey, Verdict
from u2eval.reference_parsing import (
    REFERENCE_ERROR_TEXT,
    ReferenceQuirks,
    reference_classification,
    reference_location_prediction,
    reference_location_truth,
    reference_measurement_truth,
    reference_number,
    reference_options,
    reference_stage_a_option,
    reference_text,
)
from u2eval.tasks import DatasetSpec, TaskSpec

DEFAULT_QUIRKS = ReferenceQuirks()


def truth_cell(case: CaseMeta, column: str) -> str | None:
    """The raw cell of ``column``: from the case's kept columns, else ``case.truth`` (the task's truth)."""
    return case.columns.get(column, case.truth)


def label_key(label: str) -> str:
    """How strict mode compares labels: lower-case, whitespace runs collapsed."""
    return " ".join(label.split()).lower()


def farthest_in_range(truth: float, value_range: tuple[float, float]) -> float:
    """The end of the prompt's range farthest from ``truth``; the lower end on a tie (the metrics' rule)."""
    low, high = value_range
    return low if abs(truth - low) >= abs(high - truth) else high


# ---------------------------------------------------------------------------------- strict verdicts


def _strict_classification(case: CaseMeta, parsed: Parsed | None, task: TaskSpec, ds: DatasetSpec) -> Verdict:
    truth = label_key(label_truth(truth_cell(case, task.truth_column), ds))
    pred = label_key(parsed.value) if parsed is not None and isinstance(parsed.value, str) else None
    if parsed is None or not truth:  # not scored, or no truth to score against
        return Verdict(prediction=pred, truth=truth or None, counted=False)
    return Verdict(prediction=pred, truth=truth, counted=True, correct=pred == truth)


def _strict_location(case: CaseMeta, parsed: Parsed | None, task: TaskSpec, ds: DatasetSpec) -> Verdict:
    truth = location_truth(truth_cell(case, task.truth_column))
    pred = parsed.value if parsed is not None and isinstance(parsed.value, str) else None
    if parsed is None:
        return Verdict(prediction=None, truth=truth, counted=False)
    return Verdict(prediction=pred, truth=truth, counted=True, correct=pred == truth)


def _strict_regression(case: CaseMeta, parsed: Parsed | None, task: TaskSpec, ds: DatasetSpec) -> Verdict:
    """A case without a numeric truth is not counted (the prompt range cannot judge it). Any other
    answered case counts; without a number (unparseable, refused, empty, or 'null' on 27 where the truth
    exists) it is scored as the in-range value farthest from the truth."""
    truth = measurement_truth(truth_cell(case, task.truth_column), ds)
    pred = parsed.value if parsed is not None and isinstance(parsed.value, float) else None
    if parsed is None or truth is None or ds.value_range is None:
        return Verdict(prediction=pred, truth=truth, counted=False)
    if pred is None:
        pred = farthest_in_range(truth, ds.value_range)
    return Verdict(prediction=pred, truth=truth, counted=True)


def _strict_text(case: CaseMeta, parsed: Parsed | None, task: TaskSpec, ds: DatasetSpec) -> Verdict:
    """A case with no reference text is not counted; an empty or refused answer is scored as ""."""
    truth = (truth_cell(case, task.truth_column) or "").strip()
    if parsed is None:
        return Verdict(prediction=None, truth=truth, counted=False)
    return Verdict(prediction=parsed.value if isinstance(parsed.value, str) else "", truth=truth, counted=bool(truth))


def _strict_parse(answer: str | None, case: CaseMeta, task: TaskSpec, ds: DatasetSpec) -> Parsed:
    if task.capability == "classification":
        return parse_option(answer, tuple(case.options) or ds.labels)
    if task.capability == "detection":
        return parse_location(answer)
    if task.capability == "regression":
        return parse_number(answer, nullable=ds.nullable)
    return parse_text(answer)


_STRICT: Mapping[str, Callable[[CaseMeta, Parsed | None, TaskSpec, DatasetSpec], Verdict]] = {
    "classification": _strict_classification,
    "detection": _strict_location,
    "regression": _strict_regression,
    "generation": _strict_text,
}


def _strict(case: CaseMeta, completion: Completion, task: TaskSpec, ds: DatasetSpec) -> tuple[Outcome, Verdict]:
    """The strict outcome and verdict. ``parsed`` is None for an infra error: nothing to score."""
    parsed: Parsed | None
    if completion.is_infra_error:
        parsed = None
    elif completion.error == "refused":
        parsed = REFUSED
    elif completion.error == "empty":
        parsed = EMPTY
    else:
        parsed = _strict_parse(completion.text, case, task, ds)
    outcome: Outcome = "infra_error" if parsed is None else parsed.outcome
    return outcome, _STRICT[task.capability](case, parsed, task, ds)


# ------------------------------------------------------------------------------- reference verdicts


def _reference_classification(
    case: CaseMeta, answer: str, task: TaskSpec, ds: DatasetSpec, q: ReferenceQuirks
) -> Verdict:
    stage_a = reference_stage_a_option(answer, reference_options(task.key, ds.id, quirks=q))
    verdict = reference_classification(stage_a.output, truth_cell(case, task.truth_column), ds, q)
    return verdict.model_copy(update={"skips_dataset": True}) if stage_a.skips_dataset else verdict


def _reference_location(case: CaseMeta, answer: str, task: TaskSpec, ds: DatasetSpec, q: ReferenceQuirks) -> Verdict:
    # The OD prompt embeds the row's anatomy and channel names; they can add options (facts §10.5).
    anatomy = case.columns.get("anatomy_location") or case.anatomy
    channel = case.columns.get("seg_channel_name") or ds.channel or ""
    options = reference_options(task.key, ds.id, anatomy=anatomy, channel=channel, quirks=q)
    pred = reference_location_prediction(reference_stage_a_option(answer, options).output, q)
    use_keypoints = q.keypoints_over_bbox and "keypoints" in case.columns
    truth = reference_location_truth(truth_cell(case, "keypoints" if use_keypoints else task.truth_column), q)
    return Verdict(prediction=pred, truth=truth, counted=True, correct=pred == truth)


def _reference_regression(case: CaseMeta, answer: str, task: TaskSpec, ds: DatasetSpec, q: ReferenceQuirks) -> Verdict:
    pred = reference_number(answer, ds.id)
    truth = reference_measurement_truth(truth_cell(case, task.truth_column), ds, q)
    if truth is None:  # the scorer skips rows without a readable truth
        return Verdict(prediction=pred, truth=None, counted=False)
    if pred is None and not q.cve_drop_unparseable and ds.value_range is not None:
        return Verdict(prediction=farthest_in_range(truth, ds.value_range), truth=truth, counted=True)
    return Verdict(prediction=pred, truth=truth, counted=pred is not None)


def _reference_text(case: CaseMeta, answer: str, task: TaskSpec, ds: DatasetSpec, q: ReferenceQuirks) -> Verdict:
    # The report scorer reads its internal column `caption`, which in the authors' RG file (39) holds the report:
    # in the Hugging Face layout that text is `report`, so both modes score RG against `report` (facts §10.7).
    truth = reference_text(truth_cell(case, task.truth_column))
    return Verdict(prediction=reference_text(answer), truth=truth, counted=True)


_REFERENCE: Mapping[str, Callable[[CaseMeta, str, TaskSpec, DatasetSpec, ReferenceQuirks], Verdict]] = {
    "classification": _reference_classification,
    "detection": _reference_location,
    "regression": _reference_regression,
    "generation": _reference_text,
}


def _reference(case: CaseMeta, completion: Completion, task: TaskSpec, ds: DatasetSpec, q: ReferenceQuirks) -> Verdict:
    if completion.is_infra_error:
        if not q.infra_error_as_answer:
            return Verdict(prediction=None, truth=None, counted=False)
        answer = REFERENCE_ERROR_TEXT
    else:
        answer = completion.text or ""  # stage (a) turns a missing answer into "" as well
    return _REFERENCE[task.capability](case, answer, task, ds, q)


# ------------------------------------------------------------------------------------------ judging


def judge(
    case: CaseMeta, completion: Completion, task: TaskSpec, quirks: ReferenceQuirks = DEFAULT_QUIRKS
) -> Judgement:
    """Judge one answer in both modes. Raises ValueError when the completion is for another case and
    KeyError when the task has no such dataset (a wiring error, not a model error)."""
    if completion.case_id != case.case_id:
        raise ValueError(f"completion for {completion.case_id!r} judged against case {case.case_id!r}")
    ds = task.dataset(case.dataset_id)
    outcome, strict = _strict(case, completion, task, ds)
    return Judgement(
        case_id=case.case_id,
        task=task.key,
        dataset_id=case.dataset_id,
        anatomy=case.anatomy,
        answer=completion.text,
        outcome=outcome,
        strict=strict,
        reference=_reference(case, completion, task, ds, quirks),
    )


def judge_many(
    cases: Mapping[str, CaseMeta],
    completions: Iterable[Completion],
    tasks: Mapping[TaskKey, TaskSpec] | Mapping[str, TaskSpec],
    quirks: ReferenceQuirks = DEFAULT_QUIRKS,
) -> list[Judgement]:
    """Judge completions joined to their cases by ``case_id`` (never by position), in completion order.
    ``tasks`` maps task keys to specs. A completion without a case raises KeyError."""
    judged: list[Judgement] = []
    for completion in completions:
        case = cases.get(completion.case_id)
        if case is None:
            raise KeyError(f"no case for completion {completion.case_id!r}")
        judged.append(judge(case, completion, tasks[case.task], quirks))
    return judged
