"""Which runs may share a ranking, and a label that tells each row apart.

One rule: rows are ranked together only when they were scored on the same cases (the manifest's hash of the
case-id list, which names every case by its file, row and image hash, so two copies of the same data agree and
two datasets never do). Runs asked on part of the cases (``--limit``, ``--anatomy``, a shard) are listed apart;
so are runs on another case set than the ranked one. The paper's published rows are the official scorer's
numbers on the real 7,241 cases: they rank only on a reference-mode board (listed apart on a strict one), and
a run ranks beside them only when it is on 7,241 real cases (not synthetic data such as the bundled sample or
``u2eval data synth``) with nothing partial. Every row listed apart says why in words.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path

from u2eval.benchmark.tasks import task_keys
from u2eval.records import ScoringMode
from u2eval.reports.rundata import LoadedRun
from u2eval.scoring.switches import describe

SYNTHETIC = (
    "synthetic data (the bundled sample or u2eval data synth), not the real U2-Bench cases the published rows "
    "were measured on"
)
PUBLISHED_CASES = 7241  # the real U2-Bench, on which the paper's rows were measured
PUBLISHED_ON_STRICT = "the official scorer's number: it ranks on a --mode reference board, not on a strict one"


def is_synthetic(run: LoadedRun) -> bool:
    dataset = run.manifest.dataset
    return dataset.get("synthetic") == "yes" or dataset.get("kind") == "sample"


def _data(run: LoadedRun) -> str:
    dataset = run.manifest.dataset
    kind = dataset.get("kind") or "?"
    if is_synthetic(run):
        return "synthetic sample" if kind == "sample" else "synthetic data"
    if kind == "hub":
        return f"hf:{dataset.get('repo')}@{dataset.get('revision')}"
    return f"local folder {Path(dataset.get('root') or '?').name}"


def _case_set(run: LoadedRun) -> str:
    return f"{len(run.judgements):,} cases of {_data(run)}"


def _other_cases(run: LoadedRun, ranked: LoadedRun) -> str:
    mine = {j.case_id for j in run.judgements}
    theirs = {j.case_id for j in ranked.judgements}
    if mine < theirs:  # e.g. a run asked for some tasks only: say which part it is
        tasks = sorted({j.task for j in run.judgements}, key=task_keys().index)
        return (
            f"scored on {len(mine):,} of the ranked runs' {len(theirs):,} cases "
            f"(tasks {', '.join(t.upper() for t in tasks)})"
        )
    return f"scored on other cases ({_case_set(run)}) than the ranked runs ({_case_set(ranked)})"


def partial_reasons(run: LoadedRun, mode: ScoringMode) -> list[str]:
    """Why a run's scores in ``mode`` do not cover all it should: tasks or datasets missing, part of the cases
    asked, rows unreadable, infra errors (empty: nothing partial)."""
    summary = run.summary.modes[mode]
    reasons = []
    if summary.missing_tasks:
        reasons.append(f"missing {','.join(summary.missing_tasks)}")
    lost = [f"{t}/{d}" for t, ids in summary.missing_datasets.items() for d in ids] + list(summary.uncounted_datasets)
    if lost:
        reasons.append(f"datasets lost: {','.join(lost)}")
    reasons += run.summary.subset
    if run.summary.unreadable_rows:
        reasons.append(f"{run.summary.unreadable_rows} unreadable rows")
    if run.summary.infra_error_case_ids:
        reasons.append(f"{len(run.summary.infra_error_case_ids)} infra errors")
    if mode == "judged" and run.summary.judge is not None and run.summary.judge.not_judged:
        reasons.append(f"{len(run.summary.judge.not_judged)} answers not read by the judge")
    return reasons


def _not_beside_published(run: LoadedRun, mode: ScoringMode) -> str | None:
    """Why a run cannot rank beside the paper's rows (None: it can)."""
    if is_synthetic(run):
        return SYNTHETIC
    if len(run.judgements) != PUBLISHED_CASES:
        n = len(run.judgements)
        return f"{n:,} cases, not the {PUBLISHED_CASES:,} of U2-Bench the published rows were measured on"
    partial = partial_reasons(run, mode)
    if partial:
        return f"partial ({'; '.join(partial)}), beside published rows that cover every task and case"
    return None


def placement(runs: Sequence[LoadedRun], published: bool, mode: ScoringMode) -> dict[Path, str | None]:
    """For each run folder: None when it is ranked, else why it is listed apart (in words)."""
    beside_paper = published and mode == "reference"  # the published rows rank on a reference board only

    def alone(run: LoadedRun) -> str | None:  # a reason that does not depend on the other runs
        control = run.manifest.control
        if control is not None:  # u2eval.data.controls: never the model's score on the benchmark
            return f"a control run ({control.name}: {control.sends}), not a score on the cases' own images"
        if run.summary.subset:
            return f"asked only part of the cases ({'; '.join(run.summary.subset)})"
        return _not_beside_published(run, mode) if beside_paper else None

    groups: dict[str, list[LoadedRun]] = defaultdict(list)
    for run in runs:
        if alone(run) is None:
            groups[run.manifest.case_ids_sha256].append(run)
    # The ranked case set: the one most runs share (then the larger one, then a stable order).
    ranked = max(groups, key=lambda k: (len(groups[k]), len(groups[k][0].judgements), k), default=None)
    reasons: dict[Path, str | None] = {}
    for run in runs:
        reasons[run.folder] = alone(run)
        if reasons[run.folder] is None and run.manifest.case_ids_sha256 != ranked:
            other = groups[ranked][0] if ranked is not None else run
            reasons[run.folder] = _other_cases(run, other)
    return reasons


def _settings(run: LoadedRun) -> dict[str, str]:
    manifest, generation = run.manifest, run.manifest.generation
    return {
        "prompt": manifest.prompt_variant,
        "prompt source": manifest.prompt_source,
        "seed": str(manifest.seed),
        "temperature": f"{generation.temperature:g}",
        "top_p": f"{generation.top_p:g}",
        "max tokens": str(generation.max_tokens),
        "on": _data(run),  # reads "on synthetic data", "on hf:DolphinAI/u2-bench@<rev>"
        "quirks": describe(manifest.quirks) or "as the official scorer",
    }


def row_labels(runs: Sequence[LoadedRun]) -> dict[Path, str]:
    """The model, then the settings that differ between the runs (prompt variant, seed, generation settings,
    the data), then the folder where two rows would still read the same."""
    settings = {run.folder: _settings(run) for run in runs}
    differing = [k for k in next(iter(settings.values()), {}) if len({s[k] for s in settings.values()}) > 1]
    labels = {}
    for run in runs:
        extra = ", ".join(f"{k} {settings[run.folder][k]}" for k in differing)
        labels[run.folder] = run.label + (f" ({extra})" if extra else "")
    counts = Counter(labels.values())
    for run in runs:
        if counts[labels[run.folder]] > 1:
            labels[run.folder] += f" [{run.folder.name}]"
    counts = Counter(labels.values())
    for run in runs:
        if counts[labels[run.folder]] > 1:  # same folder name under different parents
            labels[run.folder] = labels[run.folder].removesuffix(f" [{run.folder.name}]") + f" [{run.folder}]"
    return labels
