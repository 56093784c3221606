"""A run folder read back for ranking, slicing and comparing: re-judged from its stored answers.

Nothing here trusts ``summary.json``: the judgements come from the runner's own judging of
``cases.jsonl`` + ``responses.jsonl`` (``judge_answers``), and the summary is recomputed from them, so a
stale or hand-edited summary cannot leak into a leaderboard. Nothing is written to the run folder.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from u2eval.benchmark.tasks import select_tasks
from u2eval.errors import ConfigError
from u2eval.records import CaseMeta, Completion, Judgement, ScoringMode, Verdict
from u2eval.run.costs import recorded_costing, run_cost
from u2eval.run.folder import CASES_FILE, SUMMARY_FILE, RunFolder
from u2eval.run.records import Manifest
from u2eval.run.scoring_pass import judge_answers, judged_scores
from u2eval.run.store import ResponseStore
from u2eval.scoring.aggregate import Summary, summarise
from u2eval.scoring.summary import subset_reasons

__all__ = ["LoadedRun", "find_runs", "load_run"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedRun:
    folder: Path
    manifest: Manifest
    answers: tuple[tuple[CaseMeta, Completion], ...]  # each case with its stored answer
    judgements: tuple[Judgement, ...]
    summary: Summary
    stale_summary: bool  # the folder's summary.json differs from the re-scored one (or is missing)
    judged: Mapping[str, Verdict] | None = None  # case id -> judged verdict, for a run a judge has read

    def judgements_for(self, mode: ScoringMode) -> tuple[Judgement, ...]:
        """The judgements as a mode scores them: for ``judged``, each with its judged verdict in strict's place
        (the judged mode is strict's rules over those verdicts)."""
        if mode != "judged":
            return self.judgements
        if self.judged is None:
            raise ConfigError(f"{self.folder}: no judge has read this run (u2eval judge {self.folder} --model JUDGE)")
        verdicts = self.judged
        return tuple(j.model_copy(update={"strict": verdicts.get(j.case_id, j.strict)}) for j in self.judgements)

    @property
    def cases(self) -> dict[str, CaseMeta]:
        return {meta.case_id: meta for meta, _ in self.answers}

    @property
    def scenarios(self) -> dict[str, str]:
        return {case_id: meta.scenario for case_id, meta in self.cases.items()}

    @property
    def label(self) -> str:
        info = self.manifest.model
        return f"{info.adapter}/{info.model}" + (f"@{info.revision}" if info.revision else "")


def _scores(summary: dict[str, object]) -> dict[str, object]:
    # An empty ``subset`` is what summaries written before that field existed meant too.
    return {k: v for k, v in summary.items() if k != "scored_with" and not (k == "subset" and v == [])}


def load_run(folder: Path) -> LoadedRun:
    """Re-judge and re-score a run folder from its stored answers, without any model call or write."""
    run = RunFolder(folder)
    manifest = run.require_manifest()
    store = ResponseStore(folder, repair=False)  # read once: the answers and their cost
    answers = run.answers(store)
    judgements = judge_answers(answers, manifest.quirks)
    keys = {j.task for j in judgements}
    subset = subset_reasons(manifest.limit, manifest.dataset.get("selection"))
    tasks = tuple(t for t in select_tasks(None) if t.key in keys)
    judged = judged_scores(run, answers, judgements)
    summary = summarise(
        judgements,
        tasks,
        subset=subset,
        unreadable_rows=len(manifest.data_errors),
        switches=manifest.quirks,
        judged=judged,
    )
    stored = folder / SUMMARY_FILE
    try:
        recorded = json.loads(stored.read_text(encoding="utf-8"))
        # What scored it (u2eval version, task hashes) is provenance, not a score: not compared.
        stale = _scores(recorded) != _scores(summary.model_dump(mode="json"))
    except (OSError, ValueError, AttributeError):
        stale = True
    if stale:
        log.warning("%s: summary.json is stale or missing; using the re-scored numbers", folder)
    costing = recorded_costing(manifest)
    if costing is not None:
        summary = summary.model_copy(update={"cost": run_cost(run, costing, store)})
    verdicts = judged.verdicts if judged is not None else None
    return LoadedRun(folder, manifest, tuple(answers), tuple(judgements), summary, stale, verdicts)


def find_runs(paths: list[Path]) -> list[Path]:
    """Run folders (folders holding cases.jsonl) named directly or found under the given folders, in a
    stable order; a run folder's own subfolders are not searched."""
    found: list[Path] = []
    for path in paths:
        if not path.is_dir():
            raise ConfigError(f"no such run folder or directory: {path}")
        if (path / CASES_FILE).is_file():
            found.append(path)
            continue
        for root, dirs, files in os.walk(path):
            dirs.sort()
            if CASES_FILE in files:
                found.append(Path(root))
                dirs.clear()
    unique = list(dict.fromkeys(p.resolve() for p in found))
    if not unique:
        raise ConfigError(f"no run folders (folders with {CASES_FILE}) under {', '.join(map(str, paths))}")
    return unique
