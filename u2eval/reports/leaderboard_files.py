"""The leaderboard's files: Markdown and CSV (rendered by ``u2eval.reports.leaderboard_text``), JSON, and one
self-contained HTML page (inline CSS and JS, no network, no external files), plus the PNG plots when
matplotlib is installed.

The table is static HTML (readable without JS); the script makes it sortable and draws the charts as
inline SVG from the board's JSON embedded in the page: U2-Score bars with CI whiskers, per-task bars with
whiskers, and a heat map of task scores grouped by capability. When everything is drawn the script sets
``data-rendered="ok"`` on <body> (and ``data-error`` on any script error), which the headless-browser test
reads back.
"""

from __future__ import annotations

import html
import json
import logging
from pathlib import Path

from u2eval.reports.grounded_board import grounded_columns
from u2eval.reports.leaderboard import Board, BoardRow, Cell
from u2eval.reports.leaderboard_text import (
    GROUNDED_NOTE,
    cost_text,
    fmt,
    fmt_cell,
    grounded_values,
    render_csv,
    render_markdown,
    render_slices_csv,
    task_heading,
    tokens_text,
)

__all__ = ["render_html", "write_board"]

log = logging.getLogger(__name__)

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#1d2330;background:#fff}
h1{font-size:22px;margin:0 0 6px}h2{font-size:17px;margin:28px 0 8px}
p.note{color:#555;max-width:1100px;margin:4px 0}
table{border-collapse:collapse;font-size:13px;margin-top:8px}
th,td{border-bottom:1px solid #e3e6ec;padding:4px 8px;text-align:right;white-space:nowrap}
th{background:#f4f6fa;cursor:pointer;user-select:none;position:sticky;top:0}
th.sorted-asc::after{content:" \\25B2"}th.sorted-desc::after{content:" \\25BC"}
td.text,th.text{text-align:left}
td.rank,th.rank{position:sticky;left:0;background:#fff;z-index:1;min-width:3em;max-width:3em;width:3em}
td.model,th.model{position:sticky;left:3em;background:#fff;z-index:1;box-shadow:1px 0 0 #e3e6ec}
th.rank,th.model{z-index:2;background:#f4f6fa}
tr.published td.rank,tr.published td.model{background:#fafbfc}
p.why{color:#7a4b00;background:#fff7e6;border:1px solid #f0d9a8;border-radius:4px;padding:6px 10px;max-width:1100px}
tr.published td{color:#6b7280;font-style:italic}
span.ci{color:#8a93a6;font-size:11px}
.scroll{overflow-x:auto;max-width:100%}
.charts{display:flex;flex-wrap:wrap;gap:18px}
.chart{border:1px solid #e3e6ec;border-radius:6px;padding:8px}
.chart h3{font-size:13px;margin:0 0 4px}
svg text{font:11px system-ui,sans-serif;fill:#1d2330}
"""

_JS = r"""
(function () {
  "use strict";
  var NS = "http://www.w3.org/2000/svg";
  window.addEventListener("error", function (e) { document.body.dataset.error = String(e.message); });
  var board = JSON.parse(document.getElementById("board-data").textContent);
  var bars = 0;

  function el(name, attrs, parent) {
    var node = document.createElementNS(NS, name);
    Object.keys(attrs).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (parent) { parent.appendChild(node); }
    return node;
  }
  function text(parent, x, y, value, anchor) {
    var t = el("text", {x: x, y: y, "text-anchor": anchor || "start"}, parent);
    t.textContent = value;
    return t;
  }
  function colour(row) {
    if (row.apart) { return "#e0a030"; }  // listed apart: not comparable with the ranked rows
    return row.source === "published" ? "#b8bfcc" : "#3b6fd8";
  }
  function label(row) { return (row.label || row.model) + (row.apart ? " (apart)" : ""); }

  // Horizontal bars on [0, 1] with percentile whiskers; items: {label, cell, colour}.
  function barChart(container, title, items) {
    var box = document.createElement("div");
    box.className = "chart";
    var h = document.createElement("h3");
    h.textContent = title;
    box.appendChild(h);
    var labelW = 230, plotW = 260, rowH = 16, top = 4;
    var height = top + items.length * rowH + 22;
    var svg = el("svg", {width: labelW + plotW + 50, height: height, role: "img"}, box);
    items.forEach(function (item, i) {
      var y = top + i * rowH;
      text(svg, labelW - 6, y + 11, item.label, "end");
      var score = item.cell.score;
      if (score === null) { text(svg, labelW + 4, y + 11, "\u2013"); return; }
      el("rect", {x: labelW, y: y + 2, width: Math.max(0, score) * plotW, height: rowH - 5,
                  fill: item.colour, "class": "bar"}, svg);
      bars += 1;
      if (item.cell.low !== null && item.cell.high !== null) {
        var x1 = labelW + item.cell.low * plotW, x2 = labelW + item.cell.high * plotW, ym = y + rowH / 2;
        el("line", {x1: x1, x2: x2, y1: ym, y2: ym, stroke: "#111", "stroke-width": 1.2, "class": "whisker"}, svg);
        el("line", {x1: x1, x2: x1, y1: ym - 4, y2: ym + 4, stroke: "#111"}, svg);
        el("line", {x1: x2, x2: x2, y1: ym - 4, y2: ym + 4, stroke: "#111"}, svg);
      }
      text(svg, labelW + plotW + 4, y + 11, score.toFixed(3));
    });
    var axisY = top + items.length * rowH + 4;
    el("line", {x1: labelW, x2: labelW + plotW, y1: axisY, y2: axisY, stroke: "#999"}, svg);
    [0, 0.25, 0.5, 0.75, 1].forEach(function (v) { text(svg, labelW + v * plotW, axisY + 13, String(v), "middle"); });
    container.appendChild(box);
  }

  function heatMap(container) {
    var tasks = board.tasks, rows = board.rows;
    var labelW = 230, cellW = 54, cellH = 18, top = 36;
    var svg = el("svg", {width: labelW + tasks.length * cellW + 10, height: top + rows.length * cellH + 6}, null);
    var groups = [];
    tasks.forEach(function (t, j) {
      var last = groups[groups.length - 1];
      if (last && last.name === t.capability) { last.end = j; }
      else { groups.push({name: t.capability, start: j, end: j}); }
      text(svg, labelW + j * cellW + cellW / 2, top - 6, t.key.toUpperCase(), "middle");
    });
    groups.forEach(function (g) {
      text(svg, labelW + (g.start + g.end + 1) * cellW / 2, 12, g.name, "middle");
      el("line", {x1: labelW + g.start * cellW + 3, x2: labelW + (g.end + 1) * cellW - 3, y1: 16, y2: 16,
                  stroke: "#999"}, svg);
    });
    rows.forEach(function (row, i) {
      var y = top + i * cellH;
      text(svg, labelW - 6, y + 13, label(row), "end");
      tasks.forEach(function (t, j) {
        var cell = row.tasks[t.key], score = cell ? cell.score : null;
        var fill = score === null ? "#eee" : "hsl(" + Math.round(10 + 120 * score) + ",65%," +
          Math.round(88 - 40 * score) + "%)";
        el("rect", {x: labelW + j * cellW + 1, y: y + 1, width: cellW - 2, height: cellH - 2, fill: fill,
                    "class": "heat"}, svg);
        if (score !== null) { text(svg, labelW + j * cellW + cellW / 2, y + 13, score.toFixed(2), "middle"); }
      });
    });
    container.appendChild(svg);
  }

  function sortable(table) {
    var heads = table.tHead.rows[0].cells;
    Array.prototype.forEach.call(heads, function (th, column) {
      th.addEventListener("click", function () {
        var ascending = !th.classList.contains("sorted-asc");
        Array.prototype.forEach.call(heads, function (h) { h.classList.remove("sorted-asc", "sorted-desc"); });
        th.classList.add(ascending ? "sorted-asc" : "sorted-desc");
        var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (a, b) {
          var x = a.cells[column].dataset.sort, y = b.cells[column].dataset.sort;
          var nx = parseFloat(x), ny = parseFloat(y), result;
          if (!isNaN(nx) && !isNaN(ny)) { result = nx - ny; }
          else if (isNaN(nx) !== isNaN(ny)) { result = isNaN(nx) ? 1 : -1; return result; }
          else { result = String(x).localeCompare(String(y)); }
          return ascending ? result : -result;
        });
        rows.forEach(function (r) { body.appendChild(r); });
      });
    });
  }

  sortable(document.getElementById("board"));
  if (document.getElementById("apart")) { sortable(document.getElementById("apart")); }
  var runs = board.rows.filter(function (r) { return r.source === "run"; });
  var shown = runs.length ? runs : board.rows;
  barChart(document.getElementById("u2-chart"), "U2-Score", board.rows.map(function (r) {
    return {label: label(r), cell: r.u2.score === null ? r.u2_over_present_tasks : r.u2, colour: colour(r)};
  }));
  var perTask = document.getElementById("task-charts");
  board.tasks.forEach(function (t) {
    barChart(perTask, t.key.toUpperCase() + " \u2013 " + t.name + " (" + t.metric + ", weight " + t.weight + ")",
      shown.map(function (r) { return {label: label(r), cell: r.tasks[t.key] || {score: null}, colour: colour(r)}; }));
  });
  heatMap(document.getElementById("heatmap"));
  document.body.dataset.bars = String(bars);
  document.body.dataset.rendered = "ok";
})();
"""


def _run_cell(row: BoardRow) -> str:
    """The run's folder, linked to its case browser when ``u2eval view`` has made one."""
    name = html.escape(row.run or "–")
    if row.view is None:
        return name
    return f'<a href="{html.escape(row.view, quote=True)}" title="every case of the run">{name}</a>'


def _td(value: str, sort: str | float | None, css: str = "") -> str:
    key = "" if sort is None else str(sort)
    cls = f' class="{css}"' if css else ""
    return f'<td{cls} data-sort="{html.escape(key)}">{value}</td>'


def _score_td(cell: Cell) -> str:
    if cell.score is None:
        return _td("–", None)
    ci = ""
    if cell.low is not None and cell.high is not None:
        ci = f' <span class="ci">[{fmt(cell.low, 3)}, {fmt(cell.high, 3)}]</span>'
    return _td(f"{fmt(cell.score, 3)}{ci}", cell.score)


def _table(board: Board, rows: list[BoardRow], table_id: str) -> str:
    head = ["rank", "model", "U2-Score", *(task_heading(t) for t in board.tasks), "parse rate", "infra errors"]
    head += ["tokens in / out", "cost (USD)", "partial", "prompt", "dataset", "run"]
    head += ["why apart"] if any(r.apart for r in rows) else []
    head += list(grounded_columns().values()) if board.grounded else []
    text_columns = {"model", "partial", "prompt", "dataset", "run", "why apart"}
    sticky = {"rank": "rank", "model": "model text"}
    cells = "".join(
        f'<th class="{sticky.get(h, "text" if h in text_columns else "")}">{html.escape(h)}</th>' for h in head
    )
    body = []
    for row in rows:
        u2 = row.u2 if row.u2.score is not None else row.u2_over_present_tasks
        label = row.label or row.model
        tds = [
            _td("–" if row.rank is None else str(row.rank), row.rank, "rank"),
            _td(html.escape(label) + (" (published)" if row.source == "published" else ""), label, "model text"),
            _score_td(u2) if row.u2.score is not None else _td(f"– ({fmt(u2.score, 3)} present)", None),
            *(_score_td(row.tasks.get(t.key, Cell(score=None))) for t in board.tasks),
            _td(fmt(row.parse_rate, 3), row.parse_rate),
            _td("–" if row.infra_errors is None else str(row.infra_errors), row.infra_errors),
            _td(tokens_text(row), row.input_tokens),
            _td(cost_text(row), row.cost_usd),
            _td(html.escape("; ".join(row.partial_reasons) or "no"), "; ".join(row.partial_reasons), "text"),
            _td(html.escape(row.prompt_variant), row.prompt_variant, "text"),
            _td(html.escape(row.dataset), row.dataset, "text"),
            _td(_run_cell(row), row.run or "", "text"),
            *([_td(html.escape(row.apart or ""), row.apart or "", "text")] if "why apart" in head else []),
            *(_td(fmt(v, 3), v) for v in (grounded_values(row) if board.grounded else [])),
        ]
        css = ' class="published"' if row.source == "published" else ""
        body.append(f"<tr{css}>{''.join(tds)}</tr>")
    return f'<table id="{table_id}"><thead><tr>{cells}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def _slices(board: Board) -> str:
    if not board.slices:
        return ""
    head = "".join(f"<th>{h}</th>" for h in ("model", "task", board.by or "slice", "n", "counted", "score", "parse"))
    body = "".join(
        "<tr>"
        + f'<td class="text">{html.escape(e.model)}</td><td>{e.row.task.upper()}</td>'
        + f'<td class="text">{html.escape(e.row.value)}</td><td>{e.row.n_cases}</td><td>{e.row.n_counted}</td>'
        + f"<td>{html.escape(fmt_cell(Cell(score=e.row.score, low=e.row.low, high=e.row.high)))}</td>"
        + f"<td>{fmt(e.row.parse_rate, 3)}</td></tr>"
        for e in board.slices
    )
    title = f"<h2>By {html.escape(board.by or '')}</h2>"
    return f"{title}<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(board: Board) -> str:
    data = json.dumps(board.model_dump(mode="json"), sort_keys=True).replace("<", "\\u003c")
    runs = sum(1 for r in board.rows if r.source == "run")
    note = (
        f"{runs} run(s) re-scored from stored answers in {board.mode} mode; dataset {', '.join(board.datasets)}. "
        f"Whiskers and brackets: {board.confidence:.0%} bootstrap percentile intervals (B = {board.resamples}, "
        f"seed {board.seed}, stratified by source dataset). Grey / italic rows: the paper's published numbers. "
        "Task columns show the number that enters the U2-Score."
    )
    why = "".join(f'<p class="why">{html.escape(line)}</p>' for line in board.notes)
    skipped = "".join(f'<p class="why">{html.escape(line)}</p>' for line in board.skipped)
    ranked = [r for r in board.rows if r.apart is None]
    apart = [r for r in board.rows if r.apart is not None]
    apart_html = (
        f'<h2>Listed apart, unranked</h2><div class="scroll">{_table(board, apart, "apart")}</div>' if apart else ""
    )
    grounded_note = f'<p class="note">{html.escape(GROUNDED_NOTE)}</p>' if board.grounded else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>U2-Bench leaderboard ({board.mode})</title><style>{_CSS}</style></head>
<body data-rendered="no">
<h1>U2-Bench leaderboard <small>({html.escape(board.mode)} scoring)</small></h1>
<p class="note">{html.escape(note)}</p>{why}{skipped}{grounded_note}
<div class="scroll">{_table(board, ranked, "board")}</div>
{apart_html}
<h2>U2-Score</h2><div id="u2-chart" class="charts"></div>
<h2>Tasks</h2><div id="task-charts" class="charts"></div>
<h2>Capability heat map</h2><div id="heatmap"></div>
{_slices(board)}
<script id="board-data" type="application/json">{data}</script>
<script>{_JS}</script>
</body></html>
"""


# ---------------------------------------------------------------------------------------------- text renderings


def write_board(board: Board, out: Path, plots: bool = True) -> list[Path]:
    """leaderboard.{md,csv,json,html} (+ leaderboard_by_<by>.csv, + PNGs when matplotlib is there)."""
    from u2eval.reports.plots import PlotsUnavailable, plot_leaderboard

    out.mkdir(parents=True, exist_ok=True)
    files = {
        "leaderboard.md": render_markdown(board),
        "leaderboard.csv": render_csv(board),
        "leaderboard.json": json.dumps(board.model_dump(mode="json"), indent=2, sort_keys=True) + "\n",
        "leaderboard.html": render_html(board),
    }
    if board.by:
        files[f"leaderboard_by_{board.by}.csv"] = render_slices_csv(board)
    written = []
    for name, text in files.items():
        (out / name).write_text(text, encoding="utf-8")
        written.append(out / name)
    if plots:
        try:
            written += plot_leaderboard(board, out)
        except PlotsUnavailable as exc:
            log.warning("%s", exc)
    return written
