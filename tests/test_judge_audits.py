"""Judge audits: two judges' readings of one run compared (kappa, McNemar, rank correlation, paired bootstrap),
checked against independent implementations; and a judge measured on the hand-made gold set."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from openai_server import OpenAIServer
from scipy.stats import spearmanr
from sklearn.metrics import cohen_kappa_score
from test_judge import JUDGE, KEY, OTHER, _judge, _judgements, answered_run, judge_server, run_dir

from u2eval.judges.agreement import compare_judges, load_judged
from u2eval.judges.gold import load_gold
from u2eval.run.folder import RunFolder
from u2eval.scoring.clinical import grade

__all__ = ["answered_run", "judge_server", "run_dir"]  # fixtures shared with test_judge


def _label(reading: object) -> str:
    status, value = reading.status, reading.value  # type: ignore[attr-defined]
    return str(value) if status == "read" else status.replace("_", " ").upper()


def test_two_judges_of_one_run_are_compared_as_independent_code_computes_it(
    run_dir: Path, judge_server: OpenAIServer
) -> None:
    a, b = _judge(run_dir, judge_server, JUDGE), _judge(run_dir, judge_server, OTHER)
    report = compare_judges(load_judged(run_dir, a.identity.name), load_judged(run_dir, b.identity.name))

    folder = RunFolder(run_dir)
    ra, rb = folder.judge_readings(a.identity.name), folder.judge_readings(b.identity.name)
    judgements = {j.case_id: j for j in _judgements(run_dir)}
    extraction = sorted(c for c, r in ra.items() if r.kind == "extraction")
    labels_a, labels_b = [_label(ra[c]) for c in extraction], [_label(rb[c]) for c in extraction]
    assert labels_a != labels_b  # the two judges do read differently
    assert report.extraction.n_compared == len(extraction)
    assert report.extraction.kappa == pytest.approx(cohen_kappa_score(labels_a, labels_b))
    assert report.extraction.agreement == pytest.approx(
        np.mean([x == y for x, y in zip(labels_a, labels_b, strict=True)])
    )

    def right(reading: object, case_id: str) -> bool:
        return reading.status == "read" and reading.value == judgements[case_id].strict.truth  # type: ignore[attr-defined]

    assert report.extraction.b == sum(right(ra[c], c) and not right(rb[c], c) for c in extraction)
    assert report.extraction.c == sum(not right(ra[c], c) and right(rb[c], c) for c in extraction)

    clinical = sorted(c for c, r in ra.items() if r.kind == "clinical")
    sa = np.array([grade(ra[c].comparison).score for c in clinical])  # type: ignore[arg-type]
    sb = np.array([grade(rb[c].comparison).score for c in clinical])  # type: ignore[arg-type]
    assert sa.std() > 0 and sb.std() > 0 and (sa != sb).any()  # scores that vary, and judges that differ
    assert report.clinical.n_compared == len(clinical)
    assert report.clinical.mean_difference == pytest.approx(float((sb - sa).mean()))
    assert report.clinical.mean_difference < 0  # B finds a minor error in every pair: it scores lower
    assert report.clinical.low is not None and report.clinical.high is not None
    assert report.clinical.low <= report.clinical.mean_difference <= report.clinical.high
    assert report.clinical.spearman == pytest.approx(spearmanr(sa, sb).statistic)
    worst = [d for d in report.disagreements if d.kind == "clinical"]
    gaps = [abs(float(d.b) - float(d.a)) for d in worst]
    assert worst and gaps == sorted(gaps, reverse=True) and all(g > 0 for g in gaps)
    assert len(worst) == min(10, int((sa != sb).sum()))


def test_the_cli_compares_one_run_two_judges_and_two_judged_runs(
    run_dir: Path, judge_server: OpenAIServer, tmp_path: Path
) -> None:
    a, b = _judge(run_dir, judge_server, JUDGE), _judge(run_dir, judge_server, OTHER)
    env = {**os.environ, "COLUMNS": "200"}
    base = [sys.executable, "-m", "u2eval", "judge-agreement"]
    names = f"{a.identity.name},{b.identity.name}"
    done = subprocess.run(
        [*base, str(run_dir), "--judges", names, "--out", str(tmp_path / "agree")],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Cohen's kappa" in done.stdout and "Spearman" in done.stdout
    written = json.loads((tmp_path / "agree" / "agreement.json").read_text())
    direct = compare_judges(load_judged(run_dir, a.identity.name), load_judged(run_dir, b.identity.name))
    assert written == direct.model_dump(mode="json")
    # Two runs of the same answers, each with its active judge: A's readings in a copy against B's in the run.
    other = Path(str(run_dir) + "-copy")
    subprocess.run(["cp", "-r", str(run_dir), str(other)], check=True)
    RunFolder(other).set_active_judge(a.identity.name)
    done = subprocess.run(
        [*base, str(other), str(run_dir), "--out", str(tmp_path / "runs")],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    between = json.loads((tmp_path / "runs" / "agreement.json").read_text())
    assert between["extraction"] == written["extraction"] and between["clinical"] == written["clinical"]
    assert between["a"].startswith(f"{other}: {a.identity.name}")
    # The same judge on both sides agrees with itself completely.
    done = subprocess.run(
        [*base, str(other), "--judges", f"{a.identity.name},{a.identity.name}"],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    assert done.returncode == 0 and "| 1.000 | 1.000 | 0 | 0 | 1.0000 (exact) |" in done.stdout
    done = subprocess.run([*base, str(run_dir)], capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 2 and "--judges A,B" in done.stderr


def test_judge_check_measures_a_judge_on_the_gold_set(judge_server: OpenAIServer, tmp_path: Path) -> None:
    command = [sys.executable, "-m", "u2eval", "judge-check", "--model", f"openai/{JUDGE}"]
    command += ["--base-url", judge_server.url, "--out", str(tmp_path / "check")]
    env = {**os.environ, "OPENAI_API_KEY": KEY, "COLUMNS": "200"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "check" / "gold.json").read_text())
    extraction, reports = load_gold("extraction"), load_gold("clinical")
    assert report["extraction_n"] == len(extraction) and report["reports_n"] == len(reports)
    wrong = {r["id"] for r in report["results"] if not r["right"]}
    # The stand-in takes the last choice an answer names: it misreads the hedges (x03, x06, x10, x15), a choice
    # named last only to be ruled out (x05) and a number given last as the one rejected (x20).
    assert wrong == {"x03", "x05", "x06", "x10", "x15", "x20"}
    assert report["extraction_accuracy"] == pytest.approx(14 / 20)
    assert report["reports_exact"] == 1.0 and report["reports_score_mae"] == 0.0
    assert "14 of 20 readings as known" in done.stdout
    asked = len(judge_server.case_requests())
    again = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    assert again.returncode == 0 and len(judge_server.case_requests()) == asked  # the store answers it all
