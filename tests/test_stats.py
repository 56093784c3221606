"""McNemar and Holm against hand-computed tables; the bootstrap: reproducible, calibrated, consistent with
the scorer, and fast at full scale."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from fake_models import Oracle

from u2eval.benchmark.tasks import DatasetSpec, get_task, select_tasks
from u2eval.records import Judgement, Verdict
from u2eval.reports import uncertainty
from u2eval.reports.uncertainty import block_metric, case_table, run_intervals
from u2eval.run.runner import RunOptions, run
from u2eval.run.scoring_pass import judge_folder
from u2eval.scoring import metrics
from u2eval.scoring.aggregate import summarise
from u2eval.scoring.metrics import scored_as
from u2eval.scoring.summary import report_float
from u2eval.stats import holm, mcnemar_test, percentile_interval, stratum_weights

# ---------------------------------------------------------------------------------------------- McNemar


def test_the_papers_chi_squared_comes_from_b_85_c_147() -> None:
    # The paper reports chi2 = 16.04, p = 6.2e-5 on 521 cases; b = 85, c = 147 is one consistent table:
    # (|85 - 147| - 1)^2 / (85 + 147) = 61^2 / 232 = 16.0388.
    result = mcnemar_test(85, 147)
    assert result.method == "chi2"
    assert result.statistic == pytest.approx(3721 / 232)
    assert round(result.statistic, 2) == 16.04
    assert result.pvalue == pytest.approx(6.2058e-5, rel=1e-3)
    assert f"{result.pvalue:.1e}" == "6.2e-05"
    assert mcnemar_test(147, 85).pvalue == pytest.approx(result.pvalue)  # symmetric in b and c


def test_small_discordant_counts_use_the_exact_binomial_test() -> None:
    # b = 2, c = 10: p = 2 * P(X <= 2 | 12, 1/2) = 2 * (1 + 12 + 66) / 4096
    result = mcnemar_test(2, 10)
    assert result.method == "exact" and result.statistic == 2
    assert result.pvalue == pytest.approx(2 * 79 / 4096)
    assert mcnemar_test(12, 12).method == "exact" and mcnemar_test(12, 12).pvalue == 1.0
    assert mcnemar_test(12, 13).method == "chi2"  # b + c = 25: the asymptotic test
    assert mcnemar_test(12, 13).statistic == pytest.approx(0 / 25)
    assert mcnemar_test(0, 0).pvalue == 1.0
    assert mcnemar_test(0, 5).pvalue == pytest.approx(2 / 32)
    with pytest.raises(ValueError):
        mcnemar_test(-1, 3)


def test_holm_against_a_hand_computed_table() -> None:
    # sorted: 0.005 x 4 = 0.02, 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 = 0.04 -> raised to 0.06 (monotone)
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([None, 0.01, 0.04]) == [None, pytest.approx(0.02), pytest.approx(0.04)]
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm([]) == [] and holm([None]) == [None]


# ---------------------------------------------------------------------------------------------- the resampler


def test_weights_are_counts_of_a_resample_and_depend_only_on_seed_name_and_size() -> None:
    w = stratum_weights("dd/21", 7, 50, seed=0)
    assert w.shape == (50, 7) and np.all(w.sum(axis=1) == 7) and np.all(w == np.round(w))
    assert np.array_equal(w, stratum_weights("dd/21", 7, 50, seed=0))
    assert not np.array_equal(w, stratum_weights("dd/21", 7, 50, seed=1))
    assert not np.array_equal(w, stratum_weights("dd/23", 7, 50, seed=0))
    assert stratum_weights("x", 0, 5, 0).shape == (5, 0)


def test_percentile_interval_covers_a_known_proportion_about_95_percent_of_the_time() -> None:
    p, n, resamples, repetitions = 0.3, 120, 400, 200
    rng = np.random.default_rng(12345)
    covered = 0
    for repetition in range(repetitions):
        flags = (rng.random(n) < p).astype(np.float64)
        w = stratum_weights(f"rep{repetition}", n, resamples, seed=0)
        interval = percentile_interval(w @ flags / n, float(flags.mean()))
        assert interval.low is not None and interval.high is not None
        covered += interval.low <= p <= interval.high
    assert 0.90 <= covered / repetitions <= 0.99


# ---------------------------------------------------------------------------------------------- on a real run


@pytest.fixture(scope="module")
def oracle_judgements(tmp_path_factory: pytest.TempPathFactory) -> list[Judgement]:
    folder = tmp_path_factory.mktemp("stats") / "oracle"
    run(RunOptions(model="oracle", out=folder), adapter=Oracle(skill=0.6))
    return judge_folder(folder)


@pytest.mark.parametrize("mode", ["strict", "reference"])
def test_full_sample_values_are_the_scorers(oracle_judgements: list[Judgement], mode: str) -> None:
    summary = summarise(oracle_judgements, select_tasks(None)).modes[mode]
    table = case_table(oracle_judgements, mode)  # type: ignore[arg-type]
    reported = {f"{d.task}/{d.dataset_id}": d.metrics for d in summary.datasets}
    tolerance = 5e-5 if mode == "reference" else 1e-6  # reference rounds to 4 decimals
    checked = 0
    for block in table.blocks:
        for name in block.task.metrics:
            own = scored_as(name, f1_over_union=mode == "reference")
            value = float(block_metric(block, own)[0])
            expected = reported[block.ref][name]
            if expected is None:
                assert math.isnan(value)
                continue
            assert value == pytest.approx(expected, abs=tolerance), (block.ref, name)
            if mode == "strict" and name != "std":  # one definition: what the scorer reports (std: np.std's 2 passes)
                assert report_float(value) == expected, (block.ref, name)
            checked += 1
    assert checked > 60
    intervals = run_intervals(table, summary, 200, 0)
    assert intervals.u2.estimate == summary.u2_score and summary.u2_score is not None
    assert intervals.u2.low is not None and intervals.u2.high is not None
    assert intervals.u2.low <= summary.u2_score <= intervals.u2.high
    for key, interval in intervals.tasks.items():
        assert interval.estimate == summary.tasks[key].score
        assert interval.low is not None and interval.high is not None and interval.low <= interval.high


def test_a_metric_defined_by_one_function_has_a_score_and_an_interval(
    oracle_judgements: list[Judgement], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Share of CVE answers within 5% of the range: one per-case function, nothing in the bootstrap.
    def within_5pct(verdict: Verdict, dataset: DatasetSpec) -> float:
        assert dataset.value_range is not None and isinstance(verdict.truth, float | int)
        error = metrics.signed_error(verdict.prediction, float(verdict.truth), dataset.value_range)  # type: ignore[arg-type]
        return 1.0 if abs(error) <= 0.05 else 0.0

    new = metrics.mean_metric("within_5pct", within_5pct, higher_is_better=True)
    monkeypatch.setattr(metrics, "METRICS", {**metrics.METRICS, "within_5pct": new})
    cve = get_task("cve")
    cve_plus = cve.model_copy(update={"metrics": [*cve.metrics, "within_5pct"]})
    tasks = [cve_plus if t.key == "cve" else t for t in select_tasks(None)]
    monkeypatch.setattr(uncertainty, "get_task", lambda key: cve_plus if key == "cve" else get_task(key))
    summary = summarise(oracle_judgements, tasks).modes["strict"]
    intervals = run_intervals(case_table(oracle_judgements, "strict"), summary, 300, 0)
    checked = 0
    for dataset in summary.datasets:
        if dataset.task != "cve" or dataset.metrics.get("within_5pct") is None:
            continue
        interval = intervals.datasets[f"cve/{dataset.dataset_id}"]["within_5pct"]
        assert interval.estimate == dataset.metrics["within_5pct"]
        assert interval.low is not None and interval.high is not None
        assert interval.low <= dataset.metrics["within_5pct"] <= interval.high  # type: ignore[operator]
        checked += 1
    assert checked >= 3


def test_intervals_are_identical_across_re_runs_and_move_with_the_seed(oracle_judgements: list[Judgement]) -> None:
    summary = summarise(oracle_judgements, select_tasks(None)).modes["strict"]
    first = run_intervals(case_table(oracle_judgements, "strict"), summary, 300, 7)
    again = run_intervals(case_table(list(reversed(oracle_judgements)), "strict"), summary, 300, 7)
    assert first == again
    other = run_intervals(case_table(oracle_judgements, "strict"), summary, 300, 8)
    assert other.u2 != first.u2


def test_7241_cases_and_1000_resamples_give_an_interval_around_the_estimate(oracle_judgements: list[Judgement]) -> None:
    # (how long it takes is bench/intervals.py's to print)
    cases = [j.model_copy(update={"case_id": f"{j.case_id}#{copy}"}) for copy in range(37) for j in oracle_judgements][
        :7241
    ]
    summary = summarise(cases, select_tasks(None)).modes["strict"]
    intervals = run_intervals(case_table(cases, "strict"), summary, 1000, 0)
    low, high, estimate = intervals.u2.low, intervals.u2.high, intervals.u2.estimate
    assert low is not None and high is not None and estimate is not None and low < estimate < high
    assert high - low < 0.05  # 37 times the cases: far narrower than the sample's own interval


def test_a_paired_comparison_resamples_both_runs_identically(tmp_path: Path) -> None:
    a = run(RunOptions(model="random", out=tmp_path / "a", tasks=("dd", "cve"), seed=1))
    b = run(RunOptions(model="random", out=tmp_path / "b", tasks=("dd", "cve"), seed=2))
    assert a.manifest.case_ids_sha256 == b.manifest.case_ids_sha256
    ta = case_table(judge_folder(tmp_path / "a"), "strict")
    tb = case_table(judge_folder(tmp_path / "b"), "strict")
    for wa, wb in zip(ta.weights(100, 0), tb.weights(100, 0), strict=True):
        assert np.array_equal(wa, wb)


def test_a_dataset_the_official_scores_0_without_a_counted_case_is_0_in_every_resample(tmp_path: Path) -> None:
    from u2eval.run.folder import RunFolder

    probe = run(RunOptions(model="random", out=tmp_path / "probe", tasks=("dd",)))
    answers = tmp_path / "answers.jsonl"
    with answers.open("w") as out:  # every answer right, but dd/44's grades written as words
        for case in (rc.case for rc in RunFolder(probe.folder).cases()):
            answer = "grade two" if case.dataset_id == "44" else case.truth
            out.write(json.dumps({"case_id": case.case_id, "answer": answer}) + "\n")
    folder = tmp_path / "replayed"
    summary = run(RunOptions(model=f"replay/{answers}", out=folder, tasks=("dd",))).summary.modes["reference"]
    dropped = next(d for d in summary.datasets if d.dataset_id == "44")
    assert dropped.n_counted == 0 and dropped.metrics["accuracy"] == 0.0  # the official's 0.0, in the mean
    score = summary.tasks["dd"].score
    interval = run_intervals(case_table(judge_folder(folder), "reference"), summary, 200, 0).tasks["dd"]
    assert score is not None and interval.low is not None and interval.high is not None
    assert interval.low - 1e-6 <= score <= interval.high + 1e-6 and interval.high < 1.0  # (the score has 6 decimals)
