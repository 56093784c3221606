"""First contact with data made by others: variants of the documented layout are read completely, and a case
that cannot be scored is never lost without a line saying so (summary.json, summary.md, the terminal)."""

from __future__ import annotations

import ast
import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from fake_models import Oracle

from u2eval.data.sources import resolve_source
from u2eval.run.runner import RunOptions, run


def _rewrite(path: Path, column: str, change: object) -> None:
    with path.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh, dialect="excel-tab"))
    index = rows[0].index(column)
    for row in rows[1:]:
        row[index] = change(row[index])  # type: ignore[operator]
    with path.open("w", encoding="utf-8", newline="") as fh:
        csv.writer(fh, dialect="excel-tab", lineterminator="\n").writerows(rows)


@pytest.fixture
def data_copy(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    shutil.copytree(resolve_source("sample").root, root)
    return root


def _rename_key(old: str, new: str) -> object:
    def change(cell: str) -> str:
        data = ast.literal_eval(cell)
        data[new] = data.pop(old)
        return str(data)

    return change


def test_measurement_keys_match_without_regard_to_spaces_and_case(data_copy: Path, tmp_path: Path) -> None:
    _rewrite(
        data_copy / "clinical_value_estimation" / "31.tsv",
        "measurement",
        _rename_key("head_circumference", "Head circumference"),
    )
    result = run(
        RunOptions(model="oracle", data=str(data_copy), tasks=("cve",), out=tmp_path / "run"), adapter=Oracle(skill=1.0)
    )
    strict = result.summary.modes["strict"]
    hc = next(d for d in strict.datasets if d.dataset_id == "31")
    assert hc.n_counted == hc.n_cases > 0 and hc.not_counted == []
    assert strict.uncounted_datasets == {}


def test_a_dataset_whose_truths_cannot_be_read_makes_the_run_partial_and_is_named(
    data_copy: Path, tmp_path: Path
) -> None:
    def two_unknown_keys(cell: str) -> str:
        return str({"circumference of head": 180.0, "pixel size": 0.1})

    _rewrite(data_copy / "clinical_value_estimation" / "31.tsv", "measurement", two_unknown_keys)
    folder = tmp_path / "run"
    env = {**os.environ, "COLUMNS": "200"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "u2eval",
            "run",
            "--model",
            "random",
            "--data",
            str(data_copy),
            "--tasks",
            "cve",
            "--out",
            str(folder),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    assert summary["status"] == "partial"
    strict = summary["modes"]["strict"]
    assert strict["status"] == "partial"
    assert set(strict["uncounted_datasets"]) == {"cve/31"}
    hc = next(d for d in strict["datasets"] if d["dataset_id"] == "31")
    assert hc["n_counted"] == 0 and hc["n_cases"] > 0
    (group,) = hc["not_counted"]
    assert group["reason"] == "truth_unreadable" and group["n"] == hc["n_cases"]
    assert "head_circumference" in group["detail"] and group["case_ids"][0].startswith("cve/31/")
    assert strict["tasks"]["cve"]["datasets"] == ["cve/18", "cve/27", "cve/50", "cve/57"]
    assert "cve/31" in done.stdout and "none counted" in done.stdout
    markdown = (folder / "summary.md").read_text(encoding="utf-8")
    assert "cve/31" in markdown and "truth_unreadable" in markdown and group["case_ids"][0] in markdown
    # Every judgement outside the denominator says why.
    judgements = [json.loads(line) for line in (folder / "judgements.jsonl").read_text(encoding="utf-8").splitlines()]
    for j in judgements:
        for mode in ("strict", "reference"):
            if not j[mode]["counted"]:
                assert j[mode]["not_counted"], j


def test_null_imt_is_said_not_measured_and_does_not_make_the_run_partial(tmp_path: Path) -> None:
    result = run(RunOptions(model="random", tasks=("cve",), out=tmp_path / "run"))
    strict = result.summary.modes["strict"]
    imt = next(d for d in strict.datasets if d.dataset_id == "27")
    assert {g.reason for g in imt.not_counted} == {"truth_missing"}  # an empty or null IMT: not measured
    assert {g.detail for g in imt.not_counted} == {"measurement is empty", "measurement 'IMT' is null (not measured)"}
    assert imt.n_counted + sum(g.n for g in imt.not_counted) == imt.n_cases and imt.n_counted > 0
    assert strict.uncounted_datasets == {}  # partial only because the run holds CVE alone


# ------------------------------------------------------------------------------------- u2eval data check


def _u2eval(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "u2eval", *args], capture_output=True, text=True, env=env, timeout=300, check=False
    )


def test_data_check_passes_the_sample_and_writes_its_json(tmp_path: Path) -> None:
    done = _u2eval("data", "check", "sample", "--json", str(tmp_path / "check.json"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "OK: every row reads and every truth can be scored" in done.stdout
    report = json.loads((tmp_path / "check.json").read_text(encoding="utf-8"))
    assert report["ok"] and report["problems"] == [] and report["images_read"] == 200
    imt = next(t for t in report["truths"] if (t["task"], t["dataset_id"]) == ("cve", "27"))
    assert imt["unread"] == {"truth_missing": imt["expected_unread"]} and imt["expected_unread"] > 0
    files = {f["file"]: f for f in report["files"]}
    assert files["disease_diagnosis/74.tsv"]["datasets"] == {"74is_normal": 4}
    assert all(f["columns_missing"] == [] for f in files.values())


def test_data_check_names_everything_that_would_lose_or_misjudge_cases(data_copy: Path, tmp_path: Path) -> None:
    dd = data_copy / "disease_diagnosis" / "21.tsv"
    _rewrite(dd, "dataset_name", lambda name: "99.Someone_Elses_Set")
    _rewrite(data_copy / "clinical_value_estimation" / "31.tsv", "measurement", lambda c: "{'a': 1, 'b': 2}")
    _rewrite(data_copy / "lesion_localisation" / "17_1.tsv", "img_data", lambda c: c[: len(c) // 2])
    (data_copy / "caption_generation" / "extra.parquet").write_bytes(b"PAR1")
    done = _u2eval("data", "check", str(data_copy), "--json", str(tmp_path / "check.json"))
    assert done.returncode == 1, done.stdout + done.stderr
    report = json.loads((tmp_path / "check.json").read_text(encoding="utf-8"))
    problems = "\n".join(report["problems"])
    assert "disease_diagnosis/21.tsv: 4 row(s) name no dataset of the task ('99.Someone_Elses_Set')" in problems
    assert "cve/31: 4 of 4 truth(s) cannot be scored (4 truth_unreadable)" in problems
    assert "4 row(s) or file(s) cannot be read (all under errors), e.g. ll/17_1/0/" in problems  # truncated images
    assert "caption_generation/extra.parquet" in problems
    assert "dd/21" in report["missing_datasets"]
    for line in report["problems"]:
        assert line in done.stdout.replace("\n", " ") or line[:60] in done.stdout
    assert "problem(s)" in done.stdout

    only = _u2eval("run", "--model", "random", "--data", str(data_copy), "--check-only", "--out", str(tmp_path / "r"))
    assert only.returncode == 1 and "problem(s)" in only.stdout
    assert not (tmp_path / "r").exists()  # nothing was run


def test_data_check_flags_boxes_in_pixels_and_a_dataset_with_no_measured_truth(data_copy: Path, tmp_path: Path) -> None:
    _rewrite(data_copy / "organ_detection" / "13.tsv", "gt_bbox", lambda c: "{'kidney': [92, 108, 90, 87]}")
    _rewrite(data_copy / "clinical_value_estimation" / "27.tsv", "measurement", lambda c: "{'IMT': None}")
    done = _u2eval("data", "check", str(data_copy), "--json", str(tmp_path / "check.json"))
    assert done.returncode == 1
    problems = json.loads((tmp_path / "check.json").read_text(encoding="utf-8"))["problems"]
    assert "od/13: 4 of 4 truth(s) cannot be scored (4 truth_unreadable)" in problems
    assert "cve/27: none of 4 truth(s) can be scored (all not measured)" in problems
