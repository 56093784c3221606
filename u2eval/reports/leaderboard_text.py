"""The leaderboard as text: Markdown (ranked rows, then the rows listed apart), CSV (one row per run or published
row, and the slices), and the number formats every rendering shares.
"""

from __future__ import annotations

import csv
import io

from u2eval.reports.grounded_board import grounded_columns
from u2eval.reports.leaderboard import Board, BoardRow, Cell, TaskColumn
from u2eval.scoring.cost_report import usd

GROUNDED_NOTE = (
    "Grounded columns (not part of the U2-Score or the ranking): LL / OD / KD scored from the sector of each "
    "answer's region, and run-wide means over datasets of box IoU, accuracy at IoU >= 0.5, mask Dice and IoU, "
    "point distance / image diagonal and point-in-mask; '–' where the model gave no such region "
    "(docs/grounded.md)."
)


def grounded_values(row: BoardRow) -> list[float | None]:
    values = row.grounded.values if row.grounded is not None else {}
    return [values.get(key) for key in grounded_columns()]


def tokens_text(row: BoardRow) -> str:
    if row.input_tokens is None:
        return "–"
    return f"{row.input_tokens:,} / {row.output_tokens or 0:,}"


def cost_text(row: BoardRow) -> str:
    """The run's cost, its judge's apart: '$12.40 (+ judge $0.31)'; '–' without a price."""
    if row.cost_usd is None:
        return "–"
    return usd(row.cost_usd) + (f" (+ judge {usd(row.judge_cost_usd)})" if row.judge_cost_usd else "")


def task_heading(column: TaskColumn) -> str:
    return f"{column.key.upper()} ({column.label or column.metric})"


def fmt(value: float | None, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def fmt_cell(cell: Cell, digits: int = 3) -> str:
    if cell.score is None:
        return "–"
    if cell.low is None or cell.high is None:
        return fmt(cell.score, digits)
    return f"{fmt(cell.score, digits)} [{fmt(cell.low, digits)}, {fmt(cell.high, digits)}]"


def _header(board: Board) -> list[str]:
    runs = sum(1 for r in board.rows if r.source == "run")
    lines = [f"# U2-Bench leaderboard ({board.mode} scoring)", ""]
    lines.append(
        f"{runs} run(s) re-scored from their stored answers; dataset: {', '.join(board.datasets)}. "
        f"Brackets: {board.confidence:.0%} bootstrap percentile intervals (B = {board.resamples}, seed "
        f"{board.seed}, cases resampled within each source dataset; infra errors excluded)."
    )
    if any(r.source == "published" for r in board.rows):
        lines.append("Rows marked *published* are the paper's numbers from the official scorer, without intervals.")
    return [*lines, ""]


def u2_text(row: BoardRow) -> str:
    """The U2-Score cell; a run without one (a task missing, strict) shows its score over the tasks present."""
    if row.u2.score is None and row.u2_over_present_tasks.score is not None:
        return f"– ({fmt_cell(row.u2_over_present_tasks, 4)} over present tasks)"
    return fmt_cell(row.u2, 4)


def _markdown_rows(board: Board, rows: list[BoardRow], apart: bool) -> list[str]:
    header = ["rank", "model", "U2-Score", *(task_heading(t) for t in board.tasks), "parse rate", "infra"]
    header += ["tokens in / out", "cost (USD)", "partial", "prompt", "run"] + (["why apart"] if apart else [])
    header += list(grounded_columns().values()) if board.grounded else []
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        u2 = u2_text(row)
        cells = [
            "–" if row.rank is None else str(row.rank),
            (row.label or row.model) + (" *(published)*" if row.source == "published" else ""),
            u2,
            *(fmt_cell(row.tasks.get(t.key, Cell(score=None))) for t in board.tasks),
            fmt(row.parse_rate, 3),
            "–" if row.infra_errors is None else str(row.infra_errors),
            tokens_text(row),
            cost_text(row),
            "; ".join(row.partial_reasons) or "no",
            row.prompt_variant,
            f"`{row.run}`" if row.run else "–",
            *([row.apart or ""] if apart else []),
            *(fmt(v, 3) for v in (grounded_values(row) if board.grounded else [])),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def render_markdown(board: Board) -> str:
    lines = [*_header(board), *_markdown_rows(board, [r for r in board.rows if r.apart is None], apart=False)]
    apart = [r for r in board.rows if r.apart is not None]
    if apart:
        lines += ["", "## Listed apart, unranked", "", *_markdown_rows(board, apart, apart=True)]
    if board.notes or board.skipped:
        lines += ["", *(f"- {line}" for line in [*board.notes, *board.skipped])]
    if board.grounded:
        lines += ["", GROUNDED_NOTE]
    if board.slices:
        lines += ["", f"## By {board.by}", "", "| model | task | slice | n | counted | score | parse rate |"]
        lines.append("|---|---|---|---|---|---|---|")
        for entry in board.slices:
            s = entry.row
            cell = fmt_cell(Cell(score=s.score, low=s.low, high=s.high))
            lines.append(
                f"| {entry.model} | {s.task.upper()} | {s.value} | {s.n_cases} | {s.n_counted} | {cell} | "
                f"{fmt(s.parse_rate, 3)} |"
            )
    return "\n".join(lines) + "\n"


def render_csv(board: Board) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    task_columns = [f"{t.key}{suffix}" for t in board.tasks for suffix in ("", "_low", "_high")]
    writer.writerow(
        ["rank", "model", "label", "source", "mode", "u2", "u2_low", "u2_high", "u2_over_present_tasks"]
        + task_columns
        + ["parse_rate", "infra_errors", "partial", "partial_reasons", "n_cases", "dataset", "prompt_variant", "run"]
        + ["apart", "input_tokens", "output_tokens", "cost_usd", "judge_cost_usd"]
        + ([f"grounded_{k}" for k in grounded_columns()] + ["box_convention"] if board.grounded else [])
    )

    def number(value: float | int | None) -> str:
        return "" if value is None else str(value)

    for row in board.rows:
        cells = [row.tasks.get(t.key, Cell(score=None)) for t in board.tasks]
        writer.writerow(
            [number(row.rank), row.model, row.label or row.model, row.source]
            + [board.mode if row.source == "run" else "reference"]
            + [number(row.u2.score), number(row.u2.low), number(row.u2.high), number(row.u2_over_present_tasks.score)]
            + [number(v) for c in cells for v in (c.score, c.low, c.high)]
            + [number(row.parse_rate), number(row.infra_errors), "yes" if row.partial else "no"]
            + ["; ".join(row.partial_reasons)]
            + [number(row.n_cases), row.dataset, row.prompt_variant, row.run or "", row.apart or ""]
            + [number(row.input_tokens), number(row.output_tokens), number(row.cost_usd), number(row.judge_cost_usd)]
            + (
                [number(v) for v in grounded_values(row)]
                + [(row.grounded.box_convention or "") if row.grounded is not None else ""]
                if board.grounded
                else []
            )
        )
    return buffer.getvalue()


def render_slices_csv(board: Board) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        ["model", "run", "task", board.by or "slice", "n_cases", "n_counted", "metric", "score"]
        + [
            "low",
            "high",
            "parse_rate",
        ]
    )
    for entry in board.slices:
        s = entry.row
        values = [s.score, s.low, s.high, s.parse_rate]
        writer.writerow(
            [entry.model, entry.run, s.task, s.value, s.n_cases, s.n_counted, s.metric]
            + ["" if v is None else v for v in values]
        )
    return buffer.getvalue()
