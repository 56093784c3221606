"""A new task is data: its task file and its template (and its rows), in a task folder of its own. Nothing in
the code names a task; the list, the order and the weights come from the task files alone."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from u2eval.resources import resource_dir, sample_dir

TOY = {
    "key": "toy",
    "name": "Kidney Stone Check",
    "folder": "kidney_stone_check",
    "capability": "classification",
    "version": 1,
    "order": 9,
    "weight": 0.05,
    "parser": "option",
    "truth_column": "class_label",
    "primary_metric": "accuracy",
    "metrics": ["accuracy", "macro_f1"],
    "templates": {"role": "role.j2", "instruction": "toy.j2", "format": "classification/format.j2"},
    "datasets": [
        {
            "id": "s1",
            "source": "s1.Kidney_Stones",
            "anatomy": "kidney",
            "classification_task": "stone",
            "labels": ["stone", "clear"],
            "n_full": 4,
        }
    ],
}
TEMPLATE = """{% from "_macros.j2" import option_line %}
Decide whether the image shows a stone{{ " in the " ~ anatomy if anatomy else "" }}.
{{ option_line(dataset.labels) }}
"""
LABELS = ["stone", "clear", "stone", "clear"]


def _task_folder(root: Path, toy: dict[str, object], template: str = TEMPLATE, rebalance: bool = True) -> Path:
    """The shipped task files, DD's weight lowered by the toy's, and the toy's file and template beside them."""
    folder = root / "tasks"
    shutil.copytree(resource_dir("tasks"), folder)
    if rebalance:
        dd = yaml.safe_load((folder / "dd.yaml").read_text())
        dd["weight"] = round(dd["weight"] - float(toy["weight"]), 6)  # type: ignore[arg-type]
        (folder / "dd.yaml").write_text(yaml.safe_dump(dd, sort_keys=False))
    (folder / "toy.yaml").write_text(yaml.safe_dump(toy, sort_keys=False))
    (folder / "toy.j2").write_text(template)
    return folder


def _data(root: Path) -> Path:
    """The bundled sample and four rows of the toy task in the same layout (images borrowed from DD 21)."""
    data = root / "data"
    shutil.copytree(sample_dir(), data)
    csv.field_size_limit(sys.maxsize)
    with (sample_dir() / "disease_diagnosis" / "21.tsv").open(encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle, dialect="excel-tab"))
    header = rows[0]
    (data / "kidney_stone_check").mkdir()
    with (data / "kidney_stone_check" / "s1.tsv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, dialect="excel-tab", lineterminator="\n")
        writer.writerow(header)
        for label, row in zip(LABELS, rows[1:5], strict=True):
            cells = dict(zip(header, row, strict=True))
            cells |= {"dataset_name": "s1.Kidney_Stones", "anatomy_location": "kidney", "class_label": label}
            cells |= {"classification_task": "stone", "options": repr({"stone": ["stone", "clear"]})}
            writer.writerow([cells[c] for c in header])
    return data


def _u2eval(*args: str, tasks: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "U2EVAL_TASKS_DIR": str(tasks), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "u2eval", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def test_a_new_task_is_its_file_and_its_template(tmp_path: Path) -> None:
    tasks, data = _task_folder(tmp_path, TOY), _data(tmp_path)
    listed = _u2eval("tasks", tasks=tasks, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "toy" in listed.stdout and "Kidney Stone Check" in listed.stdout
    done = _u2eval("run", "--model", "random", "--data", str(data), "--out", "run", tasks=tasks, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["tasks_run"][-1] == "toy"  # last, as its order says
    toy = summary["modes"]["strict"]["tasks"]["toy"]
    assert toy["weight"] == 0.05 and toy["score"] is not None and summary["parse"]["toy"]["n_cases"] == 4
    assert summary["status"] == "complete" and summary["modes"]["strict"]["u2_score"] is not None
    sent = [json.loads(line) for line in (tmp_path / "run" / "cases.jsonl").read_text().splitlines()]
    toy_case = next(c for c in sent if c["case"]["task"] == "toy")
    texts = {r["sha256"]: r["text"] for r in map(json.loads, (tmp_path / "run" / "prompts.jsonl").open())}
    parts = {part["part"]: part["sha256"] for part in toy_case["prompt"]["parts"]}
    instruction = texts[parts["instruction"]]
    assert "Decide whether the image shows a stone in the kidney." in instruction and "'stone', 'clear'" in instruction
    rescored = _u2eval("score", "run", tasks=tasks, cwd=tmp_path)
    assert rescored.returncode == 0, rescored.stderr


@pytest.mark.parametrize(
    ("change", "rebalance", "message"),
    [
        ({"weight": 0}, True, "toy.yaml: weight: Input should be greater than 0"),
        ({}, False, "sum to 1.05, not 1 (dd 0.2, vra 0.2, ll 0.07, od 0.27, kd 0.07, cve 0.07, rg 0.08, cg 0.04, toy"),
        ({"order": 1}, True, "share a place in the order: dd (order 1), toy (order 1)"),
        ({"key": "toys"}, True, "declares key 'toys': a task's key is its file's name ('toy')"),
        ({"capability": "sorting"}, True, "capability: Input should be 'classification'"),
    ],
)
def test_a_task_file_that_cannot_be_used_stops_with_one_line_naming_it(
    tmp_path: Path, change: dict[str, object], rebalance: bool, message: str
) -> None:
    tasks = _task_folder(tmp_path, TOY | change, rebalance=rebalance)
    done = _u2eval("tasks", tasks=tasks, cwd=tmp_path)
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_a_template_that_calls_a_macro_wrongly_stops_the_run_naming_the_template(tmp_path: Path) -> None:
    broken = TEMPLATE.replace("option_line(dataset.labels)", "option_line(dataset.labels, 1, 2, 3)")
    tasks, data = _task_folder(tmp_path, TOY, broken), _data(tmp_path)
    done = _u2eval("run", "--model", "random", "--data", str(data), "--tasks", "toy", tasks=tasks, cwd=tmp_path)
    assert done.returncode == 2 and "prompt template 'toy.j2' failed" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
