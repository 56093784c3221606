"""The clinical report score: each rule that makes an error from a judge's comparison, the score's formula, its
intervals; and how a judge's replies and prompts are read and written."""

from __future__ import annotations

import numpy as np
import pytest

from u2eval.judges.prompts import judge_prompt
from u2eval.judges.replies import read_reply
from u2eval.records import CaseMeta, Completion
from u2eval.scoring.clinical import (
    CaseGrade,
    ClinicalResult,
    MalformedComparison,
    grade,
    summarise_clinical,
)
from u2eval.scoring.judge_records import ClinicalComparison, Finding, FindingPair, answer_sha256
from u2eval.stats import stratum_weights

NODULE = Finding(structure="nodule", location="right lobe", size_mm=12.0, appearance="hypoechoic", category="TI-RADS 4")


def _one_pair(answer: Finding, differences: list[str] | None = None) -> ClinicalResult:
    pair = FindingPair(reference=0, answer=0, differences=differences or [])  # type: ignore[arg-type]
    return grade(ClinicalComparison(reference=[NODULE], answer=[answer], pairs=[pair]))


def _kinds(result: ClinicalResult) -> list[str]:
    return sorted(e.kind for e in result.errors)


def test_the_same_finding_is_matched_and_scores_one() -> None:
    result = _one_pair(NODULE)
    assert (result.matched, result.significant, result.minor, result.score) == (1, 0, 0, 1.0)


@pytest.mark.parametrize(
    ("answer", "differences", "kinds"),
    [
        (NODULE.model_copy(update={"present": False}), ["location"], ["negation"]),  # nothing else compared
        (NODULE, ["location"], ["location"]),
        (NODULE.model_copy(update={"category": "tirads 2"}), [], ["category"]),
        (NODULE.model_copy(update={"category": None}), ["category"], ["category"]),  # one side: the judge's word
        (NODULE.model_copy(update={"size_mm": 14.5}), [], ["measurement"]),  # 2.5 mm > max(2, 2.4)
        (NODULE.model_copy(update={"size_mm": None}), [], ["measurement_missing"]),
        (NODULE, ["appearance"], ["appearance"]),
    ],
)
def test_each_difference_is_the_error_the_rules_name(answer: Finding, differences: list[str], kinds: list[str]) -> None:
    result = _one_pair(answer, differences)
    assert _kinds(result) == kinds
    significant = kinds[0] not in ("measurement_missing", "appearance")
    assert result.matched == (0 if significant else 1)
    assert result.score == (0.0 if significant else 1 / (1 + 0.25))


def test_categories_spelled_alike_and_sizes_within_tolerance_are_no_error() -> None:
    # 12 mm: the tolerance is max(2 mm, 20% = 2.4 mm); 3 mm: 2 mm
    assert _one_pair(NODULE.model_copy(update={"category": "tirads-4", "size_mm": 14.39})).errors == []
    assert _kinds(_one_pair(NODULE.model_copy(update={"size_mm": 14.41}))) == ["measurement"]
    small = NODULE.model_copy(update={"size_mm": 3.0})
    small_pair = [FindingPair(reference=0, answer=0)]
    assert (
        grade(
            ClinicalComparison(reference=[small], answer=[NODULE.model_copy(update={"size_mm": 4.9})], pairs=small_pair)
        ).errors
        == []
    )
    assert _kinds(
        grade(
            ClinicalComparison(reference=[small], answer=[NODULE.model_copy(update={"size_mm": 5.1})], pairs=small_pair)
        )
    ) == ["measurement"]


def test_unpaired_findings_are_missed_or_invented_and_absences_only_minor() -> None:
    absent = Finding(structure="gallstone", present=False)
    comparison = ClinicalComparison(
        reference=[NODULE, absent], answer=[Finding(structure="cyst"), Finding(structure="ascites", present=False)],
        pairs=[],
    )  # fmt: skip
    result = grade(comparison)
    assert _kinds(result) == ["extra_negative", "invented", "missed", "missed_negative"]
    assert (result.matched, result.significant, result.minor) == (0, 2, 2)
    assert result.score == 0.0
    both = grade(
        ClinicalComparison(reference=[NODULE, absent], answer=[NODULE], pairs=[FindingPair(reference=0, answer=0)])
    )
    assert both.score == pytest.approx(1 / (1 + 0.25))  # one match, one minor (the absence not repeated)


def test_no_finding_on_either_side_scores_one_and_a_bad_pairing_cannot_be_graded() -> None:
    assert grade(ClinicalComparison(reference=[], answer=[], pairs=[])).score == 1.0
    with pytest.raises(MalformedComparison, match="answer finding 3"):
        grade(ClinicalComparison(reference=[NODULE], answer=[NODULE], pairs=[FindingPair(reference=0, answer=3)]))
    with pytest.raises(MalformedComparison, match="paired twice"):
        pairs = [FindingPair(reference=0, answer=0), FindingPair(reference=0, answer=1)]
        grade(ClinicalComparison(reference=[NODULE], answer=[NODULE, NODULE], pairs=pairs))


def test_dataset_and_task_scores_are_means_with_seeded_percentile_intervals() -> None:
    scores = {"rg": [1.0, 0.5, 0.0, 0.25], "cg": [1.0, 1.0]}
    grades = [
        CaseGrade(f"{task}/{i}", task, "39" if task == "rg" else "10", ClinicalResult(
            matched=1, significant=0, minor=0, score=s, errors=[]))
        for task, values in scores.items() for i, s in enumerate(values)
    ]  # fmt: skip
    grades.append(CaseGrade("rg/x", "rg", "39", None, "judge failed"))
    summary = summarise_clinical(grades, "j", ["rg", "cg"], resamples=200, seed=3)
    rg = next(d for d in summary.datasets if d.task == "rg")
    assert rg.n_scored == 4 and rg.n_not_scored == 1 and rg.score.estimate == pytest.approx(0.4375)
    weights = stratum_weights("clinical/rg/39", 4, 200, 3)
    replicates = weights @ np.array(scores["rg"]) / 4  # the cases in case-id order: rg/0 .. rg/3
    low, high = np.percentile(replicates, [2.5, 97.5])
    assert (rg.score.low, rg.score.high) == pytest.approx((low, high))
    assert summary.tasks["cg"].score.estimate == 1.0 and summary.not_scored == {"rg/x": "judge failed"}
    assert [d.task for d in summary.datasets] == ["rg", "cg"]


CASE = CaseMeta(
    case_id="dd/21/0/x", task="dd", dataset_id="21", dataset_name="d", source_file="f", row_index=0,
    anatomy="breast", scenario="", truth="benign", options=["benign", "malignant"], image_sha256="", columns={},
)  # fmt: skip
CVE = CASE.model_copy(update={"case_id": "cve/27/0/x", "task": "cve", "dataset_id": "27", "options": []})


def _reply(text: str | None, error: str | None = None) -> Completion:
    return Completion(case_id=CASE.case_id, key="k", text=text, error=error)  # type: ignore[arg-type]


def test_extraction_replies_are_read_by_the_strict_parsers() -> None:
    read = read_reply("extraction", CASE, "benign?", _reply("Malignant"))
    assert (read.status, read.value, read.answer_sha256) == ("read", "malignant", answer_sha256("benign?"))
    assert read_reply("extraction", CASE, "x", _reply("NO ANSWER.")).status == "no_answer"
    unreadable = read_reply("extraction", CASE, "x", _reply("benign or malignant"))
    assert unreadable.status == "unreadable" and unreadable.detail is not None
    assert read_reply("extraction", CVE, "x", _reply("0.7")).value == 0.7
    failed = read_reply("extraction", CASE, "x", _reply(None, "timeout"))
    assert failed.status == "failed" and "timeout" in (failed.detail or "")
    assert read_reply("extraction", CASE, "x", _reply(None, "refused")).status == "unreadable"


def test_clinical_replies_must_hold_a_gradeable_comparison() -> None:
    fenced = '```json\n{"reference": [{"structure": "liver"}], "answer": [], "pairs": []}\n```'
    assert read_reply("clinical", CASE, "x", _reply(fenced)).comparison is not None
    for bad, why in (
        ("no json here", "no JSON object"),
        ('{"reference": [], "answer": []', "no JSON object"),
        ('{"reference": [], "answer": [], "pairs": [{"reference": 0, "answer": 0}]}', "reference finding 0"),
        ('{"reference": [{"size_mm": 3}], "answer": [], "pairs": []}', "structure"),
    ):
        reading = read_reply("clinical", CASE, "x", _reply(bad))
        assert reading.status == "unreadable" and why in (reading.detail or ""), (bad, reading.detail)


def test_judge_prompts_carry_the_question_and_the_answer_never_the_truth() -> None:
    text = judge_prompt("extraction", CASE, "I think benign").text
    assert "- benign\n- malignant" in text and "I think benign" in text and "NO ANSWER" in text
    number = judge_prompt("extraction", CVE, "about 0.7").text
    assert "carotid intima-media thickness, in mm" in number and "- " not in number.split("----------")[0][-40:]
    report = CASE.model_copy(update={"task": "rg", "dataset_id": "39", "columns": {"report": "Liver normal."}})
    clinical = judge_prompt("clinical", report, "Liver enlarged.").text
    assert "Liver normal." in clinical and "Liver enlarged." in clinical and '"pairs"' in clinical
    assert "benign" not in judge_prompt("extraction", CASE.model_copy(update={"options": ["a", "b"]}), "a").text
