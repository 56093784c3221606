"""Human-readable views of ``grounded.json``: the grounded section of ``summary.md`` and the terminal table.

Pure renderings: nothing here computes a figure.
"""

from __future__ import annotations

from collections.abc import Iterable

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from u2eval.benchmark.tasks import task_keys
from u2eval.grounded.stats import BoxStats, GroundedStats, GroundedSummary, MaskStats, PointStats

__all__ = ["print_grounded", "render_grounded_markdown"]

SECTOR_HEADER = ["task", "text (strict)", "regions (strict)", "regions (reference)"]
SECTOR_HEADER += ["region", "no region", "ungroundable"]
METRIC_HEADER = ["task", "dataset", "box n", "IoU", "acc@0.5", "mask n", "Dice", "mask IoU", "empty truth right"]
METRIC_HEADER += ["point n", "dist / diag", "in mask"]


def _in_order(keys: Iterable[str]) -> list[str]:
    """Task keys in official order (grounded.json is written with sorted keys)."""
    return sorted(keys, key=lambda k: task_keys().index(k) if k in task_keys() else len(task_keys()))


def _fmt(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _sector_rows(summary: GroundedSummary) -> list[list[str]]:
    strict, reference = summary.sectors.get("strict"), summary.sectors.get("reference")
    rows = []
    for task in _in_order(strict.tasks if strict else {}):
        outcomes = summary.outcomes.get(task, {})
        rows.append(
            [
                task.upper(),
                _fmt(summary.text_sectors.get("strict", {}).get(task), 4),
                _fmt(strict.tasks.get(task) if strict else None, 4),
                _fmt(reference.tasks.get(task) if reference else None, 4),
                str(outcomes.get("region", 0)),
                str(outcomes.get("no_region", 0)),
                str(outcomes.get("ungroundable", 0)),
            ]
        )
    return rows


def _empty_truth(box: BoxStats | None, mask: MaskStats | None) -> str:
    parts = []
    if box is not None and box.empty_truth_n:
        parts.append(f"box {_fmt(box.empty_truth_correct, 2)} of {box.empty_truth_n}")
    if mask is not None and mask.empty_truth_n:
        parts.append(f"mask {_fmt(mask.empty_truth_correct, 2)} of {mask.empty_truth_n}")
    return "; ".join(parts) or "–"


def _metric_cells(stats: GroundedStats) -> list[str]:
    box: BoxStats | None = stats.box
    mask: MaskStats | None = stats.mask
    point: PointStats | None = stats.point
    return [
        str(box.n) if box else "–",
        _fmt(box.mean_iou if box else None),
        _fmt(box.acc_at_50 if box else None),
        str(mask.n) if mask else "–",
        _fmt(mask.dice if mask else None),
        _fmt(mask.iou if mask else None),
        _empty_truth(box, mask),
        str(point.n) if point else "–",
        _fmt(point.mean_distance if point else None),
        _fmt(point.in_mask if point else None),
    ]


def _metric_rows(summary: GroundedSummary) -> list[list[str]]:
    rows = []
    for entry in summary.datasets:
        if entry.stats.box or entry.stats.mask or entry.stats.point:
            rows.append([entry.task.upper(), entry.dataset_id, *_metric_cells(entry.stats)])
    for task in _in_order(summary.tasks):
        stats = summary.tasks[task]
        if stats.box or stats.mask or stats.point:
            rows.append([task.upper(), "(mean)", *_metric_cells(stats)])
    if summary.overall.box or summary.overall.mask or summary.overall.point:
        rows.append(["all", "(mean)", *_metric_cells(summary.overall)])
    return rows


def _intro(summary: GroundedSummary) -> list[str]:
    convention = summary.box_convention or "none (only regions the model returned as data)"
    gives = ", ".join(summary.gives) or "no regions at all"
    truth = summary.truth
    masks = (
        f"{truth.get('mask_present', 0)} with a mask, {truth.get('mask_empty', 0)} empty, "
        f"{truth.get('mask_unavailable', 0)} unavailable, {truth.get('mask_unreadable', 0)} unreadable"
    )
    return [
        f"Box convention: {convention}. The model gave: {gives}.",
        f"Grounded truth of {truth.get('cases', 0)} cases: {truth.get('with_box', 0)} with a box, "
        f"{truth.get('with_point', 0)} with a point; masks: {masks}.",
        *(f"Warning: {warning}." for warning in summary.warnings),
        "Region scores are the official LL / OD / KD scores of the sector each answer's region falls in "
        "(no region: 'not visible'); they are separate from the text answers and from the U2-Score.",
    ]


def render_grounded_markdown(summary: GroundedSummary) -> str:
    lines = ["## Grounded answers", "", *(f"{line}  " for line in _intro(summary)), ""]
    sectors = _sector_rows(summary)
    if sectors:
        lines += ["| " + " | ".join(SECTOR_HEADER) + " |", "|" + "---|" * len(SECTOR_HEADER)]
        lines += ["| " + " | ".join(row) + " |" for row in sectors]
        lines.append("")
    metrics = _metric_rows(summary)
    if metrics:
        lines += ["### Grounded metrics", ""]
        lines += ["| " + " | ".join(METRIC_HEADER) + " |", "|" + "---|" * len(METRIC_HEADER)]
        lines += ["| " + " | ".join(row) + " |" for row in metrics]
        lines += [
            "",
            "IoU and Dice are means over cases whose truth has a box / a non-empty mask (a missing prediction "
            "scores 0); empty truths are counted apart (right when nothing was predicted). Point distance is "
            "divided by the image diagonal (no point: 1). Task and 'all' rows are means over datasets.",
        ]
    if summary.ungroundable_examples:
        lines += ["", "Ungroundable answers (first ones):", ""]
        lines += [f"- `{example}`" for example in summary.ungroundable_examples]
    return "\n".join(lines) + "\n"


def print_grounded(summary: GroundedSummary, console: Console) -> None:
    """The terminal view: the sector scores and the task means (summary.md has every dataset)."""
    for line in _intro(summary)[: 2 + len(summary.warnings)]:
        style = "yellow" if line.startswith("Warning:") else None
        console.print(escape(line), highlight=False, style=style)
    sectors = _sector_rows(summary)
    if sectors:
        table = Table(title="Official sector scores from regions")
        for i, column in enumerate(SECTOR_HEADER):
            table.add_column(column, justify="left" if i == 0 else "right")
        for row in sectors:
            table.add_row(*row)
        console.print(table)
    keep = [i for i, column in enumerate(METRIC_HEADER) if column not in ("dataset", "empty truth right")]
    rows = [row for row in _metric_rows(summary) if row[1] == "(mean)"]
    if rows:
        table = Table(title="Grounded metrics (means over datasets; summary.md has each dataset)")
        for i in keep:
            table.add_column(METRIC_HEADER[i], justify="left" if i == 0 else "right")
        for row in rows:
            table.add_row(*(row[i] for i in keep))
        console.print(table)
