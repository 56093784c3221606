"""PNG figures for papers (matplotlib, Agg backend), imported lazily: matplotlib is the optional extra
``u2eval[plots]``, and without it every other output is still written."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from u2eval.errors import U2EvalError

if TYPE_CHECKING:
    from u2eval.reports.ablation import AblationReport
    from u2eval.reports.leaderboard import Board

__all__ = ["PlotsUnavailable", "plot_ablation", "plot_leaderboard"]

_RUN, _PUBLISHED = "#3b6fd8", "#b8bfcc"


class PlotsUnavailable(U2EvalError):
    """matplotlib is not installed: PNG plots are skipped."""


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as exc:
        raise PlotsUnavailable("PNG plots skipped: matplotlib is not installed (pip install 'u2eval[plots]')") from exc
    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    fig.savefig(path, dpi=150, bbox_inches="tight", metadata={"Software": None})
    fig.clf()
    return path


def _whiskers(ax: Any, intervals: list[tuple[int, float | None, float | None]]) -> None:
    """Each interval as a line with end caps at its own bounds. A percentile interval need not hold the point
    estimate (rounding before averaging, a skewed statistic), so it is never drawn as distances from it."""
    for y, low, high in intervals:
        if low is not None and high is not None:
            ax.hlines(y, low, high, color="black", linewidth=1)
            ax.vlines([low, high], y - 0.2, y + 0.2, color="black", linewidth=1)


def plot_leaderboard(board: Board, out: Path) -> list[Path]:
    """``leaderboard_u2.png`` (U2-Score bars with CI whiskers) and ``leaderboard_tasks.png`` (heat map)."""
    plt = _pyplot()
    rows = list(reversed(board.rows))  # barh draws bottom-up: best at the top
    labels = [(r.label or r.model) + (" (published)" if r.source == "published" else "") for r in rows]
    cells = [r.u2 if r.u2.score is not None else r.u2_over_present_tasks for r in rows]
    scores = [c.score or 0.0 for c in cells]
    fig, ax = plt.subplots(figsize=(7.5, 0.28 * len(rows) + 1.2))
    ax.barh(range(len(rows)), scores, color=[_RUN if r.source == "run" else _PUBLISHED for r in rows])
    _whiskers(ax, [(i, c.low, c.high) for i, c in enumerate(cells) if c.score is not None])
    ax.set_yticks(range(len(rows)), labels, fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_xlabel(f"U2-Score ({board.mode}; whiskers: {board.confidence:.0%} bootstrap CI)")
    u2_path = _save(fig, out / "leaderboard_u2.png")
    plt.close(fig)

    keys = [t.key for t in board.tasks]
    matrix = [[(r.tasks[k].score if k in r.tasks else None) for k in keys] for r in board.rows]
    values = [[float("nan") if v is None else v for v in row] for row in matrix]
    fig, ax = plt.subplots(figsize=(0.7 * len(keys) + 3.5, 0.3 * len(board.rows) + 1.2))
    image = ax.imshow(values, cmap="RdYlGn", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(keys)), [k.upper() for k in keys])
    ax.set_yticks(range(len(board.rows)), [r.label or r.model for r in board.rows], fontsize=8)
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            if value is not None:
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7)
    fig.colorbar(image, ax=ax, label="task score (U2 scale)")
    tasks_path = _save(fig, out / "leaderboard_tasks.png")
    plt.close(fig)
    return [u2_path, tasks_path]


def plot_ablation(report: AblationReport, path: Path) -> Path:
    """One panel per comparison: B - A per task (and pooled) with its paired-bootstrap interval."""
    plt = _pyplot()
    panels = report.comparisons
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4), squeeze=False)
    for ax, comparison in zip(axes[0], panels, strict=True):
        rows = list(comparison.tasks) + ([comparison.pooled] if comparison.pooled is not None else [])
        rows = [r for r in rows if r.difference is not None]
        labels = [r.task.upper() if r.task != "pooled" else "pooled" for r in rows]
        ys = list(range(len(rows)))[::-1]
        diffs = [r.difference or 0.0 for r in rows]
        colours = ["#444" if r.task == "pooled" else (_RUN if r.kind == "binary" else "#d88b3b") for r in rows]
        ax.barh(ys, diffs, color=colours)
        _whiskers(ax, [(y, r.low, r.high) for y, r in zip(ys, rows, strict=True)])
        ax.axvline(0, color="black", linewidth=0.8)
        ax.margins(x=0.08)  # keep the zero line off the frame when every difference has one sign
        ax.set_yticks(ys, labels)
        for y, row in zip(ys, rows, strict=True):
            label = f"p(Holm)={row.p_holm:.2g}" if row.p_holm is not None else (f"p={row.p:.2g}" if row.p else "")
            ax.annotate(label, (1.01, y), xycoords=("axes fraction", "data"), fontsize=7, va="center")
        ax.set_xlabel(f"{comparison.b} − {comparison.a} ({report.confidence:.0%} paired bootstrap CI)")
        ax.set_title(f"{comparison.b} vs {comparison.a}", fontsize=10)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return path
