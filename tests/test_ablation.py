"""Prompt ablations: variants on the same cases with shared answers, paired McNemar per task with Holm,
the paper's anatomy design as a preset, and comparisons of existing runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fake_models import Oracle

from u2eval.errors import ConfigError
from u2eval.reports.ablation import (
    PRESETS,
    AblationOptions,
    AblationReport,
    compare_folders,
    parse_variant,
    run_ablation,
    share_answers,
)
from u2eval.reports.ablation_report import render_markdown, write_report
from u2eval.reports.rundata import load_run
from u2eval.run.folder import RunFolder
from u2eval.run.runner import RunOptions, run
from u2eval.stats import mcnemar_test


def test_variant_names_round_trip_and_bad_ones_are_refused() -> None:
    for name in ("ours", "ours-noanatomy", "ours-norole", "ours-brief", "ours-noanatomy-norole-brief", "dataset"):
        assert parse_variant(name).name == name
    assert parse_variant("ours-noanatomy").anatomy is False and parse_variant("ours-brief").format == "brief"
    for bad, message in {
        "theirs": "unknown prompt variant 'theirs'; variants: ours, ours-noanatomy, ours-norole, ours-brief, dataset",
        "ours-norole-noanatomy": "write prompt variant",
        "ours-noanatomy-noanatomy": "repeats",
        "ours-Brief": r"unknown prompt variant 'ours-Brief' \(did you mean 'ours-brief'\?\)",
    }.items():
        with pytest.raises(ConfigError, match=message):
            parse_variant(bad)


@pytest.fixture(scope="module")
def anatomy_ablation(tmp_path_factory: pytest.TempPathFactory) -> tuple[AblationReport, Path]:
    """The paper's design on the sample, with a model that is much better when the prompt names the organ."""
    preset = PRESETS["anatomy"]
    options = AblationOptions(
        model="oracle",
        variants=preset["variants"],
        anatomy=preset["anatomy"],
        out=tmp_path_factory.mktemp("ablate") / "anatomy",
        resamples=400,
    )
    return run_ablation(options, adapter_factory=lambda: Oracle(skill=0.9, anatomy_skill=0.2))


def test_the_anatomy_preset_runs_only_breast_and_thyroid_cases(anatomy_ablation: tuple[AblationReport, Path]) -> None:
    report, out = anatomy_ablation
    assert [r.variant for r in report.runs] == ["ours", "ours-noanatomy"]
    for variant in ("ours", "ours-noanatomy"):
        cases = RunFolder(out / variant).cases()
        assert {c.case.anatomy for c in cases} == {"breast", "thyroid"} and len(cases) == 44
        manifest = json.loads((out / variant / "manifest.json").read_text())
        assert manifest["dataset"]["selection"] == "anatomy=breast,thyroid"
        assert manifest["prompt_variant"] == variant
    assert report.design["anatomy"] == ["breast", "thyroid"] and report.design["baseline"] == "ours"


def test_mcnemar_counts_are_the_discordant_pairs(anatomy_ablation: tuple[AblationReport, Path]) -> None:
    report, out = anatomy_ablation
    (comparison,) = report.comparisons
    a = {j.case_id: j for j in load_run(out / "ours").judgements}
    b = {j.case_id: j for j in load_run(out / "ours-noanatomy").judgements}
    for row in comparison.tasks:
        if row.kind != "binary":
            continue
        pairs = [(a[c].strict.correct, b[c].strict.correct) for c in a if a[c].task == row.task]
        assert row.n == len(pairs)
        assert row.b == sum(1 for x, y in pairs if x and not y)
        assert row.c == sum(1 for x, y in pairs if y and not x)
        assert row.value_a == pytest.approx(sum(1 for x, _ in pairs if x) / len(pairs), abs=1e-6)
        assert row.difference == pytest.approx((row.c - row.b) / row.n, abs=1e-6)
        expected = mcnemar_test(row.b, row.c)
        assert row.p == pytest.approx(expected.pvalue) and row.test == expected.method
        assert row.p_holm is not None and row.p is not None and row.p_holm >= row.p
    pooled = comparison.pooled
    assert pooled is not None and pooled.n == 44
    assert pooled.b is not None and pooled.c is not None and pooled.b > pooled.c + 10  # naming the organ helps
    assert pooled.test == ("exact" if pooled.b + pooled.c < 25 else "chi2") and pooled.p is not None
    assert pooled.p < 0.01
    assert pooled.difference is not None and pooled.high is not None and pooled.high < 0
    assert pooled.low is not None and pooled.low <= pooled.difference


def test_report_files_and_reproducibility(anatomy_ablation: tuple[AblationReport, Path], tmp_path: Path) -> None:
    report, out = anatomy_ablation
    written = write_report(report, tmp_path)
    assert [p.name for p in written] == ["ablation.md", "ablation.json", "ablation.png"]
    assert AblationReport.model_validate_json((tmp_path / "ablation.json").read_text()) == report
    md = (tmp_path / "ablation.md").read_text()
    assert "| task | n | accuracy A | accuracy B | b | c | McNemar |" in md and "**pooled**" in md
    assert (tmp_path / "ablation.png").read_bytes()[:4] == b"\x89PNG"
    again = compare_folders(out / "ours", out / "ours-noanatomy", resamples=400)
    assert again.comparisons[0].tasks == report.comparisons[0].tasks  # same numbers from the same answers
    assert again.comparisons[0].pooled == report.comparisons[0].pooled
    assert render_markdown(again).startswith("# Paired comparison: ours vs ours-noanatomy")
    assert render_markdown(report).startswith("# Prompt ablation: ours vs ours-noanatomy")


def test_answers_are_shared_where_prompts_render_identically(tmp_path: Path) -> None:
    # The mixed-anatomy VRA set names no organ in either variant: its prompts, hence store keys, are equal.
    options = AblationOptions(model="random", variants=("ours", "ours-noanatomy"), tasks=("vra",), out=tmp_path)
    report, _ = run_ablation(options)
    first, second = report.runs
    assert first.asked == first.n_cases and first.shared == 0
    assert second.shared > 0 and second.asked + second.shared == second.n_cases
    assert share_answers([tmp_path / "ours"], tmp_path / "ours-noanatomy") == 0  # already there: nothing copied
    again, _ = run_ablation(options)  # resumes: nothing asked
    assert all(r.asked == 0 for r in again.runs) and again.comparisons == report.comparisons


def test_runs_without_common_cases_are_refused(tmp_path: Path) -> None:
    run(RunOptions(model="random", out=tmp_path / "a", tasks=("dd",), limit=1))
    run(RunOptions(model="random", out=tmp_path / "b", tasks=("ll",), limit=1))
    with pytest.raises(ConfigError, match="no case in common"):
        compare_folders(tmp_path / "a", tmp_path / "b")
    with pytest.raises(ConfigError, match="at least two different prompt variants"):
        run_ablation(AblationOptions(model="random", variants=("ours", "ours")))


def test_cli_compare_two_runs_and_continuous_tasks(tmp_path: Path) -> None:
    run(RunOptions(model="random", out=tmp_path / "s1", tasks=("dd", "cve", "cg"), seed=1))
    run(RunOptions(model="random", out=tmp_path / "s2", tasks=("dd", "cve", "cg"), seed=2))
    done = subprocess.run(
        [sys.executable, "-m", "u2eval", "ablate", "--compare", str(tmp_path / "s1"), str(tmp_path / "s2")]
        + ["--out", str(tmp_path / "report"), "--bootstrap", "200"],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    report = AblationReport.model_validate_json((tmp_path / "report" / "ablation.json").read_text())
    (comparison,) = report.comparisons
    assert comparison.a == "random/random-guess@seed-1" and comparison.b == "random/random-guess@seed-2"
    kinds = {r.task: r.kind for r in comparison.tasks}
    assert kinds == {"dd": "binary", "cve": "continuous", "cg": "continuous"}
    cve = next(r for r in comparison.tasks if r.task == "cve")
    assert cve.p is None and cve.b is None and cve.difference is not None and cve.low is not None
    assert "| DD | 52 |" in done.stdout and "| CVE | score (1 − RMSE) |" in done.stdout
    usage = subprocess.run(
        [sys.executable, "-m", "u2eval", "ablate", "--model", "random"], capture_output=True, text=True, timeout=120
    )
    assert usage.returncode == 2 and len(usage.stderr.strip().splitlines()) == 1 and "--variants" in usage.stderr
