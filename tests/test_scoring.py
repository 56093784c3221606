"""Scoring: the published leaderboard through our U2 function, every reference quirk switched on and off,
strict-mode rules (partial runs, infra errors, unparseable answers), and byte-identical summaries."""

from __future__ import annotations

import csv
import dataclasses
import json
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from u2eval.benchmark.tasks import TaskSpec, all_tasks, get_task, task_keys
from u2eval.records import Judgement, Outcome, Value, Verdict
from u2eval.scoring.aggregate import score_mode, summarise
from u2eval.scoring.summary import DatasetResult, ModeSummary, Summary
from u2eval.scoring.table_rules import (
    REFERENCE_QUIRKS,
    STRICT_QUIRKS,
    ScoringQuirks,
    dataset_plan,
    official_weights,
    task_score,
    u2_score,
)

TASKS = all_tasks()
LEADERBOARD = Path(__file__).parent / "data" / "leaderboard.csv"

# ---------------------------------------------------------------- the published leaderboard


def _leaderboard() -> list[dict[str, str]]:
    with LEADERBOARD.open(newline="") as f:
        return list(csv.DictReader(f))


def _published_task_scores(row: dict[str, str], dd: str = "dd_acc", vra: str = "vra_acc") -> dict[str, float]:
    def num(column: str) -> float:
        return 0.0 if row[column] == "-" else float(row[column])  # '-' (not computed) counts 0

    primary = {"dd": dd, "vra": vra, "ll": "ll_acc", "od": "od_acc", "kd": "kd_acc"}
    primary |= {"cve": "cve_rmse", "rg": "rg_bleu", "cg": "cg_bleu"}
    return {t.key: task_score(t, num(primary[t.key])) for t in TASKS}


def test_leaderboard_file_holds_the_22_published_rows() -> None:
    rows = _leaderboard()
    assert len(rows) == 22
    assert rows[0]["model"] == "Random Guessing" and rows[-1]["model"] == "MedGemma-4B-it"


@pytest.mark.parametrize("row", _leaderboard(), ids=lambda r: r["model"])
def test_published_u2_reproduces_from_per_task_numbers(row: dict[str, str]) -> None:
    u2 = round(u2_score(_published_task_scores(row)), 4)
    assert u2 == pytest.approx(float(row["u2_published"]), abs=1e-9)


def test_f1_instead_of_accuracy_does_not_reproduce() -> None:
    row = next(r for r in _leaderboard() if r["model"] == "Gemini-2.5-Pro-Preview")
    assert round(u2_score(_published_task_scores(row, dd="dd_f1", vra="vra_f1")), 4) == pytest.approx(0.2618)


def test_u2_weights_come_from_task_files_and_scores_are_clipped() -> None:
    assert official_weights() == {
        "dd": 0.20, "vra": 0.20, "ll": 0.07, "od": 0.27, "kd": 0.07, "cve": 0.07, "rg": 0.08, "cg": 0.04
    }  # fmt: skip
    assert u2_score({"dd": 1.5, "cve": task_score(get_task("cve"), 1.3)}) == pytest.approx(0.20)
    assert u2_score({}) == 0.0
    with pytest.raises(ValueError, match="no weight"):
        u2_score({"xx": 1.0})


# ---------------------------------------------------------------- building judgements


def _j(
    case_id: str,
    task: str,
    dataset: str,
    strict: Verdict,
    reference: Verdict | None = None,
    outcome: Outcome = "ok",
    answer: str | None = "answer",
) -> Judgement:
    return Judgement.model_validate(
        {
            "case_id": case_id,
            "task": task,
            "dataset_id": dataset,
            "anatomy": "x",
            "answer": answer,
            "outcome": outcome,
            "strict": strict,
            "reference": reference or strict,
        }
    )


def _label(pred: Value, truth: str, counted: bool = True) -> Verdict:
    return Verdict(prediction=pred, truth=truth, counted=counted, correct=pred == truth)


def cases(task: str, dataset: str, n_right: int, n_wrong: int) -> list[Judgement]:
    """Label judgements (classification or location) with a known accuracy; both modes agree."""
    out = [_j(f"{task}-{dataset}-r{i}", task, dataset, _label("a", "a")) for i in range(n_right)]
    out += [_j(f"{task}-{dataset}-w{i}", task, dataset, _label("b", "a")) for i in range(n_wrong)]
    return out


def number(case_id: str, dataset: str, pred: float | None, truth: float) -> Judgement:
    return _j(case_id, "cve", dataset, Verdict(prediction=pred, truth=truth, counted=True))


def text(case_id: str, task: str, dataset: str, hyp: str, ref: str) -> Judgement:
    return _j(case_id, task, dataset, Verdict(prediction=hyp, truth=ref, counted=True))


def complete_run() -> list[Judgement]:
    """At least one case in every dataset of every task, with known per-dataset results."""
    out: list[Judgement] = []
    for task in TASKS:
        for ds in task.datasets:
            if task.capability in ("classification", "detection"):
                out += cases(task.key, ds.id, 1, 2)
            elif task.capability == "regression":
                assert ds.value_range is not None
                low, high = ds.value_range
                out.append(number(f"cve-{ds.id}-0", ds.id, low + 0.25 * (high - low), low + 0.5 * (high - low)))
            else:
                out.append(text(f"{task.key}-{ds.id}-0", task.key, ds.id, "the liver is normal", "the liver is normal"))
    return out


def run(judgements: list[Judgement], quirks: ScoringQuirks, mode: str = "reference") -> ModeSummary:
    return score_mode(judgements, TASKS, "reference" if mode == "reference" else "strict", quirks)


def off(name: str) -> ScoringQuirks:
    return dataclasses.replace(REFERENCE_QUIRKS, **{name: False})


def dataset(summary: ModeSummary, task: str, dataset_id: str) -> DatasetResult:
    return next(d for d in summary.datasets if d.task == task and d.dataset_id == dataset_id)


# ---------------------------------------------------------------- reference quirks, one at a time


def test_reference_plans_are_the_official_table_lists() -> None:
    table = {
        "dd": ["21", "23", "25", "28_1", "32", "40", "42", "44", "57", "66", "70", "74is_normal", "75"],
        "vra": ["03", "10", "18", "28", "37", "50", "53", "69", "74is_visible", "anatomy"],
        "ll": ["04", "17", "23", "32", "64"],
        "od": ["09", "13", "16", "18", "31", "37", "38", "47", "49", "50", "52", "53", "67"],
        "kd": ["48"],
        "cve": ["18", "27", "31", "50", "57"],
        "rg": ["39"],
        "cg": ["10", "44"],
    }
    for task in TASKS:
        strict_plan, strict_left = dataset_plan(task, STRICT_QUIRKS)
        assert strict_plan == [(task.key, d) for d in table[task.key]] and not strict_left
        # What actually reaches the table's lists in reference: the same lists, less the unreachable ids.
        plan, _ = dataset_plan(task, REFERENCE_QUIRKS)
        unreachable = {"dd": {"28_1"}, "ll": {"04"}, "od": {"09"}, "cve": {"31"}, "cg": {"44"}}.get(task.key, set())
        assert [d if t == task.key else "28" for t, d in plan] == [d for d in table[task.key] if d not in unreachable]
    vra_plan, vra_left = dataset_plan(get_task("vra"), REFERENCE_QUIRKS)
    assert ("dd", "28_1") in vra_plan and vra_left == {("vra", "28"): "knee_28_swap"}


def test_knee_28_swap() -> None:
    js = cases("dd", "21", 1, 1) + cases("dd", "28_1", 4, 0) + cases("vra", "03", 1, 3) + cases("vra", "28", 0, 4)
    on = run(js, REFERENCE_QUIRKS)
    assert on.tasks["dd"].metrics["accuracy"] == 0.5  # 12-set DD: KL grade left out
    assert on.tasks["vra"].metrics["accuracy"] == pytest.approx((0.25 + 1.0) / 2)  # KL grade averaged as '28'
    assert on.tasks["vra"].datasets == ["vra/03", "dd/28_1"]
    assert dataset(on, "dd", "28_1").scored_under == "vra" and dataset(on, "dd", "28_1").quirk == "knee_28_swap"
    assert dataset(on, "vra", "28").scored_under is None
    offr = run(js, off("knee_28_swap"))
    assert offr.tasks["dd"].metrics["accuracy"] == pytest.approx(0.75)
    assert offr.tasks["vra"].metrics["accuracy"] == pytest.approx(0.125)


def test_leading_zero_ids_dropped() -> None:
    js = cases("ll", "04", 2, 0) + cases("ll", "17", 0, 2) + cases("od", "09", 2, 0) + cases("od", "13", 1, 1)
    js += cases("vra", "03", 2, 0)  # classification ids stay strings: 03 is kept
    on = run(js, REFERENCE_QUIRKS)
    assert on.tasks["ll"].score == 0.0 and on.tasks["od"].score == 0.5 and on.tasks["vra"].score == 1.0
    assert dataset(on, "ll", "04").quirk == "drop_leading_zero_ids"
    offr = run(js, off("drop_leading_zero_ids"))
    assert offr.tasks["ll"].score == 0.5 and offr.tasks["od"].score == 0.75


def test_cg_is_dataset_10_only() -> None:
    js = [text("c10", "cg", "10", "a b c d e", "a b c d e"), text("c44", "cg", "44", "x y z w", "a b c d")]
    on = run(js, REFERENCE_QUIRKS)
    assert on.tasks["cg"].score == pytest.approx(1.0, abs=1e-6) and on.tasks["cg"].datasets == ["cg/10"]
    assert run(js, off("cg_dataset_10_only")).tasks["cg"].score == pytest.approx(0.5, abs=1e-6)


def test_cve_without_31() -> None:
    js = [number("e18", "18", 42.5, 42.5), number("e31", "31", 100.0, 350.0)]  # 31: error 1 (full range)
    assert run(js, REFERENCE_QUIRKS).tasks["cve"].score == 1.0
    assert run(js, off("cve_without_31")).tasks["cve"].score == pytest.approx(0.5)


def test_round_4dp_per_dataset_and_u2() -> None:
    js = cases("dd", "21", 1, 2) + cases("dd", "23", 2, 1)
    on, offr = run(js, REFERENCE_QUIRKS), run(js, off("round_4dp"))
    assert dataset(on, "dd", "21").metrics["accuracy"] == 0.3333
    assert on.tasks["dd"].metrics["accuracy"] == pytest.approx((0.3333 + 0.6667) / 2)
    assert dataset(offr, "dd", "21").metrics["accuracy"] == 0.333333
    # U2 = 0.20 * DD + 0.07 (the CVE fill); rounded to 4 decimals only with the quirk
    assert on.u2_score == pytest.approx(0.17, abs=1e-12)
    lone = cases("dd", "21", 1, 2)
    assert run(lone, REFERENCE_QUIRKS).u2_score == 0.1367
    assert run(lone, off("round_4dp")).u2_score == 0.136667


def test_f1_over_union() -> None:
    truth, pred = ["benign", "malignant", "benign", "malignant"], ["benign", "", "malignant", "malignant"]
    js = [_j(f"f{i}", "dd", "21", _label(p, t)) for i, (t, p) in enumerate(zip(truth, pred, strict=True))]
    # benign 2/3, malignant 1/2, "" 0: union 7/18; truth classes 7/12
    assert dataset(run(js, REFERENCE_QUIRKS), "dd", "21").metrics["macro_f1"] == 0.3889
    assert dataset(run(js, off("f1_over_union")), "dd", "21").metrics["macro_f1"] == 0.5833


def test_nonfinite_rmse_dropped() -> None:
    js = [number("a", "18", 1e200, 42.5), number("b", "50", 130.0, 100.0)]  # 18 overflows to inf; 50 RMSE 0.1
    on = run(js, REFERENCE_QUIRKS)
    assert on.tasks["cve"].metrics["rmse"] == pytest.approx(0.1) and on.tasks["cve"].score == pytest.approx(0.9)
    assert dataset(on, "cve", "18").metrics["rmse"] is None  # inf is reported as null
    offr = run(js, off("drop_nonfinite_rmse"))
    assert offr.tasks["cve"].score == 0.0 and offr.tasks["cve"].metrics["rmse"] is None


def test_unprocessable_answer_skips_a_classification_dataset() -> None:
    # judging sets the flag when the official pipeline could not process the answer, e.g. a JSON number
    flagged = Verdict(prediction="", truth="a", counted=True, correct=False, skips_dataset=True)
    js = [*cases("dd", "21", 3, 0), _j("d21-x", "dd", "21", _label(None, "a"), flagged), *cases("dd", "23", 1, 1)]
    on = run(js, REFERENCE_QUIRKS)
    assert on.tasks["dd"].score == 0.5 and on.tasks["dd"].datasets == ["dd/23"]
    assert dataset(on, "dd", "21").quirk == "nan_response_skips_dataset"
    assert dataset(on, "dd", "21").scored_under is None
    assert run(js, off("nan_response_skips_dataset")).tasks["dd"].score == pytest.approx((0.75 + 0.5) / 2)
    # location scorers have no such step: the flag does not drop an LL dataset
    loc = [*cases("ll", "17", 1, 0), _j("l", "ll", "17", _label(None, "a"), flagged)]
    assert run(loc, REFERENCE_QUIRKS).tasks["ll"].score == 0.5


def test_a_missing_answer_alone_does_not_skip_the_dataset() -> None:
    # Stage (a) turns a None answer into "" (counted wrong), so without the flag nothing is skipped.
    empty = _j("d21-none", "dd", "21", _label(None, "a"), _label("", "a"), outcome="empty", answer=None)
    on = run([*cases("dd", "21", 3, 0), empty], REFERENCE_QUIRKS)
    assert on.tasks["dd"].score == 0.75 and dataset(on, "dd", "21").quirk is None


def test_empty_classification_dataset_scores_zero() -> None:
    dropped = Verdict(prediction=None, truth="2", counted=False)  # int-label answer that failed int()
    js = [*cases("dd", "21", 2, 0), _j("d44", "dd", "44", _label("2", "2"), dropped, outcome="unparseable")]
    assert run(js, REFERENCE_QUIRKS).tasks["dd"].score == 0.5
    assert run(js, off("empty_classification_scores_zero")).tasks["dd"].score == 1.0
    # strict counts the case (and here it is right): 44 scores 1.0
    assert run(js, STRICT_QUIRKS, mode="strict").tasks["dd"].score == 1.0


def test_a_dataset_without_answers_has_no_result_not_a_zero() -> None:
    # No prediction file (or only failed requests): the official has no result row; the table averages the others.
    lost = Verdict(prediction=None, truth="benign", counted=False, not_counted="infra_error")
    js = [*cases("dd", "21", 2, 0), _j("d23", "dd", "23", lost, outcome="infra_error", answer=None)]
    reference = run(js, REFERENCE_QUIRKS)
    assert reference.tasks["dd"].score == 1.0 and dataset(reference, "dd", "23").metrics["accuracy"] is None


def test_an_empty_reference_text_zeroes_bleu_and_rouge_in_reference() -> None:
    nan_truth = Verdict(prediction="the liver is normal", truth=None, counted=True)
    js = [
        text("r1", "rg", "39", "the liver is normal", "the liver is normal"),
        _j("r2", "rg", "39", _label(None, "x", False), nan_truth),
    ]
    reference = run(js, REFERENCE_QUIRKS)
    assert (
        dataset(reference, "rg", "39").metrics["bleu4"] == 0.0
        and dataset(reference, "rg", "39").metrics["rouge_l"] == 0.0
    )
    assert dataset(run(js, off("nan_reference_zeroes_text_metrics")), "rg", "39").metrics["bleu4"] > 0


def test_missing_tasks_in_reference_are_filled_as_the_table_does() -> None:
    js = cases("dd", "21", 2, 0)
    on = run(js, REFERENCE_QUIRKS)
    assert on.tasks["cve"].filled and on.tasks["cve"].score == 1.0  # RMSE filled with 0.0: full credit
    assert on.tasks["ll"].filled and on.tasks["ll"].score == 0.0
    assert on.u2_score == pytest.approx(0.20 + 0.07)
    assert on.status == "partial" and on.missing_tasks == [k for k in task_keys() if k != "dd"]
    assert run(js, off("missing_cve_full_credit")).u2_score == pytest.approx(0.20)
    no_fill = run(js, off("missing_task_as_zero"))
    assert no_fill.u2_score is None and no_fill.u2_over_present_tasks == 1.0


# ---------------------------------------------------------------- strict mode


def test_strict_partial_run_has_no_u2_and_names_missing_tasks() -> None:
    js = cases("dd", "21", 1, 1) + cases("kd", "48", 1, 0)
    summary = summarise(js, TASKS)
    strict = summary.modes["strict"]
    assert summary.status == "partial" and strict.u2_score is None
    assert strict.missing_tasks == ["vra", "ll", "od", "cve", "rg", "cg"]
    assert strict.u2_over_present_tasks == pytest.approx((0.20 * 0.5 + 0.07 * 1.0) / 0.27, abs=1e-6)
    assert strict.tasks["cve"].score is None and not strict.tasks["cve"].filled  # never a silent zero
    assert summary.tasks_run == ["dd", "kd"]


def test_complete_run_u2_and_sample_share() -> None:
    summary = summarise(complete_run(), TASKS)
    strict = summary.modes["strict"]
    assert summary.status == "complete" and strict.missing_tasks == []
    # location/classification 1/3 everywhere, CVE error 0.25 -> 0.75, text identical -> ~1.0
    expected = (0.20 + 0.20 + 0.07 + 0.27 + 0.07) / 3 + 0.07 * 0.75 + 0.08 + 0.04
    assert strict.u2_score == pytest.approx(expected, abs=1e-6)
    labelled = {t.key for t in TASKS if t.capability in ("classification", "detection")}
    n = {t.key: len(t.datasets) * (3 if t.key in labelled else 1) for t in TASKS}
    scores = {k: 1 / 3 if k in labelled else {"cve": 0.75}.get(k, 1.0) for k in n}
    share = sum(n[k] * scores[k] for k in n) / sum(n.values())
    assert strict.u2_sample_share == pytest.approx(share, abs=1e-6)
    assert summary.modes["reference"].u2_score == round(summary.modes["reference"].u2_score or -1, 4)


def test_infra_errors_are_excluded_listed_and_out_of_the_parse_rate() -> None:
    infra = _j("dd-21-infra", "dd", "21", _label("b", "a"), outcome="infra_error", answer=None)  # counted by mistake
    bad = _j("dd-21-bad", "dd", "21", _label(None, "a"), _label("", "a"), outcome="unparseable", answer="hmm")
    js = [*cases("dd", "21", 2, 0), infra, bad]
    summary = summarise(js, TASKS)
    for mode in ("strict", "reference"):
        row = dataset(summary.modes[mode], "dd", "21")
        assert row.n_cases == 4 and row.n_infra_errors == 1 and row.n_counted == 3
        assert row.metrics["accuracy"] == pytest.approx(2 / 3, abs=1e-4)  # unparseable counted wrong
    assert summary.infra_error_case_ids == ["dd-21-infra"]
    parse = summary.parse["dd"]
    assert parse.outcomes == {"ok": 2, "unparseable": 1, "refused": 0, "empty": 0, "infra_error": 1}
    assert parse.parse_rate == pytest.approx(2 / 3, abs=1e-6)


def test_strict_imputes_missing_numbers_reference_drops_them() -> None:
    unparsed = _j("c2", "cve", "50", Verdict(prediction=None, truth=400.0, counted=True),
                  Verdict(prediction=None, truth=400.0, counted=False, changed_by=["cve_drop_unparseable"]),
                  outcome="unparseable")  # fmt: skip
    js = [number("c1", "50", 400.0, 400.0), unparsed]
    summary = summarise(js, TASKS)
    strict, ref = dataset(summary.modes["strict"], "cve", "50"), dataset(summary.modes["reference"], "cve", "50")
    assert strict.metrics["rmse"] == pytest.approx((1.0 / 2) ** 0.5, abs=1e-6)  # imputed 100 -> error 1
    assert ref.metrics["rmse"] == 0.0 and ref.n_counted == 1
    diff = next(d for d in summary.differences if d.task == "cve" and d.dataset_id == "50")
    assert diff.reasons == ["denominator: 2 counted in strict, 1 in reference", "cve_drop_unparseable: 1 case"]


def test_differences_name_the_quirk() -> None:
    js = complete_run()
    summary = summarise(js, TASKS)
    by_ref = {(d.task, d.dataset_id): d for d in summary.differences}
    assert by_ref[("dd", "28_1")].reference_scored_under == "vra"
    assert by_ref[("dd", "28_1")].reasons[0].startswith("knee_28_swap")
    assert by_ref[("ll", "04")].reasons[0].startswith("drop_leading_zero_ids")
    assert by_ref[("cg", "44")].reasons[0].startswith("cg_dataset_10_only")
    assert by_ref[("cve", "31")].reasons[0].startswith("cve_without_31")
    assert set(by_ref[("dd", "21")].reasons) == {"round_4dp: moves accuracy", "f1_over_union: moves macro_f1"}
    assert by_ref[("dd", "21")].differing_metrics == ["accuracy", "macro_f1"]
    assert set(by_ref[("dd", "21")].reference_metrics) == {"accuracy", "macro_f1"}
    assert ("kd", "48") in by_ref and ("rg", "39") not in by_ref  # 1/3 rounds; identical text does not move


def test_unknown_dataset_and_duplicates_are_errors() -> None:
    with pytest.raises(KeyError, match="99"):
        summarise(cases("dd", "99", 1, 0), TASKS)
    with pytest.raises(ValueError, match="duplicate"):
        summarise(cases("dd", "21", 1, 0) * 2, TASKS)
    with pytest.raises(ValueError, match="not among"):
        summarise(cases("dd", "21", 1, 0), [t for t in TASKS if t.key != "dd"])


# ---------------------------------------------------------------- determinism and properties


def _json(summary: Summary) -> str:
    return json.dumps(summary.model_dump(mode="json"), indent=2, sort_keys=True)


def test_summary_json_is_byte_identical_for_shuffled_input() -> None:
    js = complete_run() + [
        text("rg-39-1", "rg", "39", "the spleen  is normal\nin size", "the spleen is normal in size ."),
        _j("dd-21-x", "dd", "21", _label(None, "a"), _label("", "a"), outcome="refused", answer="no"),
        _j("od-13-i", "od", "13", _label(None, "a"), outcome="infra_error", answer=None),
    ]
    first = _json(summarise(js, TASKS))
    rnd = random.Random(7)
    for _ in range(3):
        rnd.shuffle(js)
        assert _json(summarise(js, list(reversed(TASKS)))) == first
    assert "Infinity" not in first and "NaN" not in first


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["21", "23", "40"]), st.booleans()), min_size=1, max_size=30))
def test_task_scores_are_proportions_and_perfect_is_one(draws: list[tuple[str, bool]]) -> None:
    js = [_j(f"c{i}", "dd", ds, _label("a" if ok else "b", "a")) for i, (ds, ok) in enumerate(draws)]
    for mode in ("strict", "reference"):
        dd = summarise(js, TASKS).modes[mode].tasks["dd"]
        assert dd.score is not None and 0.0 <= dd.score <= 1.0
    perfect = [_j(f"c{i}", "dd", ds, _label("a", "a")) for i, (ds, _) in enumerate(draws)]
    assert summarise(perfect, TASKS).modes["strict"].tasks["dd"].score == 1.0


def test_all_correct_complete_run_scores_one() -> None:
    def perfect(spec: TaskSpec) -> list[Judgement]:
        out = []
        for ds in spec.datasets:
            if spec.capability == "regression":
                out.append(number(f"p-{ds.id}", ds.id, 50.0, 50.0))
            elif spec.capability == "generation":
                out.append(text(f"p-{spec.key}-{ds.id}", spec.key, ds.id, "a b c d e", "a b c d e"))
            else:
                out += cases(spec.key, ds.id, 2, 0)
        return out

    js = [j for spec in TASKS for j in perfect(spec)]
    summary = summarise(js, TASKS)
    assert summary.modes["strict"].u2_score == pytest.approx(1.0, abs=1e-6)
    assert summary.modes["reference"].u2_score == 1.0


def _judged(task: str, dataset_id: str, truth: str, answers: list[str], **columns: str) -> list[Judgement]:
    from u2eval.records import CaseMeta, Completion
    from u2eval.scoring.judging import judge

    spec = get_task(task)
    ds = spec.dataset(dataset_id)
    judged = []
    for i, answer in enumerate(answers):
        meta = CaseMeta(
            case_id=f"{task}/{dataset_id}/{i}", task=spec.key, dataset_id=dataset_id, dataset_name=ds.source,
            source_file="x.tsv", row_index=i, anatomy=ds.anatomy, scenario="", truth=truth,
            options=list(ds.labels), image_sha256="0" * 64, columns=dict(columns),
        )  # fmt: skip
        judged.append(judge(meta, Completion(case_id=meta.case_id, key=str(i), text=answer), spec))
    return judged


def test_differences_count_the_cases_each_quirk_changed_never_a_generic_reason() -> None:
    lower = _judged("ll", "17", "{'lesion': [0.5, 0.8, 0.1, 0.1]}", ["lower center"] * 3 + ["upper left"])
    od = _judged("od", "13", "{}", ["not visible", "not visible", "Not visible."], seg_channel_name="kidney")
    grades = _judged("dd", "44", "2", ["two", "2", "Score 2", "3"])
    synonyms = _judged("ll", "23", "{'lesion': [0.1, 0.1, 0.1, 0.1]}", ["top left", "top-left", "upper left"])
    summary = summarise([*lower, *od, *grades, *synonyms], TASKS)
    reasons = {(d.task, d.dataset_id): d.reasons for d in summary.differences}
    assert reasons[("ll", "17")] == ["center_keyword_first: 3 cases"]
    assert reasons[("od", "13")] == ["od_period_option: 2 cases", "round_4dp: moves accuracy"]  # 1/3
    assert "int_label_drop: 1 case" in reasons[("dd", "44")]
    assert reasons[("ll", "23")][0] == "answer reading (strict's parser vs the official matcher): 2 cases"
    assert not any("judged some answers differently" in r for rs in reasons.values() for r in rs)
