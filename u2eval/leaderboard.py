"""One ranking from any number of run folders, each re-scored from its stored answers, with bootstrap CIs.

Runs are ranked together only when their numbers mean the same thing: the same dataset (kind, repo,
revision, commit sha) and the same task files (the manifest's task hashes) for every task they share.
Anything else is refused with one line naming the groups, so the user ranks each group on its own; the
scoring mode is the same for every row by construction (``--mode`` re-scores all runs in that mode).

The paper's 22 published rows (``published.csv``, the official scorer's numbers) can be added as reference
rows marked ``published``: no interval, no parse rate, their U2-Score as published.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from u2eval.errors import ConfigError
from u2eval.grounded_board import GroundedCells, grounded_cells
from u2eval.records import TASK_KEYS, ScoringMode
from u2eval.rundata import LoadedRun, find_runs, load_run
from u2eval.scoring import clip01, task_score
from u2eval.slices import SliceBy, SliceRow, slice_rows
from u2eval.stats import CONFIDENCE, DEFAULT_RESAMPLES, DEFAULT_SEED
from u2eval.summary import report_float
from u2eval.tasks import all_tasks, get_task
from u2eval.uncertainty import case_table, run_intervals

__all__ = ["Board", "BoardOptions", "BoardRow", "Cell", "build_board", "published_rows"]

PUBLISHED_CSV = Path(__file__).resolve().parent / "published.csv"
_PUBLISHED_COLUMNS = {"dd": "dd_acc", "vra": "vra_acc", "ll": "ll_acc", "od": "od_acc", "kd": "kd_acc"}
_PUBLISHED_COLUMNS |= {"cve": "cve_rmse", "rg": "rg_bleu", "cg": "cg_bleu"}


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Cell(_Frozen):
    score: float | None
    low: float | None = None
    high: float | None = None


class BoardRow(_Frozen):
    rank: int | None
    model: str
    source: Literal["run", "published"]
    u2: Cell
    u2_over_present_tasks: Cell
    tasks: dict[str, Cell]
    parse_rate: float | None
    infra_errors: int | None
    partial: bool
    partial_reasons: list[str]
    subset: bool = False  # asked only part of the cases (--limit, --anatomy, a shard): listed, never ranked
    n_cases: int | None
    dataset: str
    prompt_variant: str
    run: str | None
    stale_summary: bool = False
    grounded: GroundedCells | None = None  # with --grounded: region scores and grounded metrics (runs only)


class TaskColumn(_Frozen):
    key: str
    name: str
    capability: str
    weight: float
    metric: str


class SliceEntry(_Frozen):
    model: str
    run: str
    row: SliceRow


class Board(_Frozen):
    schema_version: int = 1
    mode: ScoringMode
    resamples: int
    seed: int
    confidence: float
    datasets: list[str]
    tasks: list[TaskColumn]
    rows: list[BoardRow]
    by: str | None = None
    slices: list[SliceEntry] = []
    grounded: bool = False  # rows carry grounded columns


@dataclass(frozen=True)
class BoardOptions:
    mode: ScoringMode = "strict"
    resamples: int = DEFAULT_RESAMPLES
    seed: int = DEFAULT_SEED
    published: bool = False
    by: SliceBy | None = None
    grounded: bool = False  # add the grounded columns (never part of the ranking)


def _short(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def dataset_label(dataset: dict[str, str | None]) -> str:
    kind = dataset.get("kind") or "?"
    if kind == "hub":
        sha = dataset.get("sha")
        return f"hf:{dataset.get('repo')}@{dataset.get('revision')}" + (f" ({sha[:10]})" if sha else "")
    if kind == "local":
        sha = dataset.get("sha")
        return f"local {dataset.get('root')}" + (f" ({sha[:10]})" if sha else "")
    return str(kind)


def _dataset_key(dataset: dict[str, str | None]) -> tuple[str | None, ...]:
    kind = dataset.get("kind")
    # A local folder without a commit sha is only known by where it is.
    root = dataset.get("root") if kind == "local" and not dataset.get("sha") else None
    return kind, dataset.get("repo"), dataset.get("revision"), dataset.get("sha"), root


def _groups_line(groups: dict[str, list[str]]) -> str:
    return "; ".join(f"{label}: {', '.join(names)}" for label, names in groups.items())


def check_compatible(runs: Sequence[LoadedRun], mode: ScoringMode) -> None:
    """Refuse, in one line, runs whose numbers cannot share a ranking."""
    by_dataset: dict[tuple[str | None, ...], list[LoadedRun]] = defaultdict(list)
    for run in runs:
        by_dataset[_dataset_key(run.manifest.dataset)].append(run)
    if len(by_dataset) > 1:
        groups = {dataset_label(rs[0].manifest.dataset): [_short(r.folder) for r in rs] for rs in by_dataset.values()}
        raise ConfigError(
            f"cannot rank these runs together: their dataset revisions differ ({_groups_line(groups)}); "
            "rank each group separately"
        )
    for key in TASK_KEYS:
        versions: dict[str, list[str]] = defaultdict(list)
        for run in runs:
            if key in run.manifest.tasks:
                versions[run.manifest.tasks[key][:10]].append(_short(run.folder))
        if len(versions) > 1:
            raise ConfigError(
                f"cannot rank these runs together: task {key} differs (task file sha256 "
                f"{_groups_line(versions)}); rank each group separately"
            )
    unscored = [_short(r.folder) for r in runs if mode not in r.manifest.scoring_modes]
    if unscored:
        raise ConfigError(f"cannot rank these runs in {mode} mode: not a scoring mode of {', '.join(unscored)}")


def _partial_reasons(run: LoadedRun, mode: ScoringMode) -> list[str]:
    summary = run.summary.modes[mode]
    reasons = []
    if summary.missing_tasks:
        reasons.append(f"missing {','.join(summary.missing_tasks)}")
    lost = [f"{t}/{d}" for t, ids in summary.missing_datasets.items() for d in ids] + list(summary.uncounted_datasets)
    if lost:
        reasons.append(f"datasets lost: {','.join(lost)}")
    reasons += run.summary.subset
    if run.summary.infra_error_case_ids:
        reasons.append(f"{len(run.summary.infra_error_case_ids)} infra errors")
    return reasons


def _parse_rate(run: LoadedRun) -> float | None:
    ok = sum(p.outcomes.get("ok", 0) for p in run.summary.parse.values())
    answered = sum(p.n_cases - p.outcomes.get("infra_error", 0) for p in run.summary.parse.values())
    return report_float(ok / answered if answered else None)


def _cell(estimate: float | None, low: float | None, high: float | None) -> Cell:
    return Cell(score=report_float(estimate), low=report_float(low), high=report_float(high))


def run_row(run: LoadedRun, options: BoardOptions) -> tuple[BoardRow, list[SliceRow]]:
    summary = run.summary.modes[options.mode]
    table = case_table(run.judgements, options.mode, run.scenarios)
    intervals = run_intervals(table, summary, options.resamples, options.seed)
    reasons = _partial_reasons(run, options.mode)
    row = BoardRow(
        rank=None,
        model=run.label,
        source="run",
        u2=_cell(intervals.u2.estimate, intervals.u2.low, intervals.u2.high),
        u2_over_present_tasks=_cell(
            intervals.u2_over_present.estimate, intervals.u2_over_present.low, intervals.u2_over_present.high
        ),
        tasks={k: _cell(i.estimate, i.low, i.high) for k, i in intervals.tasks.items()},
        parse_rate=_parse_rate(run),
        infra_errors=len(run.summary.infra_error_case_ids),
        partial=bool(reasons),
        partial_reasons=reasons,
        subset=bool(run.summary.subset),
        n_cases=len(run.judgements),
        dataset=dataset_label(run.manifest.dataset),
        prompt_variant=run.manifest.prompt_variant,
        run=_short(run.folder),
        stale_summary=run.stale_summary,
        grounded=grounded_cells(run.folder, run.summary, options.mode) if options.grounded else None,
    )
    slices = slice_rows(table, summary, options.by, options.resamples, options.seed) if options.by else []
    return row, slices


def published_rows(path: Path = PUBLISHED_CSV) -> list[BoardRow]:
    """The paper's leaderboard as reference rows: task scores on the U2 scale ('-' counts 0, as published)."""
    with path.open(encoding="utf-8", newline="") as handle:
        records = list(csv.DictReader(handle))
    rows = []
    for record in records:
        tasks = {}
        for key, column in _PUBLISHED_COLUMNS.items():
            raw = record[column]
            value = 0.0 if raw == "-" else float(raw)  # '-' (not computed) counts 0, as in the paper's U2
            tasks[key] = Cell(score=report_float(clip01(task_score(get_task(key), value))))
        u2 = float(record["u2_published"])
        rows.append(
            BoardRow(
                rank=None,
                model=record["model"],
                source="published",
                u2=Cell(score=u2),
                u2_over_present_tasks=Cell(score=u2),
                tasks=tasks,
                parse_rate=None,
                infra_errors=None,
                partial=False,
                partial_reasons=[],
                n_cases=None,
                dataset="U2-Bench paper (official scorer)",
                prompt_variant="official",
                run=None,
            )
        )
    return rows


def rank(rows: Sequence[BoardRow]) -> list[BoardRow]:
    """Rows with a U2-Score over all their cases by it (descending; equal 4-decimal scores share a rank), then,
    unranked, the others: runs over part of the cases by their U2-Score, runs missing a task by their score
    over the tasks present. A run on a handful of cases per dataset can land anywhere: it is shown, not ranked."""

    def key(row: BoardRow) -> tuple[float, str]:
        return (-(row.u2.score if row.u2.score is not None else -1.0), row.model)

    scored = sorted((r for r in rows if r.u2.score is not None and not r.subset), key=key)
    unscored = sorted(
        (r for r in rows if r.u2.score is None or r.subset),
        key=lambda r: (r.u2.score is None, -((r.u2.score or r.u2_over_present_tasks.score) or 0.0), r.model),
    )
    ranked: list[BoardRow] = []
    previous: tuple[float, int] | None = None
    for position, row in enumerate(scored, start=1):
        rounded = round(row.u2.score or 0.0, 4)
        place = previous[1] if previous is not None and previous[0] == rounded else position
        previous = (rounded, place)
        ranked.append(row.model_copy(update={"rank": place}))
    return ranked + list(unscored)


def build_board(paths: Sequence[Path], options: BoardOptions) -> Board:
    """Find, re-score, check and rank the runs under ``paths``."""
    runs = [load_run(folder) for folder in find_runs(list(paths))]
    check_compatible(runs, options.mode)
    rows: list[BoardRow] = []
    slices: list[SliceEntry] = []
    for run in runs:
        row, cut = run_row(run, options)
        rows.append(row)
        slices += [SliceEntry(model=row.model, run=row.run or "", row=s) for s in cut]
    if options.published:
        rows += published_rows()
    return Board(
        mode=options.mode,
        resamples=options.resamples,
        seed=options.seed,
        confidence=CONFIDENCE,
        datasets=sorted({r.dataset for r in rows if r.source == "run"}),
        tasks=[
            TaskColumn(key=t.key, name=t.name, capability=t.capability, weight=t.weight, metric=t.primary_metric)
            for t in all_tasks()
        ],
        rows=rank(rows),
        by=options.by,
        slices=slices,
        grounded=options.grounded,
    )
