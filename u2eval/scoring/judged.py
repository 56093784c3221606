"""The ``judged`` scoring mode: strict, plus a judge's readings of the answers strict could not parse.

Which answers a judge is sent (:func:`judge_kind`): an answer strict found unparseable, on a task with a
closed answer (an option, a sector, a number), for extraction; every counted report or caption, for the
clinical score. Strict and reference never see a judge: the judged verdicts are made here, beside them.

A judged verdict (:func:`judged_verdicts`) is the strict verdict of the judge's reading where the judge read
one (an option of the case, a sector, a number), and the strict verdict itself everywhere else: an answer the
judge found no answer in stays wrong, as strict counts it. A case the judge should have read and has no
reading for (its call failed, or it was answered after the judge pass) is named in ``not_judged`` and makes
the judged mode partial.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from u2eval.benchmark.tasks import get_task
from u2eval.records import CaseMeta, DiskRecord, Judgement, Verdict
from u2eval.scoring.clinical import (
    CaseGrade,
    ClinicalResult,
    ClinicalSummary,
    MalformedComparison,
    grade,
    summarise_clinical,
)
from u2eval.scoring.judge_records import JudgeIdentity, JudgeKind, JudgeReading, answer_sha256
from u2eval.scoring.judging import strict_verdict
from u2eval.scoring.strict import Parsed

EXTRACTED = frozenset({"classification", "detection", "regression"})
STATUSES = ("read", "no_answer", "unreadable", "failed", "missing")


def judge_kind(judgement: Judgement) -> JudgeKind | None:
    """What the judge is asked about this case's answer, if anything. An empty report or caption is not sent:
    it scores 0 clinically without a judge (``clinical_grade``)."""
    capability = get_task(judgement.task).capability
    if capability in EXTRACTED and judgement.outcome == "unparseable":
        return "extraction"
    if capability == "generation" and judgement.strict.counted and (judgement.answer or "").strip():
        return "clinical"
    return None


def clinically_graded(judgement: Judgement) -> bool:
    """Whether the case has a clinical score: every counted report or caption, an empty one too (it scores 0)."""
    return get_task(judgement.task).capability == "generation" and judgement.strict.counted


EMPTY_ANSWER = ClinicalResult(matched=0, significant=0, minor=0, score=0.0, errors=[])


def clinical_grade(judgement: Judgement, reading: JudgeReading | None) -> ClinicalResult | str:
    """A report's or caption's clinical grade from the judge's current reading, or why it has none. The one rule
    for every place that shows it (summary, case view, judge agreement): saying nothing scores 0."""
    if not (judgement.answer or "").strip():
        return EMPTY_ANSWER
    if reading is None:
        return "not read by this judge yet (run u2eval judge again)"
    if reading.comparison is None:
        return f"judge {reading.status}: {reading.detail or 'no comparison'}"
    try:
        return grade(reading.comparison)
    except MalformedComparison as exc:
        return f"the judge's comparison cannot be graded: {exc}"


class JudgeSummary(DiskRecord):
    """Who judged the run, what it was sent and what came of it (summary.json's ``judge``)."""

    identity: JudgeIdentity
    # kind -> status -> cases; "missing": sent to no judge yet (answered after the judge pass: judge again)
    outcomes: dict[str, dict[str, int]]
    by_task: dict[str, dict[str, int]]  # task -> status -> cases (extraction)
    rescued: int  # extraction: answers strict counted wrong that the judge's reading makes right
    # Answers strict could not parse that have no reading (the call failed, or it was never asked): judged is
    # partial. A report without a reading only lacks its clinical score (``clinical.not_scored``).
    not_judged: list[str]


def reading_of(judgement: Judgement, readings: Mapping[str, JudgeReading]) -> JudgeReading | None:
    """The judge's reading of this case's answer as it stands now: none when the judge read another answer
    (the run was resumed and answered again) or asked about something else."""
    reading = readings.get(judgement.case_id)
    if reading is None or reading.kind != judge_kind(judgement):
        return None
    return reading if reading.answer_sha256 == answer_sha256(judgement.answer) else None


def judged_verdict(case: CaseMeta, judgement: Judgement, reading: JudgeReading | None) -> Verdict:
    """One case's judged verdict, given the judge's current reading of its answer (``reading_of``)."""
    if judge_kind(judgement) == "extraction" and reading is not None and reading.status == "read":
        return strict_verdict(case, Parsed(reading.value, "ok"), get_task(judgement.task))
    return judgement.strict


@dataclass(frozen=True)
class JudgedScores:
    """What a judge adds to a run's summary: each case's judged verdict, and how the judge went."""

    verdicts: Mapping[str, Verdict]  # case id -> judged verdict
    judge: JudgeSummary
    clinical: ClinicalSummary | None


def judged_verdicts(
    answers: Sequence[tuple[CaseMeta, object]],
    judgements: Sequence[Judgement],
    readings: Mapping[str, JudgeReading],
) -> dict[str, Verdict]:
    """case id -> the judged verdict, for every case (``answers`` gives each case's record)."""
    cases = {meta.case_id: meta for meta, _ in answers}
    return {j.case_id: judged_verdict(cases[j.case_id], j, reading_of(j, readings)) for j in judgements}


def summarise_judge(
    identity: JudgeIdentity,
    judgements: Sequence[Judgement],
    readings: Mapping[str, JudgeReading],
    verdicts: Mapping[str, Verdict],
) -> JudgeSummary:
    outcomes: dict[str, Counter[str]] = {"extraction": Counter(), "clinical": Counter()}
    by_task: dict[str, Counter[str]] = {}
    not_judged: list[str] = []
    rescued = 0
    for j in sorted(judgements, key=lambda j: j.case_id):
        kind = judge_kind(j)
        if kind is None:
            continue
        reading = reading_of(j, readings)
        status = "missing" if reading is None else reading.status
        outcomes[kind][status] += 1
        if kind == "extraction":
            by_task.setdefault(j.task, Counter())[status] += 1
            rescued += bool(verdicts[j.case_id].correct) and not j.strict.correct
        if kind == "extraction" and status in ("failed", "missing"):
            not_judged.append(j.case_id)
    return JudgeSummary(
        identity=identity,
        outcomes={k: {s: c[s] for s in STATUSES if c[s]} for k, c in outcomes.items()},
        by_task={k: {s: c[s] for s in STATUSES if c[s]} for k, c in sorted(by_task.items())},
        rescued=rescued,
        not_judged=not_judged,
    )


def clinical_grades(judgements: Sequence[Judgement], readings: Mapping[str, JudgeReading]) -> list[CaseGrade]:
    """Each report or caption sent to the judge, graded from its comparison (or why it has no grade)."""
    grades: list[CaseGrade] = []
    for j in judgements:
        if not clinically_graded(j):
            continue
        graded = clinical_grade(j, reading_of(j, readings))
        result, why = (graded, None) if isinstance(graded, ClinicalResult) else (None, graded)
        grades.append(CaseGrade(j.case_id, j.task, j.dataset_id, result, why))
    return grades


def clinical_summary(
    identity: JudgeIdentity, judgements: Sequence[Judgement], readings: Mapping[str, JudgeReading], order: Sequence[str]
) -> ClinicalSummary | None:
    """The clinical score of the run's reports and captions; None when the run has none."""
    grades = clinical_grades(judgements, readings)
    return summarise_clinical(grades, identity.name, order) if grades else None
