"""Orchestration only: stream cases, render, dispatch, store, judge, score, write the run folder.

A run folder holds:
    manifest.json      provenance (what produced the numbers), timings
    cases.jsonl        every case of the run without its image, with its request key
    responses.jsonl    the append-only response store
    judgements.jsonl   one Judgement per case
    summary.json/.md   the scores; a pure function of cases.jsonl + responses.jsonl
    resume.json        what cases.jsonl was made from (u2eval.runfolder): a finished run re-run with the same
                       inputs is re-scored without reading the dataset
    .lock              held by the run in progress: a second run on the folder is refused

``score_folder`` is the only way a summary is made, for ``u2eval run`` and ``u2eval score`` alike, which is
why re-scoring reproduces a run's summary byte for byte.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from u2eval.adapters import AdapterOptions, ModelAdapter, ModelRequest, Preset, create_adapter, resolve_model
from u2eval.box_parsing import get_convention
from u2eval.data import iter_cases
from u2eval.dispatch import Dispatcher, DispatchOptions
from u2eval.errors import ConfigError, DataError
from u2eval.grounded_report import render_grounded_markdown
from u2eval.grounded_run import GROUNDED_CASES_FILE, GROUNDED_FILE, GroundedOptions, score_grounded
from u2eval.grounded_truth import dataset_root
from u2eval.judging import judge
from u2eval.prompts import PromptOptions, render, template_hashes, validate_templates
from u2eval.provenance import git_state, ids_sha256, now_utc, version
from u2eval.reader_process import iter_cases_in_child
from u2eval.records import (
    SCORING_MODES,
    Case,
    CaseMeta,
    Completion,
    GenerationConfig,
    Judgement,
    Manifest,
    ModelInfo,
    RunCase,
)
from u2eval.report import write_summary
from u2eval.runfolder import (
    LineFile,
    clear_stamp,
    disk_full_is_clear,
    exclusive,
    finished_cases,
    make_stamp,
    scores_up_to_date,
    scoring_state,
    write_stamp,
)
from u2eval.scoring import Summary, summarise
from u2eval.shards import Shard, check_shard, in_shard, shard_label
from u2eval.sources import DataSource, resolve_source
from u2eval.store import ResponseStore, request_key
from u2eval.summary import subset_reasons
from u2eval.tasks import TaskSpec, get_task, select_tasks, task_sha256

log = logging.getLogger(__name__)

MANIFEST_FILE = "manifest.json"
CASES_FILE = "cases.jsonl"
JUDGEMENTS_FILE = "judgements.jsonl"
SUMMARY_FILE = "summary.json"

ProgressHook = Callable[[int, int | None], None]


@dataclass(frozen=True)
class RunOptions:
    model: str
    data: str = "sample"
    revision: str | None = None
    tasks: tuple[str, ...] | None = None
    limit: int | None = None
    anatomy: tuple[str, ...] | None = None  # only cases of these anatomies (lower case); for prompt ablations
    seed: int = 0
    out: Path | None = None
    results_root: Path = Path("results")
    prompt: PromptOptions = field(default_factory=PromptOptions)
    concurrency: int | None = None
    base_url: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    rpm: float | None = None  # requests per minute (None: unlimited)
    tpm: float | None = None  # tokens per minute (None: unlimited)
    timeout_s: float | None = None  # per attempt (None: the dispatcher's default)
    max_attempts: int | None = None  # per request, the first included (None: the dispatcher's default)
    shard: Shard | None = None  # (i, n): only the cases whose id hashes to i modulo n; `u2eval merge` joins them
    # Read the dataset in a child process (None: yes, except for the small bundled sample, where starting
    # one costs more than it saves).
    reader_process: bool | None = None
    grounded: bool = False  # also score the answers' regions (grounded.json); never changes the U2-Score
    box_convention: str | None = None  # how answers write boxes (default: the preset's); u2eval.box_parsing


@dataclass(frozen=True)
class RunResult:
    folder: Path
    summary: Summary
    manifest: Manifest
    requested: int
    reused: int
    infra_errors: int
    data_errors: tuple[str, ...]


def default_folder(options: RunOptions) -> Path:
    """A stable folder name, so running the same command again resumes instead of starting over."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", options.model).strip("-")
    data = "sample" if options.data == "sample" else re.sub(r"[^A-Za-z0-9._-]+", "-", Path(options.data).name)
    selection = f"__{'+'.join(options.anatomy)}" if options.anatomy else ""
    # A quick `--tasks dd --limit 1` run must not land in (and overwrite the summary of) the full run's folder.
    if options.tasks:
        selection += f"__{'+'.join(sorted(t.lower() for t in options.tasks))}"
    if options.limit is not None:
        selection += f"__limit{options.limit}"
    if options.shard is not None:
        selection += f"__shard{options.shard[0]}of{options.shard[1]}"
    return options.results_root / f"{slug}__{data}__{options.prompt.name}__seed{options.seed}{selection}"


def _selection(options: RunOptions) -> dict[str, str | None]:
    """The manifest's ``dataset.selection``: which part of the cases the run kept (none: all of them)."""
    parts = [f"anatomy={','.join(options.anatomy)}"] if options.anatomy else []
    if options.shard is not None:
        parts.append(shard_label(options.shard))
    return {"selection": "; ".join(parts)} if parts else {}


def _subset(options: RunOptions) -> list[str]:
    """Why the run asks only part of its tasks' cases (summary.json's ``subset``), as its manifest will say."""
    return subset_reasons(options.limit, _selection(options).get("selection"))


def _generation(options: RunOptions, preset_generation: GenerationConfig | None) -> GenerationConfig:
    base = preset_generation or GenerationConfig()
    updates: dict[str, object] = {"seed": options.seed}
    if options.max_tokens is not None:
        updates["max_tokens"] = options.max_tokens
    if options.temperature is not None:
        updates["temperature"] = options.temperature
    return base.model_copy(update=updates)


def _dispatch_options(options: RunOptions, preset: Preset | None, generation: GenerationConfig) -> DispatchOptions:
    defaults = DispatchOptions()
    return DispatchOptions(
        concurrency=options.concurrency or (preset.concurrency if preset else defaults.concurrency),
        max_attempts=options.max_attempts or defaults.max_attempts,
        timeout_s=options.timeout_s or defaults.timeout_s,
        rpm=options.rpm,
        tpm=options.tpm,
        output_tokens=generation.max_tokens,
    )


class _CaseStream:
    """Turns the dataset into requests for the cases the store cannot answer, recording every case."""

    def __init__(
        self,
        source: DataSource,
        tasks: tuple[TaskSpec, ...],
        options: RunOptions,
        key_of: Callable[..., str],
        store: ResponseStore,
        cases_out: Path,
    ) -> None:
        self.source, self.tasks, self.options = source, tasks, options
        self.key_of, self.store, self.cases_out = key_of, store, cases_out
        self.case_ids: list[str] = []
        self.data_errors: list[str] = []
        self.reused = 0
        self.on_case: Callable[[], None] = lambda: None

    def _error(self, error: DataError) -> None:
        log.warning("skipped %s", error)
        self.data_errors.append(str(error))

    def _cases(self) -> Iterator[Case]:
        in_child = self.options.reader_process
        if in_child is None:
            in_child = self.source.kind != "sample"
        read = iter_cases_in_child if in_child else iter_cases
        return read(self.source, self.tasks, on_error=self._error, limit=self.options.limit)

    def __iter__(self) -> Iterator[ModelRequest]:
        by_key = {t.key: t for t in self.tasks}
        pending: set[str] = set()
        with LineFile(self.cases_out) as out:  # unbuffered: a full disk is met at a write, not at the close
            for case in self._cases():
                if self.options.anatomy is not None and case.anatomy.lower() not in self.options.anatomy:
                    continue
                if self.options.shard is not None and not in_shard(case.case_id, self.options.shard):
                    continue
                try:
                    prompt = render(case, by_key[case.task], self.options.prompt)
                except DataError as exc:
                    self._error(exc)
                    continue
                key = self.key_of(prompt)
                out.write(RunCase(key=key, case=case.meta()).model_dump_json() + "\n")
                self.case_ids.append(case.case_id)
                self.on_case()
                if self.store.answered(key) or key in pending:
                    self.reused += 1
                    continue
                pending.add(key)
                yield ModelRequest(key=key, case=case, prompt=prompt)


def _resume_stamp(
    options: RunOptions, source: DataSource, tasks: tuple[TaskSpec, ...], info: ModelInfo, generation: GenerationConfig
) -> dict[str, object]:
    """What the case list and its keys are made from (see u2eval.runfolder)."""
    settings = {
        "u2eval": version(),
        "data": source.manifest(),
        "tasks": {t.key: task_sha256(t.key) for t in tasks},
        "templates": template_hashes(tasks, options.prompt),
        "prompt": dataclasses.asdict(options.prompt),
        "selection": [options.limit, options.anatomy, options.shard],
        "model": info.model_dump(mode="json"),
        "generation": generation.model_dump(mode="json"),
    }
    return make_stamp(settings, source.root, [t.folder for t in tasks])


def _answer(
    folder: Path, store: ResponseStore, stream: _CaseStream, dispatcher: Dispatcher, stamp: dict[str, object]
) -> tuple[list[str], int, list[str]]:
    """Ask for every case the store cannot answer: (case ids, answers reused, data errors). A finished run
    whose inputs are unchanged (its resume stamp) is not read again: nothing to ask, only to score."""
    adapter = dispatcher.adapter
    finished = finished_cases(folder, CASES_FILE, store, stamp)
    if finished is not None:
        asyncio.run(adapter.aclose())
        return finished, len(finished), _manifest_data_errors(_manifest_dict(folder))
    clear_stamp(folder)

    async def go() -> None:
        try:
            await dispatcher.run(stream, store.append)
        finally:
            await adapter.aclose()

    asyncio.run(go())
    os.replace(folder / (CASES_FILE + ".part"), folder / CASES_FILE)
    return stream.case_ids, stream.reused, stream.data_errors


def _summary_if_up_to_date(folder: Path, scoring: Mapping[str, object]) -> Summary | None:
    """The folder's summary when its scores are up to date (u2eval.runfolder), else None: score again."""
    if not scores_up_to_date(folder, scoring):
        return None
    try:
        return Summary.model_validate_json((folder / SUMMARY_FILE).read_text(encoding="utf-8"))
    except (OSError, ValidationError):
        return None


def run(options: RunOptions, progress: ProgressHook | None = None, adapter: ModelAdapter | None = None) -> RunResult:
    """Evaluate one model on the chosen tasks, resuming whatever the run folder already holds.

    ``adapter``: an adapter object to use instead of the one ``options.model`` names (for library use:
    evaluating a model held in memory). Its ``info`` then identifies the model.
    """
    started, started_at = time.perf_counter(), now_utc()
    if options.shard is not None:
        check_shard(options.shard)
    tasks = select_tasks(options.tasks)
    source = resolve_source(options.data, revision=options.revision, tasks=tasks)
    resolved = None if adapter is not None else resolve_model(options.model)
    preset = resolved.preset if resolved is not None else None
    # Checked before any model call: a wrong convention name must not cost a run.
    convention_spec = options.box_convention or (preset.box_convention if preset else None)
    convention = get_convention(convention_spec) if convention_spec else None
    generation = _generation(options, preset.generation if preset else None)
    dispatch_options = _dispatch_options(options, preset, generation)
    if resolved is not None:
        adapter = create_adapter(
            resolved,
            AdapterOptions(
                generation=generation,
                seed=options.seed,
                base_url=options.base_url or (preset.base_url if preset else None),
                extra=preset.extra if preset else {},
                timeout_s=dispatch_options.timeout_s,
            ),
        )
    assert adapter is not None
    validate_templates(tasks, options.prompt)
    folder = options.out or default_folder(options)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot use {folder} as the run folder: {exc.strerror or exc}") from exc
    info = adapter.info
    stamp = _resume_stamp(options, source, tasks, info, generation)
    # Grounded scoring, once asked for in this folder (by a run or `u2eval score --grounded`), stays on, with
    # the convention it used unless this run names one: a resumed run never leaves a stale grounded.json.
    recorded = _recorded_grounded(folder)
    grounded_on = options.grounded or recorded[0]
    if convention is None and recorded[1]:
        convention = get_convention(recorded[1])

    # One process per folder; a full disk is one clear line (the store keeps every whole answer).
    with exclusive(folder), disk_full_is_clear(folder), ResponseStore(folder) as store:
        stream = _CaseStream(
            source,
            tasks,
            options,
            lambda p: request_key(info, generation, p),
            store,
            folder / (CASES_FILE + ".part"),
        )
        done = 0

        def on_case() -> None:
            nonlocal done
            done += 1
            if progress is not None:
                progress(done, None)  # no total: counting would read every file twice

        stream.on_case = on_case
        dispatcher = Dispatcher(adapter, dispatch_options)
        case_ids, reused, data_errors = _answer(folder, store, stream, dispatcher, stamp)
        answered_at = time.perf_counter()

        grounded = GroundedOptions(enabled=grounded_on, convention=convention, source_root=source.root)
        spec = convention.spec if convention is not None else None
        scoring: dict[str, object] = {"grounded": grounded_on, "convention": spec}
        summary = _summary_if_up_to_date(folder, scoring)  # a finished run resumed: nothing changed since
        if summary is None:
            summary, _ = score_folder(folder, data_errors=data_errors, grounded=grounded, subset=_subset(options))
        sha, dirty = git_state()
        manifest = Manifest(
            u2eval_version=version(),
            git_sha=sha,
            git_dirty=dirty,
            dataset=source.manifest() | _selection(options),
            case_ids_sha256=ids_sha256(case_ids),
            n_cases=len(case_ids),
            tasks={t.key: task_sha256(t.key) for t in tasks},
            templates=template_hashes(tasks, options.prompt),
            prompt_source=options.prompt.source,
            prompt_variant=options.prompt.name,
            model=info,
            generation=generation,
            seed=options.seed,
            limit=options.limit,
            scoring_modes=list(SCORING_MODES),
            started_at=started_at,
            finished_at=now_utc(),
            timings={
                "answer_s": round(answered_at - started, 3),
                "score_s": round(time.perf_counter() - answered_at, 3),
            },
            dispatch=dispatcher.stats.as_manifest() | {"reused": reused},
            data_errors=data_errors,
            grounded=grounded_on,
            box_convention=spec,
        )
        write_json(folder / MANIFEST_FILE, manifest.model_dump(mode="json"))
        # Last: it vouches for cases.jsonl, the manifest's data errors and the scores.
        write_stamp(folder, stamp, scoring_state(folder, scoring))
    infra = len(summary.infra_error_case_ids)
    return RunResult(
        folder=folder,
        summary=summary,
        manifest=manifest,
        requested=dispatcher.stats.requests,
        reused=reused,
        infra_errors=infra,
        data_errors=tuple(data_errors),
    )


def read_run_cases(folder: Path) -> list[RunCase]:
    path = folder / CASES_FILE
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


def _manifest_dict(folder: Path) -> dict[str, object]:
    try:
        manifest = json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return manifest if isinstance(manifest, dict) else {}


def _recorded_grounded(folder: Path) -> tuple[bool, str | None]:
    """(on, box convention) of the last grounded scoring recorded in the folder's manifest."""
    manifest = _manifest_dict(folder)
    spec = manifest.get("box_convention")
    return bool(manifest.get("grounded")), spec if isinstance(spec, str) and spec else None


def grounded_options(folder: Path, convention: str | None = None) -> GroundedOptions:
    """The grounded scoring a run folder asks for (its manifest, which records the last grounded scoring of
    the folder: ``record_grounded``): on or off, its box convention (or ``convention`` instead), and where
    its dataset is now."""
    enabled, recorded = _recorded_grounded(folder)
    spec = convention or recorded
    dataset = _manifest_dict(folder).get("dataset")
    return GroundedOptions(
        enabled=enabled,
        convention=get_convention(spec) if spec else None,
        source_root=dataset_root(dataset if isinstance(dataset, dict) else {}),
    )


def record_grounded(folder: Path, options: GroundedOptions) -> bool:
    """Record in the manifest that the folder is scored with its regions, and how (``u2eval score
    --grounded``), so a plain re-score, a resumed run and the leaderboard redo the same grounded scoring.
    Only those two fields change. False when the folder has no manifest to record it in."""
    manifest = _manifest_dict(folder)
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
    manifest = _manifest_dict(folder)
    if subset is None:
        subset = subset_reasons(_int_or_none(manifest.get("limit")), _selection_of(manifest))
    summary = summarise(judgements, tasks, subset=subset).model_copy(update={"scored_with": scored_with})
    _warn_if_definitions_changed(folder, manifest, scored_with)
    ordered = sorted(judgements, key=lambda j: j.case_id)
    with (folder / JUDGEMENTS_FILE).open("w", encoding="utf-8") as out:
        out.writelines(j.model_dump_json() + "\n" for j in ordered)
    write_json(folder / SUMMARY_FILE, summary.model_dump(mode="json"))
    if data_errors is None:
        data_errors = _manifest_data_errors(manifest)
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


def _manifest_data_errors(manifest: dict[str, object]) -> list[str]:
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
