"""A run, in four steps: resolve (the options, the model, the folder; everything checked before any model
call), answer (stream the cases, ask for those the store cannot answer, store each answer), score (the
scoring pass over the folder: ``u2eval.run.scoring_pass``) and record (the manifest, then the resume stamp).
What a run folder holds: ``u2eval.run.folder``."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from u2eval.benchmark.prompts import template_hashes, validate_templates
from u2eval.benchmark.tasks import TaskSpec, select_tasks, task_sha256
from u2eval.data.controls import CONTROLS, check_control
from u2eval.data.sources import DataSource, resolve_source
from u2eval.errors import ConfigError
from u2eval.grounded.boxes import get_convention
from u2eval.grounded.scorer import GroundedOptions
from u2eval.models.protocol import AdapterOptions, ModelAdapter
from u2eval.models.registry import create_adapter, merge_args, resolve_model
from u2eval.provenance import git_state, ids_sha256, now_utc, version
from u2eval.records import SCORING_MODES, Completion, GenerationConfig
from u2eval.run import options as run_options
from u2eval.run.batch import BatchRun, batch_run
from u2eval.run.batch_ledger import answers_by_route
from u2eval.run.budget import CostBudget, request_ceiling, stored_cost
from u2eval.run.case_stream import CaseStream, Reporter, expected_cases, rows_asked
from u2eval.run.costs import RunCosting
from u2eval.run.dispatch import Dispatcher
from u2eval.run.estimate import costing_of
from u2eval.run.folder import CASES_FILE, RunFolder
from u2eval.run.identity import claim, run_identity
from u2eval.run.locks import disk_full_is_clear, exclusive
from u2eval.run.options import ProgressHook, RunOptions, RunProgress, default_folder
from u2eval.run.pacing import DispatchOptions
from u2eval.run.records import ControlRecord, Manifest
from u2eval.run.resume import clear_stamp, finished_cases, make_stamp, scores_up_to_date, scoring_state, write_stamp
from u2eval.run.scoring_pass import score_folder
from u2eval.run.shards import check_shard
from u2eval.run.store import ResponseStore, request_key
from u2eval.scoring.aggregate import Summary

__all__ = ["RunOptions", "RunProgress", "RunResult", "default_folder", "run"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunResult:
    folder: Path
    summary: Summary
    manifest: Manifest
    requested: int
    reused: int
    infra_errors: int
    data_errors: tuple[str, ...]


@dataclass(frozen=True)
class _Plan:
    """A run resolved: what it asks, of which model, into which folder; nothing asked of the model yet."""

    options: RunOptions
    tasks: tuple[TaskSpec, ...]
    source: DataSource
    adapter: ModelAdapter
    generation: GenerationConfig
    dispatch: DispatchOptions
    folder: RunFolder
    identity: dict[str, object]
    stamp: dict[str, object]  # what the case list is made from (u2eval.run.resume)
    grounded: GroundedOptions
    costing: RunCosting | None  # the model's prices and image rule, when its preset (or --price) gives a price


@dataclass(frozen=True)
class _Answered:
    case_ids: list[str]
    reused: int
    data_errors: list[str]
    matched: int  # of the chosen case ids (--case-id), those that name a case of the run
    not_controlled: list[str]  # a control run's cases sent their own image (their dataset has no other)
    requested: int
    dispatch: dict[str, int]
    answer_s: float


# ------------------------------------------------------------------------------------------------ resolve


def _resolve(options: RunOptions, adapter: ModelAdapter | None) -> _Plan:
    if options.shard is not None:
        check_shard(options.shard)
    if options.control is not None:
        check_control(options.control)
    tasks = select_tasks(options.tasks)
    source = resolve_source(options.data, revision=options.revision, tasks=tasks)
    resolved = None if adapter is not None else resolve_model(options.model)
    preset = resolved.preset if resolved is not None else None
    # Checked before any model call: a wrong convention name must not cost a run.
    convention_spec = options.box_convention or (preset.box_convention if preset else None)
    convention = get_convention(convention_spec) if convention_spec else None
    generation = run_options.generation(options, preset.generation if preset else None)
    dispatch = run_options.dispatch_options(options, preset, generation)
    if resolved is not None:
        adapter = create_adapter(
            resolved,
            AdapterOptions(
                generation=generation,
                seed=options.seed,
                base_url=options.base_url or (preset.base_url if preset else None),
                extra=merge_args(preset.extra if preset else {}, options.model_args),
                timeout_s=dispatch.timeout_s,
                rows=lambda keys: rows_asked(source, select_tasks(list(keys)), options.limit),
                run_answers=lambda path: RunFolder(path).replay_answers(),
            ),
        )
    assert adapter is not None
    validate_templates(tasks, options.prompt)
    folder = RunFolder(_make_folder(options.out or default_folder(options)))
    info = adapter.info
    templates = template_hashes(tasks, options.prompt)
    settings = {
        "u2eval": version(),
        "data": source.manifest(),
        "tasks": {t.key: task_sha256(t.key) for t in tasks},
        "templates": templates,
        "prompt": dataclasses.asdict(options.prompt),
        "selection": [options.limit, options.anatomy, options.shard],
        "model": info.model_dump(mode="json"),
        "generation": generation.model_dump(mode="json"),
    } | ({"control": options.control} if options.control else {})
    identity = run_identity(
        info, generation, options.prompt.name, templates, options.seed, source.manifest(), options.control
    )
    # Grounded scoring, once asked for in this folder (by a run or `u2eval score --grounded`), stays on, with
    # the convention it used unless this run names one: a resumed run never leaves a stale grounded.json.
    recorded = folder.grounded_options()
    grounded = GroundedOptions(
        enabled=options.grounded or recorded.enabled,
        convention=convention or recorded.convention,
        source_root=source.root,
    )
    return _Plan(
        costing=_costing(options) if resolved is not None else None,
        options=options,
        tasks=tasks,
        source=source,
        adapter=adapter,
        generation=generation,
        dispatch=dispatch,
        folder=folder,
        identity=identity | ({"model_args": dict(options.model_args)} if options.model_args else {}),
        stamp=make_stamp(settings, source.root, [t.folder for t in tasks]),
        grounded=grounded,
    )


def _costing(options: RunOptions) -> RunCosting | None:
    costing, price, _, _ = costing_of(options)
    return RunCosting(price, costing.rule, costing.model) if price is not None else None


def _make_folder(folder: Path) -> Path:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot use {folder} as the run folder: {exc.strerror or exc}") from exc
    return folder


# ------------------------------------------------------------------------------------------------- answer


def _answer(plan: _Plan, store: ResponseStore, progress: ProgressHook | None) -> _Answered:
    """Ask for every case the store cannot answer. A finished run whose inputs are unchanged (its resume
    stamp) is not read again: nothing to ask, only to score."""
    started = time.perf_counter()
    options, path = plan.options, plan.folder.path
    info, generation = plan.adapter.info, plan.generation
    key_of = lambda prompt: request_key(info, generation, prompt)  # noqa: E731 - one line, named for reading
    stream = CaseStream(plan.source, plan.tasks, options, key_of, store, path / (CASES_FILE + ".part"))
    dispatcher = Dispatcher(plan.adapter, plan.dispatch, _budget(plan, store))
    reporter = Reporter(progress, stream, dispatcher, expected_cases(plan.source, plan.tasks, options))
    stream.on_case = reporter.report
    finished = finished_cases(path, CASES_FILE, store, plan.stamp)
    batches: BatchRun | None = None  # the provider's batch API: asked for, or batches open in the folder
    if finished is not None:
        asyncio.run(plan.adapter.aclose())
        manifest = plan.folder.manifest()
        case_ids, reused, data_errors = finished, len(finished), list(manifest.data_errors) if manifest else []
        control = manifest.control if manifest is not None else None
        not_controlled = list(control.not_controlled) if control is not None else []
    else:
        clear_stamp(path)
        batches = batch_run(plan.adapter, plan.folder, store, options, plan.dispatch, reporter)

        def stored(completions: list[Completion]) -> None:
            store.append(completions)
            reporter.stored(len(completions))

        async def go() -> None:
            try:
                if batches is None:
                    await dispatcher.run(stream, stored)
                else:
                    await batches.run(stream, dispatcher, stored)
            finally:
                await plan.adapter.aclose()

        asyncio.run(go())
        os.replace(path / (CASES_FILE + ".part"), path / CASES_FILE)
        case_ids, reused, data_errors = stream.case_ids, stream.reused, stream.data_errors
        not_controlled = stream.not_controlled
    return _Answered(
        case_ids=case_ids,
        reused=reused,
        data_errors=data_errors,
        matched=_matched(options, case_ids),
        not_controlled=not_controlled,
        requested=dispatcher.stats.requests + (batches.stats.submitted if batches else 0),
        dispatch=dispatcher.stats.as_manifest()
        | {"reused": reused}
        | (batches.stats.as_manifest() if batches else {})
        | answers_by_route(plan.folder, store),
        answer_s=time.perf_counter() - started,
    )


def _budget(plan: _Plan, store: ResponseStore) -> CostBudget | None:
    """The run's --max-cost budget, with what the folder's stored answers cost already spent."""
    max_usd = plan.options.max_cost_usd
    if max_usd is None:
        return None
    costing, price, max_tokens, model = costing_of(plan.options)
    if price is None:
        raise ConfigError(f"--max-cost needs {model}'s price: its preset has none; give --price in=USD,out=USD")
    spent = stored_cost(store.answers().values(), price)
    ceiling = request_ceiling(costing, price, max_tokens, batch=plan.options.batch)  # --batch: at its price
    return CostBudget(max_usd, price, ceiling, spent_usd=spent)


def _matched(options: RunOptions, case_ids: list[str]) -> int:
    """How many chosen case ids (--case-id) name a case of the run; none at all is an error."""
    if options.case_ids is None:
        return 0
    unknown = sorted(options.case_ids - set(case_ids))
    if unknown and len(unknown) == len(options.case_ids):
        raise ConfigError(
            f"none of the {len(unknown)} chosen case id(s) is a case of this run's tasks and data, e.g. "
            f"{unknown[0]} (a run's cases.jsonl lists its case ids)"
        )
    if unknown:
        log.warning("%d chosen case id(s) match no case of the run: %s", len(unknown), ", ".join(unknown[:10]))
    return len(options.case_ids) - len(unknown)


# -------------------------------------------------------------------------------------------------- score


def _scoring_settings(plan: _Plan) -> dict[str, object]:
    convention = plan.grounded.convention
    spec = convention.spec if convention is not None else None
    return {"grounded": plan.grounded.enabled, "convention": spec, "quirks": dict(plan.options.quirks)}


def _score(plan: _Plan, answered: _Answered, store: ResponseStore) -> Summary:
    """The scoring pass over the folder, unless its scores are up to date (a finished run resumed)."""
    path = plan.folder.path
    if scores_up_to_date(path, _scoring_settings(plan)):
        summary = plan.folder.read_summary()
        if summary is not None:
            return summary
    subset = run_options.subset(plan.options, answered.matched)
    control = _control(plan.options, answered)
    summary, _ = score_folder(
        path, answered.data_errors, plan.grounded, subset, store, dict(plan.options.quirks), control, plan.costing
    )
    return summary


# ------------------------------------------------------------------------------------------------- record


def _record(plan: _Plan, answered: _Answered, started_at: str, score_s: float, summary: Summary) -> Manifest:
    """The manifest (what produced the numbers), then the resume stamp, which vouches for the case list, the
    manifest's data errors and the scores, so it is written last."""
    options, info = plan.options, plan.adapter.info
    sha, dirty = git_state()
    convention = plan.grounded.convention
    manifest = Manifest(
        u2eval_version=version(),
        git_sha=sha,
        git_dirty=dirty,
        dataset=plan.source.manifest() | run_options.selection(options, answered.matched),
        case_ids_sha256=ids_sha256(answered.case_ids),
        n_cases=len(answered.case_ids),
        tasks={t.key: task_sha256(t.key) for t in plan.tasks},
        templates=template_hashes(plan.tasks, options.prompt),
        prompt_source=options.prompt.source,
        prompt_variant=options.prompt.name,
        model=info,
        generation=plan.generation,
        seed=options.seed,
        limit=options.limit,
        scoring_modes=list(SCORING_MODES),
        started_at=started_at,
        finished_at=now_utc(),
        timings={"answer_s": round(answered.answer_s, 3), "score_s": round(score_s, 3)},
        dispatch=answered.dispatch,
        data_errors=answered.data_errors,
        grounded=plan.grounded.enabled,
        box_convention=convention.spec if convention is not None else None,
        quirks=dict(plan.options.quirks),
        control=_control(options, answered),
        price=plan.costing.price if plan.costing is not None else None,
        image_rule=plan.costing.rule if plan.costing is not None else None,
        cost_usd=summary.cost.total.cost_usd if summary.cost is not None else None,
        estimated_usd=summary.cost.total.estimated_usd if summary.cost is not None else None,
    )
    _say_if_the_case_set_changed(plan.folder, manifest)
    plan.folder.write_manifest(manifest)
    write_stamp(plan.folder.path, plan.stamp, scoring_state(plan.folder.path, _scoring_settings(plan)))
    return manifest


def _control(options: RunOptions, answered: _Answered) -> ControlRecord | None:
    if options.control is None:
        return None
    seed = options.seed if options.control == "other-image" else None
    return ControlRecord(
        name=options.control, sends=CONTROLS[options.control], seed=seed, not_controlled=answered.not_controlled
    )


def _say_if_the_case_set_changed(folder: RunFolder, manifest: Manifest) -> None:
    """Another --tasks / --limit on the same folder is the same run, extended or narrowed: its stored answers
    stay, but the summary now covers this command's cases. Say so when that changes what the summary covers."""
    before = folder.manifest()  # None: a first run (or an unreadable manifest, which this one replaces)
    if before is not None and before.case_ids_sha256 != manifest.case_ids_sha256:
        log.warning(
            "%s: the summary now covers this command's %d cases (it covered %s before); the stored answers are kept",
            folder.path,
            manifest.n_cases,
            before.n_cases,
        )


# ---------------------------------------------------------------------------------------------------- run


@contextlib.contextmanager
def _claimed(plan: _Plan) -> Iterator[ResponseStore]:
    """The folder held by this process alone, made this run's (``u2eval.run.identity``), its store open. A
    full disk is one clear line (the store keeps every whole answer)."""
    path = plan.folder.path
    with exclusive(path), disk_full_is_clear(path):
        claim(path, plan.identity, plan.options.force)
        with ResponseStore(path) as store:
            yield store


def run(options: RunOptions, progress: ProgressHook | None = None, adapter: ModelAdapter | None = None) -> RunResult:
    """Evaluate one model on the chosen tasks, resuming whatever the run folder already holds.

    ``adapter``: an adapter object to use instead of the one ``options.model`` names (for library use:
    evaluating a model held in memory). Its ``info`` then identifies the model.
    """
    started_at = now_utc()
    plan = _resolve(options, adapter)
    with _claimed(plan) as store:
        answered = _answer(plan, store, progress)
        scoring_started = time.perf_counter()
        summary = _score(plan, answered, store)
        manifest = _record(plan, answered, started_at, time.perf_counter() - scoring_started, summary)
    return RunResult(
        folder=plan.folder.path,
        summary=summary,
        manifest=manifest,
        requested=answered.requested,
        reused=answered.reused,
        infra_errors=len(summary.infra_error_case_ids),
        data_errors=tuple(answered.data_errors),
    )
