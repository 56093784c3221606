"""Quirk switches (--quirk NAME=off): one quirk of the reference mode turned off (or on) for a whole run,
recorded in the manifest and the summary, redone by every re-scoring, named on a leaderboard row."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from u2eval.errors import ConfigError
from u2eval.reports.comparability import row_labels
from u2eval.reports.rundata import load_run
from u2eval.run.runner import RunOptions, run
from u2eval.run.scoring_pass import score_folder
from u2eval.scoring.switches import parse_switches


def u2eval(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "u2eval", *args], capture_output=True, text=True, check=False)


def test_switches_are_read_with_one_line_errors() -> None:
    assert parse_switches(["round_4dp=off", "keypoints_over_bbox=ON"]) == {
        "keypoints_over_bbox": True,
        "round_4dp": False,
    }
    for item, says in (
        ("round_4dp", "write NAME=off or NAME=on"),
        ("round_4dp=maybe", "write NAME=off or NAME=on"),
        ("rounding=off", "'rounding' is not a quirk of the official pipeline"),
    ):
        with pytest.raises(ConfigError, match=says):
            parse_switches([item])
    with pytest.raises(ConfigError, match="both on and off"):
        parse_switches(["round_4dp=off", "round_4dp=on"])


def test_a_switch_changes_the_reference_scores_only_and_stays_with_the_run(tmp_path: Path) -> None:
    plain = run(RunOptions(model="random", tasks=("ll", "cve"), out=tmp_path / "plain"))
    off = {"round_4dp": False, "center_keyword_first": False}
    switched = run(RunOptions(model="random", tasks=("ll", "cve"), out=tmp_path / "off", quirks=off))
    # Strict has no quirks: the same; the reference mode lists the switches and scores without them.
    assert switched.summary.modes["strict"] == plain.summary.modes["strict"]
    reference = switched.summary.modes["reference"]
    assert reference.quirks["round_4dp"] is False and reference.quirks["center_keyword_first"] is False
    assert "center_keyword_first" not in plain.summary.modes["reference"].quirks  # listed only when set by hand
    assert reference.u2_over_present_tasks != plain.summary.modes["reference"].u2_over_present_tasks
    unrounded = [m for d in reference.datasets for m in d.metrics.values() if m is not None and round(m, 4) != m]
    assert unrounded, "without round_4dp some reference metric keeps more than 4 decimals"
    # 'lower center' is reachable once center_keyword_first is off: the reference reads those answers anew.
    read = {j.case_id: j.reference.prediction for j in load_run(tmp_path / "off").judgements if j.task == "ll"}
    lower = [j for j in load_run(tmp_path / "plain").judgements if j.task == "ll" and j.answer == "lower center"]
    assert lower and all(j.reference.prediction == "center" and read[j.case_id] == "lower center" for j in lower)
    assert json.loads((tmp_path / "off" / "manifest.json").read_text())["quirks"] == off
    # A plain re-score redoes the recorded switches, byte for byte.
    before = (tmp_path / "off" / "summary.json").read_bytes()
    score_folder(tmp_path / "off")
    assert (tmp_path / "off" / "summary.json").read_bytes() == before
    # A leaderboard re-scores each run as it was scored and says how the rows differ.
    runs = [load_run(tmp_path / "plain"), load_run(tmp_path / "off")]
    assert runs[1].summary.modes["reference"] == reference
    labels = row_labels(runs)
    assert labels[tmp_path / "off"].endswith("(quirks center_keyword_first off, round_4dp off)")
    assert labels[tmp_path / "plain"].endswith("(quirks as the official scorer)")


def test_score_sets_switches_from_then_on(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    run(RunOptions(model="random", tasks=("cve",), out=folder))
    done = u2eval("score", str(folder), "--quirk", "round_4dp=off")
    assert done.returncode == 0, done.stderr
    assert json.loads((folder / "manifest.json").read_text())["quirks"] == {"round_4dp": False}
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["modes"]["reference"]["quirks"]["round_4dp"] is False
    assert u2eval("score", str(folder)).returncode == 0  # none given: as recorded
    assert json.loads((folder / "summary.json").read_text()) == summary
    wrong = u2eval("score", str(folder), "--quirk", "rounding=off")
    assert wrong.returncode != 0 and "Traceback" not in wrong.stderr
    assert "'rounding' is not a quirk of the official pipeline" in wrong.stderr + wrong.stdout
