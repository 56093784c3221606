"""The ``u2eval`` command line. Logging is configured here and nowhere else.

Every user mistake (a bad flag value, an unknown model or task, a missing folder) ends as one red line and
exit code 2, without a traceback. A run that finished with infra errors exits 3: its scores exclude them.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from u2eval.errors import ConfigError, U2EvalError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Evaluate vision-language models on U2-Bench (ultrasound).",
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(no_args_is_help=True, help="Make or inspect U2-Bench data.")
app.add_typer(data_app, name="data")

console = Console(stderr=True)
out = Console()

EXIT_USAGE = 2
EXIT_INFRA = 3


def _split(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    parts = tuple(p.strip() for p in value.split(",") if p.strip())
    return parts or None


@app.command()
def run(
    model: Annotated[str, typer.Option("--model", "-m", help="random, replay/PATH, provider/model or a preset")],
    data: Annotated[
        str, typer.Option(help="sample, a local folder in the U2-Bench layout, hub, or hf:OWNER/NAME@REV")
    ] = ("sample"),
    tasks: Annotated[str | None, typer.Option(help="comma list of task keys, e.g. dd,ll (default: all 8)")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="at most N cases per source dataset")] = None,
    seed: Annotated[int, typer.Option(help="seed for sampling and the random baseline")] = 0,
    out_dir: Annotated[Path | None, typer.Option("--out", help="run folder (re-running it resumes)")] = None,
    revision: Annotated[str | None, typer.Option(help="dataset revision on the hub")] = None,
    prompt_source: Annotated[str, typer.Option(help="ours or dataset (the TSV's own prompt column)")] = "ours",
    no_anatomy: Annotated[bool, typer.Option("--no-anatomy", help="do not name the anatomy in prompts")] = False,
    concurrency: Annotated[int | None, typer.Option(min=1, help="requests in flight")] = None,
    base_url: Annotated[str | None, typer.Option(help="base URL of an OpenAI-compatible server")] = None,
) -> None:
    """Evaluate a model; stored answers are reused, so an interrupted run resumes where it stopped."""
    from u2eval.prompts import PromptOptions
    from u2eval.report import print_summary
    from u2eval.runner import RunOptions
    from u2eval.runner import run as run_eval

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
        base_url=base_url,
    )
    with Progress(
        TextColumn("[bold]cases"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    ) as bar:
        job = bar.add_task("cases", total=None)
        result = run_eval(options, progress=lambda done, total: bar.update(job, completed=done, total=total))
    print_summary(result.summary, out)
    console.print(f"run folder: {result.folder}  (requested {result.requested}, reused {result.reused} stored answers)")
    if result.data_errors:
        console.print(
            f"[yellow]{len(result.data_errors)} unreadable row(s) or file(s) skipped; "
            "summary.md and manifest.json list them"
        )
    if result.infra_errors:
        console.print(
            f"[red]{result.infra_errors} case(s) failed for infrastructure reasons; they are excluded from the "
            "scores. Run the same command again to retry them."
        )
        raise typer.Exit(EXIT_INFRA)


@app.command()
def score(run_dir: Annotated[Path, typer.Argument(help="a run folder")]) -> None:
    """Re-score a run from its stored answers, without calling any model."""
    from u2eval.report import print_summary
    from u2eval.runner import score_folder

    if not run_dir.is_dir():
        raise ConfigError(f"no such run folder: {run_dir}")
    summary, _ = score_folder(run_dir)
    print_summary(summary, out)


@app.command("tasks")
def list_tasks(
    data: Annotated[str, typer.Option(help="count cases in this source")] = "sample",
) -> None:
    """List the eight tasks with their datasets, weights and case counts."""
    from u2eval.data import count_cases, resolve_source
    from u2eval.tasks import all_tasks

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
def models() -> None:
    """List the adapters and the model presets."""
    from u2eval.adapters import ADAPTERS, list_presets

    table = Table(title="adapters")
    table.add_column("adapter")
    table.add_column("module")
    table.add_column("extra")
    for name, (module, extra) in sorted(ADAPTERS.items()):
        table.add_row(name, module, extra or "-")
    out.print(table)
    presets = Table(title="presets")
    for column in ("preset", "adapter", "model", "description"):
        presets.add_column(column)
    for preset in list_presets():
        presets.add_row(preset.name, preset.adapter, preset.model, preset.description)
    out.print(presets)


@data_app.command("synth")
def data_synth(
    out_dir: Annotated[Path, typer.Option("--out", help="folder to write the dataset into")],
    full: Annotated[bool, typer.Option("--full", help="all 7,241 cases with realistic image sizes")] = False,
    seed: Annotated[int, typer.Option(help="generator seed")] = 0,
) -> None:
    """Write deterministic synthetic data in the exact U2-Bench layout."""
    from u2eval.synth import synth_command

    report = synth_command(out_dir, full=full, seed=seed)
    out.print(report.summary())


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        app()
    except U2EvalError as exc:
        # escape: paths and specs such as hf:OWNER/NAME[@REV] contain brackets rich would read as markup
        console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(EXIT_USAGE)
