"""Human-readable views of a Summary: ``summary.md`` in the run folder and the table printed at the end.

Both are pure renderings of ``summary.json``: nothing here computes a score.
"""

from __future__ import annotations

import textwrap
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from u2eval.benchmark.tasks import get_task, task_keys
from u2eval.scoring.cost_report import cost_line, cost_section
from u2eval.scoring.judge_report import clinical_section, judge_section
from u2eval.scoring.judge_report import terminal_lines as judge_lines
from u2eval.scoring.metrics import get_metric, score_label
from u2eval.scoring.summary import ModeSummary, Summary, TaskResult

SUMMARY_MD = "summary.md"
MAX_LISTED = 50


def metric_label(name: str) -> str:
    """A metric's name as shown beside others: those on a 0-100 scale (BLEU, ROUGE, % within tolerance) say so,
    so they are never read as fractions."""
    try:
        full = get_metric(name).full_scale
    except KeyError:
        return name
    return f"{name} (0–100)" if full == 100.0 else name


def _fmt(value: float | None, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _task_score(task: TaskResult | None) -> str:
    """A task's score; one with no result that the official table fills in says so (its number is no score)."""
    if task is not None and task.filled:
        return f"– (filled {_fmt(task.score)})"
    return _fmt(task.score if task else None)


def _task_rows(summary: Summary) -> list[list[str]]:
    strict, reference = summary.modes["strict"], summary.modes["reference"]
    judged = summary.modes.get("judged")
    rows = []
    for key in summary.tasks_run:
        spec = get_task(key)
        s, r = strict.tasks.get(key), reference.tasks.get(key)
        parse = summary.parse.get(key)
        infra = parse.outcomes.get("infra_error", 0) if parse else 0
        row = [key.upper(), spec.name, score_label(spec.primary_metric), _fmt(s.score if s else None), _task_score(r)]
        if judged is not None:
            j = judged.tasks.get(key)
            row.append(_fmt(j.score if j else None))
        row += [_fmt(parse.parse_rate if parse else None, 3), str(parse.n_cases if parse else 0), str(infra)]
        rows.append(row)
    return rows


TASK_HEADER = [
    "task",
    "name",
    "metric",
    "strict score",
    "reference score",
    "parse rate",
    "cases",
    "infra errors",
]


def task_header(summary: Summary) -> list[str]:
    """The task table's columns: a judged run has a judged score beside the other two."""
    if "judged" not in summary.modes:
        return TASK_HEADER
    return [*TASK_HEADER[:5], "judged score", *TASK_HEADER[5:]]


def _modes(summary: Summary) -> list[str]:
    return [m for m in ("strict", "reference", "judged") if m in summary.modes]


def _u2_line(mode: ModeSummary) -> str:
    parts = [f"U2-Score {_fmt(mode.u2_score)}"]
    if mode.missing_tasks:
        parts.append(f"partial: missing {', '.join(t.upper() for t in mode.missing_tasks)}")
        parts.append(f"over the tasks present {_fmt(mode.u2_over_present_tasks)}")
    if mode.missing_datasets:
        lost = "; ".join(f"{t.upper()} {', '.join(ids)}" for t, ids in mode.missing_datasets.items())
        parts.append(f"partial: no cases for datasets {lost}")
    if mode.uncounted_datasets:
        parts.append(f"partial: no case counted in {', '.join(mode.uncounted_datasets)}")
    filled = [t.upper() for t in task_keys() if t in mode.tasks and mode.tasks[t].filled]
    if filled:
        parts.append(
            f"tasks without results filled as the official table script does ({', '.join(filled)}: a missing task "
            "scores 0, a missing CVE 1 − 0 = 1)"
        )
    parts.append(f"sample-share weights {_fmt(mode.u2_sample_share)}")
    return "; ".join(parts)


def infra_kinds(summary: Summary) -> str:
    """'12 rate_limit, 3 timeout': the infra errors by kind."""
    return ", ".join(f"{n} {kind}" for kind, n in summary.infra_errors_by_kind.items())


def _short(text: str, width: int) -> str:
    return textwrap.shorten(text, width, placeholder=" …")  # one line, whatever a provider's body held


def infra_reason_lines(summary: Summary, most: int = 3) -> list[str]:
    """The commonest words the infra errors were told, with how many cases each (summary.md lists them all)."""
    counts = Counter(summary.infra_error_reasons.values())
    lines = [f"{n} case(s): {_short(reason, 200)}" for reason, n in counts.most_common(most)]
    if len(counts) > most:
        lines.append(f"... and {len(counts) - most} other reason(s), listed in summary.md")
    return lines


def usage_line(summary: Summary) -> str | None:
    """The tokens of the run, or None when no answer reported any."""
    total = summary.usage.get("total")
    if total is None or not total.cases_reporting:
        return None
    return (
        f"tokens: {total.input_tokens:,} in, {total.output_tokens:,} out "
        f"({total.cases_reporting} of {total.cases} answers report usage)"
    )


def subset_line(summary: Summary) -> str:
    """What a run that asked only part of its tasks' cases says first: its scores are not a full run's."""
    return f"Subset run ({'; '.join(summary.subset)}): these scores are not comparable with a full run's"


def uncounted_lines(summary: Summary) -> list[str]:
    """One line per dataset that had cases but counted none, in each mode: its task averages the others."""
    return [
        f"{mode}: {name}: {why}"
        for mode in ("strict", "reference")
        for name, why in summary.modes[mode].uncounted_datasets.items()
    ]


def _not_counted_lines(summary: Summary) -> list[str]:
    rows = [
        (mode, d, g)
        for mode in ("strict", "reference")
        for d in summary.modes[mode].datasets
        for g in d.not_counted
        if g.reason != "infra_error"  # listed with the infrastructure failures
    ]
    if not rows:
        return []
    lines = ["", "## Cases not counted, and why", ""]
    lines += [f"- **{line}**" for line in uncounted_lines(summary)]
    lines += ["", "| mode | task | dataset | cases | reason | detail | e.g. |", "|---|---|---|---|---|---|---|"]
    for mode, d, g in rows:
        examples = ", ".join(f"`{c}`" for c in g.case_ids)
        lines.append(f"| {mode} | {d.task} | {d.dataset_id} | {g.n} | {g.reason} | {g.detail or ''} | {examples} |")
    return lines


def render_markdown(summary: Summary) -> str:
    lines = ["# u2eval summary", ""]
    if summary.modes["strict"].missing_tasks:
        lines += [f"**Partial run**: not every task was evaluated ({', '.join(summary.tasks_run)} only).", ""]
    if summary.subset:
        lines += [f"**{subset_line(summary)}**", ""]
    for mode in _modes(summary):
        lines.append(
            f"- **{mode}**{' (headline)' if mode == summary.headline_mode else ''}: {_u2_line(summary.modes[mode])}"
        )
    header = task_header(summary)
    lines += ["", "## Tasks", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in _task_rows(summary)]
    lines += [
        "",
        "## Datasets (strict)",
        "",
        "| task | dataset | cases | counted | infra | metrics |",
        "|---|---|---|---|---|---|",
    ]
    for d in summary.modes["strict"].datasets:
        metrics = ", ".join(f"{metric_label(k)} {_fmt(v)}" for k, v in sorted(d.metrics.items()))
        lines.append(f"| {d.task} | {d.dataset_id} | {d.n_cases} | {d.n_counted} | {d.n_infra_errors} | {metrics} |")
    lines += _not_counted_lines(summary)
    if summary.differences:
        lines += [
            "",
            "## Where strict and reference differ",
            "",
            "| task | dataset | metric: strict / reference | counted: strict / reference | why |",
            "|---|---|---|---|---|",
        ]
        for diff in summary.differences:
            values = "; ".join(  # 6 decimals: a difference of rounding shows
                f"{metric_label(name)} {_fmt(diff.strict_metrics.get(name), 6)} / "
                f"{_fmt(diff.reference_metrics.get(name), 6)}"
                for name in diff.differing_metrics
            )
            lines.append(
                f"| {diff.task} | {diff.dataset_id} | {values or 'same values'} | "
                f"{diff.strict_n_counted} / {diff.reference_n_counted} | {'; '.join(diff.reasons)} |"
            )
    if summary.infra_error_case_ids:
        lines += [
            "",
            f"## Infrastructure failures ({len(summary.infra_error_case_ids)}, excluded from scores)",
            "",
            f"By kind: {infra_kinds(summary)}.",
            "",
        ]
        reasons = summary.infra_error_reasons
        lines += [
            f"- `{case_id}`" + (f": {_short(reasons[case_id], 300)}" if case_id in reasons else "")
            for case_id in summary.infra_error_case_ids
        ]
    if summary.usage:
        lines += ["", "## Tokens", "", "| task | input tokens | output tokens | answers reporting usage |"]
        lines.append("|---|---|---|---|")
        for key, used in summary.usage.items():
            name = "**total**" if key == "total" else key.upper()
            lines.append(
                f"| {name} | {used.input_tokens:,} | {used.output_tokens:,} | {used.cases_reporting} of {used.cases} |"
            )
    lines += judge_section(summary) + clinical_section(summary) + cost_section(summary)
    if summary.sacrebleu_signature:
        lines += ["", f"sacreBLEU signature: `{summary.sacrebleu_signature}`"]
    return "\n".join(lines) + "\n"


# Where the cases behind the numbers are (no path: a summary reads the same wherever its folder is).
_VIEW_LINE = (
    "\nEvery case behind these numbers, with its image, the prompt as sent and both verdicts: `u2eval view` this\n"
    "run folder (docs/view.md).\n"
)


def write_summary(
    folder: Path, summary: Summary, data_errors: Sequence[str] = (), sections: Sequence[str] = ()
) -> Path:
    """summary.md; ``sections`` (Markdown, e.g. the grounded results) follow the scores, and ``data_errors``
    (rows or files the run could not read) are listed at its end."""
    text = render_markdown(summary) + "".join("\n" + section for section in sections)
    if data_errors:
        lines = ["", f"## Unreadable input ({len(data_errors)} row(s) or file(s) skipped)", ""]
        lines += [f"- {error}" for error in data_errors[:MAX_LISTED]]
        if len(data_errors) > MAX_LISTED:
            lines.append(f"- ... and {len(data_errors) - MAX_LISTED} more (manifest.json lists them all)")
        text += "\n".join(lines) + "\n"
    text += _VIEW_LINE
    path = folder / SUMMARY_MD
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path


def print_summary(summary: Summary, console: Console) -> None:
    table = Table(title="U2-Bench results")
    header = task_header(summary)
    keep = [i for i, column in enumerate(header) if column != "name"]  # the terminal is narrow
    for i in keep:
        table.add_column(header[i], justify="left" if i < 3 else "right")
    for row in _task_rows(summary):
        table.add_row(*(row[i] for i in keep))
    console.print(table)
    for mode in _modes(summary):
        label = f"{mode}{' (headline)' if mode == summary.headline_mode else ''}"
        console.print(f"[bold]{label}[/bold]: {_u2_line(summary.modes[mode])}")
    if summary.subset:
        console.print(f"[yellow]{escape(subset_line(summary))}[/yellow]")
    for line in uncounted_lines(summary):
        console.print(f"[yellow]No case counted: {escape(line)}[/yellow]")
    if summary.unreadable_rows:
        console.print(f"[yellow]Partial: {summary.unreadable_rows} row(s) or file(s) could not be read[/yellow]")
    if summary.infra_errors_by_kind:
        console.print(f"infra errors by kind: {infra_kinds(summary)}")
        for line in infra_reason_lines(summary):
            console.print(f"  {escape(line)}")
    if (tokens := usage_line(summary)) is not None:
        console.print(tokens)
    for line in judge_lines(summary):
        console.print(escape(line))
    if (spent := cost_line(summary)) is not None:
        console.print(escape(spent))
