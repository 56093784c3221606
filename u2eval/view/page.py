"""The case browser's page: one self-contained HTML file (inline CSS and script, the cases as JSON inside it; no
network, nothing from outside), beside the ``images/`` and ``thumbs/`` folders the export wrote. It opens from
the file; ``u2eval view --serve`` serves the folder on 127.0.0.1 for the browsers that will not read files.

A Content-Security-Policy lets the page load nothing but its own images and run nothing but its own script."""

from __future__ import annotations

import html
import time
from dataclasses import dataclass
from pathlib import Path

from u2eval.run.folder import RunFolder
from u2eval.view.case_records import iter_records, page_header, write_data
from u2eval.view.images import ImageExport, export_images
from u2eval.view.page_script import SCRIPT

PAGE = "index.html"

_CSP = "default-src 'none'; img-src 'self' file: data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"

_CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 0; color: #222; }
header { padding: 10px 16px; background: #f4f4f6; border-bottom: 1px solid #ddd; }
header h1 { font-size: 18px; margin: 0; } header p { margin: 2px 0 0; color: #666; }
.filters { display: flex; flex-wrap: wrap; gap: 8px; padding: 8px 16px; align-items: center; }
.filters label { font-size: 12px; color: #555; } .filters select, .filters input { font-size: 13px; max-width: 180px; }
main { display: grid; grid-template-columns: minmax(560px, 1fr) minmax(420px, 1fr); gap: 0; }
#head, .row { display: grid; grid-template-columns: 44px 250px 40px 60px 120px 120px 1fr; gap: 6px; align-items: center; }
#head { padding: 4px 8px; font-weight: 600; border-bottom: 1px solid #ccc; } #head [data-sort] { cursor: pointer; }
#list { height: calc(100vh - 150px); overflow-y: auto; position: relative; }
#rows { position: absolute; left: 0; right: 0; }
.row { height: 33px; padding: 0 8px; border-bottom: 1px solid #eee; cursor: pointer; overflow: hidden; white-space: nowrap; }
.row:hover { background: #f6f8ff; } .row.open { background: #e8eeff; }
.row .answer, .row .id { overflow: hidden; text-overflow: ellipsis; } .thumb img { height: 30px; width: 40px; object-fit: cover; }
.noimg { font-size: 10px; color: #999; }
.v.right { color: #1d7a35; } .v.wrong { color: #b3261e; } .v.infra-error { color: #8a5a00; } .v.not-counted { color: #777; }
#case { padding: 8px 16px; height: calc(100vh - 110px); overflow-y: auto; border-left: 1px solid #ddd; }
.figure { position: relative; display: inline-block; max-width: 100%; }
.figure { width: min(100%, 560px); } .figure img { display: block; width: 100%; height: auto; image-rendering: pixelated; }
.overlay { position: absolute; left: 0; top: 0; width: 100%; height: 100%; pointer-events: none; }
.grid { stroke: rgba(255,255,255,0.7); stroke-width: 0.003; stroke-dasharray: 0.01 0.01; }
.truth-sector { fill: rgba(0,200,80,0.28); stroke: rgb(0,200,80); stroke-width: 0.004; }
.answer-sector { fill: rgba(255,40,40,0.28); stroke: rgb(255,40,40); stroke-width: 0.004; stroke-dasharray: 0.02 0.01; }
.truth-region { fill: none; stroke: rgb(0,255,110); stroke-width: 0.006; }
.answer-region { fill: none; stroke: rgb(255,150,0); stroke-width: 0.006; }
.mask { opacity: 0.45; } .point { fill: currentColor; } .truth-region.point { fill: rgb(0,255,110); } .answer-region.point { fill: rgb(255,150,0); }
table { border-collapse: collapse; margin: 6px 0; } th, td { border: 1px solid #ddd; padding: 2px 6px; text-align: left; vertical-align: top; }
pre { white-space: pre-wrap; background: #f7f7f7; padding: 6px; border: 1px solid #eee; max-height: 320px; overflow: auto; }
.note { color: #666; font-size: 12px; } .tabs { padding: 0 16px; } .tabs a { margin-right: 12px; }
#datasets { padding: 8px 16px; display: none; } body.show-datasets #datasets { display: block; } body.show-datasets main { display: none; }
.dataset { display: inline-block; vertical-align: top; margin: 0 24px 24px 0; } .matrix td { text-align: center; min-width: 28px; }
.pairs { padding: 0 16px; } .pairs:empty { display: none; }
.sector-map { display: inline-block; margin: 0 16px 8px 0; } .sectors td { width: 84px; height: 40px; text-align: center; }
.scatter { width: 280px; height: 280px; } .scatter .frame { fill: none; stroke: #999; stroke-width: 0.004; }
.scatter .diagonal { stroke: #999; stroke-width: 0.004; stroke-dasharray: 0.02; } .scatter .dot { fill: rgba(40,80,200,0.6); cursor: pointer; }
"""

_BODY = """
<header><h1 id="title"></h1><p>Run folder <code id="folder"></code> · <span id="count"></span></p><p id="control" class="note"></p></header>
<section id="pairs" class="pairs"></section>
<nav class="tabs"><a href="#" id="to-cases">Cases</a><a href="#" id="to-datasets">Per dataset</a></nav>
<div class="filters">
  {selects}
  <label>search <input id="f-q" type="search" placeholder="case id or answer text"></label>
</div>
<main>
  <section>
    <div id="head"><span></span><span data-sort="id">case</span><span data-sort="task">task</span>
      <span data-sort="dataset">dataset</span><span data-sort="strict">strict</span>
      <span data-sort="reference">reference</span><span>answer</span></div>
    <div id="list"><div id="spacer"></div><div id="rows"></div></div>
  </section>
  <section id="case"><p class="note">Choose a case to see its image, the prompt as sent, the answer and its verdicts.</p></section>
</main>
<section id="datasets"></section>
"""

_TABS = """
document.getElementById("to-datasets").addEventListener("click", (e) => { e.preventDefault(); datasets(); document.body.classList.add("show-datasets"); });
document.getElementById("to-cases").addEventListener("click", (e) => { e.preventDefault(); document.body.classList.remove("show-datasets"); });
"""

_LABELS = {
    "task": "task",
    "dataset": "dataset",
    "anatomy": "anatomy",
    "strict": "strict verdict",
    "reference": "reference verdict",
    "judged": "judged verdict",
    "outcome": "parse outcome",
    "truth": "truth (strict)",
    "pred": "answered (strict)",
    "pair": "A and B (strict)",
}


def _page_parts(title: str) -> tuple[str, str]:
    """The page before its data and after it."""
    selects = "\n  ".join(f'<label>{text} <select id="f-{key}"></select></label>' for key, text in _LABELS.items())
    head = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>\n"
        f'<body data-rendered="no">{_BODY.format(selects=selects)}'
        '<script id="view-data" type="application/json">'
    )
    return head, f"</script>\n<script>{SCRIPT}{_TABS}</script></body></html>\n"


@dataclass(frozen=True)
class ViewResult:
    page: Path
    cases: int
    images: int
    missing_images: int
    seconds: float
    bytes_written: int


def build_view(
    run: Path, out: Path, with_images: bool = True, workers: int = 2, run_b: Path | None = None
) -> ViewResult:
    """Write the case browser of the run folder ``run`` into ``out``; with ``run_b``, each case beside run B's
    answer to it and the McNemar cell it falls in."""
    started = time.perf_counter()
    folder = RunFolder(run)
    out.mkdir(parents=True, exist_ok=True)
    export: ImageExport | None = None
    if with_images:
        export = export_images(folder.grounded_options().source_root, [c.case for c in folder.cases()], out, workers)
    header = page_header(run, export, run_b)
    page = out / PAGE
    before, after = _page_parts(f"{header['model']} · cases")
    tmp = page.with_suffix(".html.tmp")
    try:
        with tmp.open("w", encoding="utf-8") as handle:  # written as the cases are read: one at a time in memory
            handle.write(before)
            cases = write_data(handle, run, header, iter_records(run, export, run_b))
            handle.write(after)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a run that cannot be read to its end leaves no half page behind
        raise
    tmp.replace(page)
    written = page.stat().st_size
    files = {f for image in (export.images.values() if export else []) for f in (image.image, image.thumb)}
    written += sum((out / f).stat().st_size for f in files)
    return ViewResult(
        page=page,
        cases=cases,
        images=len(export.images) if export else 0,
        missing_images=len(export.missing) if export else 0,
        seconds=time.perf_counter() - started,
        bytes_written=written,
    )
