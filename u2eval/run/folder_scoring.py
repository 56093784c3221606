"""A run folder's stored contents, read and scored: its case list, its stored answers, their judgements, and
``score_folder``, the only way a summary is made, for ``u2eval run``, ``u2eval score`` and ``u2eval merge``
alike, which is why re-scoring reproduces a run's summary byte for byte.

A run folder holds:
    manifest.json      provenance (what produced the numbers), timings
    cases.jsonl        every case of the run without its image, with its request key
    responses.jsonl    the append-only response store
    judgements.jsonl   one Judgement per case
    summary.json/.md   the scores; a pure function of cases.jsonl + responses.jsonl
    resume.json        what cases.jsonl was made from (u2eval.run.folder): a finished run re-run with the same
                       inputs is re-scored without reading the dataset
    .lock              held by the run (or the re-scoring) in progress: a second one is refused
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from pydantic import JsonValue, ValidationError

from u2eval.benchmark.tasks import get_task, select_tasks, task_sha256
from u2eval.errors import ConfigError
from u2eval.grounded.boxes import get_convention
from u2eval.grounded.report import render_grounded_markdown
from u2eval.grounded.scorer import GROUNDED_CASES_FILE, GROUNDED_FILE, GroundedOptions, score_grounded
from u2eval.grounded.truth import dataset_root
from u2eval.provenance import version
from u2eval.records import CaseMeta, Completion, Judgement, RunCase
from u2eval.run.store import RESPONSES_FILE, ResponseStore
from u2eval.scoring.aggregate import Summary, summarise
from u2eval.scoring.judging import judge
from u2eval.scoring.summary import subset_reasons
from u2eval.scoring.summary_report import write_summary

log = logging.getLogger(__name__)

MANIFEST_FILE = "manifest.json"
CASES_FILE = "cases.jsonl"
JUDGEMENTS_FILE = "judgements.jsonl"
SUMMARY_FILE = "summary.json"


def read_run_cases(folder: Path) -> list[RunCase]:
    path = folder / CASES_FILE
    if not path.is_file() and (folder / (CASES_FILE + ".part")).is_file():
        raise ConfigError(
            f"{folder} holds an interrupted run (its case list was never finished): run the same `u2eval run` "
            "command again to resume it, then score it"
        )
    if not path.is_file():
        raise ConfigError(f"{folder} is not a u2eval run folder (no {CASES_FILE})")
    cases = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                cases.append(RunCase.model_validate_json(line))
            except ValidationError as exc:
                raise ConfigError(f"{path}:{number}: unreadable case record ({exc.error_count()} errors)") from exc
    return cases


def stored_answers(folder: Path) -> list[tuple[CaseMeta, Completion]]:
    """Every case of a run with its stored answer; a case with no stored answer gets a 'missing' infra error."""
    store = ResponseStore(folder)
    answers = []
    for run_case in read_run_cases(folder):
        meta = run_case.case
        completion = store.get(run_case.key)
        if completion is None:
            completion = Completion(
                case_id=meta.case_id, key=run_case.key, error="missing", error_message="no answer stored"
            )
        elif completion.case_id != meta.case_id:
            # Identical prompts share one stored answer; it is judged once per case.
            completion = completion.model_copy(update={"case_id": meta.case_id})
        answers.append((meta, completion))
    return answers


def judge_folder(folder: Path) -> list[Judgement]:
    """Judge every case of a run from what is stored; a case with no stored answer is an infra error."""
    return [judge(meta, completion, get_task(meta.task)) for meta, completion in stored_answers(folder)]


def manifest_dict(folder: Path) -> dict[str, object]:
    try:
        manifest = json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return manifest if isinstance(manifest, dict) else {}


def recorded_grounded(folder: Path) -> tuple[bool, str | None]:
    """(on, box convention) of the last grounded scoring recorded in the folder's manifest."""
    manifest = manifest_dict(folder)
    spec = manifest.get("box_convention")
    return bool(manifest.get("grounded")), spec if isinstance(spec, str) and spec else None


def grounded_options(folder: Path, convention: str | None = None) -> GroundedOptions:
    """The grounded scoring a run folder asks for (its manifest, which records the last grounded scoring of
    the folder: ``record_grounded``): on or off, its box convention (or ``convention`` instead), and where
    its dataset is now."""
    enabled, recorded = recorded_grounded(folder)
    spec = convention or recorded
    dataset = manifest_dict(folder).get("dataset")
    return GroundedOptions(
        enabled=enabled,
        convention=get_convention(spec) if spec else None,
        source_root=dataset_root(dataset if isinstance(dataset, dict) else {}),
    )


def record_grounded(folder: Path, options: GroundedOptions) -> bool:
    """Record in the manifest that the folder is scored with its regions, and how (``u2eval score
    --grounded``), so a plain re-score, a resumed run and the leaderboard redo the same grounded scoring.
    Only those two fields change. False when the folder has no manifest to record it in."""
    manifest = manifest_dict(folder)
    if not manifest:
        return False
    spec = options.convention.spec if options.convention is not None else None
    if manifest.get("grounded") is not options.enabled or manifest.get("box_convention") != spec:
        write_json(folder / MANIFEST_FILE, manifest | {"grounded": options.enabled, "box_convention": spec})
    return True


def score_folder(
    folder: Path,
    data_errors: list[str] | None = None,
    grounded: GroundedOptions | None = None,
    subset: list[str] | None = None,
) -> tuple[Summary, list[Judgement]]:
    """(Re-)score a run from its stored answers, without any model call, and rewrite its outputs.

    ``data_errors``: the rows the run could not read, listed in summary.md (default: from manifest.json).
    ``grounded``: whether and how to score the answers' regions too (default: as the manifest says); that
    writes grounded.json and a section of summary.md, and leaves summary.json as it is. Given, it is
    recorded in the manifest (``record_grounded``), so the next re-score redoes it identically.
    ``subset``: why the run holds only part of its tasks' cases (default: from manifest.json's limit and
    selection)."""
    answers = stored_answers(folder)
    judgements = [judge(meta, completion, get_task(meta.task)) for meta, completion in answers]
    task_keys = {j.task for j in judgements}
    tasks = tuple(t for t in select_tasks(None) if t.key in task_keys)
    scored_with = {"u2eval": version()} | {f"task:{t.key}": task_sha256(t.key) for t in tasks}
    manifest = manifest_dict(folder)
    if subset is None:
        subset = subset_reasons(_int_or_none(manifest.get("limit")), _selection_of(manifest))
    if data_errors is None:
        data_errors = manifest_data_errors(manifest)
    summary = summarise(judgements, tasks, subset=subset, unreadable_rows=len(data_errors))
    summary = summary.model_copy(update={"scored_with": scored_with})
    _warn_if_definitions_changed(folder, manifest, scored_with)
    ordered = sorted(judgements, key=lambda j: j.case_id)
    with (folder / JUDGEMENTS_FILE).open("w", encoding="utf-8") as out:
        out.writelines(j.model_dump_json() + "\n" for j in ordered)
    write_json(folder / SUMMARY_FILE, summary.model_dump(mode="json"))
    if grounded is None:
        grounded = grounded_options(folder)
    else:
        record_grounded(folder, grounded)
    sections: tuple[str, ...] = ()
    if grounded.enabled:
        sections = (_grounded_section(folder, answers, summary, grounded),)
    else:  # grounded figures of an earlier scoring would describe settings no longer in force
        for name in (GROUNDED_FILE, GROUNDED_CASES_FILE):
            (folder / name).unlink(missing_ok=True)
    write_summary(folder, summary, data_errors, sections)
    return summary, judgements


def _grounded_section(
    folder: Path, answers: list[tuple[CaseMeta, Completion]], summary: Summary, grounded: GroundedOptions
) -> str:
    """Grounded scoring and its summary.md section. A bad answer is ungroundable case by case; should the
    grounded scoring fail as a whole (an unreadable truth cache, a bug), the run keeps its U2-Score, its
    summary and its manifest: the failure is logged and said in summary.md, and no grounded.json is left."""
    try:
        return render_grounded_markdown(score_grounded(folder, answers, summary, grounded))
    except Exception as exc:  # noqa: BLE001 - never lose a run's scores to its grounded part
        log.error("%s: grounded scoring failed (%s: %s); the U2-Score is unaffected", folder, type(exc).__name__, exc)
        for name in (GROUNDED_FILE, GROUNDED_CASES_FILE):
            (folder / name).unlink(missing_ok=True)
        return f"## Grounded answers\n\nGrounded scoring failed ({type(exc).__name__}: {exc}).\n"


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _selection_of(manifest: dict[str, object]) -> str | None:
    dataset = manifest.get("dataset")
    selection = dataset.get("selection") if isinstance(dataset, dict) else None
    return selection if isinstance(selection, str) else None


def manifest_data_errors(manifest: dict[str, object]) -> list[str]:
    errors = manifest.get("data_errors", [])
    return [str(e) for e in errors] if isinstance(errors, list) else []


def _warn_if_definitions_changed(folder: Path, manifest: dict[str, object], scored_with: dict[str, str]) -> None:
    recorded = manifest.get("tasks", {})
    if not isinstance(recorded, dict):
        return
    changed = sorted(k for k, sha in recorded.items() if scored_with.get(f"task:{k}", sha) != sha)
    if changed:
        log.warning("%s: task definitions changed since the run (%s); scores use the current ones", folder, changed)


def write_json(path: Path, payload: object) -> None:
    """Deterministic JSON (sorted keys, fixed indent), written atomically."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def load_run_answers(folder: Path) -> dict[str, tuple[str, JsonValue]]:
    """case_id -> (where, answer text) of a run folder, for replaying it (infra errors are not answers)."""
    if not (folder / RESPONSES_FILE).is_file():
        raise ConfigError(f"{folder} is not a u2eval run folder (no {RESPONSES_FILE})")
    store = ResponseStore(folder)
    answers: dict[str, tuple[str, JsonValue]] = {}
    for run_case in read_run_cases(folder):
        completion = store.get(run_case.key)
        if completion is not None and not completion.is_infra_error:
            answers[run_case.case.case_id] = (f"{folder}:{run_case.case.case_id}", completion.text)
    return answers
