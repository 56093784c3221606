"""Orchestration only: stream cases, render, dispatch, store, then score the run folder
(``u2eval.run.folder_scoring``, which also says what a run folder holds)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from u2eval.benchmark.prompts import PromptOptions, render, template_hashes, validate_templates
from u2eval.benchmark.tasks import TaskSpec, select_tasks, task_sha256
from u2eval.data.reader import RowIdentity, estimate_rows, iter_cases, iter_row_identities
from u2eval.data.reader_process import iter_cases_in_child
from u2eval.data.sources import DataSource, resolve_source
from u2eval.errors import ConfigError, DataError
from u2eval.grounded.boxes import get_convention
from u2eval.grounded.scorer import GroundedOptions
from u2eval.models.protocol import AdapterOptions, ModelAdapter, ModelRequest
from u2eval.models.registry import Preset, create_adapter, merge_args, resolve_model
from u2eval.provenance import git_state, ids_sha256, now_utc, version
from u2eval.records import (
    SCORING_MODES,
    Case,
    Completion,
    GenerationConfig,
    Manifest,
    ModelInfo,
    RunCase,
)
from u2eval.run.dispatch import Dispatcher, DispatchOptions
from u2eval.run.folder import (
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
from u2eval.run.folder_scoring import (
    CASES_FILE,
    MANIFEST_FILE,
    SUMMARY_FILE,
    load_run_answers,
    manifest_data_errors,
    manifest_dict,
    recorded_grounded,
    score_folder,
    write_json,
)
from u2eval.run.identity import claim, run_identity
from u2eval.run.sent_prompts import PROMPTS_FILE, PromptTexts
from u2eval.run.shards import Shard, check_shard, in_shard, shard_label
from u2eval.run.store import ResponseStore, request_key
from u2eval.scoring.aggregate import Summary
from u2eval.scoring.summary import subset_reasons

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunProgress:
    """Where a run stands, for a progress bar: cases answered (now or before) of those expected, and the
    retries and infra errors so far."""

    done: int
    total: int | None  # None: not known up front (an anatomy selection, a shard)
    retries: int = 0
    infra_errors: int = 0


ProgressHook = Callable[[RunProgress], None]


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
    top_p: float | None = None
    # Provider arguments (-M key=value), merged over the preset's ``extra``: the adapter checks them and puts
    # what it sends into the model identity, so another argument is another run.
    model_args: Mapping[str, object] = field(default_factory=dict)
    case_ids: frozenset[str] | None = None  # only these cases (--case-id)
    rpm: float | None = None  # requests per minute (None: unlimited)
    tpm: float | None = None  # tokens per minute (None: unlimited)
    timeout_s: float | None = None  # per attempt (None: the dispatcher's default)
    max_attempts: int | None = None  # per request, the first included (None: the dispatcher's default)
    shard: Shard | None = None  # (i, n): only the cases whose id hashes to i modulo n; `u2eval merge` joins them
    # Read the dataset in a child process (None: yes, except for the small bundled sample, where starting
    # one costs more than it saves).
    reader_process: bool | None = None
    grounded: bool = False  # also score the answers' regions (grounded.json); never changes the U2-Score
    box_convention: str | None = None  # how answers write boxes (default: the preset's); u2eval.grounded.boxes
    force: bool = False  # start the folder afresh when it holds another run (u2eval.run.identity)


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
    if options.case_ids is not None:
        selection += f"__cases-{ids_sha256(sorted(options.case_ids))[:8]}"
    return options.results_root / f"{slug}__{data}__{options.prompt.name}__seed{options.seed}{selection}"


def _selection(options: RunOptions, matched: int) -> dict[str, str | None]:
    """The manifest's ``dataset.selection``: which part of the cases the run kept (none: all of them);
    ``matched``: how many of the chosen case ids name a case of the run."""
    parts = [f"anatomy={','.join(options.anatomy)}"] if options.anatomy else []
    if options.shard is not None:
        parts.append(shard_label(options.shard))
    if options.case_ids is not None:
        chosen = len(options.case_ids)
        parts.append(f"{chosen} case id(s) chosen" if matched == chosen else f"{matched} of {chosen} chosen case ids")
    return {"selection": "; ".join(parts)} if parts else {}


def _subset(options: RunOptions, matched: int) -> list[str]:
    """Why the run asks only part of its tasks' cases (summary.json's ``subset``), as its manifest will say."""
    return subset_reasons(options.limit, _selection(options, matched).get("selection"))


def _say_if_the_case_set_changed(folder: Path, manifest: Manifest) -> None:
    """Another --tasks / --limit on the same folder is the same run, extended or narrowed: its stored answers
    stay, but the summary now covers this command's cases. Say so when that changes what the summary covers."""
    try:
        before = json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # a first run (or an unreadable manifest, which this one replaces)
    if isinstance(before, dict) and before.get("case_ids_sha256") not in (None, manifest.case_ids_sha256):
        log.warning(
            "%s: the summary now covers this command's %d cases (it covered %s before); the stored answers are kept",
            folder,
            manifest.n_cases,
            before.get("n_cases", "?"),
        )


def _rows_asked(source: DataSource, tasks: Sequence[TaskSpec], limit: int | None) -> Iterator[RowIdentity]:
    """The rows a replay lays out as the official kit would have written them: with ``--limit N``, the first N
    of each dataset, as if the kit had been run on those (reading errors are the case reader's to report)."""
    for row in iter_row_identities(source, tasks):
        if limit is None or row.position < limit:
            yield row


def _generation(options: RunOptions, preset_generation: GenerationConfig | None) -> GenerationConfig:
    base = preset_generation or GenerationConfig()
    updates: dict[str, object] = {"seed": options.seed}
    if options.max_tokens is not None:
        updates["max_tokens"] = options.max_tokens
    if options.temperature is not None:
        updates["temperature"] = options.temperature
    if options.top_p is not None:
        updates["top_p"] = options.top_p
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
        with (
            LineFile(self.cases_out) as out,  # unbuffered: a full disk is met at a write, not at the close
            PromptTexts(self.cases_out.parent / PROMPTS_FILE) as prompts,
        ):
            for case in self._cases():
                if self.options.anatomy is not None and case.anatomy.lower() not in self.options.anatomy:
                    continue
                if self.options.shard is not None and not in_shard(case.case_id, self.options.shard):
                    continue
                if self.options.case_ids is not None and case.case_id not in self.options.case_ids:
                    continue
                try:
                    prompt = render(case, by_key[case.task], self.options.prompt)
                except DataError as exc:
                    self._error(exc)
                    continue
                key = self.key_of(prompt)
                meta = case.meta()
                if self.options.prompt.source == "ours":  # the row's own prompt was not sent: not kept beside it
                    meta = meta.model_copy(update={"columns": {k: v for k, v in meta.columns.items() if k != "prompt"}})
                sent = prompts.record(prompt)
                out.write(RunCase(key=key, case=meta, prompt=sent).model_dump_json() + "\n")
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
    """What the case list and its keys are made from (see u2eval.run.folder)."""
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
    folder: Path,
    store: ResponseStore,
    stream: _CaseStream,
    dispatcher: Dispatcher,
    stamp: dict[str, object],
    on_stored: Callable[[int], None] = lambda n: None,
) -> tuple[list[str], int, list[str]]:
    """Ask for every case the store cannot answer: (case ids, answers reused, data errors). A finished run
    whose inputs are unchanged (its resume stamp) is not read again: nothing to ask, only to score."""
    adapter = dispatcher.adapter
    finished = finished_cases(folder, CASES_FILE, store, stamp)
    if finished is not None:
        asyncio.run(adapter.aclose())
        return finished, len(finished), manifest_data_errors(manifest_dict(folder))
    clear_stamp(folder)

    def stored(completions: list[Completion]) -> None:
        store.append(completions)
        on_stored(len(completions))

    async def go() -> None:
        try:
            await dispatcher.run(stream, stored)
        finally:
            await adapter.aclose()

    asyncio.run(go())
    os.replace(folder / (CASES_FILE + ".part"), folder / CASES_FILE)
    return stream.case_ids, stream.reused, stream.data_errors


def _expected_cases(source: DataSource, tasks: Sequence[TaskSpec], options: RunOptions) -> int | None:
    """The cases the run will hold, for the progress total: the rows of its tasks' files (counted without
    parsing), at most ``limit`` per dataset; unknown under an anatomy selection or a shard."""
    if options.case_ids is not None:
        return len(options.case_ids)
    if options.anatomy is not None or options.shard is not None:
        return None
    rows = estimate_rows(source, tasks)
    if options.limit is not None:
        rows = min(rows, options.limit * sum(len(t.datasets) for t in tasks))
    return rows


class _Reporter:
    """Tells the progress hook where the run stands, after each case reused and each answer stored."""

    def __init__(
        self, hook: ProgressHook | None, stream: _CaseStream, dispatcher: Dispatcher, total: int | None
    ) -> None:
        self.hook, self.stream, self.dispatcher, self.total = hook, stream, dispatcher, total
        self.answered = 0

    def report(self) -> None:
        if self.hook is not None:
            stats = self.dispatcher.stats
            done = self.stream.reused + self.answered
            self.hook(RunProgress(done, self.total, stats.retries, stats.infra_errors))

    def stored(self, n: int) -> None:
        self.answered += n
        self.report()


def _summary_if_up_to_date(folder: Path, scoring: Mapping[str, object]) -> Summary | None:
    """The folder's summary when its scores are up to date (u2eval.run.folder), else None: score again."""
    if not scores_up_to_date(folder, scoring):
        return None
    try:
        return Summary.model_validate_json((folder / SUMMARY_FILE).read_text(encoding="utf-8"))
    except (OSError, ValidationError):
        return None


def _make_folder(folder: Path) -> Path:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot use {folder} as the run folder: {exc.strerror or exc}") from exc
    return folder


@contextlib.contextmanager
def _claimed(folder: Path, identity: dict[str, object], force: bool) -> Iterator[ResponseStore]:
    """The folder made this run's (``u2eval.run.identity``), then its store opened."""
    claim(folder, identity, force)
    with ResponseStore(folder) as store:
        yield store


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
                extra=merge_args(preset.extra if preset else {}, options.model_args),
                timeout_s=dispatch_options.timeout_s,
                rows=lambda keys: _rows_asked(source, select_tasks(list(keys)), options.limit),
                run_answers=load_run_answers,
            ),
        )
    assert adapter is not None
    validate_templates(tasks, options.prompt)
    folder = _make_folder(options.out or default_folder(options))
    info = adapter.info
    stamp = _resume_stamp(options, source, tasks, info, generation)
    # Grounded scoring, once asked for in this folder (by a run or `u2eval score --grounded`), stays on, with
    # the convention it used unless this run names one: a resumed run never leaves a stale grounded.json.
    recorded = recorded_grounded(folder)
    grounded_on = options.grounded or recorded[0]
    if convention is None and recorded[1]:
        convention = get_convention(recorded[1])

    identity = run_identity(
        info, generation, options.prompt.name, template_hashes(tasks, options.prompt), options.seed, source.manifest()
    ) | ({"model_args": dict(options.model_args)} if options.model_args else {})
    # One process per folder; a full disk is one clear line (the store keeps every whole answer).
    with exclusive(folder), disk_full_is_clear(folder), _claimed(folder, identity, options.force) as store:
        stream = _CaseStream(
            source,
            tasks,
            options,
            lambda p: request_key(info, generation, p),
            store,
            folder / (CASES_FILE + ".part"),
        )
        dispatcher = Dispatcher(adapter, dispatch_options)
        reporter = _Reporter(progress, stream, dispatcher, _expected_cases(source, tasks, options))
        stream.on_case = reporter.report
        case_ids, reused, data_errors = _answer(folder, store, stream, dispatcher, stamp, reporter.stored)
        unknown = sorted(options.case_ids - set(case_ids)) if options.case_ids is not None else []
        if unknown and len(unknown) == len(options.case_ids or ()):
            raise ConfigError(
                f"none of the {len(unknown)} chosen case id(s) is a case of this run's tasks and data, e.g. "
                f"{unknown[0]} (a run's cases.jsonl lists its case ids)"
            )
        if unknown:
            log.warning("%d chosen case id(s) match no case of the run: %s", len(unknown), ", ".join(unknown[:10]))
        matched = len(options.case_ids or ()) - len(unknown)
        answered_at = time.perf_counter()

        grounded = GroundedOptions(enabled=grounded_on, convention=convention, source_root=source.root)
        spec = convention.spec if convention is not None else None
        scoring: dict[str, object] = {"grounded": grounded_on, "convention": spec}
        summary = _summary_if_up_to_date(folder, scoring)  # a finished run resumed: nothing changed since
        if summary is None:
            subset = _subset(options, matched)
            summary, _ = score_folder(folder, data_errors=data_errors, grounded=grounded, subset=subset)
        sha, dirty = git_state()
        manifest = Manifest(
            u2eval_version=version(),
            git_sha=sha,
            git_dirty=dirty,
            dataset=source.manifest() | _selection(options, matched),
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
        _say_if_the_case_set_changed(folder, manifest)
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
