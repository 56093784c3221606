"""The case browser's script: the case list (filtered, sorted, drawn only where it is visible, so 7,241 cases scroll
as fast as 20), a case's page with its image and what is drawn on it, and per dataset the picture of its answers
(a confusion matrix, a sector heat map, a scatter of estimates) whose cells lead to their cases.

Every text of a case goes into the page as text (``textContent``), never as markup: a run folder may come from
anyone and a model may answer with markup. Filters live in the address (``#task=ll&strict=wrong``), so a link
from a summary, a leaderboard or an ablation report opens the cases behind a number.
"""

SCRIPT = r"""
"use strict";
const DATA = JSON.parse(document.getElementById("view-data").textContent);
const CASES = DATA.cases;
const ROW = 34;
const FILTERS = ["task", "dataset", "anatomy", "strict", "reference", "judged", "outcome", "truth", "pred", "pair"];
const CELLS = ["right under both", "right under A only", "right under B only", "wrong under both"];
const state = {sort: "id", down: false, shown: CASES, open: null};
const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...kids) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v; else if (k === "text") node.textContent = v; else node.setAttribute(k, v);
  }
  for (const kid of kids) if (kid !== null && kid !== undefined) node.append(kid);
  return node;
}
function svg(tag, attrs) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}
const show = (v) => v === null || v === undefined ? "–" : (typeof v === "number" ? String(+v.toFixed(6)) : String(v));
function value(c, key) {
  if (key === "strict" || key === "reference") return c[key].label;
  if (key === "judged") return c.judged ? c.judged.label : "no judge";
  if (key === "truth") return show(c.strict.truth);
  if (key === "pred") return show(c.strict.prediction);
  if (key === "pair") return c.pair || "";
  return show(c[key]);
}

function params() {
  const found = {};
  for (const part of location.hash.replace(/^#/, "").split("&")) {
    const at = part.indexOf("=");
    if (at > 0) found[decodeURIComponent(part.slice(0, at))] = decodeURIComponent(part.slice(at + 1));
  }
  return found;
}
function setHash(extra) {
  const parts = [];
  for (const key of FILTERS) { const v = $("f-" + key).value; if (v) parts.push(key + "=" + encodeURIComponent(v)); }
  const q = $("f-q").value; if (q) parts.push("q=" + encodeURIComponent(q));
  if (extra) parts.push(extra);
  history.replaceState(null, "", "#" + parts.join("&"));
}

function fillFilters() {
  for (const key of FILTERS) {
    const select = $("f-" + key);
    const values = [...new Set(CASES.map((c) => value(c, key)))].sort();
    select.append(el("option", {value: "", text: "all"}));
    for (const v of values) select.append(el("option", {value: v, text: v}));
    select.addEventListener("change", () => { setHash(); apply(); });
  }
  $("f-q").addEventListener("input", () => { setHash(); apply(); });
  for (const th of document.querySelectorAll("#head [data-sort]")) {
    th.addEventListener("click", () => {
      state.down = state.sort === th.dataset.sort ? !state.down : false;
      state.sort = th.dataset.sort; apply();
    });
  }
}

function apply() {
  const want = {};
  for (const key of FILTERS) want[key] = $("f-" + key).value;
  const q = $("f-q").value.trim().toLowerCase();
  let shown = CASES.filter((c) => FILTERS.every((k) => !want[k] || value(c, k) === want[k])
    && (!q || c.id.toLowerCase().includes(q) || (c.answer || "").toLowerCase().includes(q)));
  const key = state.sort, sign = state.down ? -1 : 1;
  shown = shown.slice().sort((a, b) => sign * value(a, key).localeCompare(value(b, key), undefined, {numeric: true}));
  state.shown = shown;
  $("count").textContent = shown.length + " of " + CASES.length + " cases";
  $("spacer").style.height = (shown.length * ROW) + "px";
  $("list").scrollTop = 0;
  drawRows();
}

function drawRows() {
  const list = $("list"), rows = $("rows");
  const first = Math.max(0, Math.floor(list.scrollTop / ROW) - 5);
  const last = Math.min(state.shown.length, first + Math.ceil(list.clientHeight / ROW) + 10);
  rows.replaceChildren();
  rows.style.top = (first * ROW) + "px";
  for (let i = first; i < last; i++) {
    const c = state.shown[i];
    const thumb = c.image ? el("img", {src: c.image.thumb, alt: "", loading: "lazy"}) : el("span", {class: "noimg", text: "no image"});
    const row = el("div", {class: "row" + (state.open === c.id ? " open" : ""), "data-case": c.id},
      el("span", {class: "thumb"}, thumb), el("span", {class: "id", text: c.id}),
      el("span", {text: c.task.toUpperCase()}), el("span", {text: c.dataset}),
      el("span", {class: "v " + c.strict.label.split(":")[0].replace(" ", "-"), text: c.strict.label}),
      el("span", {class: "v " + c.reference.label.split(":")[0].replace(" ", "-"), text: c.reference.label}),
      el("span", {class: "answer", text: (c.answer || "").slice(0, 120)}));
    row.addEventListener("click", () => openCase(c.id));
    rows.append(row);
  }
}

const ROWS = {upper: [0, 0.45], middle: [0.45, 0.55], lower: [0.55, 1]};
const COLS = {left: [0, 0.45], center: [0.45, 0.55], right: [0.55, 1]};
function sectorRect(name) {
  if (!name || name === "not visible") return null;
  const [row, col] = name === "center" ? ["middle", "center"] : name.split(" ");
  if (!ROWS[row] || !COLS[col]) return null;
  return [COLS[col][0], ROWS[row][0], COLS[col][1], ROWS[row][1]];
}
function overlay(c) {
  const layer = svg("svg", {viewBox: "0 0 1 1", preserveAspectRatio: "none", class: "overlay"});
  if (c.task === "ll" || c.task === "od" || c.task === "kd") {
    for (const at of [0.45, 0.55]) {
      layer.append(svg("line", {x1: at, y1: 0, x2: at, y2: 1, class: "grid"}));
      layer.append(svg("line", {x1: 0, y1: at, x2: 1, y2: at, class: "grid"}));
    }
    const sectors = [[c.strict.truth, "truth-sector"], [c.strict.prediction, "answer-sector"]];
    for (const [name, cls] of sectors) {
      const r = sectorRect(name);
      if (r) layer.append(svg("rect", {x: r[0], y: r[1], width: r[2] - r[0], height: r[3] - r[1], class: cls}));
    }
  }
  const draw = (regions, cls) => {
    if (!regions) return;
    if (regions.mask) layer.append(svg("image", {href: regions.mask, x: 0, y: 0, width: 1, height: 1, preserveAspectRatio: "none", class: "mask " + cls}));
    for (const [x0, y0, x1, y1] of [...(regions.boxes || []), ...(regions.masks || [])]) {
      layer.append(svg("rect", {x: x0, y: y0, width: x1 - x0, height: y1 - y0, class: cls}));
    }
    for (const [x, y] of regions.points || []) layer.append(svg("circle", {cx: x, cy: y, r: 0.012, class: cls + " point"}));
  };
  draw(c.truth_regions, "truth-region");
  draw(c.answer_regions, "answer-region");
  return layer;
}

function table(rows) {
  const body = el("tbody");
  for (const [name, ...cells] of rows) body.append(el("tr", {}, el("th", {text: name}), ...cells.map((v) => el("td", {text: show(v)}))));
  return el("table", {class: "facts"}, body);
}
function openCase(id) {
  const c = CASES.find((x) => x.id === id);
  if (!c) return;
  state.open = id; setHash("case=" + encodeURIComponent(id)); drawRows();
  const pane = $("case");
  pane.replaceChildren(el("h2", {text: c.id}));
  const figure = el("div", {class: "figure"});
  if (c.image) {
    const img = el("img", {src: c.image.file, alt: "the case's image", id: "case-image"});
    figure.append(el("a", {href: c.image.file, target: "_blank", title: "the image at full size"}, img), overlay(c));
    if (DATA.control) pane.append(el("p", {class: "note control", text: "The model was sent " + DATA.control.sends + ", not this image."}));
    pane.append(figure, el("p", {class: "note", text: c.image.size.join(" × ") + " pixels"
      + (c.sent_size ? "; sent to the model as " + c.sent_size.join(" × ") : "")}));
  } else {
    pane.append(el("p", {class: "note", text: "No image: " + (DATA.images_missing[c.id] || "images were not exported")}));
  }
  pane.append(el("h3", {text: "Verdicts"}));
  const modes = ["strict", "reference", "judged"].filter((m) => c[m]).map((m) => [m, c[m].prediction, c[m].truth, c[m].label,
    (c[m].detail || "") + (c[m].changed_by ? " quirks: " + c[m].changed_by.join(", ") : ""),
    c[m].normalised_error !== undefined ? c[m].normalised_error : (c[m].metrics ? JSON.stringify(c[m].metrics) : null)]);
  const head = el("tr", {}, ...["mode", "read as", "truth", "verdict", "why", "error / metrics"].map((t) => el("th", {text: t})));
  const body = el("tbody", {}, head);
  for (const row of modes) body.append(el("tr", {}, ...row.map((v) => el("td", {text: show(v)}))));
  pane.append(el("table", {class: "verdicts"}, body));
  pane.append(table([["task / dataset", c.task.toUpperCase() + " / " + c.dataset], ["anatomy", c.anatomy],
    ["scenario", c.scenario], ["row", c.source], ["parse outcome", c.outcome], ["range", c.range ? c.range.join(" – ") : null],
    ["error", c.error ? c.error.kind + ": " + (c.error.message || "") : null], ["attempts", c.attempts],
    ["latency (s)", c.latency_s], ["tokens in / out", c.tokens ? c.tokens.join(" / ") : null]]));
  if (c.judge) {
    pane.append(el("h3", {text: "The judge's reading (" + DATA.judge + ")"}), table([["asked about", c.judge.kind],
      ["outcome", c.judge.status], ["read as", c.judge.reading], ["why", c.judge.detail]]));
    if (c.judge.reply !== undefined && c.judge.reply !== null && !c.clinical) pane.append(el("pre", {class: "judge-reply", text: c.judge.reply}));
  }
  if (c.clinical) {
    const [matched, significant, minor] = c.clinical.counts;
    pane.append(el("h3", {text: "Clinical comparison: score " + show(c.clinical.score) + " (" + matched + " matched, "
      + significant + " significant, " + minor + " minor errors)"}));
    const head = el("tr", {}, ...["reference finding", "answer finding", "errors"].map((t) => el("th", {text: t})));
    const body = el("tbody", {}, head);
    for (const row of c.clinical.rows) body.append(el("tr", {}, ...row.map((v) => el("td", {text: v || "–"}))));
    pane.append(el("table", {class: "clinical"}, body));
  }
  if (c.grounded) pane.append(el("h3", {text: "Grounded"}), table(Object.entries(c.grounded).map(([k, v]) => [k, Array.isArray(v) ? v.join(", ") : v])));
  pane.append(el("h3", {text: "The answer"}), el("pre", {class: "answer-text", text: c.answer === null ? "(none)" : c.answer}));
  if (DATA.run_b) {
    pane.append(el("h3", {text: "Run B: " + DATA.run_b.model + " (" + (c.pair || "") + ")"}));
    if (c.b) {
      pane.append(table([["strict", c.b.strict], ["reference", c.b.reference], ["read as (strict)", c.b.prediction], ["parse outcome", c.b.outcome]]));
      pane.append(el("pre", {class: "answer-b", text: c.b.answer === null ? "(none)" : c.b.answer}));
    } else pane.append(el("p", {class: "note", text: "Run B has no answer to this case."}));
  }
  pane.append(el("h3", {text: "The prompt as sent (the image first)"}));
  for (const [part, sha] of c.prompt) pane.append(el("h4", {text: part}), el("pre", {text: DATA.texts[sha] || "(text not kept)"}));
}

let drawnDatasets = false;
function datasets() {  // drawn when first shown: the case list is usable before
  if (drawnDatasets) return;
  drawnDatasets = true;
  const pane = $("datasets");
  const groups = {};
  for (const c of CASES) (groups[c.task + "/" + c.dataset] = groups[c.task + "/" + c.dataset] || []).push(c);
  const place = (ref) => { const [task, dataset] = ref.split("/"); return [DATA.task_order.indexOf(task), dataset]; };
  const order = (a, b) => { const [x, y] = [place(a[0]), place(b[0])]; return x[0] - y[0] || x[1].localeCompare(y[1], undefined, {numeric: true}); };
  for (const [ref, cases] of Object.entries(groups).sort(order)) {
    const box = el("section", {class: "dataset"}, el("h3", {text: cases[0].task.toUpperCase() + " " + cases[0].dataset + " (" + cases.length + " cases)"}));
    if (cases[0].range) box.append(scatter(cases)); else if (cases[0].task === "rg" || cases[0].task === "cg") continue;
    else {
      if (cases[0].task === "ll" || cases[0].task === "od" || cases[0].task === "kd") box.append(sectorMaps(ref, cases));
      box.append(matrix(ref, cases));
    }
    pane.append(box);
  }
}
function matrix(ref, cases) {
  const counted = cases.filter((c) => c.strict.counted);
  const truths = [...new Set(counted.map((c) => show(c.strict.truth)))].sort();
  const preds = [...new Set(counted.map((c) => show(c.strict.prediction)))].sort();
  const head = el("tr", {}, el("th", {text: "truth ↓ / answered →"}), ...preds.map((p) => el("th", {text: p})));
  const body = el("tbody", {}, head);
  const most = Math.max(1, ...truths.flatMap((t) => preds.map((p) => counted.filter((c) => show(c.strict.truth) === t && show(c.strict.prediction) === p).length)));
  for (const t of truths) {
    const row = el("tr", {}, el("th", {text: t}));
    for (const p of preds) {
      const n = counted.filter((c) => show(c.strict.truth) === t && show(c.strict.prediction) === p).length;
      const [task, dataset] = ref.split("/");
      const link = el("a", {href: "#task=" + task + "&dataset=" + encodeURIComponent(dataset) + "&truth=" + encodeURIComponent(t) + "&pred=" + encodeURIComponent(p), text: String(n)});
      const cell = el("td", {class: t === p ? "diag" : ""}, n ? link : "·");
      cell.style.background = n ? "rgba(" + (t === p ? "40,140,60," : "200,60,40,") + (0.15 + 0.6 * n / most) + ")" : "";
      row.append(cell);
    }
    body.append(row);
  }
  return el("table", {class: "matrix"}, body);
}
const GRID = [["upper left", "upper center", "upper right"], ["middle left", "center", "middle right"],
  ["lower left", "lower center", "lower right"]];
function sectorMaps(ref, cases) {  // the image's 3x3 sectors: where the truths lie (shaded by share right), where the answers went
  const counted = cases.filter((c) => c.strict.counted);
  const [task, dataset] = ref.split("/");
  const grid = (title, key) => {
    const body = el("tbody");
    for (const names of GRID) {
      const row = el("tr");
      for (const name of names) {
        const here = counted.filter((c) => show(c.strict[key]) === name);
        const right = here.filter((c) => c.strict.label === "right").length;
        const filter = key === "truth" ? "truth" : "pred";
        const link = el("a", {href: "#task=" + task + "&dataset=" + encodeURIComponent(dataset) + "&" + filter + "=" + encodeURIComponent(name),
          text: here.length + (key === "truth" ? " (" + right + " right)" : "")});
        const cell = el("td", {class: "sector", "data-sector": name}, here.length ? link : "0");
        if (here.length) cell.style.background = key === "truth" ? "rgba(40,140,60," + (0.1 + 0.7 * right / here.length) + ")" : "rgba(200,60,40," + Math.min(0.8, 0.1 + here.length / counted.length * 3) + ")";
        row.append(cell);
      }
      body.append(row);
    }
    return el("figure", {class: "sector-map"}, el("table", {class: "sectors"}, body), el("figcaption", {text: title}));
  };
  const invisible = counted.filter((c) => c.strict.truth === "not visible").length;
  return el("div", {}, grid("true sectors (shade: share answered right)", "truth"), grid("answered sectors", "prediction"),
    el("p", {class: "note", text: invisible + " case(s) whose truth is not visible; the matrix below has every answer."}));
}

function scatter(cases) {
  const points = cases.filter((c) => typeof c.strict.prediction === "number" && typeof c.strict.truth === "number");
  const [low, high] = cases[0].range;
  const span = high - low || 1;
  const plot = svg("svg", {viewBox: "-0.05 -0.05 1.1 1.1", class: "scatter"});
  plot.append(svg("rect", {x: 0, y: 0, width: 1, height: 1, class: "frame"}), svg("line", {x1: 0, y1: 1, x2: 1, y2: 0, class: "diagonal"}));
  for (const c of points) {
    const x = Math.min(1.04, Math.max(-0.04, (c.strict.truth - low) / span));
    const y = 1 - Math.min(1.04, Math.max(-0.04, (c.strict.prediction - low) / span));
    const dot = svg("circle", {cx: x, cy: y, r: 0.012, class: "dot"});
    dot.addEventListener("click", () => { location.hash = "case=" + encodeURIComponent(c.id); route(); });
    plot.append(dot);
  }
  return el("figure", {}, plot, el("figcaption", {text: "answered (up) against true (right), the range " + low + " – " + high}));
}

function pairs() {  // McNemar's cells per task, each count a link to its cases
  if (!DATA.run_b) return;
  const tasks = DATA.task_order.filter((t) => CASES.some((c) => c.task === t && CELLS.includes(c.pair)));
  const head = el("tr", {}, el("th", {text: "A: " + DATA.model + " · B: " + DATA.run_b.model}), ...CELLS.map((n) => el("th", {text: n})));
  const body = el("tbody", {}, head);
  for (const task of tasks) {
    const row = el("tr", {"data-task": task}, el("th", {text: task.toUpperCase()}));
    for (const cell of CELLS) {
      const n = CASES.filter((c) => c.task === task && c.pair === cell).length;
      row.append(el("td", {"data-cell": cell}, n ? el("a", {href: "#task=" + task + "&pair=" + encodeURIComponent(cell), text: String(n)}) : "0"));
    }
    body.append(row);
  }
  $("pairs").append(el("table", {class: "paired"}, body));
}

function route() {
  const found = params();
  document.body.classList.remove("show-datasets");  // a link into the cases (a matrix cell, a dot) shows them
  for (const key of [...FILTERS, "q"]) { const box = $("f-" + key); if (box) box.value = found[key] || ""; }
  apply();
  if (found.case) openCase(found.case);
}
try {
  $("title").textContent = DATA.model + (DATA.prompt_variant ? " · " + DATA.prompt_variant : "");
  $("folder").textContent = DATA.folder;
  if (DATA.control) $("control").textContent = "A control run (" + DATA.control.name + "): each case was sent "
    + DATA.control.sends + " in place of the image shown here, and scored against its own truth.";
  fillFilters();
  pairs();
  $("list").addEventListener("scroll", drawRows);
  window.addEventListener("hashchange", route);
  route();
  document.body.dataset.listReadyMs = String(Math.round(performance.now()));  // since navigation: bench/view.py
  document.body.dataset.rendered = "ok";
} catch (error) {
  document.body.dataset.error = String(error);
  throw error;
}
"""
