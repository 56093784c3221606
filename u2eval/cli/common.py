"""What the commands of ``u2eval`` share: the app and its ``data`` group, the two consoles (stdout for
results, stderr for everything else), the options several commands take, exit codes and small helpers."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
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
from rich.text import Text

from u2eval.errors import ConfigError

if TYPE_CHECKING:
    pass

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
QuirkOpt = Annotated[
    list[str] | None,
    typer.Option("--quirk", help="NAME=off (or =on): switch one quirk of the reference mode; repeat; docs/scoring.md"),
]


EXIT_DATA = 1  # u2eval data check (run --check-only): the data would lose or misjudge cases
EXIT_USAGE = 2
EXIT_INFRA = 3
EXIT_INTERRUPTED = 130  # Ctrl-C, as shells report it
EXIT_NOT_IN_SOURCE = 4  # a replay whose source lacks answers for some cases: a rerun cannot help
EXIT_BATCH_PENDING = 5  # run --batch: batches still in progress, nothing scored yet; run again to collect
SOURCE_GAPS = frozenset({"missing", "recorded_failure"})  # what a replay's infra errors mean: not in the source


class _Rate(ProgressColumn):
    """Cases per second over the last moments (rich keeps the samples)."""

    def render(self, task: Task) -> Text:
        return Text(f"{task.speed:.1f}/s" if task.speed else "")


@contextmanager
def progress_bar(what: str, detailed: bool = False) -> Iterator[tuple[Progress, TaskID]]:
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


def read_case_ids(values: list[str] | None) -> frozenset[str] | None:
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


def comma_list(value: str | None) -> tuple[str, ...] | None:
    """A comma list; None when the option was not given (an empty list given is kept: it is a mistake that
    the option's reader names, never a silent 'all')."""
    if value is None:
        return None
    return tuple(p.strip() for p in value.split(",") if p.strip())


def check_choice(flag: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{flag} must be one of {', '.join(choices)}, not {value!r}")
