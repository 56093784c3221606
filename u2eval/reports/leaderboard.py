"""One ranking from any number of run folders, each re-scored from its stored answers, with bootstrap CIs.

Runs are ranked together only when their numbers mean the same thing: scored on the same cases
(``u2eval.reports.comparability``: other case sets, runs on part of the cases and, beside the published rows, runs on
synthetic data are listed apart, unranked, each saying why) with the same task files (the manifest's task
hashes; different ones are refused in one line). The scoring mode is the same for every row by construction
(``--mode`` re-scores all runs in that mode). A folder that cannot be read (an unfinished run) is listed as
skipped, with why.

The paper's 22 published rows (``published.csv``, the official scorer's numbers) can be added as reference
rows marked ``published``: no interval, no parse rate, their U2-Score as published.
"""

from __future__ import annotations

import csv
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from u2eval.benchmark.tasks import all_tasks, task_keys
from u2eval.errors import ConfigError
from u2eval.records import ScoringMode
from u2eval.reports.comparability import PUBLISHED_ON_STRICT, partial_reasons, placement, row_labels
from u2eval.reports.grounded_board import GroundedCells, grounded_cells
from u2eval.reports.rundata import LoadedRun, find_runs, load_run
from u2eval.reports.slices import SliceBy, SliceRow, slice_rows
from u2eval.reports.uncertainty import case_table, run_intervals
from u2eval.resources import published_table
from u2eval.scoring.metrics import score_label
from u2eval.scoring.summary import report_float
from u2eval.scoring.table_rules import clip01, task_score
from u2eval.stats import CONFIDENCE, DEFAULT_RESAMPLES, DEFAULT_SEED

__all__ = ["Board", "BoardOptions", "BoardRow", "Cell", "build_board", "published_rows"]

PUBLISHED_CSV = published_table()


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Cell(_Frozen):
    score: float | None
    low: float | None = None
    high: float | None = None


class BoardRow(_Frozen):
    rank: int | None
    model: str
    label: str = ""  # the model and what tells this row apart from the others (settings, folder)
    apart: str | None = None  # why the row is listed apart and unranked (None: it shares the ranking)
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
    view: str | None = None  # the run's case browser (``u2eval view``), when it has been made
    stale_summary: bool = False
    grounded: GroundedCells | None = None  # with --grounded: region scores and grounded metrics (runs only)
    input_tokens: int | None = None  # summed over the answers that report usage (None: none does)
    output_tokens: int | None = None
    cost_usd: float | None = None  # what its answers cost at its list prices (None: no price known)
    judge_cost_usd: float | None = None  # its active judge's calls, counted apart


class TaskColumn(_Frozen):
    key: str
    name: str
    capability: str
    weight: float
    metric: str
    label: str = ""  # what the column's number is: accuracy, 1 − RMSE, BLEU-4 / 100


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
    notes: list[str] = []  # why rows are listed apart, in words
    skipped: list[str] = []  # folders that could not be read, and why


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


def _groups_line(groups: dict[str, list[str]]) -> str:
    return "; ".join(f"{label}: {', '.join(names)}" for label, names in groups.items())


def check_compatible(runs: Sequence[LoadedRun], mode: ScoringMode) -> None:
    """Refuse, in one line, runs whose numbers cannot share a board: other task definitions, another mode.
    (Other cases are not refused: those runs are listed apart, ``u2eval.reports.comparability``.)"""
    for key in task_keys():
        versions: dict[str, list[str]] = defaultdict(list)
        for run in runs:
            if key in run.manifest.tasks:
                versions[run.manifest.tasks[key][:10]].append(_short(run.folder))
        if len(versions) > 1:
            raise ConfigError(
                f"cannot rank these runs together: task {key} differs (task file sha256 "
                f"{_groups_line(versions)}); rank each group separately"
            )
    unscored = [_short(r.folder) for r in runs if mode not in r.summary.modes]
    if unscored:
        how = " (no judge has read them: u2eval judge RUN --model JUDGE)" if mode == "judged" else ""
        raise ConfigError(f"cannot rank these runs in {mode} mode: not a scoring mode of {', '.join(unscored)}{how}")
    if mode == "judged":
        judges: dict[str, list[str]] = defaultdict(list)
        for run in runs:
            assert run.summary.judge is not None  # a run with a judged mode has its judge
            judges[run.summary.judge.identity.name].append(_short(run.folder))
        if len(judges) > 1:
            raise ConfigError(
                f"cannot rank these runs in judged mode: other judges read them ({_groups_line(judges)}); have one "
                "judge read every run (u2eval judge RUN --model JUDGE) and rank again"
            )


def _load(folders: Sequence[Path], step: Callable[[], None]) -> tuple[list[LoadedRun], list[str]]:
    """The runs that can be read, and a line for each folder that cannot (an unfinished run, a broken file)."""
    runs: list[LoadedRun] = []
    skipped: list[str] = []
    for folder in folders:
        try:
            runs.append(load_run(folder))
        except ConfigError as exc:
            skipped.append(f"{_short(folder)}: skipped: {exc}")
        step()
    return runs, skipped


def _parse_rate(run: LoadedRun) -> float | None:
    ok = sum(p.outcomes.get("ok", 0) for p in run.summary.parse.values())
    answered = sum(p.n_cases - p.outcomes.get("infra_error", 0) for p in run.summary.parse.values())
    return report_float(ok / answered if answered else None)


def _cell(estimate: float | None, low: float | None, high: float | None) -> Cell:
    return Cell(score=report_float(estimate), low=report_float(low), high=report_float(high))


def _view_page(folder: Path) -> str | None:
    """The run's case browser as a file URI, when ``u2eval view`` has written it (a link only where it leads)."""
    page = folder / "view" / "index.html"
    return page.resolve().as_uri() if page.is_file() else None


def run_row(run: LoadedRun, options: BoardOptions) -> tuple[BoardRow, list[SliceRow]]:
    summary = run.summary.modes[options.mode]
    table = case_table(run.judgements_for(options.mode), options.mode, run.scenarios)
    intervals = run_intervals(table, summary, options.resamples, options.seed)
    reasons = partial_reasons(run, options.mode)
    total = run.summary.usage.get("total")
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
        view=_view_page(run.folder),
        stale_summary=run.stale_summary,
        grounded=grounded_cells(run, options.mode) if options.grounded else None,
        input_tokens=total.input_tokens if total is not None and total.cases_reporting else None,
        cost_usd=run.summary.cost.total.cost_usd if run.summary.cost is not None else None,
        judge_cost_usd=run.summary.cost.judge_usd if run.summary.cost is not None else None,
        output_tokens=total.output_tokens if total is not None and total.cases_reporting else None,
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
        for task in all_tasks():
            if task.official is None or task.official.published_column not in record:
                continue  # a task the paper never had: no published number
            key, raw = task.key, record[task.official.published_column]
            value = 0.0 if raw == "-" else float(raw)  # '-' (not computed) counts 0, as in the paper's U2
            tasks[key] = Cell(score=report_float(clip01(task_score(task, value))))
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
    """Rows with a U2-Score over all their cases that share the ranking, by it (descending; equal 4-decimal scores
    share a rank); then, unranked, runs missing a task by their score over the tasks present; then the rows
    listed apart (another case set, part of the cases, synthetic data beside published rows), by reason."""

    def key(row: BoardRow) -> tuple[float, str]:
        return (-(row.u2.score if row.u2.score is not None else -1.0), row.label or row.model)

    rankable = [r for r in rows if r.u2.score is not None and not r.subset and r.apart is None]
    scored = sorted(rankable, key=key)
    others = sorted(
        (r for r in rows if r not in rankable),
        key=lambda r: (
            r.apart is not None,
            r.apart or "",
            r.u2.score is None,
            -((r.u2.score or r.u2_over_present_tasks.score) or 0.0),
            r.label or r.model,
        ),
    )
    ranked: list[BoardRow] = []
    previous: tuple[float, int] | None = None
    for position, row in enumerate(scored, start=1):
        rounded = round(row.u2.score or 0.0, 4)
        place = previous[1] if previous is not None and previous[0] == rounded else position
        previous = (rounded, place)
        ranked.append(row.model_copy(update={"rank": place}))
    return ranked + list(others)


def _judge_note(runs: Sequence[LoadedRun], mode: ScoringMode) -> list[str]:
    """Who read the answers behind a judged board (every run has the same judge: ``check_compatible``)."""
    judge = runs[0].summary.judge if mode == "judged" else None
    if judge is None:
        return []
    identity = judge.identity
    return [
        f"Judged mode: strict plus the readings of judge {identity.name} ({identity.adapter}/{identity.model}) of "
        "the answers strict could not parse."
    ]


def _notes(rows: Sequence[BoardRow], published: bool) -> list[str]:
    apart = Counter(r.apart for r in rows if r.apart is not None)
    notes = [f"{n} row(s) listed apart, unranked: {why}." for why, n in sorted(apart.items())]
    if published:
        notes.append(
            "Published rows are the paper's numbers from the official scorer on the real 7,241 cases; a run shares "
            "their ranking only when scored on 7,241 real U2-Bench cases with nothing partial."
        )
    if any(r.u2.score is None and r.u2_over_present_tasks.score is not None for r in rows if r.source == "run"):
        notes.append(
            "A run missing a task has no U2-Score (strict never fills a task in): it is shown with its score over "
            "the tasks present, unranked."
        )
    return notes


def build_board(
    paths: Sequence[Path], options: BoardOptions, progress: Callable[[int, int], None] | None = None
) -> Board:
    """Find, re-score, check and rank the runs under ``paths``; list apart what cannot share the ranking.
    ``progress(steps done, steps)``: one step per folder re-scored, then one per run's intervals."""
    folders = find_runs(list(paths))
    done, total = 0, 2 * len(folders)  # until a folder turns out unreadable (it has no intervals to compute)

    def step() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    runs, skipped = _load(folders, step)
    total = len(folders) + len(runs)
    if not runs:
        raise ConfigError(f"no run folder could be read: {'; '.join(skipped)}")
    check_compatible(runs, options.mode)
    labels, apart = row_labels(runs), placement(runs, options.published, options.mode)
    rows: list[BoardRow] = []
    slices: list[SliceEntry] = []
    for run in runs:
        row, cut = run_row(run, options)
        step()
        row = row.model_copy(update={"label": labels[run.folder], "apart": apart[run.folder]})
        rows.append(row)
        slices += [SliceEntry(model=row.label, run=row.run or "", row=s) for s in cut]
    if options.published:
        apart_from_runs = None if options.mode == "reference" else PUBLISHED_ON_STRICT
        rows += [r.model_copy(update={"label": r.model, "apart": apart_from_runs}) for r in published_rows()]
    return Board(
        mode=options.mode,
        resamples=options.resamples,
        seed=options.seed,
        confidence=CONFIDENCE,
        datasets=sorted({r.dataset for r in rows if r.source == "run"}),
        tasks=[
            TaskColumn(
                key=t.key,
                name=t.name,
                capability=t.capability,
                weight=t.weight,
                metric=t.primary_metric,
                label=score_label(t.primary_metric),
            )
            for t in all_tasks()
        ],
        rows=rank(rows),
        by=options.by,
        slices=slices,
        grounded=options.grounded,
        notes=_judge_note(runs, options.mode) + _notes(rows, options.published and options.mode == "reference"),
        skipped=skipped,
    )
