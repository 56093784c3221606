"""``u2eval tasks``, ``models`` and ``data``: what the benchmark and the adapters offer, and the data made or
checked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from u2eval.cli.common import EXIT_DATA, app, comma_list, console, data_app, out, progress_bar
from u2eval.errors import ConfigError


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

    with progress_bar("cases", detailed=True) as (bar, job):
        report = synth_command(
            out_dir, full=full, seed=seed, progress=lambda done, total: bar.update(job, completed=done, total=total)
        )
    out.print(report.summary())


def run_data_check(data: str, revision: str | None, tasks: str | None, json_out: Path | None) -> None:
    """Run the first-contact check on a data source, print it, write the JSON; exit 1 on any problem."""
    from u2eval.benchmark.tasks import select_tasks
    from u2eval.data.check import check_data, print_check
    from u2eval.data.sources import resolve_source

    selected = select_tasks(comma_list(tasks))
    source = resolve_source(data, revision=revision, tasks=selected)
    with progress_bar("rows") as (bar, job):
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
    run_data_check(data, revision, tasks, json_out)
