"""``u2eval run``, ``merge`` and ``score``: evaluate a model, join a sharded run, score stored answers again."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, cast

import typer
from rich.markup import escape
from rich.table import Table

from u2eval.cli.common import (
    EXIT_BATCH_PENDING,
    EXIT_INFRA,
    EXIT_INTERRUPTED,
    EXIT_NOT_IN_SOURCE,
    SOURCE_GAPS,
    AttemptsOpt,
    BaseUrlOpt,
    CaseIdOpt,
    ConcurrencyOpt,
    DataOpt,
    LimitOpt,
    MaxTokensOpt,
    ModelArgOpt,
    QuirkOpt,
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
from u2eval.errors import ConfigError

if TYPE_CHECKING:
    from u2eval.records import ScoringMode
    from u2eval.reports.slices import SliceBy, SliceRow
    from u2eval.run.options import RunOptions
    from u2eval.run.runner import RunProgress, RunResult


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
    quirk: QuirkOpt = None,
    control: Annotated[
        str | None,
        typer.Option(
            help="a control in each case's image's place: no-image (grey), text-only or other-image (docs/ablation.md)"
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="estimate what the run would send and cost, per task; send nothing")
    ] = False,
    price: Annotated[
        str | None, typer.Option(help="in=USD,out=USD[,cached=,batch_in=,batch_out=] per million tokens")
    ] = None,
    max_cost: Annotated[
        float | None,
        typer.Option("--max-cost", min=0.0, help="USD: spent plus in flight never passes it; a rerun goes on"),
    ] = None,
    batch: Annotated[
        bool, typer.Option("--batch", help="through the provider's batch API (docs/batch.md); run again to collect")
    ] = False,
    wait: Annotated[bool, typer.Option("--wait", help="with --batch: poll until every batch is collected")] = False,
    poll_interval: Annotated[
        float | None, typer.Option(min=0.0, help="with --wait: seconds between polls (default 60)")
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(min=1, help="with --batch: at most N requests a batch (default: the provider's)")
    ] = None,
) -> None:
    """Evaluate a model; stored answers are reused, so an interrupted run resumes where it stopped."""
    if check_only:
        from u2eval.cli.info_commands import run_data_check  # the same check as `u2eval data check`

        run_data_check(data, revision, tasks, None)
        return
    from u2eval.benchmark.prompts import PromptOptions
    from u2eval.models.pricing import parse_price
    from u2eval.models.registry import parse_model_args
    from u2eval.run.runner import RunOptions
    from u2eval.run.shards import parse_shard
    from u2eval.scoring.summary_report import print_summary
    from u2eval.scoring.switches import parse_switches

    if prompt_source not in ("ours", "dataset"):
        raise ConfigError(f"--prompt-source must be 'ours' or 'dataset', not {prompt_source!r}")
    options = RunOptions(
        model=model,
        data=data,
        revision=revision,
        tasks=comma_list(tasks),
        limit=limit,
        seed=seed,
        out=out_dir,
        prompt=PromptOptions(source=prompt_source, anatomy=not no_anatomy),  # type: ignore[arg-type]
        concurrency=concurrency,
        base_url=",".join(u for value in base_url for u in comma_list(value) or ()) if base_url else None,
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
        quirks=parse_switches(quirk or []),
        case_ids=read_case_ids(case_id),
        control=control,
        price=parse_price(price) if price is not None else None,
        max_cost_usd=max_cost,
        **_batch_options(batch, wait, poll_interval, batch_size),
    )
    if dry_run:
        _print_estimate(options)
        return
    with progress_bar("cases", detailed=True) as (bar, job):

        def show(at: RunProgress) -> None:
            info = f"retries {at.retries} · infra errors {at.infra_errors}" if at.retries or at.infra_errors else ""
            info = " · ".join(filter(None, [at.note, info]))
            bar.update(job, completed=at.done, total=at.total, info=info)

        result = _evaluate(options, show)
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
    not_asked = kinds.get("budget", 0)
    if not_asked:
        budget_text = f" (${max_cost:,.2f})" if max_cost is not None else ""
        console.print(
            f"[yellow]the --max-cost budget{escape(budget_text)} was reached: {not_asked} case(s) not asked; every "
            "answer is stored. Run the same command with a higher --max-cost to go on."
        )
    if result.infra_errors > not_in_source + not_asked:
        console.print(
            f"[red]{result.infra_errors - not_in_source - not_asked} case(s) failed for infrastructure reasons; they "
            "are excluded from the scores. Run the same command again to retry them."
        )
    if result.infra_errors > not_in_source:
        raise typer.Exit(EXIT_INFRA)
    if not_in_source:
        raise typer.Exit(EXIT_NOT_IN_SOURCE)


def _batch_options(batch: bool, wait: bool, poll_interval: float | None, batch_size: int | None) -> dict[str, Any]:
    if not batch and (wait or poll_interval is not None or batch_size is not None):
        raise ConfigError("--wait, --poll-interval and --batch-size go with --batch")
    interval = 60.0 if poll_interval is None else poll_interval
    return {"batch": batch, "wait": wait, "poll_interval_s": interval, "batch_size": batch_size}


def _evaluate(options: RunOptions, show: Callable[[RunProgress], None]) -> RunResult:
    """The run; batches still in progress (``--batch``) and Ctrl-C are each one line and their own exit status."""
    from u2eval.run.batch import BatchesInProgress
    from u2eval.run.runner import default_folder
    from u2eval.run.runner import run as run_eval

    try:
        return run_eval(options, progress=show)
    except BatchesInProgress as pending:  # submitted, or still running: nothing to score yet
        console.print(escape(str(pending)), highlight=False)
        raise typer.Exit(EXIT_BATCH_PENDING) from None
    except KeyboardInterrupt:
        _interrupted(options.out or default_folder(options))


def _print_estimate(options: RunOptions) -> None:
    from u2eval.run.estimate import ESTIMATE_HEADER, estimate_notes, estimate_rows, estimate_run

    estimate = estimate_run(options)
    table = Table(title=f"Estimate (nothing sent): {estimate.model}")
    for i, column in enumerate(ESTIMATE_HEADER):
        table.add_column(column, justify="left" if i == 0 else "right")
    for row in estimate_rows(estimate):
        table.add_row(*row)
    out.print(table)
    for line in estimate_notes(estimate):
        out.print(escape(line), highlight=False)


def _interrupted(folder: Path) -> NoReturn:
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
    mode: Annotated[str, typer.Option(help="scoring mode of the --by table: strict, reference or judged")] = "strict",
    bootstrap: Annotated[int, typer.Option(min=10, help="bootstrap resamples for the --by intervals")] = 1000,
    bootstrap_seed: Annotated[int, typer.Option(help="bootstrap seed")] = 0,
    grounded: Annotated[
        bool, typer.Option("--grounded", help="also score the answers' regions (on by itself for a --grounded run)")
    ] = False,
    box_convention: Annotated[
        str | None, typer.Option(help="with --grounded: read boxes in text this way instead of the run's convention")
    ] = None,
    quirk: QuirkOpt = None,
    judge: Annotated[
        str | None,
        typer.Option(help="the judge behind the judged mode (its folder under judges/), or none"),
    ] = None,
) -> None:
    """Re-score a run from its stored answers, without calling any model."""
    import dataclasses

    from u2eval.run.folder import RunFolder
    from u2eval.run.locks import exclusive
    from u2eval.run.scoring_pass import score_folder
    from u2eval.scoring.summary_report import print_summary
    from u2eval.scoring.switches import parse_switches

    if not run_dir.is_dir():
        raise ConfigError(f"no such run folder: {run_dir}")
    if by is not None:
        check_choice("--by", by, ("task", "dataset", "anatomy", "scenario"))
    check_choice("--mode", mode, ("strict", "reference", "judged"))
    if box_convention is not None and not grounded:
        raise ConfigError("--box-convention only applies with --grounded")
    folder = RunFolder(run_dir)
    regions = folder.grounded_options(box_convention)
    regions = dataclasses.replace(regions, enabled=regions.enabled or grounded)
    with exclusive(run_dir):  # never while a run writes it: it would score half a run, then be overwritten
        # Recorded in the manifest: a later plain `u2eval score`, a resumed run and the leaderboard redo it.
        recorded = folder.record_grounded(regions)
        switches = None
        if quirk is not None:  # given: these switches from now on (none given: as the run recorded them)
            switches = parse_switches(quirk)
            recorded = folder.record_quirks(switches) and recorded
        if judge is not None:  # recorded in judges/active.json: every later re-score keeps it
            folder.set_active_judge(None if judge == "none" else judge)
        summary, judgements = score_folder(run_dir, grounded=regions, switches=switches)
    if (grounded or quirk is not None) and not recorded:
        console.print("[yellow]no manifest.json: these scoring settings are not recorded; give them again next time")
    print_summary(summary, out)
    if regions.enabled:
        _print_grounded(run_dir)
    if by is not None:
        from u2eval.reports.slices import slice_rows
        from u2eval.reports.uncertainty import case_table
        from u2eval.run.folder import RunFolder

        if mode == "judged":
            from u2eval.reports.rundata import load_run

            judgements = list(load_run(run_dir).judgements_for("judged"))
        scenarios = {c.case.case_id: c.case.scenario for c in RunFolder(run_dir).cases()}
        table = case_table(judgements, cast("ScoringMode", mode), scenarios)
        rows = slice_rows(table, summary.modes[mode], cast("SliceBy", by), bootstrap, bootstrap_seed)
        _print_slices(rows, f"by {by} ({mode}; {bootstrap} bootstrap resamples, seed {bootstrap_seed})")


def _print_grounded(folder: Path) -> None:
    from u2eval.grounded.report import print_grounded
    from u2eval.grounded.scorer import read_grounded

    summary = read_grounded(folder)
    if summary is not None:
        print_grounded(summary, out)


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
