"""The command line as a user meets it: one clear line and exit 2 for every usage mistake."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path


def u2eval(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}  # a wide terminal, so table cells are not wrapped
    return subprocess.run(
        [sys.executable, "-m", "u2eval", *args], capture_output=True, text=True, cwd=cwd, timeout=120, env=env
    )


def test_run_prints_all_tasks_and_a_u2_score(tmp_path: Path) -> None:
    done = u2eval("run", "--model", "random", "--data", "sample", "--out", str(tmp_path / "run"))
    assert done.returncode == 0, done.stderr
    for key in ("DD", "VRA", "LL", "OD", "KD", "CVE", "RG", "CG"):
        assert f"│ {key} " in done.stdout
    assert "strict (headline): U2-Score 0." in done.stdout
    again = u2eval("score", str(tmp_path / "run"))
    assert again.returncode == 0 and "U2-Score" in again.stdout


def test_usage_mistakes_are_one_line_without_traceback(tmp_path: Path) -> None:
    cases = {
        ("run", "--model", "nosuch/x"): "unknown model or adapter 'nosuch'",
        ("run", "--model", "random", "--tasks", "dd,zz"): "unknown task 'zz'",
        ("run", "--model", "random", "--data", str(tmp_path / "missing")): "missing",
        ("score", str(tmp_path / "nowhere")): "no such run folder",
        ("run", "--model", "random", "--prompt-source", "web"): "--prompt-source",
        ("run", "--model", "random", "--data", str(tmp_path / "a[/b]")): "a[/b]",  # brackets are not markup
    }
    for args, message in cases.items():
        done = u2eval(*args)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert message in done.stderr, (args, done.stderr)
        assert "Traceback" not in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_bad_flag_is_a_usage_error() -> None:
    done = u2eval("run", "--model", "random", "--limit", "0")
    assert done.returncode == 2 and "Traceback" not in done.stderr


def test_tasks_lists_the_eight_tasks_with_counts() -> None:
    done = u2eval("tasks")
    assert done.returncode == 0
    rows = {line.split("│")[1].strip(): line for line in done.stdout.splitlines() if line.count("│") > 4}
    assert set(rows) >= {"dd", "vra", "ll", "od", "kd", "cve", "rg", "cg"}
    assert "Disease Diagnosis" in rows["dd"] and rows["dd"].rstrip(" │").endswith("52")  # 13 datasets x 4
    assert rows["kd"].rstrip(" │").endswith("4")


def test_models_lists_presets_compactly_and_one_in_full() -> None:
    done = u2eval("models")
    assert done.returncode == 0 and "random" in done.stdout and "replay" in done.stdout
    assert "gpt-4o-2024-08-06" in done.stdout and "description" not in done.stdout
    one = u2eval("models", "GPT-4o")  # preset names in any case
    assert one.returncode == 0 and "model: gpt-4o-2024-08-06" in one.stdout and "generation:" in one.stdout
    adapter = u2eval("models", "openai")
    assert "pip install 'u2eval[api]'" in adapter.stdout
    assert "qwen2.5-vl" in u2eval("models", "--box-conventions").stdout


def test_near_misses_are_named_and_an_empty_task_list_is_an_error(tmp_path: Path) -> None:
    cases = {
        ("run", "--model", "opanai/gpt-4o"): "(did you mean 'openai'?)",
        ("run", "--model", "gpt4o-mini"): "(did you mean 'gpt-4o-mini'?)",
        ("run", "--model", "random", "--tasks", ","): "no task named",
        ("run", "--model", "random", "--tasks", "vrx"): "(did you mean 'vra'?)",
        ("ablate", "--model", "random", "--variants", "ours,ours-breif"): "(did you mean 'ours-brief'?)",
        ("ablate", "--model", "random", "--variants", "ours,nothing"): "variants: ours, ours-noanatomy, ours-norole",
    }
    for args, message in cases.items():
        done = u2eval(*args)
        assert done.returncode == 2 and message in done.stderr, (args, done.stderr)


def test_a_preset_file_anywhere_and_the_version(tmp_path: Path) -> None:
    preset = tmp_path / "mine.yaml"
    preset.write_text("name: mine\nadapter: random\nmodel: random-guess\n", encoding="utf-8")
    done = u2eval("run", "--model", str(preset), "--tasks", "dd", "--limit", "1", "--out", str(tmp_path / "run"))
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "run" / "manifest.json").read_text())["model"]["adapter"] == "random"
    version = u2eval("--version")
    assert version.returncode == 0 and version.stdout.startswith("u2eval ")


def test_help_shows_no_type_noise() -> None:
    for command in (("run",), ("leaderboard",), ("ablate",), ("score",)):
        done = u2eval(*command, "--help")
        assert done.returncode == 0
        assert "<bool>" not in done.stdout and "<list[" not in done.stdout and "<str>" not in done.stdout, command


def test_grounded_run_score_and_leaderboard_through_the_cli(tmp_path: Path) -> None:
    folder = tmp_path / "grounded"
    args = ("--model", "grounded-standin/oracle", "--tasks", "ll,od,kd", "--grounded", "--out", str(folder))
    done = u2eval("run", *args)
    assert done.returncode == 0, done.stderr
    assert "Official sector scores from regions" in done.stdout and "Grounded metrics" in done.stdout
    first = (folder / "grounded.json").read_bytes()
    again = u2eval("score", str(folder))  # the manifest asks for grounded scoring: no flag needed
    assert again.returncode == 0 and "Official sector scores from regions" in again.stdout
    assert (folder / "grounded.json").read_bytes() == first
    board = u2eval("leaderboard", str(folder), "--grounded", "--no-plots", "--out", str(tmp_path / "board"))
    assert board.returncode == 0, board.stderr
    with (tmp_path / "board" / "leaderboard.csv").open(encoding="utf-8", newline="") as handle:
        row = next(csv.DictReader(handle))
    report = json.loads(first)
    assert float(row["grounded_ll_regions"]) == report["sectors"]["strict"]["tasks"]["ll"]
    assert float(row["grounded_dice"]) == report["overall"]["mask"]["dice"]


def test_grounded_usage_mistakes_are_one_line(tmp_path: Path) -> None:
    done = u2eval("run", "--model", "grounded-standin/oracle", "--grounded", "--box-convention", "yolo")
    assert done.returncode == 2 and "unknown box convention 'yolo'" in done.stderr and "qwen2.5-vl" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    run_folder = tmp_path / "plain"
    assert u2eval("run", "--model", "random", "--tasks", "ll", "--out", str(run_folder)).returncode == 0
    done = u2eval("score", str(run_folder), "--box-convention", "gemini")
    assert done.returncode == 2 and "--box-convention only applies with --grounded" in done.stderr


def test_generation_settings_and_provider_arguments_from_the_command_line(tmp_path: Path) -> None:
    from u2eval.models.registry import merge_args, parse_model_args

    args = parse_model_args(
        ["image_detail=low", "extra_body.reasoning_effort=high", "extra_body.n=2", 'omit=["top_p"]']
    )
    assert args == {"image_detail": "low", "extra_body": {"reasoning_effort": "high", "n": 2}, "omit": ["top_p"]}
    assert merge_args({"extra_body": {"seed": 1}, "api_key_env": "X"}, args)["extra_body"] == {
        "seed": 1, "reasoning_effort": "high", "n": 2
    }  # fmt: skip
    done = u2eval("run", "--model", "random", "--tasks", "dd", "--limit", "1", "--temperature", "0.4", "--top-p", "0.9",
                  "--max-tokens", "64", "--out", str(tmp_path / "run"))  # fmt: skip
    assert done.returncode == 0, done.stderr
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["generation"] == {"temperature": 0.4, "top_p": 0.9, "max_tokens": 64, "seed": 0}
    again = u2eval("run", "--model", "random", "--tasks", "dd", "--limit", "1", "--out", str(tmp_path / "run"))
    assert again.returncode == 2 and "generation.temperature 0.4 there, 0.0 now" in again.stderr  # another run
    bad = u2eval("run", "--model", "random", "-M", "no-equals-sign")
    assert bad.returncode == 2 and "-M takes key=value" in bad.stderr


def test_chosen_cases_by_id_and_from_a_file(tmp_path: Path) -> None:
    first = u2eval("run", "--model", "random", "--tasks", "dd,ll", "--limit", "1", "--out", str(tmp_path / "all"))
    assert first.returncode == 0
    ids = [json.loads(line)["case"]["case_id"] for line in (tmp_path / "all" / "cases.jsonl").read_text().splitlines()]
    listing = tmp_path / "ids.txt"
    listing.write_text(f"# two cases\n{ids[0]}\n\n{ids[-1]}\n", encoding="utf-8")
    done = u2eval("run", "--model", "random", "--case-id", f"@{listing}", "--case-id", "dd/nope/0/00000000",
                  "--out", str(tmp_path / "two"))  # fmt: skip
    assert done.returncode == 0, done.stderr
    chosen = [
        json.loads(line)["case"]["case_id"] for line in (tmp_path / "two" / "cases.jsonl").read_text().splitlines()
    ]
    assert sorted(chosen) == sorted([ids[0], ids[-1]])
    assert "1 chosen case id(s) match no case of the run: dd/nope/0/00000000" in done.stderr
    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert summary["status"] == "partial" and summary["subset"] == ["2 of 3 chosen case ids"]  # what matched
    none = u2eval("run", "--model", "random", "--case-id", "dd/21/0/269c39cX", "--out", str(tmp_path / "none"))
    assert none.returncode == 2 and "none of the 1 chosen case id(s) is a case of this run" in none.stderr
    assert not (tmp_path / "none" / "summary.json").exists()  # no score made of no case


def test_piped_tables_never_wrap_a_label_mid_word(tmp_path: Path) -> None:
    piped = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    folder = str(tmp_path / "a-rather-long-run-folder-name")
    args = ["run", "--model", "random", "--tasks", "dd", "--limit", "1", "--out", folder]
    run = subprocess.run(
        [sys.executable, "-m", "u2eval", *args], capture_output=True, text=True, env=piped, timeout=120
    )
    assert run.returncode == 0 and "│ DD   │ accuracy │" in run.stdout
    args = ["leaderboard", folder, "--out", str(tmp_path / "b"), "--no-plots", "--bootstrap", "20"]
    board = subprocess.run(
        [sys.executable, "-m", "u2eval", *args], capture_output=True, text=True, env=piped, timeout=120
    )
    assert board.returncode == 0 and "random/random-guess@seed-0" in board.stdout  # whole, on one line
