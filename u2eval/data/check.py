"""The first-contact report on a dataset folder: would u2eval read every case, and judge each one right?

Two passes. The first reads the files' structure without decoding anything: per file its rows, the card's 17
columns present and missing, the dataset ids its rows resolve to and the names that resolve to none. The
second reads every case as a run does (every image decoded and checked, every options cell parsed) and reads
each truth cell the way strict mode will: labels inside the row's options, boxes and keypoints parsed,
measurement keys found, reports and captions non-empty. Anything that would lose or misjudge a case is a
problem, and ``DataCheck.ok`` is False; what is expected (27's unmeasured IMT) is counted, not a problem.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from u2eval.benchmark.sectors import NOT_VISIBLE
from u2eval.benchmark.tasks import TaskSpec
from u2eval.data.reader import iter_cases
from u2eval.data.rows import task_files, task_rows
from u2eval.data.sources import CARD_COLUMNS, EXPLANATION_FILE, DataSource
from u2eval.data.truth import Unread, read_label, read_location, read_measurement, read_text
from u2eval.errors import DataError
from u2eval.records import Case

MAX_EXAMPLES = 3
MAX_LISTED = 10  # unusable rows shown on the terminal; the JSON has them all
Progress = Callable[[int, int], None]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class FileReport(_Frozen):
    file: str  # "disease_diagnosis/21.tsv"
    rows: int  # data rows the reader takes (malformed ones are in the errors)
    columns_missing: list[str]  # of the card's 17
    columns_extra: list[str]
    datasets: dict[str, int]  # dataset id -> rows
    unknown_rows: int  # rows whose dataset_name names no dataset of the task
    unknown_names: list[str]  # the first few such names


class TruthReport(_Frozen):
    """How the truth cells of one dataset read in strict mode."""

    task: str
    dataset_id: str
    cases: int
    read: int  # truths strict can score against
    not_visible: int = 0  # detection: truths that say the structure is not in the image (read, and legitimate)
    options_differ: int = 0  # classification: rows whose options differ from the task file's label set
    unread: dict[str, int] = {}  # reason -> cases (truth_missing, truth_unreadable, truth_not_an_option)
    expected_unread: int = 0  # of those, the ones the dataset expects (27: IMT not measured)
    outside_range: int = 0  # regression: truths outside the prompt's value range (another unit?)
    examples: list[str] = []  # "case id: detail", the first few


class DataCheck(_Frozen):
    root: str
    kind: str
    tasks: list[str]
    files: list[FileReport]
    truths: list[TruthReport]
    images_read: int  # cases whose image decoded and checked
    errors: list[str]  # rows and files the reader cannot use, each "where: why"
    missing_datasets: list[str]  # "task/dataset": listed by the task files, no row in the folder
    not_understood: list[str]  # paths in the folder that no task reads
    problems: list[str]  # what would lose or misjudge cases; empty when ``ok``
    ok: bool


def _header(path: Path) -> list[str]:
    from u2eval.data import tsv

    with path.open("rb") as fh:
        first = next(tsv.records(tsv.text_lines(fh)), None)
    return [] if first is None or not isinstance(first, list) else [h.strip().lstrip("\ufeff") for h in first]


def _file_reports(source: DataSource, tasks: Sequence[TaskSpec]) -> tuple[list[FileReport], int]:
    reports: list[FileReport] = []
    total = 0
    for task in tasks:
        for path in task_files(source, task, lambda e: None):
            header = _header(path)
            datasets: Counter[str] = Counter()
            unknown: Counter[str] = Counter()
            for row in task_rows(source, task, path, lambda e: None):
                if row.dataset is None:
                    unknown[row.cell("dataset_name") or ""] += 1
                else:
                    datasets[row.dataset.id] += 1
            total += sum(datasets.values())
            reports.append(
                FileReport(
                    file=f"{task.folder}/{path.name}",
                    rows=sum(datasets.values()) + sum(unknown.values()),
                    columns_missing=[c for c in CARD_COLUMNS if c not in header],
                    columns_extra=[c for c in header if c not in CARD_COLUMNS],
                    datasets=dict(sorted(datasets.items())),
                    unknown_rows=sum(unknown.values()),
                    unknown_names=[repr(n) for n, _ in unknown.most_common(MAX_EXAMPLES)],
                )
            )
    return reports, total


def _truth(case: Case, task: TaskSpec) -> tuple[str | Unread, bool]:
    """The truth as strict reads it, and whether the row's options differ from the task file's labels."""
    ds = task.dataset(case.dataset_id)
    cell = case.columns.get(task.truth_column, case.truth)
    if task.capability == "classification":
        differ = {o.strip().lower() for o in case.options} != {label.lower() for label in ds.labels}
        return read_label(cell, ds, case.options or ds.labels), differ
    if task.capability == "detection":
        return read_location(cell, task.truth_column), False
    if task.capability == "regression":
        value = read_measurement(cell, ds)
        return (value if isinstance(value, Unread) else str(value)), False
    return read_text(cell, task.truth_column), False


def _truth_reports(
    source: DataSource, tasks: Sequence[TaskSpec], total: int, progress: Progress | None
) -> tuple[list[TruthReport], int, list[DataError]]:
    errors: list[DataError] = []
    counts: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    examples: dict[tuple[str, str], list[str]] = defaultdict(list)
    read = 0
    for case in iter_cases(source, tasks, on_error=errors.append):
        read += 1
        if progress is not None:
            progress(read, total)
        task = next(t for t in tasks if t.key == case.task)
        ref = (case.task, case.dataset_id)
        truth, differ = _truth(case, task)
        counts[ref]["cases"] += 1
        counts[ref]["options_differ"] += differ
        if isinstance(truth, Unread):
            counts[ref][truth.reason] += 1
            nullable = truth.reason == "truth_missing" and task.dataset(case.dataset_id).nullable
            counts[ref]["expected"] += nullable
            if not nullable and len(examples[ref]) < MAX_EXAMPLES:
                examples[ref].append(f"{case.case_id}: {truth.detail}")
        else:
            counts[ref]["read"] += 1
            counts[ref]["not_visible"] += truth == NOT_VISIBLE
            value_range = task.dataset(case.dataset_id).value_range
            if value_range is not None and not value_range[0] <= float(truth) <= value_range[1]:
                counts[ref]["outside_range"] += 1
    reports = [
        TruthReport(
            task=task.key,
            dataset_id=ds.id,
            cases=c["cases"],
            read=c["read"],
            not_visible=c["not_visible"],
            options_differ=c["options_differ"],
            unread={r: c[r] for r in ("truth_missing", "truth_unreadable", "truth_not_an_option") if c[r]},
            expected_unread=c["expected"],
            outside_range=c["outside_range"],
            examples=examples[(task.key, ds.id)],
        )
        for task in tasks
        for ds in task.datasets
        if (c := counts[(task.key, ds.id)])["cases"]
    ]
    return reports, read, errors


def _not_understood(source: DataSource, tasks: Sequence[TaskSpec]) -> list[str]:
    """What no task reads: other entries at the top (all task folders count, selected or not), and anything in a
    selected task folder that is not a .tsv file."""
    from u2eval.benchmark.tasks import all_tasks

    folders = {t.folder for t in all_tasks()}
    known = {EXPLANATION_FILE, "README.md", ".gitattributes"}  # the card of the dataset (or of synthetic data)
    found = [
        p.name for p in sorted(source.root.iterdir()) if not p.name.startswith(".") and p.name not in folders | known
    ]
    for task in tasks:
        folder = source.root / task.folder
        if folder.is_dir():
            found += [
                f"{task.folder}/{p.name}"
                for p in sorted(folder.iterdir())
                if not p.name.startswith(".") and not (p.is_file() and p.suffix == ".tsv")
            ]
    return found


def _problems(
    files: Sequence[FileReport],
    truths: Sequence[TruthReport],
    errors: Sequence[str],
    missing: Sequence[str],
    not_understood: Sequence[str],
    tasks: Sequence[TaskSpec],
) -> list[str]:
    problems = [
        f"{f.file}: {f.unknown_rows} row(s) name no dataset of the task ({', '.join(f.unknown_names)})"
        for f in files
        if f.unknown_rows
    ]
    unreadable = [e for e in errors if "unknown dataset id" not in e]  # those are counted per file above
    if unreadable:
        problems.append(f"{len(unreadable)} row(s) or file(s) cannot be read (all under errors), e.g. {unreadable[0]}")
    for t in truths:
        lost = sum(t.unread.values()) - t.expected_unread
        if lost:
            reasons = ", ".join(f"{n} {r}" for r, n in t.unread.items())
            problems.append(f"{t.task}/{t.dataset_id}: {lost} of {t.cases} truth(s) cannot be scored ({reasons})")
        elif t.read == 0:  # expected gaps, but all of them: nothing of the dataset can be scored
            problems.append(f"{t.task}/{t.dataset_id}: none of {t.cases} truth(s) can be scored (all not measured)")
        if t.outside_range * 2 > t.read > 0:
            problems.append(
                f"{t.task}/{t.dataset_id}: {t.outside_range} of {t.read} truth(s) outside the prompt's range "
                "(another unit?): answers in the asked unit would be judged wrong"
            )
    if missing:
        problems.append(f"datasets with no row: {', '.join(missing)}")
    task_folders = {t.folder for t in tasks}
    hidden = [p for p in not_understood if p.split("/", 1)[0] in task_folders]
    if hidden:
        problems.append(f"files in task folders that are not read (they may hold cases): {', '.join(hidden)}")
    return problems


def check_data(source: DataSource, tasks: Sequence[TaskSpec], progress: Progress | None = None) -> DataCheck:
    """The first-contact report on ``source`` for ``tasks``; ``progress(done, total)`` as cases are read."""
    files, total = _file_reports(source, tasks)
    truths, images_read, errors = _truth_reports(source, tasks, total, progress)
    seen = {(t.task, t.dataset_id) for t in truths}
    missing = [f"{t.key}/{d}" for t in tasks for d in t.dataset_ids if (t.key, d) not in seen]
    not_understood = _not_understood(source, tasks)
    error_lines = [str(e) for e in errors]
    problems = _problems(files, truths, error_lines, missing, not_understood, tasks)
    return DataCheck(
        root=str(source.root),
        kind=source.kind,
        tasks=[t.key for t in tasks],
        files=files,
        truths=truths,
        images_read=images_read,
        errors=error_lines,
        missing_datasets=missing,
        not_understood=not_understood,
        problems=problems,
        ok=not problems,
    )


def _notes(t: TruthReport) -> str:
    notes = [f"{t.expected_unread} not measured (expected)"] if t.expected_unread else []
    notes += [f"options differ from the task file on {t.options_differ}"] if t.options_differ else []
    notes += [f"{t.outside_range} outside the prompt's range"] if t.outside_range else []
    return ", ".join(notes)


def print_check(check: DataCheck, console: Console) -> None:
    """The report in one screen: files, images, a row per dataset, what is not understood, the problems."""
    files_missing = [f for f in check.files if f.columns_missing]
    console.print(f"[bold]Data check[/bold]: {escape(check.root)} ({check.kind}), tasks {','.join(check.tasks)}")
    line = f"files: {len(check.files)}, {sum(f.rows for f in check.files):,} data rows"
    if files_missing:
        line += f"; {len(files_missing)} file(s) lack card columns (e.g. {escape(files_missing[0].file)}: "
        line += f"{', '.join(files_missing[0].columns_missing)})"
    console.print(line)
    console.print(f"images: {check.images_read:,} decoded and checked; {len(check.errors)} row(s) or file(s) unusable")
    table = Table(box=None, pad_edge=False)
    for column in ("task", "datasets", "cases", "truth read", "not scorable", "notes"):
        table.add_column(column, justify="right" if column in ("datasets", "cases", "truth read") else "left")
    for task in check.tasks:
        rows = [t for t in check.truths if t.task == task]
        unread: Counter[str] = Counter()
        for t in rows:
            unread.update({r.removeprefix("truth_"): n for r, n in t.unread.items()})
        notes = [f"{t.dataset_id}: {note}" for t in rows if (note := _notes(t))]
        not_visible = sum(t.not_visible for t in rows)
        notes = ([f"{not_visible} truths 'not visible'"] if not_visible else []) + notes
        table.add_row(
            task,
            str(len(rows)),
            str(sum(t.cases for t in rows)),
            str(sum(t.read for t in rows)),
            ", ".join(f"{n} {r}" for r, n in unread.items()),
            escape("; ".join(notes)),
        )
    console.print(table)
    if check.not_understood:
        console.print(f"not read by any task: {escape(', '.join(check.not_understood))}")
    for problem in check.problems:
        console.print(f"[red]problem:[/red] {escape(problem)}")
    for error in check.errors[:MAX_LISTED]:
        console.print(f"  [dim]{escape(error)}[/dim]")
    if len(check.errors) > MAX_LISTED:
        console.print(f"  [dim]... and {len(check.errors) - MAX_LISTED} more (--json lists them all)[/dim]")
    if check.ok:
        console.print("[green]OK[/green]: every row reads and every truth can be scored")
    else:
        console.print(f"[red]{len(check.problems)} problem(s)[/red]: a run on this data would lose or misjudge cases")
