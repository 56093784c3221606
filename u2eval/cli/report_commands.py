"""``u2eval leaderboard`` and ``ablate``: rank stored runs, and compare prompt variants with paired statistics."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, cast

import typer
from rich.markup import escape
from rich.table import Table

from u2eval.cli.common import (
    EXIT_INFRA,
    AttemptsOpt,
    BaseUrlOpt,
    CaseIdOpt,
    ConcurrencyOpt,
    DataOpt,
    LimitOpt,
    MaxTokensOpt,
    ModelArgOpt,
    RevisionOpt,
    RpmOpt,
    SeedOpt,
    TasksOpt,
    TemperatureOpt,
    TimeoutOpt,
    TopPOpt,
    TpmOpt,
    app,
    check_choice,
    comma_list,
    console,
    out,
    progress_bar,
    read_case_ids,
)
from u2eval.cli.run_commands import _interrupted
from u2eval.errors import ConfigError

if TYPE_CHECKING:
    from u2eval.records import ScoringMode
    from u2eval.reports.slices import SliceBy
    from u2eval.run.runner import RunProgress


@app.command()
def leaderboard(
    runs: Annotated[list[Path], typer.Argument(help="run folders, or folders to search for run folders")],
    out_dir: Annotated[Path, typer.Option("--out", help="where to write the leaderboard files")] = Path(
        "results/leaderboard"
    ),
    published: Annotated[bool, typer.Option("--published", help="add the paper's 22 rows for reference")] = False,
    by: Annotated[str | None, typer.Option(help="also cut every run by task, dataset, anatomy or scenario")] = None,
    mode: Annotated[str, typer.Option(help="strict (headline), reference, or judged")] = "strict",
    bootstrap: Annotated[int, typer.Option(min=10, help="bootstrap resamples")] = 1000,
    bootstrap_seed: Annotated[int, typer.Option(help="bootstrap seed")] = 0,
    plots: Annotated[bool, typer.Option(help="write PNG plots (needs matplotlib)")] = True,
    grounded: Annotated[
        bool, typer.Option("--grounded", help="add region scores and grounded metrics as columns (not ranked)")
    ] = False,
) -> None:
    """Rank run folders, re-scored from their stored answers, with bootstrap confidence intervals."""
    from u2eval.reports.leaderboard import BoardOptions, build_board
    from u2eval.reports.leaderboard_files import write_board
    from u2eval.reports.leaderboard_text import u2_text

    if by is not None:
        check_choice("--by", by, ("task", "dataset", "anatomy", "scenario"))
    check_choice("--mode", mode, ("strict", "reference", "judged"))
    options = BoardOptions(
        mode=cast("ScoringMode", mode),
        resamples=bootstrap,
        seed=bootstrap_seed,
        published=published,
        by=cast("SliceBy | None", by),
        grounded=grounded,
    )
    with progress_bar("re-scoring runs, then intervals", detailed=True) as (bar, job):
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
    controls: Annotated[
        str | None,
        typer.Option(
            help="comma list of controls run with the baseline's prompt: no-image (grey), text-only, other-image"
        ),
    ] = None,
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
    """Run prompt variants and controls on the same cases with one model (or compare two runs): McNemar per task."""
    from u2eval.models.registry import parse_model_args
    from u2eval.reports.ablation import PRESETS, AblationOptions, compare_folders, run_ablation
    from u2eval.reports.ablation_report import render_markdown, write_report

    check_choice("--mode", mode, ("strict", "reference"))
    chosen = PRESETS.get(preset or "", {})
    if preset is not None and not chosen:
        raise ConfigError(f"unknown ablation preset {preset!r}; presets: {', '.join(PRESETS)}")
    selection = comma_list(anatomy) or chosen.get("anatomy")
    selection = tuple(a.lower() for a in selection) if selection else None
    if compare is not None:
        if model is not None or variants is not None or controls is not None:
            raise ConfigError(
                "--compare takes two run folders; it cannot be combined with --model, --variants or --controls"
            )
        report = compare_folders(
            compare[0], compare[1], cast("ScoringMode", mode), bootstrap, bootstrap_seed, selection
        )
        folder = out_dir or Path("results") / f"compare__{compare[0].name}__{compare[1].name}"
    else:
        checks = comma_list(controls)
        if checks is not None and not checks:
            raise ConfigError("--controls is empty; controls: no-image, text-only, other-image")
        # With controls alone, the baseline is our default prompt.
        names = comma_list(variants) or chosen.get("variants") or (("ours",) if checks else None)
        if model is None or not names:
            raise ConfigError(
                "give --model and --variants (or --preset anatomy, or --controls), or --compare RUN_A RUN_B"
            )
        options = AblationOptions(
            model=model,
            variants=names,
            controls=checks or (),
            data=data,
            tasks=comma_list(tasks),
            limit=limit,
            anatomy=selection,
            seed=seed,
            out=out_dir,
            mode=cast("ScoringMode", mode),
            resamples=bootstrap,
            bootstrap_seed=bootstrap_seed,
            concurrency=concurrency,
            base_url=",".join(u for value in base_url for u in comma_list(value) or ()) if base_url else None,
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
                "case_ids": read_case_ids(case_id),
            },
        )
        with progress_bar("cases", detailed=True) as (bar, job):

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
