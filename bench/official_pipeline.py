"""Runs the official U2-Bench scoring code (Dolphin-ai-bench), unchanged except for its file paths.

What it does, in a work folder (never in the repository):

1. a pinned virtual environment for the official code (``venv/``, reused while its pins match);
2. the Dolphin-ai-bench files extracted from its git mirror (``official/dolphin-<sha12>/``), commit recorded;
3. the HF-layout dataset folder converted into the authors' internal TSVs (``internal/ale_tsv_output/...``), at
   the relative paths the scorers' ``TSV_PATH`` dicts name: truth in ``classes`` (from ``class_label``),
   ``gt_bbox`` without a ``keypoints`` column for LL/OD, ``keypoints`` for KD 48, ``measurement``, and the
   reference text in ``caption`` (HF ``report`` for RG 39, HF ``caption`` for CG). Rows keep the HF order; where
   two scorers name the same internal file (23, 32, 50, 57) the HF rows of both tasks must be the same rows;
4. per official run: the models' prediction folders copied together, stage (a) (the response extractors) on
   ``cla``, ``seg`` and ``measurement``, stage (b) (the four ``qwen_*_eval.py`` scorers, path strings patched
   and the patch checked to touch nothing else), then the table script, run from a folder where its relative
   ``DolphinV1.9p_results/*.txt`` paths resolve;
5. the results files and the table script's LaTeX rows parsed into plain dicts.
"""

from __future__ import annotations

import ast
import csv
import difflib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from official_world import TASK_FOLDERS

DEFAULT_DOLPHIN_REPO = Path("/work/.mirror/gurenolun+Dolphin-ai-bench/repo")

# The official code's environment. pandas stays 2.x: under pandas 3 a null response crashes the report scorer
# differently (facts 10.12). torch and transformers are imported at the top of the report scorer; with no model
# download possible its BERTScore fails and is written as nan (the table then uses 0), BLEU is unaffected.
PINS = (
    "pandas==2.3.3",
    "numpy==2.4.6",
    "scikit-learn==1.9.1",
    "scipy==1.17.1",
    "pycocoevalcap==1.2",
    "pingouin==0.7.0",
    "torch==2.13.0",
    "transformers==5.25.0",
)
_VERSION_OF = ("pandas", "numpy", "scikit-learn", "scipy", "pycocoevalcap", "pingouin", "torch", "transformers")

SCORERS = {
    "cla": "new_results/qwen_cla_eval.py",
    "seg": "new_results/qwen_seg_eval.py",
    "measurement": "new_results/qwen_measure_eval.py",
    "report": "new_results/qwen_report_eval.py",
}
EXTRACT_OPTIONS = "scripts/extract_model_responses_final.py"
EXTRACT_NUMBERS = "scripts/extract_measurement_values_improved.py"
TABLE = "table_fill/update_table_score_format.py"
TABLE_OUTPUT = "new_table_content_score_format0522.tex"  # what the table script writes in its cwd
GROUPS = ("cla", "seg", "measurement", "report")

INTERNAL_PREFIX = "/media/ps/data-ssd/json_processing/ale_tsv_output/"
AUTHOR_HOME = "/home/guohongcheng/"
# Where stage (b) reads each folder from, relative to a run folder (stage (a) writes the first three).
SCORED_DIRS = {
    "cla": "DolphinV1.9p/cla",
    "seg": "DolphinV1.9p/seg",
    "measurement": "DolphinV1.9p/measurement_processed",
    "report": "raw/report",
}
RESULTS_DIR = "DolphinV1.9p_results"
RESULT_FILES = {
    "cla": "cla_results.txt",
    "seg": "seg_results.txt",
    "measurement": "mea_results.txt",
    "report": "report_results.txt",
}
# What qwen_report_eval.save_results writes when it has no result at all (used only when it crashed).
_REPORT_HEADER = "task_id\tmodel\ttimestamp\tBleu-1\tBleu-2\tBleu-3\tBleu-4\tRouge\tBERTScore\n"

HF_FOLDERS = TASK_FOLDERS  # the world writes the HF task folders; the pipeline reads them back
_CLA_DD = {"21", "23", "25", "32", "40", "42", "44", "57", "66", "70", "75", "74is_normal"}
_LL = {"04", "17", "23", "32", "64"}
# The table script's columns after the model name, in its LaTeX rows.
TABLE_COLUMNS = (
    "diag_acc",
    "diag_f1",
    "vra_acc",
    "vra_f1",
    "ll_acc",
    "od_acc",
    "kd_acc",
    "cve_rmse",
    "cve_std",
    "cve_tol",
    "rg_bleu",
    "rg_rouge",
    "rg_bert",
    "cg_bleu",
    "cg_rouge",
    "cg_bert",
    "score",
)
TASK_COLUMN = {
    "dd": "diag_acc",
    "vra": "vra_acc",
    "ll": "ll_acc",
    "od": "od_acc",
    "kd": "kd_acc",
    "cve": "cve_rmse",
    "rg": "rg_bleu",
    "cg": "cg_bleu",
}
PRIMARY_METRIC = {"cla": "acc", "seg": "acc", "measurement": "RMSE", "report": "Bleu-4"}

Log = Callable[[str], None]


class OfficialError(RuntimeError):
    """A step of the official pipeline failed; the message names the script or file."""

    def __init__(self, message: str, stderr: str = "") -> None:
        super().__init__(message)
        self.stderr = stderr

    @property
    def last_error_line(self) -> str:
        lines = [line for line in self.stderr.splitlines() if line.strip()]
        return lines[-1] if lines else str(self).splitlines()[0]


# ---------------------------------------------------------------------------------------------------------------
# Mapping between the official keys and u2eval's (task, dataset id)


def official_dataset(group: str, key: str) -> tuple[str, str]:
    """u2eval's (task key, dataset id) for an official (folder, TSV_PATH key)."""
    if group == "cla":
        if key == "28":
            return "dd", "28_1"  # KL grade (the table script averages it into VRA as '28')
        if key == "28_class":
            return "vra", "28"  # knee view (the table script ignores it)
        return ("dd" if key in _CLA_DD else "vra"), key
    if group == "seg":
        return ("ll" if key in _LL else "kd" if key == "48" else "od"), key
    if group == "measurement":
        return "cve", key
    if group == "report":
        return ("rg" if key == "39" else "cg"), key
    raise ValueError(f"unknown official folder {group!r}")


def _hf_source(group: str, key: str) -> tuple[str, str]:
    """The HF task folder and the ``<id>`` of ``dataset_name`` whose rows an official key reads."""
    task, dataset = official_dataset(group, key)
    if dataset.startswith("74"):
        dataset = "74"
    return HF_FOLDERS[task], dataset


# ---------------------------------------------------------------------------------------------------------------
# Processes


def _tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _run(cmd: list[str], *, cwd: Path, env: Mapping[str, str], log_file: Path, what: str, timeout: int = 900) -> str:
    """Run one official step; its stdout and stderr go to ``log_file``; a non-zero exit raises OfficialError."""
    try:
        proc = subprocess.run(cmd, cwd=cwd, env=dict(env), capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise OfficialError(f"{what}: no result after {timeout} s ({' '.join(cmd)})") from exc
    log_file.parent.mkdir(parents=True, exist_ok=True)
    log_file.write_text(f"$ {' '.join(cmd)}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}", encoding="utf-8")
    if proc.returncode != 0:
        raise OfficialError(
            f"{what} exited {proc.returncode} (log: {log_file})\n--- stderr tail\n{_tail(proc.stderr)}"
            f"\n--- stdout tail\n{_tail(proc.stdout, 8)}",
            proc.stderr,
        )
    return proc.stdout


def _git(git_dir: Path, *args: str) -> bytes:
    proc = subprocess.run(["git", f"--git-dir={git_dir}", *args], capture_output=True, check=False)
    if proc.returncode != 0:
        raise OfficialError(f"git {' '.join(args)} in {git_dir}: {proc.stderr.decode(errors='replace').strip()}")
    return proc.stdout


# ---------------------------------------------------------------------------------------------------------------
# The pinned environment


@dataclass(frozen=True)
class Venv:
    python: Path
    versions: dict[str, str]
    reused: bool
    freeze_file: Path  # pip freeze of the venv


def ensure_venv(work: Path, log: Log = print) -> Venv:
    """The official code's venv under ``work/venv``: reused if its recorded pins match, else made anew."""
    root = work / "venv"
    python = root / "bin" / "python"
    marker = root / "u2eval-official-pins.txt"
    wanted = "\n".join(PINS) + "\n"
    reused = python.exists() and marker.exists() and marker.read_text(encoding="utf-8") == wanted
    if not reused:
        if root.exists():
            shutil.rmtree(root)
        log(f"creating the official venv in {root} (pip install {' '.join(PINS)}; ~2 min)")
        env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
        logs = work / "logs"
        _run([sys.executable, "-m", "venv", str(root)], cwd=work, env=env, log_file=logs / "venv.log", what="venv")
        _run(
            [str(python), "-m", "pip", "install", "--quiet", *PINS],
            cwd=work,
            env=env,
            log_file=logs / "pip-install.log",
            what="pip install of the official pins",
            timeout=1800,
        )
        marker.write_text(wanted, encoding="utf-8")
    code = (
        "import importlib.metadata as m, json, platform; "
        f"print(json.dumps({{'python': platform.python_version(), "
        f"**{{n: m.version(n) for n in {list(_VERSION_OF)!r}}}}}))"
    )
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise OfficialError(f"the official venv {root} does not run: {_tail(out.stderr)}")
    freeze = subprocess.run([str(python), "-m", "pip", "freeze"], capture_output=True, text=True, check=False)
    freeze_file = work / "logs" / "official-venv-freeze.txt"
    freeze_file.parent.mkdir(parents=True, exist_ok=True)
    freeze_file.write_text(freeze.stdout, encoding="utf-8")
    return Venv(python, json.loads(out.stdout), reused, freeze_file)


# ---------------------------------------------------------------------------------------------------------------
# The official code and its path patch


def extract_dolphin(git_dir: Path, work: Path) -> tuple[str, Path]:
    """``git archive HEAD`` of the Dolphin-ai-bench mirror into ``work/official/dolphin-<sha12>``."""
    sha = _git(git_dir, "rev-parse", "HEAD").decode().strip()
    dest = work / "official" / f"dolphin-{sha[:12]}"
    if not (dest / ".complete").exists():
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir(parents=True)
        with tarfile.open(fileobj=io.BytesIO(_git(git_dir, "archive", "--format=tar", "HEAD"))) as tar:
            tar.extractall(dest, filter="data")
        (dest / ".complete").write_text(sha + "\n", encoding="utf-8")
    for rel in (*SCORERS.values(), EXTRACT_OPTIONS, EXTRACT_NUMBERS, TABLE):
        if not (dest / rel).is_file():
            raise OfficialError(f"{rel} is missing from {git_dir} at {sha}")
    return sha, dest


def tsv_paths(source: str, where: str) -> dict[str, str]:
    """The ``TSV_PATH`` dict of a scorer's source (its commented-out entries are not in it)."""
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "TSV_PATH" for t in node.targets):
            value = ast.literal_eval(node.value)
            if isinstance(value, dict):
                return {str(k): str(v) for k, v in value.items()}
    raise OfficialError(f"no TSV_PATH dict in {where}")


def _path_replacements(group: str, run_dir: Path, internal: Path) -> dict[str, str]:
    """Old path string -> new one, for one scorer. Only file paths: TSV_PATH values, base dirs, output files."""
    out: dict[str, str] = {INTERNAL_PREFIX: f"{internal}/"}
    results = run_dir / RESULTS_DIR
    if group in ("cla", "measurement"):  # hard-coded in batch_evaluate_all_tasks under the author's home
        out[AUTHOR_HOME] = f"{run_dir}/"
    elif group == "seg":  # the defaults of batch_evaluate_all_tasks
        out["'data/seg'"] = f"'{run_dir / SCORED_DIRS['seg']}'"
        out["'results/seg_results.txt'"] = f"'{results / RESULT_FILES['seg']}'"
    else:
        out["'data/report'"] = f"'{run_dir / SCORED_DIRS['report']}'"
        out["'results/report_results.txt'"] = f"'{results / RESULT_FILES['report']}'"
    for folder in (run_dir, internal):
        if any(c in str(folder) for c in "'\"\\\n"):
            raise OfficialError(f"the work folder path {folder} cannot be written into a Python string literal")
    return out


def _replace_all(text: str, table: Mapping[str, str]) -> str:
    """Replace the strings in code lines only: comment lines (a commented-out TSV_PATH entry) stay as they are."""
    out = []
    for line in text.splitlines(keepends=True):
        if not line.lstrip().startswith("#"):
            for old, new in table.items():
                line = line.replace(old, new)
        out.append(line)
    return "".join(out)


def patch_paths(original: str, table: Mapping[str, str], name: str) -> tuple[str, str, str]:
    """Replace path strings; check that every one was found and that nothing but those strings changed.

    Returns (patched text, one-line summary of the check, unified diff).
    """
    for old in table:
        if old not in original:
            raise OfficialError(f"{name}: path string {old!r} not found; is this the expected commit?")
    patched = _replace_all(original, table)
    old_lines, new_lines = original.splitlines(keepends=True), patched.splitlines(keepends=True)
    if len(old_lines) != len(new_lines):
        raise OfficialError(f"{name}: the path patch changed the number of lines")
    changed = [i for i, (a, b) in enumerate(zip(old_lines, new_lines, strict=True)) if a != b]
    for i in changed:  # each changed line holds a replaced string, and reverting the strings restores it exactly
        if not any(old in old_lines[i] for old in table):
            raise OfficialError(f"{name}: line {i + 1} changed without holding a path string")
    reverted = _replace_all(patched, {new: old for old, new in table.items()})
    if reverted != original:
        raise OfficialError(f"{name}: reverting the path strings does not give the original back")
    code_lines = [line for line in new_lines if not line.lstrip().startswith("#")]
    leftover = [old for old in table if any(old in line for line in code_lines)]
    if leftover:
        raise OfficialError(f"{name}: path strings left after the patch: {leftover}")
    diff = "".join(difflib.unified_diff(old_lines, new_lines, f"a/{name}", f"b/{name}", n=0))
    summary = (
        f"{name}: {len(changed)} of {len(old_lines)} lines differ, each only in a path string "
        f"({', '.join(repr(o) for o in table)}; comment lines untouched); reverting them gives the original "
        "byte for byte"
    )
    return patched, summary, diff


# ---------------------------------------------------------------------------------------------------------------
# HF folder -> the authors' internal TSVs


_PASS_COLUMNS = (
    "dataset_name",
    "img_data",
    "patient_id",
    "anatomy_location",
    "demographic",
    "classification_task",
    "options",
    "seg_channel_name",
    "notes",
)
_TRUTH_COLUMNS = ("classes", "gt_bbox", "keypoints", "measurement", "caption")
_EXPLANATION = "an_explanation_of_the_columns.tsv"


def read_hf(hf_dir: Path) -> dict[tuple[str, str], list[dict[str, str]]]:
    """Rows by (task folder, ``<id>`` of dataset_name), files in name order, rows in file order."""
    csv.field_size_limit(sys.maxsize)
    out: dict[tuple[str, str], list[dict[str, str]]] = {}
    for folder in sorted(HF_FOLDERS.values()):
        for path in sorted((hf_dir / folder).glob("*.tsv")):
            if path.name == _EXPLANATION:
                continue
            with path.open(encoding="utf-8", newline="") as f:
                for row in csv.DictReader(f, delimiter="\t"):
                    hf_id = (row.get("dataset_name") or "").split(".", 1)[0].strip()
                    if not hf_id:
                        raise OfficialError(f"{path}: a row without dataset_name")
                    out.setdefault((folder, hf_id), []).append(row)
    return out


def _internal_row(group: str, task: str, row: Mapping[str, str]) -> dict[str, str]:
    out = {c: row.get(c, "") for c in _PASS_COLUMNS}
    if group == "cla":
        out["classes"] = row["class_label"]
    elif group == "seg":  # LL/OD: gt_bbox and no keypoints column (the scorer prefers keypoints whenever present)
        out["gt_bbox"] = row["gt_bbox"]
        if task == "kd":
            out["keypoints"] = row["keypoints"]
    elif group == "measurement":
        out["measurement"] = row["measurement"]
    else:  # the report scorer reads the reference from 'caption': the report for RG, the caption for CG
        out["caption"] = row["report"] if task == "rg" else row["caption"]
    return out


def _merge(rel: str, parts: list[tuple[str, list[dict[str, str]]]]) -> list[dict[str, str]]:
    """One internal file from the contributions of several scorers: the same rows, columns united."""
    first_name, merged = parts[0][0], [dict(r) for r in parts[0][1]]
    for name, rows in parts[1:]:
        if len(rows) != len(merged):
            raise OfficialError(f"internal {rel}: {first_name} has {len(merged)} rows, {name} {len(rows)}")
        for i, (have, add) in enumerate(zip(merged, rows, strict=True)):
            for column, value in add.items():
                if column in have and have[column] != value:
                    raise OfficialError(f"internal {rel} row {i}: {first_name} and {name} differ in {column!r}")
                have[column] = value
    return merged


def write_internal(hf_dir: Path, sources: Mapping[str, str], internal: Path) -> list[str]:
    """The internal TSVs every scorer's TSV_PATH names, from the HF folder. Returns one line per file written."""
    hf = read_hf(hf_dir)
    wanted: dict[str, list[tuple[str, list[dict[str, str]]]]] = {}
    for group, source in sources.items():
        for key, path in tsv_paths(source, SCORERS[group]).items():
            if not path.startswith(INTERNAL_PREFIX):
                raise OfficialError(f"{SCORERS[group]}: TSV_PATH[{key!r}] = {path!r} is outside {INTERNAL_PREFIX}")
            folder, hf_id = _hf_source(group, key)
            rows = hf.get((folder, hf_id))
            if not rows:
                continue  # no data for it (report '11'): the scorer finds no prediction folder either
            task = official_dataset(group, key)[0]
            contribution = [_internal_row(group, task, r) for r in rows]
            wanted.setdefault(path[len(INTERNAL_PREFIX) :], []).append((f"{group}/{key}", contribution))
    lines = []
    if internal.exists():
        shutil.rmtree(internal)
    for rel, parts in sorted(wanted.items()):
        rows = _merge(rel, parts)
        columns = [*_PASS_COLUMNS, *(c for c in _TRUTH_COLUMNS if c in rows[0])]
        target = internal / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f, delimiter="\t", lineterminator="\n")
            writer.writerow(columns)
            writer.writerows([r.get(c, "") for c in columns] for r in rows)
        lines.append(f"{rel}: {len(rows)} rows for {', '.join(name for name, _ in parts)}")
    return lines


# ---------------------------------------------------------------------------------------------------------------
# One official run


@dataclass
class RunResult:
    name: str
    models: tuple[str, ...]
    run_dir: Path
    results: dict[str, list[dict[str, str]]]  # folder -> rows of its results file, as text
    table: dict[str, dict[str, float]]  # model -> the table script's columns
    dropped_lines: list[str]  # stage (a): files whose output lost lines
    scorer_skips: list[str]  # stage (b): what the scorers printed when they skipped a file
    report_crash: str | None  # the report scorer's error, when it crashed
    patch_checks: list[str]
    seconds: dict[str, float] = field(default_factory=dict)


def _copy_predictions(models: Mapping[str, Path], raw: Path) -> None:
    if raw.exists():
        shutil.rmtree(raw)
    for model, base in models.items():
        for group in GROUPS:
            for model_dir in sorted((base / group).glob(f"*/{model}")):
                target = raw / group / model_dir.parent.name / model
                if target.exists():
                    raise OfficialError(f"{model_dir}: {target} already holds another copy of {model}")
                shutil.copytree(model_dir, target)
        if not any((raw / g).glob(f"*/{model}") for g in GROUPS):
            raise OfficialError(f"no prediction files for {model} under {base}")


def _count_lines(path: Path) -> int:
    with path.open("rb") as f:
        return sum(1 for line in f if line.strip())


def _dropped(raw: Path, processed: Path) -> list[str]:
    out = []
    for src in sorted(raw.rglob("*.jsonl")):
        dst = processed / src.relative_to(raw)
        n_in, n_out = _count_lines(src), (_count_lines(dst) if dst.exists() else 0)
        if n_out != n_in:
            out.append(f"{src.relative_to(raw.parent)}: {n_in} lines in, {n_out} out")
    return out


def _skips(stdout: str) -> list[str]:
    """The lines the cla / seg scorers print when they skip a file (their own wording)."""
    lines = stdout.splitlines()
    out = []
    for i, line in enumerate(lines):
        if line.startswith("处理文件失败："):  # cla: the path, then '错误信息：<error>'
            err = lines[i + 1] if i + 1 < len(lines) else ""
            out.append(f"{line[len('处理文件失败：') :]}: {err.removeprefix('错误信息：')}")
        elif line.startswith("Failed to process ") or line.startswith("Skipped "):
            out.append(line)
    return out


def _read_results(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def _parse_table(tex: str, models: Iterable[str]) -> dict[str, dict[str, float]]:
    wanted = set(models)
    out: dict[str, dict[str, float]] = {}
    for line in tex.splitlines():
        cells = [c.strip() for c in line.removesuffix("\\\\").strip().split(" & ")]
        if len(cells) == len(TABLE_COLUMNS) + 1 and cells[0] in wanted:
            out[cells[0]] = {
                c: float(v) if v != "-" else float("nan") for c, v in zip(TABLE_COLUMNS, cells[1:], strict=True)
            }
    missing = wanted - set(out)
    if missing:
        raise OfficialError(f"{TABLE}: no row for {sorted(missing)} in {TABLE_OUTPUT}")
    return out


@dataclass(frozen=True)
class _Ctx:
    python: Path
    code: Path  # the pristine extracted Dolphin-ai-bench
    internal: Path
    env: Mapping[str, str]
    log: Log


def _stage_a(ctx: _Ctx, run_dir: Path, result: RunResult) -> None:
    logs = run_dir / "logs"
    for group, script, out in (
        ("cla", EXTRACT_OPTIONS, SCORED_DIRS["cla"]),
        ("seg", EXTRACT_OPTIONS, SCORED_DIRS["seg"]),
        ("measurement", EXTRACT_NUMBERS, SCORED_DIRS["measurement"]),
    ):
        started = time.monotonic()
        src, dst = run_dir / "raw" / group, run_dir / out
        _run(
            [str(ctx.python), str(ctx.code / script), "--input", str(src), "--output", str(dst)],
            cwd=run_dir,
            env=ctx.env,
            log_file=logs / f"stage-a-{group}.log",
            what=f"stage (a) {script} on {group}",
        )
        result.dropped_lines += _dropped(src, dst)
        result.seconds[f"stage (a) {group}"] = time.monotonic() - started


def _stage_b(ctx: _Ctx, run_dir: Path, result: RunResult) -> None:
    logs = run_dir / "logs"
    (run_dir / RESULTS_DIR).mkdir(parents=True, exist_ok=True)
    for group, rel in SCORERS.items():
        original = (ctx.code / rel).read_text(encoding="utf-8")
        patched, summary, diff = patch_paths(original, _path_replacements(group, run_dir, ctx.internal), rel)
        target = run_dir / "code" / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(patched, encoding="utf-8")
        (logs / f"patch-{Path(rel).stem}.diff").write_text(diff, encoding="utf-8")
        result.patch_checks.append(f"{summary} (diff: {logs / f'patch-{Path(rel).stem}.diff'})")
        started = time.monotonic()
        try:
            stdout = _run(
                [str(ctx.python), str(target)],
                cwd=run_dir,
                env=ctx.env,
                log_file=logs / f"stage-b-{group}.log",
                what=f"stage (b) {rel}",
            )
        except OfficialError as exc:
            if group != "report":
                raise
            # The report scorer dies on a null response in a file's first five rows and writes nothing: every RG
            # and CG result of the run is lost. The table script still needs the file: write what save_results
            # writes for no results, and keep the error.
            result.report_crash = exc.last_error_line
            (run_dir / RESULTS_DIR / RESULT_FILES["report"]).write_text(_REPORT_HEADER, encoding="utf-8")
            ctx.log(f"  run {result.name}: the official report scorer crashed (expected only with a null response)")
            stdout = ""
        result.scorer_skips += [f"{group}: {s}" for s in _skips(stdout)]
        result.seconds[f"stage (b) {group}"] = time.monotonic() - started
        path = run_dir / RESULTS_DIR / RESULT_FILES[group]
        if not path.exists():
            raise OfficialError(f"stage (b) {rel} wrote no {path}")
        result.results[group] = _read_results(path)


def run_one(ctx: _Ctx, name: str, models: Mapping[str, Path], run_dir: Path) -> RunResult:
    """Stage (a), stage (b) and the table on the prediction folders of ``models`` (model -> BASE dir)."""
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    result = RunResult(name, tuple(models), run_dir, {}, {}, [], [], None, [])
    _copy_predictions(models, run_dir / "raw")
    _stage_a(ctx, run_dir, result)
    _stage_b(ctx, run_dir, result)
    started = time.monotonic()
    _run(
        [str(ctx.python), str(ctx.code / TABLE)],
        cwd=run_dir,
        env=ctx.env,
        log_file=run_dir / "logs" / "table.log",
        what=f"table {TABLE}",
    )
    result.seconds["table"] = time.monotonic() - started
    tex = run_dir / TABLE_OUTPUT
    if not tex.exists():
        raise OfficialError(f"{TABLE} wrote no {tex}")
    result.table = _parse_table(tex.read_text(encoding="utf-8"), models)
    return result


# ---------------------------------------------------------------------------------------------------------------
# Everything


@dataclass
class OfficialResult:
    dolphin_repo: Path
    dolphin_sha: str
    venv: Venv
    internal_files: list[str]
    runs: dict[str, RunResult]

    def run_of(self, model: str) -> RunResult:
        for run in self.runs.values():
            if model in run.models:
                return run
        raise KeyError(model)


def official_env(work: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(
        HF_HUB_OFFLINE="1",  # no model download: the report scorer's BERTScore fails fast (written as nan)
        TRANSFORMERS_OFFLINE="1",
        HF_HOME=str(work / "hf-home"),  # an empty cache: the result never depends on what a machine has cached
        PYTHONIOENCODING="utf-8",
        PYTHONHASHSEED="0",
        MPLBACKEND="Agg",
        MPLCONFIGDIR=str(work / "mplconfig"),
        TOKENIZERS_PARALLELISM="false",
    )
    return env


def run_official(
    *,
    hf_dir: Path,
    runs: Mapping[str, Mapping[str, Path]],
    work: Path,
    dolphin_repo: Path = DEFAULT_DOLPHIN_REPO,
    log: Log = print,
) -> OfficialResult:
    """The official pipeline on ``hf_dir``, once per run (run name -> {model: BASE dir of its predictions})."""
    work = work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    venv = ensure_venv(work, log)
    sha, code = extract_dolphin(dolphin_repo, work)
    sources = {g: (code / rel).read_text(encoding="utf-8") for g, rel in SCORERS.items()}
    internal = work / "internal" / "ale_tsv_output"
    internal_files = write_internal(hf_dir.resolve(), sources, internal)
    ctx = _Ctx(venv.python, code, internal, official_env(work), log)
    done: dict[str, RunResult] = {}
    for name, models in runs.items():
        log(f"official run {name!r}: {', '.join(models)}")
        done[name] = run_one(ctx, name, models, work / "runs" / name)
    return OfficialResult(dolphin_repo, sha, venv, internal_files, done)


def official_numbers(result: OfficialResult, model: str) -> dict[str, Any]:
    """``{"datasets": {(task, id): value}, "tasks": {task: value}, "u2": value}`` for one model.

    Dataset values are the primary metric as the results files write it (acc, RMSE, Bleu-4), keyed by u2eval's
    (task, dataset id); a dataset the official code skipped is absent. Task values and U2 are the table script's.
    """
    run = result.run_of(model)
    datasets: dict[tuple[str, str], float] = {}
    for group, rows in run.results.items():
        for row in rows:
            if row.get("model") == model:
                datasets[official_dataset(group, row["task_id"])] = float(row[PRIMARY_METRIC[group]])
    table = run.table[model]
    tasks = {task: table[column] for task, column in TASK_COLUMN.items()}
    return {"datasets": datasets, "tasks": tasks, "u2": table["score"]}
