"""judge(): strict and reference verdicts side by side, per capability, outcomes and infra errors."""

from __future__ import annotations

from dataclasses import replace
from typing import get_args

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from u2eval.benchmark.sectors import LOCATION_OPTIONS
from u2eval.benchmark.tasks import all_tasks, get_task
from u2eval.records import INFRA_ERROR_KINDS, CaseMeta, Completion, ErrorKind, Judgement
from u2eval.scoring.judging import farthest_in_range, judge, judge_placed
from u2eval.scoring.official import ReferenceQuirks

BBOX_LOWER_CENTER = "{'lesion': [0.5, 0.8, 0.2, 0.2]}"


def case(
    task: str, dataset_id: str, truth: str | None, *, options: tuple[str, ...] = (), **columns: str | None
) -> CaseMeta:
    spec = get_task(task)
    return CaseMeta(
        case_id=f"{task}/{dataset_id}/0",
        task=spec.key,
        dataset_id=dataset_id,
        dataset_name=spec.dataset(dataset_id).source,
        source_file=f"{dataset_id}.tsv",
        row_index=0,
        anatomy=spec.dataset(dataset_id).anatomy,
        scenario="test",
        truth=truth,
        options=list(options),
        image_sha256="0" * 64,
        columns={spec.truth_column: truth, **columns},
    )


def answer(meta: CaseMeta, text: str | None, error: ErrorKind | None = None) -> Completion:
    return Completion(case_id=meta.case_id, key="k", text=text, error=error)


def run(meta: CaseMeta, text: str | None, error: ErrorKind | None = None, **quirks: bool) -> Judgement:
    return judge(meta, answer(meta, text, error), get_task(meta.task), replace(ReferenceQuirks(), **quirks))


def verdicts(j: Judgement) -> tuple[tuple[object, ...], tuple[object, ...]]:
    s, r = j.strict, j.reference
    return (s.prediction, s.truth, s.counted, s.correct), (r.prediction, r.truth, r.counted, r.correct)


# ================================================================================== classification


def test_classification_both_modes_agree_on_a_clean_answer() -> None:
    j = run(case("dd", "21", "benign"), "Benign")
    assert j.outcome == "ok"
    assert verdicts(j) == (("benign", "benign", True, True), ("benign", "benign", True, True))


def test_classification_verbose_answer_differs() -> None:
    # The reference tries options in list order: 'benign' is first, so "not malignant; likely benign" is
    # right by luck; on [normal, benign, malignant] a bare substring 'normal' (in "abnormal") wins once no
    # option occurs as a whole word.
    assert run(case("dd", "21", "benign"), "not malignant; likely benign").reference.correct is True
    j = run(case("dd", "23", "malignant"), "abnormal findings, likely malignancy")
    assert j.outcome == "unparseable"
    assert verdicts(j) == ((None, "malignant", True, False), ("normal", "malignant", True, False))


def test_classification_unparseable() -> None:
    j = run(case("dd", "21", "malignant"), "Could be benign or malignant.")
    assert j.outcome == "unparseable"
    assert j.strict.counted and j.strict.correct is False and j.strict.prediction is None
    assert j.reference.prediction == "benign"  # list order


def test_int_labels_strict_counts_wrong_reference_drops() -> None:
    j = run(case("dd", "44", "2"), "moderate")
    assert j.outcome == "unparseable"
    assert verdicts(j) == ((None, "2", True, False), ("", "2", False, False))
    assert run(case("dd", "44", "2"), "moderate", int_label_drop=False).reference.counted


def test_int_labels_score_phrasing() -> None:
    assert verdicts(run(case("dd", "44", "2"), "Score 2")) == (("2", "2", True, True), ("2", "2", True, True))
    # '1.0' on 57: strict reads label 1, the reference matches '0' first.
    assert verdicts(run(case("dd", "57", "1"), "1.0")) == (("1", "1", True, True), ("0", "1", True, False))


def test_74is_visible_not_visible_quirk() -> None:
    j = run(case("vra", "74is_visible", "Not-visible"), "not visible")
    assert verdicts(j) == (("not-visible", "not-visible", True, True), ("visible", "not-visible", True, False))


def test_other_option_quirk() -> None:
    j = run(case("dd", "42", "pancreas cancer"), "It is another lesion")
    assert j.strict.prediction is None and j.reference.prediction == "other"
    assert (
        run(case("dd", "42", "pancreas cancer"), "It is another lesion", other_option=False).reference.prediction == ""
    )


def test_anatomy_dict_truth() -> None:
    meta = case("vra", "anatomy", "{'Anatomy': 'Thyroid', 'Plane': 'transverse'}")
    assert verdicts(run(meta, "thyroid")) == (("thyroid", "thyroid", True, True), ("thyroid", "thyroid", True, True))


def test_53_none_label_is_unreachable_in_reference() -> None:
    j = run(case("vra", "53", "None"), "None")
    assert (j.strict.correct, j.reference.correct, j.reference.truth) == (True, False, "nan")


def test_case_options_are_preferred_to_the_task_labels() -> None:
    meta = case("dd", "21", "benign", options=("benign", "malignant", "cyst"))
    assert run(meta, "cyst").strict.prediction == "cyst"
    assert run(case("dd", "21", "benign"), "cyst").outcome == "unparseable"


def test_missing_classification_truth_is_not_counted_in_strict() -> None:
    j = run(case("dd", "21", None), "benign")
    assert (j.strict.counted, j.strict.truth) == (False, None)
    assert (j.reference.counted, j.reference.correct, j.reference.truth) == (True, False, "nan")


# ======================================================================================= detection


def test_lower_center_is_center_in_reference() -> None:
    j = run(case("ll", "04", BBOX_LOWER_CENTER), "lower center")
    assert verdicts(j) == (
        ("lower center", "lower center", True, True),
        ("center", "lower center", True, False),
    )
    assert run(case("ll", "04", BBOX_LOWER_CENTER), "lower center", center_keyword_first=False).reference.correct


@pytest.mark.parametrize(("text", "reference_correct"), [("not visible", False), ("Not visible.", True)])
def test_od_not_visible_needs_the_period(text: str, reference_correct: bool) -> None:
    j = run(case("od", "09", None, seg_channel_name="kidney"), text)
    assert (j.strict.truth, j.strict.correct) == ("not visible", True)
    assert (j.reference.truth, j.reference.correct) == ("not visible", reference_correct)


def test_ll_not_visible_has_no_period_problem() -> None:
    assert run(case("ll", "04", None), "not visible").reference.correct is True


def test_od_prompt_mentions_add_options() -> None:
    # OD 50's prompt embeds 'fetal abdomen', which becomes an option matched before 'center'.
    meta = case("od", "50", "{'abdomen': [0.5, 0.5, 0.3, 0.3]}", anatomy_location="fetal abdomen")
    j = run(meta, "The fetal abdomen is in the center")
    assert (j.strict.correct, j.reference.prediction, j.reference.correct) == (True, "fetal abdomen", False)
    assert run(meta, "The fetal abdomen is in the center", prompt_mention_options=False).reference.correct


def test_kd_reads_keypoints() -> None:
    j = run(case("kd", "48", "{'mitral valve annulus': [0.2, 0.3]}"), "upper left")
    assert j.strict.correct and j.reference.correct


def test_keypoints_over_bbox_quirk_fires_only_with_the_column() -> None:
    meta = case("ll", "04", "{'lesion': [0.2, 0.2, 0.1, 0.1]}", keypoints=None)
    assert run(meta, "upper left").reference.correct is True  # off by default
    assert run(meta, "upper left", keypoints_over_bbox=True).reference.truth == "not visible"
    assert run(meta, "upper left", keypoints_over_bbox=True).strict.truth == "upper left"


# ====================================================================================== regression


def test_farthest_in_range() -> None:
    assert farthest_in_range(60.0, (10.0, 75.0)) == 10.0
    assert farthest_in_range(20.0, (10.0, 75.0)) == 75.0
    assert farthest_in_range(42.5, (10.0, 75.0)) == 10.0  # tie -> lower end
    assert farthest_in_range(500.0, (10.0, 75.0)) == 10.0


def test_regression_parsed_values_are_raw() -> None:
    j = run(case("cve", "18", "{'EF': 60}"), "0.55")
    assert verdicts(j) == ((0.55, 60.0, True, None), (0.55, 60.0, True, None))


def test_regression_57_integer_quirk() -> None:
    j = run(case("cve", "57", "{'fat value': 12}"), "about 12.5%")
    assert (j.strict.prediction, j.reference.prediction) == (12.5, 5.0)


def test_regression_unparseable_strict_penalty_reference_drop() -> None:
    j = run(case("cve", "18", "{'EF': 60}"), "normal function")
    assert j.outcome == "unparseable"
    assert verdicts(j) == ((10.0, 60.0, True, None), (None, 60.0, False, None))
    assert run(case("cve", "18", "{'EF': 60}"), "normal function", cve_drop_unparseable=False).reference.counted


def test_nullable_27() -> None:
    with_truth = run(case("cve", "27", "{'IMT': [0.8]}"), "null")
    assert with_truth.outcome == "ok"
    assert verdicts(with_truth) == ((1.5, 0.8, True, None), (None, 0.8, False, None))
    no_truth = run(case("cve", "27", "{'IMT': None}"), "null")
    assert (no_truth.strict.counted, no_truth.reference.counted) == (False, False)
    assert run(case("cve", "18", "{'EF': 60}"), "null").outcome == "unparseable"


# ====================================================================================== generation


@pytest.mark.parametrize("caption", ["", "A caption.", None])
def test_both_modes_score_rg_against_the_report_column_whatever_caption_holds(caption: str | None) -> None:
    # The official report scorer reads its internal `caption`, which for RG 39 holds the report; in the Hugging
    # Face layout that text is `report` and `caption` may be empty: scoring against it would give BLEU 0.
    meta = case("rg", "39", " Liver normal. ", caption=caption)
    j = run(meta, "  Caption: Liver normal.")
    assert verdicts(j) == (
        ("Liver normal.", "Liver normal.", True, None),
        ("Caption: Liver normal.", "Liver normal.", True, None),
    )


def test_cg_is_scored_against_caption() -> None:
    j = run(case("cg", "10", " Fetal phantom. ", report="A report."), "Fetal phantom.")
    assert j.strict.truth == j.reference.truth == "Fetal phantom."


def test_text_empty_and_refused_score_as_empty_text() -> None:
    j = run(case("cg", "10", "Fetal phantom."), "I'm sorry, I can't help with that.")
    assert (j.outcome, j.strict.prediction, j.strict.counted) == ("refused", "", True)
    assert j.reference.prediction == "I'm sorry, I can't help with that."


# ==================================================================================== error kinds


@pytest.mark.parametrize(
    ("task", "dataset_id", "truth"),
    [("dd", "44", "0"), ("dd", "21", "benign"), ("ll", "04", BBOX_LOWER_CENTER), ("cve", "18", "{'EF': 60}"),
     ("cg", "10", "Fetal phantom.")],
)  # fmt: skip
def test_a_live_infra_error_counts_in_neither_mode(task: str, dataset_id: str, truth: str) -> None:
    j = run(case(task, dataset_id, truth), None, "server")
    assert j.outcome == "infra_error"
    for verdict in (j.strict, j.reference):
        assert (verdict.counted, verdict.not_counted, verdict.prediction) == (False, "infra_error", None)


@pytest.mark.parametrize("kind", ["refused", "empty"])
def test_model_error_kinds_count_wrong(kind: ErrorKind) -> None:
    j = run(case("dd", "21", "benign"), "benign" if kind == "refused" else None, kind)
    assert j.outcome == kind
    assert (j.strict.counted, j.strict.correct) == (True, False)
    cve = run(case("cve", "18", "{'EF': 60}"), None, kind)
    assert (cve.outcome, cve.strict.counted, cve.strict.prediction) == (kind, True, 10.0)


TASKS_AND_DATASETS = [(t.key, d.id) for t in all_tasks() for d in t.datasets]
TRUTHS = {
    "classification": "benign",
    "detection": "{'x': [0.5, 0.5, 0.1, 0.1]}",
    "regression": str(
        {"EF": 50, "IMT": [1.0], "abdominal_circumference": 200, "fat value": 10, "head_circumference": 200}
    ),
    "generation": "A caption.",
}


@settings(max_examples=200)
@given(
    st.sampled_from(TASKS_AND_DATASETS),
    st.sampled_from(sorted(INFRA_ERROR_KINDS)),
    st.one_of(st.none(), st.text(max_size=40)),
)
def test_infra_errors_never_count_in_strict(where: tuple[str, str], kind: str, text: str | None) -> None:
    task, dataset_id = where
    meta = case(task, dataset_id, TRUTHS[get_task(task).capability])
    j = judge(meta, Completion(case_id=meta.case_id, key="k", text=text, error=kind), get_task(task))
    assert j.outcome == "infra_error" and j.strict.counted is False and j.strict.correct is None


@settings(max_examples=300)
@given(
    st.sampled_from(TASKS_AND_DATASETS),
    st.one_of(st.none(), st.text(max_size=60), st.sampled_from(["upper left", "benign", "2", "55%", "null"])),
    st.sampled_from([None, *get_args(ErrorKind)]),
)
def test_judge_is_total_and_round_trips(where: tuple[str, str], text: str | None, kind: ErrorKind | None) -> None:
    task, dataset_id = where
    meta = case(task, dataset_id, TRUTHS[get_task(task).capability])
    j = run(meta, text, kind)
    assert Judgement.model_validate_json(j.model_dump_json()) == j  # re-scoring reads back the same record
    assert j.outcome != "ok" or kind is None
    if get_task(task).capability == "detection" and j.strict.counted:
        assert j.strict.prediction is None or j.strict.prediction in LOCATION_OPTIONS


# ========================================================================================= wiring


def test_judge_rejects_a_completion_for_another_case() -> None:
    meta = case("dd", "21", "benign")
    with pytest.raises(ValueError, match="judged against"):
        judge(meta, Completion(case_id="elsewhere", key="k", text="benign"), get_task("dd"))


# ============================================================================= why a case is not counted


@pytest.mark.parametrize(
    ("meta", "text", "error", "strict", "reference"),
    [
        (case("dd", "21", "cyst", options=("benign", "malignant")), "benign", None, "truth_not_an_option", None),
        (case("dd", "21", None, options=("benign", "malignant")), "benign", None, "truth_missing", None),
        (case("dd", "44", "2"), "two", None, None, "dropped_by_official"),
        (case("od", "13", "garbage"), "center", None, "truth_unreadable", None),
        (case("cve", "18", "{'EF': 'n/a'}"), "50", None, "truth_unreadable", "truth_unreadable"),
        (case("cve", "18", "{'EF': 55.0}"), "no idea", None, None, "dropped_by_official"),
        (case("cg", "10", "  "), "A caption.", None, "truth_missing", None),
        (case("dd", "21", "benign"), None, "server", "infra_error", "infra_error"),
    ],
)
def test_every_case_outside_a_denominator_says_why(
    meta: CaseMeta, text: str | None, error: ErrorKind | None, strict: str | None, reference: str | None
) -> None:
    j = run(meta, text, error)
    assert (j.strict.not_counted, j.reference.not_counted) == (strict, reference)
    assert j.strict.counted is (strict is None) and j.reference.counted is (reference is None)
    for verdict in (j.strict, j.reference):
        assert (verdict.not_counted_detail is not None) is (verdict.not_counted not in (None, "infra_error"))


# =================================================================================== places from regions


@pytest.mark.parametrize("task", ["ll", "od", "kd"])
def test_a_place_given_as_a_region_is_judged_as_its_words_would_be(task: str) -> None:
    # judge_placed reads no answer text: it must still agree, verdict for verdict, with a model that wrote the
    # sector's name (and 'Not visible.' for no region, '' for a region that cannot be placed).
    spec = get_task(task)
    dataset_id = spec.dataset_ids[0]
    truths = [BBOX_LOWER_CENTER, "{'x': [0.1, 0.1, 0.1, 0.1]}", "[]", "not a cell"]
    column = spec.truth_column
    for truth in truths:
        meta = case(task, dataset_id, truth).model_copy(update={"columns": {column: truth}})
        for sector, words in [
            *((s, s) for s in LOCATION_OPTIONS if s != "not visible"),
            ("not visible", "Not visible."),
            (None, ""),
        ]:
            placed = judge_placed(meta, spec, sector)
            said = judge(meta, answer(meta, words), spec)
            assert (placed.strict, placed.reference.model_copy(update={"changed_by": []})) == (
                said.strict,
                said.reference.model_copy(update={"changed_by": []}),
            ), (task, truth, sector)
            assert placed.outcome == said.outcome
    with pytest.raises(ValueError, match="only detection cases"):
        judge_placed(case("dd", "21", "benign"), get_task("dd"), "center")
