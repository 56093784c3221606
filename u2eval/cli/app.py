"""The ``u2eval`` command line. Logging is configured here and nowhere else.

Every user mistake (a bad flag value, an unknown model or task, a missing folder) ends as one red line and
exit code 2, without a traceback. A run that finished with infra errors exits 3: its scores exclude them.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, cast, get_args, get_origin

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text
from typer.core import TyperArgument, TyperOption

from u2eval.errors import ConfigError, U2EvalError

if TYPE_CHECKING:
    from u2eval.records import ScoringMode
    from u2eval.reports.slices import SliceBy, SliceRow
    from u2eval.run.runner import RunProgress

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Evaluate vision-language models on U2-Bench (ultrasound).",
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(no_args_is_help=True, help="Make or inspect U2-Bench data.")
app.add_typer(data_app, name="data")

# Piped or redirected output has no terminal to fit: tables are then drawn wide enough that a label is never
# wrapped mid-word (rich would assume 80 columns); a terminal, or COLUMNS, keeps its own width.
_PIPED_WIDTH = 220
console = Console(stderr=True, width=None if sys.stderr.isatty() or "COLUMNS" in os.environ else _PIPED_WIDTH)
out = Console(width=None if sys.stdout.isatty() or "COLUMNS" in os.environ else _PIPED_WIDTH)

# Options run and ablate share (ablate runs each variant as `run` would).
DataOpt = Annotated[str, typer.Option(help="sample, a local folder in the U2-Bench layout, hub, or hf:OWNER/NAME@REV")]
TasksOpt = Annotated[str | None, typer.Option(help="comma list of task keys, e.g. dd,ll (default: all of them)")]
LimitOpt = Annotated[int | None, typer.Option(min=1, help="at most N cases per source dataset")]
SeedOpt = Annotated[int, typer.Option(help="seed for sampling and the random baseline")]
RevisionOpt = Annotated[str | None, typer.Option(help="dataset revision on the hub")]
ConcurrencyOpt = Annotated[int | None, typer.Option(min=1, help="requests in flight")]
BaseUrlOpt = Annotated[
    list[str] | None,
    typer.Option(help="base URL of an OpenAI-compatible server; repeat it (or use commas) to balance over several"),
]
RpmOpt = Annotated[float | None, typer.Option(min=0.001, help="at most this many requests a minute")]
TpmOpt = Annotated[float | None, typer.Option(min=1, help="at most this many tokens (in + out) a minute")]
TimeoutOpt = Annotated[float | None, typer.Option(min=0.001, help="seconds per attempt (default 180)")]
AttemptsOpt = Annotated[int | None, typer.Option(min=1, help="attempts per request (default 4)")]
TemperatureOpt = Annotated[
    float | None, typer.Option(min=0.0, help="sampling temperature (default: the preset's, else 0)")
]
TopPOpt = Annotated[float | None, typer.Option(min=0.0, max=1.0, help="nucleus sampling (default 1)")]
MaxTokensOpt = Annotated[int | None, typer.Option(min=1, help="the answer's token budget (default 1024)")]
ModelArgOpt = Annotated[
    list[str] | None,
    typer.Option("--model-arg", "-M", help="provider argument key=value (JSON values; dotted keys nest); repeat"),
]
CaseIdOpt = Annotated[
    list[str] | None, typer.Option("--case-id", help="only this case (repeat), or @FILE with one case id per line")
]


EXIT_DATA = 1  # u2eval data check (run --check-only): the data would lose or misjudge cases
EXIT_USAGE = 2
EXIT_INFRA = 3
EXIT_INTERRUPTED = 130  # Ctrl-C, as shells report it
EXIT_NOT_IN_SOURCE = 4  # a replay whose source lacks answers for some cases: a rerun cannot help
SOURCE_GAPS = frozenset({"missing", "recorded_failure"})  # what a replay's infra errors mean: not in the source


class _Rate(ProgressColumn):
    """Cases per second over the last moments (rich keeps the samples)."""

    def render(self, task: Task) -> Text:
        return Text(f"{task.speed:.1f}/s" if task.speed else "")


@contextmanager
def _bar(what: str, detailed: bool = False) -> Iterator[tuple[Progress, TaskID]]:
    """A progress bar on the terminal (none when stderr is not one): done of total, elapsed; ``detailed``:
    also the rate, the time left and the task's ``info`` field (retries, infra errors)."""
    columns: list[ProgressColumn | str] = [TextColumn(f"[bold]{what}"), BarColumn(), MofNCompleteColumn()]
    if detailed:
        columns += [_Rate(), "ETA", TimeRemainingColumn()]
    columns.append(TimeElapsedColumn())
    if detailed:
        columns.append(TextColumn("{task.fields[info]}"))
    with Progress(*columns, console=console, transient=True, disable=not console.is_terminal) as bar:
        yield bar, bar.add_task(what, total=None, info="")


def _case_ids(values: list[str] | None) -> frozenset[str] | None:
    """--case-id values: ids, or @FILE naming a file of ids (one a line; blank lines and # comments skipped)."""
    if not values:
        return None
    ids: set[str] = set()
    for value in values:
        if value.startswith("@"):
            path = Path(value[1:])
            try:
                lines = path.read_text(encoding="utf-8").splitlines()
            except OSError as exc:
                raise ConfigError(f"--case-id {value}: cannot read {path} ({exc.strerror or exc})") from exc
            ids |= {line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")}
        else:
            ids.add(value.strip())
    return frozenset(ids)


def _split(value: str | None) -> tuple[str, ...] | None:
    """A comma list; None when the option was not given (an empty list given is kept: it is a mistake that
    the option's reader names, never a silent 'all')."""
    if value is None:
        return None
    return tuple(p.strip() for p in value.split(",") if p.strip())


@app.command()
def run(
    model: Annotated[str, typer.Option("--model", "-m", help="random, replay/PATH, provider/model or a preset")],
    data: DataOpt = "sample",
    tasks: TasksOpt = None,
    limit: LimitOpt = None,
    seed: SeedOpt = 0,
    out_dir: Annotated[Path | None, typer.Option("--out", help="run folder (re-running it resumes)")] = None,
    revision: RevisionOpt = None,
    prompt_source: Annotated[str, typer.Option(help="ours or dataset (the TSV's own prompt column)")] = "ours",
    no_anatomy: Annotated[bool, typer.Option("--no-anatomy", help="do not name the anatomy in prompts")] = False,
    concurrency: ConcurrencyOpt = None,
    base_url: BaseUrlOpt = None,
    rpm: RpmOpt = None,
    tpm: TpmOpt = None,
    timeout: TimeoutOpt = None,
    max_attempts: AttemptsOpt = None,
    shard: Annotated[
        str | None, typer.Option(help="i/n: only the i-th of n deterministic shards (0-based); join with u2eval merge")
    ] = None,
    grounded: Annotated[
        bool, typer.Option("--grounded", help="also score the answers' boxes, masks and points (grounded.json)")
    ] = False,
    box_convention: Annotated[
        str | None, typer.Option(help="how the model writes boxes in text (default: its preset's); docs/grounded.md")
    ] = None,
    check_only: Annotated[
        bool, typer.Option("--check-only", help="check the data as `u2eval data check` does, and run nothing")
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="start the --out folder afresh when it holds another run")
    ] = False,
    temperature: TemperatureOpt = None,
    top_p: TopPOpt = None,
    max_tokens: MaxTokensOpt = None,
    model_arg: ModelArgOpt = None,
    case_id: CaseIdOpt = None,
) -> None:
    """Evaluate a model; stored answers are reused, so an interrupted run resumes where it stopped."""
    if check_only:
        _check(data, revision, tasks, None)
        return
    from u2eval.benchmark.prompts import PromptOptions
    from u2eval.models.registry import parse_model_args
    from u2eval.run.runner import RunOptions, default_folder
    from u2eval.run.runner import run as run_eval
    from u2eval.run.shards import parse_shard
    from u2eval.scoring.summary_report import print_summary

    if prompt_source not in ("ours", "dataset"):
        raise ConfigError(f"--prompt-source must be 'ours' or 'dataset', not {prompt_source!r}")
    options = RunOptions(
        model=model,
        data=data,
        revision=revision,
        tasks=_split(tasks),
        limit=limit,
        seed=seed,
        out=out_dir,
        prompt=PromptOptions(source=prompt_source, anatomy=not no_anatomy),  # type: ignore[arg-type]
        concurrency=concurrency,
        base_url=",".join(u for value in base_url for u in _split(value) or ()) if base_url else None,
        rpm=rpm,
        tpm=tpm,
        timeout_s=timeout,
        max_attempts=max_attempts,
        shard=parse_shard(shard) if shard is not None else None,
        grounded=grounded,
        box_convention=box_convention,
        force=force,
        temperature=temperature,
        top_p=top_p,
        max_tokens=max_tokens,
        model_args=parse_model_args(model_arg or []),
        case_ids=_case_ids(case_id),
    )
    with _bar("cases", detailed=True) as (bar, job):

        def show(at: RunProgress) -> None:
            info = f"retries {at.retries} · infra errors {at.infra_errors}" if at.retries or at.infra_errors else ""
            bar.update(job, completed=at.done, total=at.total, info=info)

        try:
            result = run_eval(options, progress=show)
        except KeyboardInterrupt:
            _interrupted(options.out or default_folder(options))
    print_summary(result.summary, out)
    if result.manifest.grounded:  # asked for now, or earlier in this folder (it stays on)
        _print_grounded(result.folder)
    console.print(f"run folder: {result.folder}  (requested {result.requested}, reused {result.reused} stored answers)")
    if result.data_errors:
        console.print(
            f"[yellow]{len(result.data_errors)} unreadable row(s) or file(s) skipped; "
            "summary.md and manifest.json list them"
        )
    kinds = result.summary.infra_errors_by_kind
    not_in_source = sum(n for kind, n in kinds.items() if kind in SOURCE_GAPS) if model.startswith("replay") else 0
    if not_in_source:
        console.print(
            f"[red]{not_in_source} case(s) have no answer in the replay source (or only a failure it recorded); "
            "they are not scored, and running again cannot help: the source has to hold them."
        )
    if result.infra_errors > not_in_source:
        console.print(
            f"[red]{result.infra_errors - not_in_source} case(s) failed for infrastructure reasons; they are "
            "excluded from the scores. Run the same command again to retry them."
        )
        raise typer.Exit(EXIT_INFRA)
    if not_in_source:
        raise typer.Exit(EXIT_NOT_IN_SOURCE)


def _interrupted(folder: Path) -> None:
    """Ctrl-C: one line saying what is kept and how to go on, and the shell's status for an interrupt."""
    from u2eval.run.store import ResponseStore

    stored = len(ResponseStore(folder)) if folder.is_dir() else 0
    console.print(
        f"interrupted: {stored} answer(s) are stored in {escape(str(folder))}; run the same command again to "
        "resume (nothing stored is asked again)"
    )
    raise typer.Exit(EXIT_INTERRUPTED)


@app.command()
def merge(
    runs: Annotated[list[Path], typer.Argument(help="the run folders of all n shards (u2eval run --shard i/n)")],
    out_dir: Annotated[Path, typer.Option("--out", help="the merged run folder (new, or an earlier merge)")],
) -> None:
    """Combine the shard runs of one run into a single run folder, scored like an unsharded run."""
    from u2eval.run.merge import merge_runs
    from u2eval.scoring.summary_report import print_summary

    result = merge_runs(runs, out_dir)
    print_summary(result.summary, out)
    console.print(f"merged run folder: {result.folder}  ({result.manifest.n_cases} cases from {len(runs)} shards)")
    if result.infra_errors:
        shards = ", ".join(str(p) for p in result.infra_shards)
        console.print(
            f"[red]{result.infra_errors} case(s) failed for infrastructure reasons; they are excluded from the "
            f"scores. Re-run these shards, then merge again: {escape(shards)}"
        )
        raise typer.Exit(EXIT_INFRA)


@app.command()
def score(
    run_dir: Annotated[Path, typer.Argument(help="a run folder")],
    by: Annotated[str | None, typer.Option(help="also cut the run by task, dataset, anatomy or scenario")] = None,
    mode: Annotated[str, typer.Option(help="scoring mode of the --by table: strict or reference")] = "strict",
    bootstrap: Annotated[int, typer.Option(min=10, help="bootstrap resamples for the --by intervals")] = 1000,
    bootstrap_seed: Annotated[int, typer.Option(help="bootstrap seed")] = 0,
    grounded: Annotated[
        bool, typer.Option("--grounded", help="also score the answers' regions (on by itself for a --grounded run)")
    ] = False,
    box_convention: Annotated[
        str | None, typer.Option(help="with --grounded: read boxes in text this way instead of the run's convention")
    ] = None,
) -> None:
    """Re-score a run from its stored answers, without calling any model."""
    import dataclasses

    from u2eval.run.folder import exclusive
    from u2eval.run.folder_scoring import grounded_options, score_folder
    from u2eval.scoring.summary_report import print_summary

    if not run_dir.is_dir():
        raise ConfigError(f"no such run folder: {run_dir}")
    if by is not None:
        _check_choice("--by", by, ("task", "dataset", "anatomy", "scenario"))
    _check_choice("--mode", mode, ("strict", "reference"))
    if box_convention is not None and not grounded:
        raise ConfigError("--box-convention only applies with --grounded")
    regions = grounded_options(run_dir, box_convention)
    regions = dataclasses.replace(regions, enabled=regions.enabled or grounded)
    # Recorded in the manifest: a later plain `u2eval score`, a resumed run and the leaderboard redo it.
    with exclusive(run_dir):  # never while a run writes it: it would score half a run, then be overwritten
        summary, judgements = score_folder(run_dir, grounded=regions)
    if grounded and not (run_dir / "manifest.json").is_file():
        console.print("[yellow]no manifest.json: the grounded settings are not recorded; pass --grounded again")
    print_summary(summary, out)
    if regions.enabled:
        _print_grounded(run_dir)
    if by is not None:
        from u2eval.reports.slices import slice_rows
        from u2eval.reports.uncertainty import case_table
        from u2eval.run.folder_scoring import read_run_cases

        scenarios = {c.case.case_id: c.case.scenario for c in read_run_cases(run_dir)}
        table = case_table(judgements, cast("ScoringMode", mode), scenarios)
        rows = slice_rows(table, summary.modes[mode], cast("SliceBy", by), bootstrap, bootstrap_seed)
        _print_slices(rows, f"by {by} ({mode}; {bootstrap} bootstrap resamples, seed {bootstrap_seed})")


def _print_grounded(folder: Path) -> None:
    from u2eval.grounded.report import print_grounded
    from u2eval.grounded.scorer import read_grounded

    summary = read_grounded(folder)
    if summary is not None:
        print_grounded(summary, out)


def _check_choice(flag: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{flag} must be one of {', '.join(choices)}, not {value!r}")


def _print_slices(rows: list[SliceRow], title: str) -> None:
    from u2eval.scoring.metrics import score_label

    table = Table(title=title)
    for column in ("task", "slice", "n", "counted", "metric", "score (U2 scale)", "95% CI", "parse rate"):
        table.add_column(column, justify="left" if column in ("task", "slice", "metric") else "right")
    for r in rows:
        ci = "–" if r.low is None or r.high is None else f"[{r.low:.3f}, {r.high:.3f}]"
        score = "–" if r.score is None else f"{r.score:.3f}"
        rate = "–" if r.parse_rate is None else f"{r.parse_rate:.3f}"
        table.add_row(r.task.upper(), r.value, str(r.n_cases), str(r.n_counted), score_label(r.metric), score, ci, rate)
    out.print(table)


@app.command()
def leaderboard(
    runs: Annotated[list[Path], typer.Argument(help="run folders, or folders to search for run folders")],
    out_dir: Annotated[Path, typer.Option("--out", help="where to write the leaderboard files")] = Path(
        "results/leaderboard"
    ),
    published: Annotated[bool, typer.Option("--published", help="add the paper's 22 rows for reference")] = False,
    by: Annotated[str | None, typer.Option(help="also cut every run by task, dataset, anatomy or scenario")] = None,
    mode: Annotated[str, typer.Option(help="strict (headline) or reference")] = "strict",
    bootstrap: Annotated[int, typer.Option(min=10, help="bootstrap resamples")] = 1000,
    bootstrap_seed: Annotated[int, typer.Option(help="bootstrap seed")] = 0,
    plots: Annotated[bool, typer.Option(help="write PNG plots (needs matplotlib)")] = True,
    grounded: Annotated[
        bool, typer.Option("--grounded", help="add region scores and grounded metrics as columns (not ranked)")
    ] = False,
) -> None:
    """Rank run folders, re-scored from their stored answers, with bootstrap confidence intervals."""
    from u2eval.reports.leaderboard import BoardOptions, build_board
    from u2eval.reports.leaderboard_files import u2_text, write_board

    if by is not None:
        _check_choice("--by", by, ("task", "dataset", "anatomy", "scenario"))
    _check_choice("--mode", mode, ("strict", "reference"))
    options = BoardOptions(
        mode=cast("ScoringMode", mode),
        resamples=bootstrap,
        seed=bootstrap_seed,
        published=published,
        by=cast("SliceBy | None", by),
        grounded=grounded,
    )
    with _bar("re-scoring runs, then intervals", detailed=True) as (bar, job):
        board = build_board(runs, options, progress=lambda done, total: bar.update(job, completed=done, total=total))
    written = write_board(board, out_dir, plots=plots)
    for title, rows in (
        (f"U2-Bench leaderboard ({mode})", [r for r in board.rows if r.apart is None]),
        ("Listed apart, unranked", [r for r in board.rows if r.apart is not None]),
    ):
        if not rows:
            continue
        table = Table(title=title)
        for column in ("rank", "model", "U2-Score [95% CI]", "parse rate", "infra", "partial"):
            table.add_column(column)
        table.add_column("why apart" if rows[0].apart else "run")
        for row in rows:
            table.add_row(
                "–" if row.rank is None else str(row.rank),
                escape(row.label or row.model) + (" (published)" if row.source == "published" else ""),
                u2_text(row),
                "–" if row.parse_rate is None else f"{row.parse_rate:.3f}",
                "–" if row.infra_errors is None else str(row.infra_errors),
                escape("; ".join(row.partial_reasons) or "no"),
                escape(row.apart or row.run or "published"),
            )
        out.print(table)
    for note in board.notes:
        out.print(escape(note))
    for line in board.skipped:
        console.print(f"[yellow]{escape(line)}[/yellow]")
    console.print(f"wrote {', '.join(str(p) for p in written)}")


@app.command()
def ablate(
    model: Annotated[str | None, typer.Option("--model", "-m", help="the model, as for u2eval run")] = None,
    variants: Annotated[
        str | None, typer.Option(help="comma list, first = baseline: ours, ours-noanatomy, ours-norole, ours-brief")
    ] = None,
    preset: Annotated[str | None, typer.Option(help="anatomy: the paper's design (breast, thyroid; ± anatomy)")] = None,
    compare: Annotated[
        tuple[Path, Path] | None, typer.Option("--compare", help="compare two existing runs instead: RUN_A RUN_B")
    ] = None,
    data: DataOpt = "sample",
    tasks: TasksOpt = None,
    anatomy: Annotated[str | None, typer.Option(help="only cases of these anatomies, e.g. breast,thyroid")] = None,
    limit: LimitOpt = None,
    seed: SeedOpt = 0,
    out_dir: Annotated[Path | None, typer.Option("--out", help="folder for the variant runs and the report")] = None,
    mode: Annotated[str, typer.Option(help="strict (headline) or reference")] = "strict",
    bootstrap: Annotated[int, typer.Option(min=10, help="bootstrap resamples")] = 1000,
    bootstrap_seed: Annotated[int, typer.Option(help="bootstrap seed")] = 0,
    revision: RevisionOpt = None,
    concurrency: ConcurrencyOpt = None,
    base_url: BaseUrlOpt = None,
    rpm: RpmOpt = None,
    tpm: TpmOpt = None,
    timeout: TimeoutOpt = None,
    max_attempts: AttemptsOpt = None,
    temperature: TemperatureOpt = None,
    top_p: TopPOpt = None,
    max_tokens: MaxTokensOpt = None,
    model_arg: ModelArgOpt = None,
    case_id: CaseIdOpt = None,
) -> None:
    """Run prompt variants on the same cases with one model (or compare two runs): McNemar per task."""
    from u2eval.models.registry import parse_model_args
    from u2eval.reports.ablation import PRESETS, AblationOptions, compare_folders, run_ablation
    from u2eval.reports.ablation_report import render_markdown, write_report

    _check_choice("--mode", mode, ("strict", "reference"))
    chosen = PRESETS.get(preset or "", {})
    if preset is not None and not chosen:
        raise ConfigError(f"unknown ablation preset {preset!r}; presets: {', '.join(PRESETS)}")
    selection = _split(anatomy) or chosen.get("anatomy")
    selection = tuple(a.lower() for a in selection) if selection else None
    if compare is not None:
        if model is not None or variants is not None:
            raise ConfigError("--compare takes two run folders; it cannot be combined with --model or --variants")
        report = compare_folders(
            compare[0], compare[1], cast("ScoringMode", mode), bootstrap, bootstrap_seed, selection
        )
        folder = out_dir or Path("results") / f"compare__{compare[0].name}__{compare[1].name}"
    else:
        names = _split(variants) or chosen.get("variants")
        if model is None or not names:
            raise ConfigError("give --model and --variants (or --preset anatomy), or --compare RUN_A RUN_B")
        options = AblationOptions(
            model=model,
            variants=names,
            data=data,
            tasks=_split(tasks),
            limit=limit,
            anatomy=selection,
            seed=seed,
            out=out_dir,
            mode=cast("ScoringMode", mode),
            resamples=bootstrap,
            bootstrap_seed=bootstrap_seed,
            concurrency=concurrency,
            base_url=",".join(u for value in base_url for u in _split(value) or ()) if base_url else None,
            run_settings={
                "revision": revision,
                "rpm": rpm,
                "tpm": tpm,
                "timeout_s": timeout,
                "max_attempts": max_attempts,
                "temperature": temperature,
                "top_p": top_p,
                "max_tokens": max_tokens,
                "model_args": parse_model_args(model_arg or []),
                "case_ids": _case_ids(case_id),
            },
        )
        with _bar("cases", detailed=True) as (bar, job):

            def show(variant: str, at: RunProgress) -> None:
                extra = (
                    f" · retries {at.retries} · infra errors {at.infra_errors}" if at.retries or at.infra_errors else ""
                )
                bar.update(
                    job, completed=at.done, total=at.total, description=variant, info=f"variant {variant}{extra}"
                )

            try:
                report, folder = run_ablation(options, progress=show)
            except KeyboardInterrupt:
                _interrupted(out_dir or Path("results"))
    written = write_report(report, folder)
    sys.stdout.write(render_markdown(report))  # raw Markdown: rich would wrap its table lines
    console.print(f"wrote {', '.join(str(p) for p in written)}")
    if any(r.infra_errors for r in report.runs):
        console.print("[red]some cases failed for infrastructure reasons; they are left out of the comparison.")
        raise typer.Exit(EXIT_INFRA)


@app.command("tasks")
def list_tasks(
    data: Annotated[str, typer.Option(help="count cases in this source")] = "sample",
) -> None:
    """List the tasks with their datasets, weights and case counts."""
    from u2eval.benchmark.tasks import all_tasks
    from u2eval.data.reader import count_cases
    from u2eval.data.sources import resolve_source

    specs = all_tasks()
    counts = count_cases(resolve_source(data), specs)
    table = Table(title=f"U2-Bench tasks ({data})")
    for column in ("task", "name", "capability", "weight", "datasets", "cases"):
        table.add_column(column)
    for spec in specs:
        table.add_row(
            spec.key,
            spec.name,
            spec.capability,
            f"{spec.weight:.2f}",
            ", ".join(spec.dataset_ids),
            str(sum(counts.get(spec.key, {}).values())),
        )
    out.print(table)


@app.command()
def models(
    name: Annotated[str | None, typer.Argument(help="a preset or adapter to show in full")] = None,
    conventions: Annotated[
        bool, typer.Option("--box-conventions", help="list the box conventions of grounded answers instead")
    ] = False,
) -> None:
    """The model presets in a compact table (and the adapters); NAME shows one preset or adapter in full."""
    from u2eval.models.registry import ADAPTERS, list_presets, resolve_model

    if conventions:
        from u2eval.grounded.boxes import CONVENTIONS

        table = Table(title="box conventions (--box-convention, preset box_convention:)")
        table.add_column("convention")
        table.add_column("how boxes are written")
        for key, entry in CONVENTIONS.items():
            table.add_row(key, escape(entry.summary))  # the syntax has brackets rich would read as markup
        out.print(table)
        return
    if name is not None:
        if name in ADAPTERS:
            module, extra = ADAPTERS[name]
            install = f"pip install 'u2eval[{extra}]'" if extra else "built in"
            out.print(escape(f"adapter {name}: module {module}; install: {install}"))
            return
        resolved = resolve_model(name)
        if resolved.preset is None:
            raise ConfigError(f"{name!r} is not a preset; `u2eval models` lists them")
        for key, value in resolved.preset.model_dump(mode="json").items():
            out.print(f"{key}: {escape(json.dumps(value) if isinstance(value, dict | list) else str(value))}")
        return
    table = Table(title="presets (u2eval models NAME for one in full)")
    for column in ("preset", "adapter", "model"):
        table.add_column(column, overflow="fold")
    for preset in list_presets():
        table.add_row(preset.name, preset.adapter, preset.model)
    out.print(table)
    out.print(f"adapters: {', '.join(sorted(ADAPTERS))} (--model ADAPTER/MODEL_ID, or a preset, or a preset file)")


@data_app.command("synth")
def data_synth(
    out_dir: Annotated[Path, typer.Option("--out", help="folder to write the dataset into")],
    full: Annotated[bool, typer.Option("--full", help="all 7,241 cases with realistic image sizes")] = False,
    seed: Annotated[int, typer.Option(help="generator seed")] = 0,
) -> None:
    """Write deterministic synthetic data in the exact U2-Bench layout."""
    from u2eval.data.synth.generate import synth_command

    with _bar("cases", detailed=True) as (bar, job):
        report = synth_command(
            out_dir, full=full, seed=seed, progress=lambda done, total: bar.update(job, completed=done, total=total)
        )
    out.print(report.summary())


def _check(data: str, revision: str | None, tasks: str | None, json_out: Path | None) -> None:
    """Run the first-contact check on a data source, print it, write the JSON; exit 1 on any problem."""
    from u2eval.benchmark.tasks import select_tasks
    from u2eval.data.check import check_data, print_check
    from u2eval.data.sources import resolve_source

    selected = select_tasks(_split(tasks))
    source = resolve_source(data, revision=revision, tasks=selected)
    with _bar("rows") as (bar, job):
        check = check_data(source, selected, progress=lambda done, total: bar.update(job, completed=done, total=total))
    print_check(check, out)
    if json_out is not None:
        json_out.write_text(check.model_dump_json(indent=2) + "\n", encoding="utf-8")
        console.print(f"report: {json_out}")
    if not check.ok:
        raise typer.Exit(EXIT_DATA)


@data_app.command("check")
def data_check(
    data: Annotated[
        str, typer.Argument(help="a local folder in the U2-Bench layout, hub, hf:OWNER/NAME@REV or sample")
    ],
    tasks: Annotated[str | None, typer.Option(help="comma list of task keys (default: all of them)")] = None,
    revision: Annotated[str | None, typer.Option(help="dataset revision on the hub")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="also write the report as JSON to this file")] = None,
) -> None:
    """First contact with a dataset folder: every file, column, dataset id, truth cell and image, checked.
    Exits 1 when a run on it would lose or misjudge cases."""
    _check(data, revision, tasks, json_out)


def _version(value: bool) -> None:
    if value:
        from u2eval.provenance import version

        out.print(f"u2eval {version()}")
        raise typer.Exit()


@app.callback()
def _root(
    show_version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="print u2eval's version and exit"),
    ] = False,
) -> None:
    """Evaluate vision-language models on U2-Bench (ultrasound)."""


_METAVARS: dict[type, str] = {int: "N", float: "X", str: "TEXT", Path: "PATH"}


def _tidy_help(command: object) -> None:
    """Help without type noise: a flag shows no value, an option a short name for its value, an argument its
    name alone (``<bool>``, ``<list[Path]>`` say nothing a user needs)."""
    for param in getattr(command, "params", []):
        if isinstance(param, TyperOption) and param.is_flag:
            param.metavar = ""
        elif isinstance(param, TyperOption) and param.metavar is None:
            annotation: object = param.type_descriptor.annotation
            inner = get_args(annotation)[0] if get_origin(annotation) is list else annotation
            param.metavar = _METAVARS.get(inner, "TEXT") if isinstance(inner, type) else "TEXT"
        elif isinstance(param, TyperArgument):
            param.display_type_rich = lambda ctx: None  # type: ignore[method-assign]
    made = getattr(command, "get_help_option", None)
    if made is not None:  # --help is made when help is asked for, not listed among the params

        def help_option(ctx: object, made: Callable[[object], object] = made) -> object:
            option = made(ctx)
            if option is not None:
                option.metavar = ""  # type: ignore[attr-defined]
            return option

        command.get_help_option = help_option  # type: ignore[attr-defined]
    for sub in getattr(command, "commands", {}).values():
        _tidy_help(sub)


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        command = typer.main.get_command(app)
        _tidy_help(command)
        command(standalone_mode=True)
    except U2EvalError as exc:
        # escape: paths and specs such as hf:OWNER/NAME[@REV] contain brackets rich would read as markup
        console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(EXIT_USAGE)
