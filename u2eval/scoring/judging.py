"""Judging: one case's answer -> a :class:`~u2eval.records.Judgement` with a strict and a reference verdict.

Pure functions of (case, completion, task spec, quirks). What the verdicts hold, per capability:

- classification: prediction and truth are label strings, lower-cased with whitespace collapsed (strict)
  or as the official stage (b) normalises them (reference). Strict: an answer naming no single option has
  prediction None and counts wrong. Reference: unmatched answers are "" (all garbage is one class).
- detection: the sector strings of :data:`u2eval.benchmark.sectors.LOCATION_OPTIONS`.
- regression: prediction is the raw parsed number in the dataset's unit, **not** normalised (the metrics
  normalise with ``DatasetSpec.value_range``); truth the measurement. ``correct`` is None.
- generation: prediction is the hypothesis text ("" when there is none), truth the reference text;
  ``correct`` is None.

Outcomes: an infra error (``completion.is_infra_error``) is ``infra_error`` and counts in neither mode
(the official kit scored the failure message it saved instead of an answer: a replayed file's failure
records are read as the kit read them, ``Verdict.from_official_file``). The error kinds 'refused' and
'empty' are the model's own outcomes and count wrong. Otherwise the strict parser's outcome.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace

from u2eval.benchmark.sectors import NOT_VISIBLE
from u2eval.benchmark.tasks import DatasetSpec, TaskSpec
from u2eval.data.truth import Unread, read_label, read_location, read_measurement, read_text
from u2eval.records import CaseMeta, Completion, Judgement, NotCounted, OfficialAnswer, Outcome, Verdict
from u2eval.scoring.attribution import modes_disagree
from u2eval.scoring.metrics import get_metric
from u2eval.scoring.official import (
    PANDAS_NA,
    QUIRKS_BY_CAPABILITY,
    ReferenceQuirks,
    official_measurement_key,
    reference_classification,
    reference_location_prediction,
    reference_location_truth,
    reference_measurement_truth,
    reference_number,
    reference_text,
)
from u2eval.scoring.official_options import reference_options, reference_stage_a_option
from u2eval.scoring.strict import EMPTY, REFUSED, Parsed, parse_location, parse_number, parse_option, parse_text

DEFAULT_QUIRKS = ReferenceQuirks()
# How the official pipeline reads an answer u2eval received itself: stage (a), then stage (b), untouched.
_LIVE = OfficialAnswer()


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


def _not_counted(prediction: object, truth: object, reason: NotCounted, detail: str | None = None) -> Verdict:
    pred = prediction if isinstance(prediction, str | float) else None
    value = truth if isinstance(truth, str | float) else None
    return Verdict(prediction=pred, truth=value, counted=False, not_counted=reason, not_counted_detail=detail)


def _unread(prediction: object, unread: Unread) -> Verdict:
    return _not_counted(prediction, None, unread.reason, unread.detail)


def _strict_classification(case: CaseMeta, parsed: Parsed | None, task: TaskSpec, ds: DatasetSpec) -> Verdict:
    pred = label_key(parsed.value) if parsed is not None and isinstance(parsed.value, str) else None
    truth = read_label(truth_cell(case, task.truth_column), ds, tuple(case.options) or ds.labels)
    if parsed is None:  # not scored: an infra error
        return _not_counted(pred, None if isinstance(truth, Unread) else label_key(truth), "infra_error")
    if isinstance(truth, Unread):
        return _unread(pred, truth)
    key = label_key(truth)
    return Verdict(prediction=pred, truth=key, counted=True, correct=pred == key)


def _strict_location(case: CaseMeta, parsed: Parsed | None, task: TaskSpec, ds: DatasetSpec) -> Verdict:
    truth = read_location(truth_cell(case, task.truth_column), task.truth_column)
    pred = parsed.value if parsed is not None and isinstance(parsed.value, str) else None
    if parsed is None:
        return _not_counted(None, None if isinstance(truth, Unread) else truth, "infra_error")
    if isinstance(truth, Unread):
        return _unread(pred, truth)
    return Verdict(prediction=pred, truth=truth, counted=True, correct=pred == truth)


def _strict_regression(case: CaseMeta, parsed: Parsed | None, task: TaskSpec, ds: DatasetSpec) -> Verdict:
    """A case without a numeric truth is not counted (the prompt range cannot judge it). Any other
    answered case counts; without a number (unparseable, refused, empty, or 'null' on 27 where the truth
    exists) it is scored as the in-range value farthest from the truth."""
    truth = read_measurement(truth_cell(case, task.truth_column), ds)
    pred = parsed.value if parsed is not None and isinstance(parsed.value, float) else None
    if parsed is None:
        return _not_counted(pred, None if isinstance(truth, Unread) else truth, "infra_error")
    if isinstance(truth, Unread):
        return _unread(pred, truth)
    if ds.value_range is None:
        return _not_counted(pred, truth, "truth_unreadable", f"dataset {ds.id} has no value range to normalise by")
    if pred is None:
        pred = farthest_in_range(truth, ds.value_range)
    return Verdict(prediction=pred, truth=truth, counted=True)


def _strict_text(case: CaseMeta, parsed: Parsed | None, task: TaskSpec, ds: DatasetSpec) -> Verdict:
    """A case with no reference text is not counted; an empty or refused answer is scored as ""."""
    truth = read_text(truth_cell(case, task.truth_column), task.truth_column)
    if parsed is None:
        return _not_counted(None, None if isinstance(truth, Unread) else truth, "infra_error")
    pred = parsed.value if isinstance(parsed.value, str) else ""
    if isinstance(truth, Unread):
        return _not_counted(pred, "", truth.reason, truth.detail)
    return Verdict(prediction=pred, truth=truth, counted=True)


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


def strict_verdict(case: CaseMeta, parsed: Parsed, task: TaskSpec) -> Verdict:
    """The strict verdict of an answer already read as ``parsed`` (e.g. a judge's reading of it)."""
    return _STRICT[task.capability](case, parsed, task, task.dataset(case.dataset_id))


# ------------------------------------------------------------------------------- reference verdicts


def _reference_classification(
    case: CaseMeta, answer: object, task: TaskSpec, ds: DatasetSpec, q: ReferenceQuirks, how: OfficialAnswer = _LIVE
) -> Verdict:
    options = reference_options(task.key, ds.id, quirks=q) if how.stage_a else ()
    stage_a = reference_stage_a_option(answer, options)
    output = stage_a.output.replace(" ", "", 1) if how.first_space_dropped else stage_a.output
    verdict = reference_classification(output, truth_cell(case, task.truth_column), ds, q)
    if not verdict.counted:
        verdict = verdict.model_copy(
            update={"not_counted": "dropped_by_official", "not_counted_detail": "not an integer (int_label_drop)"}
        )
    return verdict.model_copy(update={"skips_dataset": True}) if stage_a.skips_dataset else verdict


def _reference_location(
    case: CaseMeta, answer: object, task: TaskSpec, ds: DatasetSpec, q: ReferenceQuirks, how: OfficialAnswer = _LIVE
) -> Verdict:
    # The OD prompt embeds the row's anatomy and channel names; they can add options (facts §10.5).
    anatomy = case.columns.get("anatomy_location") or case.anatomy
    channel = case.columns.get("seg_channel_name") or ds.channel or ""
    options = reference_options(task.key, ds.id, anatomy=anatomy, channel=channel, quirks=q) if how.stage_a else ()
    output = reference_stage_a_option(answer, options).output
    pred = reference_location_prediction(output.replace(" ", "", 1) if how.first_space_dropped else output, q)
    use_keypoints = q.keypoints_over_bbox and "keypoints" in case.columns
    truth = reference_location_truth(truth_cell(case, "keypoints" if use_keypoints else task.truth_column), q)
    return Verdict(prediction=pred, truth=truth, counted=True, correct=pred == truth)


def _reference_regression(
    case: CaseMeta, answer: object, task: TaskSpec, ds: DatasetSpec, q: ReferenceQuirks, how: OfficialAnswer = _LIVE
) -> Verdict:
    pred = reference_number(answer, ds.id)
    cell = truth_cell(case, task.truth_column)
    truth = reference_measurement_truth(cell, ds, q)
    if truth is None:  # the scorer skips rows without a readable truth
        if cell is None or not cell.strip():
            return _not_counted(pred, None, "truth_missing", "measurement is empty")
        detail = f"the official reader finds no number under {official_measurement_key(ds)!r}"
        return _not_counted(pred, None, "truth_unreadable", detail)
    if pred is None and not q.cve_drop_unparseable and ds.value_range is not None:
        return Verdict(prediction=farthest_in_range(truth, ds.value_range), truth=truth, counted=True)
    if pred is None:
        return _not_counted(None, truth, "dropped_by_official", "no number in the answer (cve_drop_unparseable)")
    return Verdict(prediction=pred, truth=truth, counted=True)


def _reference_text(
    case: CaseMeta, answer: object, task: TaskSpec, ds: DatasetSpec, q: ReferenceQuirks, how: OfficialAnswer = _LIVE
) -> Verdict:
    # The report scorer reads its internal column `caption`, which in the authors' RG file (39) holds the report:
    # in the Hugging Face layout that text is `report`, so both modes score RG against `report` (facts §10.7).
    cell = truth_cell(case, task.truth_column)
    truth = None if cell is None or cell in PANDAS_NA else reference_text(cell)  # None: NaN to pandas
    return Verdict(prediction=reference_text(answer), truth=truth, counted=True)


_REFERENCE: Mapping[
    str, Callable[[CaseMeta, object, TaskSpec, DatasetSpec, ReferenceQuirks, OfficialAnswer], Verdict]
] = {
    "classification": _reference_classification,
    "detection": _reference_location,
    "regression": _reference_regression,
    "generation": _reference_text,
}


def _official_reference(
    case: CaseMeta, official: OfficialAnswer, task: TaskSpec, ds: DatasetSpec, q: ReferenceQuirks
) -> Verdict:
    """The reference verdict of a replayed row: what the official pipeline pairs with it, scored as it does."""
    if official.skip is not None:
        return _not_counted(None, None, "dataset_skipped", official.skip).model_copy(update={"skips_dataset": True})
    if official.record is None:
        return _not_counted(None, None, "no_official_record", official.missing)
    # Without options in the record's question, stage (a) leaves the answer as it is: stage (b) alone reads it.
    verdict = _REFERENCE[task.capability](case, official.answer, task, ds, q, official)
    return verdict.model_copy(update={"from_official_file": True})


def _reference(case: CaseMeta, completion: Completion, task: TaskSpec, ds: DatasetSpec, q: ReferenceQuirks) -> Verdict:
    if completion.official is not None and q.row_order_join:
        return _official_reference(case, completion.official, task, ds, q)
    if completion.is_infra_error:
        return _not_counted(None, None, "infra_error")
    answer = completion.text or ""  # stage (a) turns a missing answer into "" as well
    return _REFERENCE[task.capability](case, answer, task, ds, q, _LIVE)


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
    reference = _reference(case, completion, task, ds, quirks)
    # The quirks behind a case the modes judge differently (what the reference scores: no live infra error).
    if outcome != "infra_error" and modes_disagree(strict, reference, task.capability):
        changed_by = _changed_by(case, completion, task, ds, quirks, reference)
        if changed_by:
            reference = reference.model_copy(update={"changed_by": changed_by})
    if task.capability == "generation":
        strict, reference = _with_text_metrics(strict, ds), _with_text_metrics(reference, ds)
    return Judgement(
        case_id=case.case_id,
        task=task.key,
        dataset_id=case.dataset_id,
        anatomy=case.anatomy,
        answer=completion.text,
        outcome=outcome,
        strict=strict,
        reference=reference,
        error=completion.error,
        error_message=(completion.error_message or None) if completion.error else None,
        source=f"{case.source_file}:{case.row_index}",
        image_sha256=case.image_sha256 or None,
        usage=completion.usage,
    )


# A place as the official pipeline reads it in words: its option's own spelling, where that differs from the
# sector's name (OD's prompt lists 'not visible.' with its period, and stage (a) matches that option exactly).
_PLACE_IN_WORDS = {NOT_VISIBLE: "Not visible."}


def judge_placed(
    case: CaseMeta, task: TaskSpec, sector: str | None, quirks: ReferenceQuirks = DEFAULT_QUIRKS
) -> Judgement:
    """Judge a location an answer gave as a region, not in words: ``sector`` is where the region lies (one of
    :data:`~u2eval.benchmark.sectors.LOCATION_OPTIONS`, ``NOT_VISIBLE`` when the answer marks nothing) or None
    when its region cannot be placed, judged as an empty answer (wrong in both modes, never guessed). Strict
    compares the sector with the truth; reference reads the sector's name as the official pipeline reads an
    answer's words, so the grounded sector scores are the official ones in both modes."""
    if task.capability != "detection":
        raise ValueError(f"{case.case_id}: only detection cases answer with a place, not {task.key}")
    ds = task.dataset(case.dataset_id)
    parsed = EMPTY if sector is None else Parsed(sector, "ok")
    strict = _strict_location(case, parsed, task, ds)
    reference = _reference_location(case, _PLACE_IN_WORDS.get(sector or "", sector or ""), task, ds, quirks)
    return Judgement(
        case_id=case.case_id,
        task=task.key,
        dataset_id=case.dataset_id,
        anatomy=case.anatomy,
        answer=sector,
        outcome=parsed.outcome,
        strict=strict,
        reference=reference,
        source=f"{case.source_file}:{case.row_index}",
        image_sha256=case.image_sha256 or None,
    )


_CASE_TEXT_METRICS = ("bleu4", "rouge_l")


def _with_text_metrics(verdict: Verdict, ds: DatasetSpec) -> Verdict:
    """A counted text verdict with its own BLEU-4 and ROUGE-L (computed on this one case, as the scorer would)."""
    if not verdict.counted or not isinstance(verdict.truth, str):
        return verdict
    scores = {name: round(get_metric(name).compute([verdict], ds), 6) for name in _CASE_TEXT_METRICS}
    return verdict.model_copy(update={"case_metrics": scores})


def _verdict_key(v: Verdict) -> tuple[object, ...]:
    return (v.counted, v.correct, v.prediction, v.truth, v.skips_dataset)


def _changed_by(
    case: CaseMeta, completion: Completion, task: TaskSpec, ds: DatasetSpec, q: ReferenceQuirks, verdict: Verdict
) -> list[str]:
    """The quirk switches that are on and, turned off alone, give this case another reference verdict."""
    key = _verdict_key(verdict)
    return [
        name
        for name in QUIRKS_BY_CAPABILITY[task.capability]
        if getattr(q, name) and _verdict_key(_reference(case, completion, task, ds, replace(q, **{name: False}))) != key
    ]
