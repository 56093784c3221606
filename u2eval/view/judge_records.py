"""What the case browser shows of a judge's reading of each case: the judged verdict (strict plus the reading),
the judge's own reply, and for a report or caption the structured comparison the clinical score counts: each
reference finding beside the answer's finding paired with it, the errors the rules made of them, the score."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from u2eval.records import CaseMeta, Judgement, Verdict
from u2eval.run.folder import RunFolder
from u2eval.scoring.clinical import ClinicalResult
from u2eval.scoring.judge_records import ClinicalComparison, Finding, JudgeIdentity, JudgeReading
from u2eval.scoring.judged import clinical_grade, clinically_graded, judge_kind, judged_verdict, reading_of

JsonDict = dict[str, object]


@dataclass(frozen=True)
class ActiveJudge:
    identity: JudgeIdentity
    readings: dict[str, JudgeReading]


def active_judge(folder: Path) -> ActiveJudge | None:
    """The run's active judge and its readings (None: no judge has read the run)."""
    run = RunFolder(folder)
    identity = run.active_judge()
    return None if identity is None else ActiveJudge(identity, run.judge_readings(identity.name))


def _finding(finding: Finding) -> str:
    parts = [finding.structure if finding.present else f"no {finding.structure}"]
    parts += [p for p in (finding.location, finding.appearance, finding.category) if p]
    if finding.size_mm is not None:
        parts.append(f"{finding.size_mm:g} mm")
    return ", ".join(parts)


def _comparison(comparison: ClinicalComparison, result: ClinicalResult) -> JsonDict:
    """Rows of (reference finding, answer finding, errors), pairs first, then the unpaired on each side."""
    errors: dict[tuple[int | None, int | None], list[str]] = {}
    for e in result.errors:
        errors.setdefault((e.reference, e.answer), []).append(e.kind + ("" if e.significant else " (minor)"))
    rows = [
        [_finding(comparison.reference[p.reference]), _finding(comparison.answer[p.answer]),
         ", ".join(errors.get((p.reference, p.answer), [])) or "matched"]
        for p in comparison.pairs
    ]  # fmt: skip
    paired_refs = {p.reference for p in comparison.pairs}
    paired_answers = {p.answer for p in comparison.pairs}
    rows += [
        [_finding(f), "", ", ".join(errors.get((i, None), []))]
        for i, f in enumerate(comparison.reference)
        if i not in paired_refs
    ]
    rows += [
        ["", _finding(f), ", ".join(errors.get((None, i), []))]
        for i, f in enumerate(comparison.answer)
        if i not in paired_answers
    ]
    return {
        "rows": rows,
        "score": round(result.score, 6),
        "counts": [result.matched, result.significant, result.minor],
    }


def judge_part(case: CaseMeta, judgement: Judgement, judge: ActiveJudge) -> tuple[Verdict, JsonDict]:
    """The case's judged verdict, and what the judge made of its answer (empty when it was not asked)."""
    reading = reading_of(judgement, judge.readings)
    verdict = judged_verdict(case, judgement, reading)
    kind = judge_kind(judgement)
    if kind is None:
        if clinically_graded(judgement):  # an empty report: no judge needed to score it
            return verdict, {"clinical": {"rows": [], "score": 0.0, "counts": [0, 0, 0]}}
        return verdict, {}
    if reading is None:
        return verdict, {"judge": {"kind": kind, "status": "not read yet (run u2eval judge again)"}}
    shown: JsonDict = {"kind": kind, "status": reading.status, "reply": reading.reply}
    if reading.detail:
        shown["detail"] = reading.detail
    if reading.status == "read" and kind == "extraction":
        shown["reading"] = reading.value
    extra: JsonDict = {"judge": shown}
    graded = clinical_grade(judgement, reading) if kind == "clinical" else None
    if isinstance(graded, ClinicalResult) and reading.comparison is not None:
        extra["clinical"] = _comparison(reading.comparison, graded)
    elif isinstance(graded, str):
        shown["detail"] = graded
    return verdict, extra
