"""``u2eval merge``: shard runs (``u2eval run --shard i/n``) combined into one run folder.

The merged folder is an ordinary run folder: ``cases.jsonl`` in the order an unsharded run writes it (tasks in
official order, files by name, rows in file order), ``responses.jsonl`` with the stored answer of every case,
and a manifest whose ``case_ids_sha256`` covers the union. It is scored by the runner's own ``score_folder``,
so its summary equals an unsharded run's byte for byte.

Only the n shards of one run are merged: the same model identity, generation settings, dataset, tasks,
prompt source and variant, seed and limit, grounded scoring and box convention, each shard exactly once.
Anything else is refused with one line.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from u2eval.benchmark.tasks import all_tasks
from u2eval.errors import ConfigError
from u2eval.provenance import ids_sha256, now_utc
from u2eval.records import Completion
from u2eval.run.folder import RunFolder
from u2eval.run.locks import LOCK_FILE, exclusive, reading
from u2eval.run.records import ControlRecord, Manifest, RunCase
from u2eval.run.scoring_pass import score_folder
from u2eval.run.shards import Shard, selection_parts
from u2eval.run.store import ResponseStore
from u2eval.scoring.aggregate import Summary

log = logging.getLogger(__name__)

# What must be equal across shards for their union to be one run; name -> how a refusal calls it.
_SAME: dict[str, str] = {
    "model": "model",
    "generation": "generation settings",
    "tasks": "tasks",
    "limit": "limit",
    "seed": "seed",
    "prompt_source": "prompt source",
    "prompt_variant": "prompt variant",
    "templates": "prompt templates",
    "grounded": "grounded scoring (--grounded)",
    "box_convention": "box convention",
}


@dataclass(frozen=True)
class ShardRun:
    folder: Path
    manifest: Manifest
    shard: Shard
    cases: list[RunCase]


@dataclass(frozen=True)
class MergeResult:
    folder: Path
    summary: Summary
    manifest: Manifest
    infra_errors: int
    infra_shards: tuple[Path, ...]  # the shard folders whose cases still have infra errors (re-run them)


def _load(folder: Path) -> ShardRun:
    manifest = RunFolder(folder).require_manifest()
    _, shard = selection_parts(manifest.dataset.get("selection"))
    if shard is None:
        raise ConfigError(f"{folder} is not a shard run (it was not run with --shard i/n)")
    return ShardRun(folder, manifest, shard, RunFolder(folder).cases())


def _dataset(manifest: Manifest) -> dict[str, str | None]:
    """The dataset entry without the shard: what every shard of one run shares."""
    rest, _ = selection_parts(manifest.dataset.get("selection"))
    dataset = {k: v for k, v in manifest.dataset.items() if k not in ("selection", "merged_from")}
    return dataset | ({"selection": rest} if rest else {})


def _data_identity(manifest: Manifest) -> dict[str, str | None]:
    """What identifies the data: a hub snapshot or the sample by what it is, wherever it was cached (shards run
    on machines with different caches); a local folder by its path."""
    dataset = _dataset(manifest)
    return dataset if dataset.get("kind") == "local" else {k: v for k, v in dataset.items() if k != "root"}


def _check(runs: Sequence[ShardRun]) -> None:
    first = runs[0]
    for run in runs[1:]:
        for name, label in _SAME.items():
            mine, theirs = getattr(first.manifest, name), getattr(run.manifest, name)
            if name == "tasks" and set(mine) != set(theirs):  # the task keys say more than their file hashes
                mine, theirs = sorted(mine), sorted(theirs)
            if mine != theirs:
                shown = f"{_show(mine)} vs {_show(theirs)}"
                raise ConfigError(f"cannot merge {first.folder} and {run.folder}: different {label} ({shown})")
        mine_control, their_control = _control_name(first.manifest), _control_name(run.manifest)
        if mine_control != their_control:
            shown = f"{mine_control} vs {their_control}"
            raise ConfigError(f"cannot merge {first.folder} and {run.folder}: different controls ({shown})")
        mine, theirs = _data_identity(first.manifest), _data_identity(run.manifest)
        if mine != theirs:
            shown = f"{_show(mine)} vs {_show(theirs)}"
            raise ConfigError(f"cannot merge {first.folder} and {run.folder}: different datasets ({shown})")
    counts = sorted({r.shard[1] for r in runs})
    if len(counts) > 1:
        raise ConfigError(f"cannot merge shards of different splits ({', '.join(f'n={n}' for n in counts)})")
    count = counts[0]
    seen: dict[int, Path] = {}
    for run in runs:
        index = run.shard[0]
        if index in seen:
            raise ConfigError(f"shard {index}/{count} given twice: {seen[index]} and {run.folder}")
        seen[index] = run.folder
    missing = [f"{i}/{count}" for i in range(count) if i not in seen]
    if missing:
        raise ConfigError(f"cannot merge: missing shard(s) {', '.join(missing)} of {count}")


def _show(value: object) -> str:
    if hasattr(value, "model_dump"):
        value = value.model_dump(mode="json")
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 160 else text[:157] + "..."


def _order() -> dict[str, int]:
    return {t.key: i for i, t in enumerate(all_tasks())}


def _canonical(runs: Sequence[ShardRun]) -> list[tuple[RunCase, ShardRun]]:
    """Every case once, in the order an unsharded run streams them; a case in two shards is refused."""
    owner: dict[str, ShardRun] = {}
    rows: list[tuple[RunCase, ShardRun]] = []
    for run in runs:
        for case in run.cases:
            other = owner.get(case.case.case_id)
            if other is not None:
                raise ConfigError(f"overlapping shards: case {case.case.case_id} is in {other.folder} and {run.folder}")
            owner[case.case.case_id] = run
            rows.append((case, run))
    order = _order()
    rows.sort(key=lambda r: (order.get(r[0].case.task, len(order)), r[0].case.source_file, r[0].case.row_index))
    return rows


def _answers(runs: Sequence[ShardRun], rows: Sequence[tuple[RunCase, ShardRun]]) -> list[Completion]:
    """One stored answer per key. Identical prompts in several shards were asked once per shard; the answer
    kept is the one an unsharded run would have asked for: the first case's in canonical order, unless it is
    an infra error and another shard has an answer."""
    stores = {run.folder: ResponseStore(run.folder, repair=False) for run in runs}
    chosen: dict[str, Completion] = {}
    for case, run in rows:
        completion = stores[run.folder].get(case.key)
        if completion is None:
            continue
        current = chosen.get(case.key)
        if current is None or (current.is_infra_error and not completion.is_infra_error):
            chosen[case.key] = completion
    return list(chosen.values())


def _prepare_out(out: Path, runs: Sequence[ShardRun]) -> None:
    if any(out.resolve() == r.folder.resolve() for r in runs):
        raise ConfigError(f"--out {out} is one of the shards: merge into a new folder")
    if out.is_dir() and any(p.name != LOCK_FILE for p in out.iterdir()):  # the lock of a merge that failed
        previous = RunFolder(out).manifest()
        merged = previous is not None and "merged_from" in previous.dataset
        if not merged:
            raise ConfigError(f"{out} is not empty and not an earlier merge: choose a new --out folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot use {out} as the merged run folder: {exc.strerror or exc}") from exc


def _manifest(runs: Sequence[ShardRun], rows: Sequence[tuple[RunCase, ShardRun]], merge_s: float) -> Manifest:
    first = runs[0].manifest
    versions = {(r.manifest.u2eval_version, r.manifest.git_sha, r.manifest.git_dirty) for r in runs}
    if len(versions) > 1:
        log.warning("the shards were run by different u2eval versions or checkouts: %s", sorted(map(str, versions)))
    timings: dict[str, float] = {}
    dispatch: dict[str, int] = {}
    for run in runs:
        for name, seconds in run.manifest.timings.items():
            timings[name] = round(timings.get(name, 0.0) + seconds, 3)
        for name, count in run.manifest.dispatch.items():
            dispatch[name] = dispatch.get(name, 0) + count
    timings["merge_s"] = round(merge_s, 3)
    errors = list(dict.fromkeys(e for r in runs for e in r.manifest.data_errors))
    ordered = sorted(runs, key=lambda r: r.shard[0])
    merged_from = json.dumps([f"{r.folder} (shard {r.shard[0]}/{r.shard[1]})" for r in ordered])
    finished = [r.manifest.finished_at for r in runs if r.manifest.finished_at]
    return first.model_copy(
        update={
            "u2eval_version": first.u2eval_version if len(versions) == 1 else f"{first.u2eval_version} (mixed)",
            "git_sha": first.git_sha if len(versions) == 1 else None,
            "git_dirty": first.git_dirty if len(versions) == 1 else None,
            "dataset": _dataset(first) | {"merged_from": merged_from},
            "case_ids_sha256": ids_sha256(c.case.case_id for c, _ in rows),
            "n_cases": len(rows),
            "started_at": min(r.manifest.started_at for r in runs),
            "finished_at": max(finished) if finished else now_utc(),
            "timings": timings,
            "dispatch": dispatch,
            "data_errors": errors,
            "control": _control(runs),
        }
    )


def _control_name(manifest: Manifest) -> str | None:
    return manifest.control.name if manifest.control is not None else None


def _control(runs: Sequence[ShardRun]) -> ControlRecord | None:
    """A control run's shards (one control, checked): the cases none of them could control, together."""
    first = runs[0].manifest.control
    if first is None:
        return None
    cases = [c for r in runs if r.manifest.control is not None for c in r.manifest.control.not_controlled]
    return first.model_copy(update={"not_controlled": list(dict.fromkeys(cases))})


def merge_runs(folders: Sequence[Path], out: Path) -> MergeResult:
    """Merge the n shard runs of one run into ``out`` and score it; refuses anything else."""
    started = time.perf_counter()
    if not folders:
        raise ConfigError("give the shard run folders to merge")
    for folder in folders:
        if not folder.is_dir():
            raise ConfigError(f"no such run folder: {folder}")
    with contextlib.ExitStack() as held:
        for folder in dict.fromkeys(f.resolve() for f in folders):
            held.enter_context(reading(folder))  # no shard still being run (nor one started meanwhile)
        runs = [_load(folder) for folder in folders]
        _check(runs)
        rows = _canonical(runs)
        _prepare_out(out, runs)
        held.enter_context(exclusive(out))
        answers = _answers(runs, rows)
        # Written whole, then renamed: a merge that stops half-way leaves no half-merged folder behind.
        merged = RunFolder(out)
        merged.write_cases([case for case, _ in rows])
        ResponseStore.write_whole(out, answers)
        manifest = _manifest(runs, rows, time.perf_counter() - started)
        merged.write_manifest(manifest)
        summary, judgements = score_folder(out, data_errors=manifest.data_errors)
    failed = {j.case_id for j in judgements if j.outcome == "infra_error"}
    infra_shards = tuple(sorted({run.folder for case, run in rows if case.case.case_id in failed}))
    return MergeResult(out, summary, manifest, len(failed), infra_shards)
