"""Leaderboards from run folders: re-scored, ranked with intervals, refused when runs cannot share a board,
written in every format, and the HTML page opened in a real headless browser."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from browser import needs_browser, open_page
from fake_models import Oracle

from u2eval.errors import ConfigError
from u2eval.reports.comparability import PUBLISHED_ON_STRICT, SYNTHETIC, placement
from u2eval.reports.leaderboard import Board, BoardOptions, Cell, build_board, published_rows
from u2eval.reports.leaderboard_files import write_board
from u2eval.reports.rundata import find_runs, load_run
from u2eval.run.runner import RunOptions, run

TESTS = Path(__file__).parent


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three runs on the sample: a skilled fake model, the random baseline and a partial run."""
    root = tmp_path_factory.mktemp("results")
    run(RunOptions(model="oracle", out=root / "oracle"), adapter=Oracle(skill=0.7))
    run(RunOptions(model="random", out=root / "random", seed=1))
    run(RunOptions(model="random", out=root / "nested" / "partial", seed=2, tasks=("dd", "ll"), limit=2))
    return root


@pytest.fixture(scope="module")
def board(results: Path) -> Board:
    # Reference mode: the published rows (the official scorer's numbers) rank on such a board only.
    return build_board([results], BoardOptions(mode="reference", published=True, by="anatomy", resamples=300))


def _copy_run(results: Path, name: str, destination: Path) -> Path:
    target = destination / name
    shutil.copytree(results / name, target)
    return target


def test_runs_are_found_under_folders_but_not_inside_run_folders(results: Path) -> None:
    found = find_runs([results])
    assert [p.name for p in found] == ["partial", "oracle", "random"]  # sorted walk: nested/ before oracle/
    assert find_runs([results / "oracle", results]) == [found[1], found[0], found[2]]  # no duplicates
    with pytest.raises(ConfigError, match="no such run folder"):
        find_runs([results / "nowhere"])
    (results.parent / "empty").mkdir(exist_ok=True)
    with pytest.raises(ConfigError, match="no run folders"):
        find_runs([results.parent / "empty"])


def test_board_ranks_runs_with_intervals(results: Path) -> None:
    board = build_board([results], BoardOptions(resamples=300))
    runs = [r for r in board.rows if r.source == "run"]
    assert [r.model for r in runs] == [
        "oracle/oracle-0.7@seed-0",
        "random/random-guess@seed-1",
        "random/random-guess@seed-2",
    ]
    oracle, baseline, partial = runs
    assert (oracle.rank, baseline.rank) == (1, 2)
    assert oracle.u2.low is not None and oracle.u2.high is not None
    assert oracle.u2.low <= (oracle.u2.score or 0) <= oracle.u2.high
    assert set(oracle.tasks) == {"dd", "vra", "ll", "od", "kd", "cve", "rg", "cg"}
    assert oracle.tasks["dd"].low is not None and oracle.tasks["dd"].high is not None
    # The estimates are the strict summary's numbers.
    summary = load_run(results / "oracle").summary.modes["strict"]
    assert oracle.u2.score == summary.u2_score
    assert {k: c.score for k, c in oracle.tasks.items()} == {k: t.score for k, t in summary.tasks.items()}
    assert not oracle.partial and oracle.infra_errors == 0 and oracle.parse_rate is not None
    assert partial.partial and partial.rank is None and partial.u2.score is None
    assert partial.apart == "asked only part of the cases (limit 2 per dataset)"
    assert (
        partial.partial_reasons[0].startswith("missing vra,od,kd,cve,rg,cg")
        and "limit 2 per dataset" in partial.partial_reasons
    )


def test_runs_on_synthetic_data_are_never_ranked_beside_the_published_rows(board: Board) -> None:
    runs = [r for r in board.rows if r.source == "run"]
    assert all(r.rank is None and r.apart is not None for r in runs)
    assert {r.apart for r in runs if not r.subset} == {SYNTHETIC}
    published = [r for r in board.rows if r.source == "published"]
    assert len(published) == 22 and all(r.u2.low is None and r.parse_rate is None for r in published)
    assert [r.rank for r in board.rows[:22]] == sorted(r.rank for r in published if r.rank is not None)
    assert board.rows[0].rank == 1 and board.rows[0].source == "published"
    scores = [r.u2.score for r in board.rows if r.rank is not None]
    assert scores == sorted(scores, reverse=True)
    assert any(SYNTHETIC in note for note in board.notes)  # the page says why, in words


HUB = {"kind": "hub", "repo": "DolphinAI/u2-bench", "revision": "main", "sha": "ab" * 20, "synthetic": None}


def test_only_a_whole_run_on_the_7241_real_cases_ranks_beside_the_paper(results: Path) -> None:
    oracle = load_run(results / "oracle")
    on_hub = oracle.manifest.model_copy(update={"dataset": HUB})
    whole = dataclasses.replace(oracle, manifest=on_hub, judgements=(oracle.judgements * 37)[:7241])
    assert placement([whole], published=True, mode="reference") == {whole.folder: None}
    few = dataclasses.replace(oracle, manifest=on_hub)  # real data, but 200 cases
    assert placement([few], True, "reference")[few.folder] == (
        "200 cases, not the 7,241 of U2-Bench the published rows were measured on"
    )
    failed = dataclasses.replace(whole, summary=whole.summary.model_copy(update={"infra_error_case_ids": ["x"]}))
    assert placement([failed], True, "reference")[failed.folder] == (
        "partial (1 infra errors), beside published rows that cover every task and case"
    )
    assert placement([oracle], True, "reference")[oracle.folder] == SYNTHETIC
    # A strict board does not rank the paper's rows, so runs rank among themselves whatever their data.
    assert placement([oracle, few], True, "strict") == {oracle.folder: None, few.folder: None}


def test_a_real_data_run_shares_the_ranking_with_the_published_rows_only_in_reference_mode(
    results: Path, tmp_path: Path
) -> None:
    real = _copy_run(results, "oracle", tmp_path)
    _edit_manifest(real, dataset=HUB)
    strict = build_board([real], BoardOptions(resamples=50, published=True)).rows
    assert [r.source for r in strict if r.rank is not None] == ["run"]  # the paper's 22 rows listed apart...
    assert {r.apart for r in strict if r.source == "published"} == {PUBLISHED_ON_STRICT}  # ...saying why
    reference = build_board([real], BoardOptions(mode="reference", resamples=50, published=True)).rows
    ranked = [r for r in reference if r.rank is not None]
    assert len(ranked) == 22 and all(r.source == "published" for r in ranked)
    run_row = next(r for r in reference if r.source == "run")
    assert run_row.rank is None and run_row.apart is not None and "not the 7,241" in run_row.apart


def test_published_rows_ship_with_the_package_and_match_the_paper() -> None:
    shipped = (Path(__file__).parents[1] / "u2eval" / "benchmark" / "published.csv").read_text()
    assert shipped == (TESTS / "data" / "leaderboard.csv").read_text()
    rows = {r.model: r for r in published_rows()}
    dolphin = rows["Dolphin-V1-Preview"]
    assert dolphin.u2.score == 0.4748 and dolphin.tasks["cve"].score == pytest.approx(1 - 0.256)
    assert dolphin.tasks["rg"].score == pytest.approx(0.164266)
    assert rows["Random Guessing"].tasks["rg"].score == 0.0  # '-' counts 0, as in the published U2


def test_a_run_over_part_of_the_cases_is_shown_but_never_ranked(results: Path, tmp_path: Path) -> None:
    # a perfect model on one case per dataset would top the board if it were ranked
    run(RunOptions(model="oracle", out=tmp_path / "quick", limit=1), adapter=Oracle(skill=1.0))
    rows = build_board([results / "oracle", tmp_path / "quick"], BoardOptions(resamples=50)).rows
    full, quick = rows
    assert full.model == "oracle/oracle-0.7@seed-0" and full.rank == 1
    assert quick.rank is None and quick.subset and quick.partial_reasons == ["limit 1 per dataset"]
    assert quick.u2.score is not None and full.u2.score is not None and quick.u2.score > full.u2.score


def test_a_hand_edited_summary_is_ignored(results: Path, tmp_path: Path) -> None:
    folder = _copy_run(results, "oracle", tmp_path)
    summary = json.loads((folder / "summary.json").read_text())
    summary["modes"]["strict"]["u2_score"] = 0.99
    summary["modes"]["strict"]["tasks"]["dd"]["score"] = 0.99
    (folder / "summary.json").write_text(json.dumps(summary))
    row = build_board([folder], BoardOptions(resamples=50)).rows[0]
    original = build_board([results / "oracle"], BoardOptions(resamples=50)).rows[0]
    assert row.stale_summary and not original.stale_summary
    assert row.u2 == original.u2 and row.tasks == original.tasks and row.u2.score != 0.99


def test_summaries_from_before_the_subset_field_are_not_stale(results: Path, tmp_path: Path) -> None:
    folder = _copy_run(results, "oracle", tmp_path)
    summary = json.loads((folder / "summary.json").read_text())
    assert summary.pop("subset") == []
    (folder / "summary.json").write_text(json.dumps(summary))
    assert not load_run(folder).stale_summary
    summary["subset"] = ["limit 1 per dataset"]  # but a subset the answers do not show is
    (folder / "summary.json").write_text(json.dumps(summary))
    assert load_run(folder).stale_summary


def _edit_manifest(folder: Path, **changes: object) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    for key, value in changes.items():
        if isinstance(value, dict):
            manifest[key].update(value)
        else:
            manifest[key] = value
    (folder / "manifest.json").write_text(json.dumps(manifest))


def test_runs_share_a_ranking_exactly_when_they_were_scored_on_the_same_cases(results: Path, tmp_path: Path) -> None:
    # Another copy of the same data (other folder, same case ids) ranks beside; another case set is listed apart.
    moved = _copy_run(results, "random", tmp_path)
    _edit_manifest(moved, dataset={"kind": "local", "root": "/elsewhere/u2-bench", "synthetic": "yes"})
    other = _copy_run(results / "nested", "partial", tmp_path)
    _edit_manifest(other, limit=None, dataset={"selection": None})
    rows = {r.run: r for r in build_board([results / "oracle", moved, other], BoardOptions(resamples=50)).rows}
    assert rows[str(results / "oracle")].rank == 1 and rows[str(moved)].rank == 2
    apart = rows[str(other)]
    assert apart.rank is None and apart.apart is not None
    assert apart.apart.startswith("scored on 36 of the ranked runs' 200 cases (tasks DD, LL)")  # a part, named
    done = subprocess.run(
        [sys.executable, "-m", "u2eval", "leaderboard", str(results / "oracle"), str(moved), str(other)]
        + ["--out", str(tmp_path / "b"), "--bootstrap", "20", "--no-plots"],
        capture_output=True, text=True, env={**os.environ, "COLUMNS": "300"}, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "scored on 36 of the ranked runs' 200 cases" in done.stdout


def test_rows_are_labelled_by_what_tells_them_apart(results: Path, tmp_path: Path) -> None:
    twin = _copy_run(results, "oracle", tmp_path)
    seed = _copy_run(results, "oracle", tmp_path / "s")
    _edit_manifest(seed, seed=7)
    rows = build_board([results / "oracle", twin, seed], BoardOptions(resamples=20)).rows
    labels = [r.label for r in rows]
    assert len(set(labels)) == 3, labels
    assert "oracle/oracle-0.7@seed-0 (seed 7)" in labels
    assert sum(label.endswith("[oracle]") for label in labels) == 0  # same names under two parents: full paths
    assert sum(str(twin) in label for label in labels) == 1


def test_unreadable_folders_are_skipped_with_why(results: Path, tmp_path: Path) -> None:
    broken = _copy_run(results, "random", tmp_path)
    (broken / "manifest.json").unlink()  # what an interrupted run leaves
    steps: list[tuple[int, int]] = []
    board = build_board([results / "oracle", broken], BoardOptions(resamples=20), progress=lambda *s: steps.append(s))
    assert [r.run for r in board.rows] == [str(results / "oracle")]
    assert steps == [(1, 4), (2, 4), (3, 3)]  # two folders re-scored (one fails), then one run's intervals
    assert len(board.skipped) == 1 and str(broken) in board.skipped[0] and "unfinished run" in board.skipped[0]
    write_board(board, tmp_path / "out", plots=False)
    for name in ("leaderboard.md", "leaderboard.html"):
        assert "unfinished run" in (tmp_path / "out" / name).read_text(encoding="utf-8")


def test_runs_with_different_task_files_are_refused(results: Path, tmp_path: Path) -> None:
    other = _copy_run(results, "random", tmp_path)
    manifest = json.loads((other / "manifest.json").read_text())
    _edit_manifest(other, tasks={**manifest["tasks"], "dd": "0" * 64})
    with pytest.raises(ConfigError, match=r"task dd differs \(task file sha256 4e1dae1b|task dd differs"):
        build_board([results / "oracle", other], BoardOptions(resamples=50))


def test_slices_by_anatomy_cover_every_case_once(board: Board, results: Path) -> None:
    oracle = [e.row for e in board.slices if e.model.startswith("oracle")]
    run_cases = load_run(results / "oracle").judgements
    for task in {"dd", "ll", "cve", "rg"}:
        rows = [r for r in oracle if r.task == task]
        assert sum(r.n_cases for r in rows) == sum(1 for j in run_cases if j.task == task)
        assert len({r.value for r in rows}) == len(rows)
    breast = next(r for r in oracle if r.task == "dd" and r.value == "breast")
    assert breast.n_cases == 16 and breast.low is not None and breast.high is not None
    assert breast.low <= (breast.score or 0) <= breast.high


def test_every_format_is_written(board: Board, tmp_path: Path) -> None:
    written = write_board(board, tmp_path)
    names = {p.name for p in written}
    assert names == {
        "leaderboard.md",
        "leaderboard.csv",
        "leaderboard.json",
        "leaderboard.html",
        "leaderboard_by_anatomy.csv",
        "leaderboard_u2.png",
        "leaderboard_tasks.png",
    }
    md = (tmp_path / "leaderboard.md").read_text()
    assert "| rank | model | U2-Score | DD (accuracy) |" in md and "CVE (1 − RMSE)" in md and "*(published)*" in md
    assert "## Listed apart, unranked" in md and "## By anatomy" in md
    rows = list(csv.DictReader((tmp_path / "leaderboard.csv").open()))
    assert len(rows) == 25 and rows[0]["rank"] == "1" and {"u2_low", "dd_high", "partial"} <= set(rows[0])
    assert Board.model_validate_json((tmp_path / "leaderboard.json").read_text()) == board
    for png in ("leaderboard_u2.png", "leaderboard_tasks.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = (tmp_path / "leaderboard.html").read_text()
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "") and "https://" not in html


def test_an_interval_that_does_not_hold_its_estimate_is_still_drawn(board: Board, tmp_path: Path) -> None:
    # A percentile interval need not hold the point estimate (rounding before averaging, a skewed statistic):
    # the whiskers are drawn at the interval's own bounds, never as (negative) distances from the estimate.
    first = board.rows[0].model_copy(update={"u2": Cell(score=0.5, low=0.55, high=0.6)})
    odd = board.model_copy(update={"rows": [first, *board.rows[1:]]})
    written = write_board(odd, tmp_path)
    assert (tmp_path / "leaderboard_u2.png") in written


def _chromium() -> str | None:
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


# CI installs chromium and sets U2EVAL_REQUIRE_BROWSER: there the page must be tested, never skipped.
@pytest.mark.skipif(
    _chromium() is None and not os.environ.get("U2EVAL_REQUIRE_BROWSER"), reason="no chromium binary on PATH"
)
def test_the_html_page_renders_its_table_and_charts_in_a_headless_browser(board: Board, tmp_path: Path) -> None:
    write_board(board, tmp_path, plots=False)
    browser = _chromium()
    assert browser is not None
    done = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--dump-dom",
            (tmp_path / "leaderboard.html").as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=90,
    )
    dom = done.stdout
    assert done.returncode == 0, done.stderr[-2000:]
    assert 'data-rendered="ok"' in dom and "data-error" not in dom
    runs = sum(1 for r in board.rows if r.source == "run")
    with_score = sum(1 for r in board.rows if (r.u2.score if r.u2.score is not None else r.u2_over_present_tasks.score))
    bars = with_score + sum(1 for r in board.rows if r.source == "run" for t in r.tasks.values() if t.score is not None)
    assert f'data-bars="{bars}"' in dom and runs == 3
    assert dom.count('class="heat"') == 8 * len(board.rows)
    u2_cells = [r.u2 if r.u2.score is not None else r.u2_over_present_tasks for r in board.rows]
    task_cells = [c for r in board.rows if r.source == "run" for c in r.tasks.values()]
    whiskers = sum(1 for c in u2_cells + task_cells if c.score is not None and c.low is not None and c.high is not None)
    assert dom.count('class="whisker"') == whiskers > 3 * 6


def test_cli_leaderboard_and_score_by_anatomy(results: Path, tmp_path: Path) -> None:
    env = {**os.environ, "COLUMNS": "250"}
    done = subprocess.run(
        [sys.executable, "-m", "u2eval", "leaderboard", str(results), "--out", str(tmp_path), "--by", "dataset"]
        + ["--bootstrap", "100", "--no-plots"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "oracle/oracle-0.7@seed-0" in done.stdout and (tmp_path / "leaderboard_by_dataset.csv").is_file()
    assert not (tmp_path / "leaderboard_u2.png").exists()
    done = subprocess.run(
        [sys.executable, "-m", "u2eval", "score", str(results / "random"), "--by", "anatomy", "--bootstrap", "100"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "by anatomy (strict" in done.stdout and "│ DD   │ breast" in done.stdout


def test_without_matplotlib_everything_but_the_pngs_is_written(
    board: Board, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # what an install without u2eval[plots] sees
    written = write_board(board, tmp_path)
    assert {p.suffix for p in written} == {".md", ".csv", ".json", ".html"}
    assert "pip install 'u2eval[plots]'" in caplog.text


@needs_browser
def test_in_a_1280px_window_the_page_says_why_rows_are_apart_and_keeps_the_model_in_view(
    board: Board, tmp_path: Path
) -> None:
    write_board(board, tmp_path, plots=False)
    with open_page(tmp_path / "leaderboard.html", width=1280) as page:
        assert page.evaluate("document.body.dataset.rendered") == "ok"  # type: ignore[attr-defined]
        why = page.locator("p.why", has_text="synthetic data")  # type: ignore[attr-defined]
        assert why.count() == 1 and why.is_visible()
        box = why.bounding_box()
        assert box is not None and box["y"] < 800 and box["x"] + box["width"] <= 1280  # above the fold, in view
        # The table is far wider than the window: scrolled to its right end, the model column stays in view.
        widths = page.evaluate(  # type: ignore[attr-defined]
            "(() => { const s = document.querySelector('.scroll'); s.scrollLeft = s.scrollWidth;"
            " return [s.scrollWidth, s.clientWidth, s.scrollLeft]; })()"
        )
        assert widths[0] > widths[1] + 500 and widths[2] > 0
        model = page.locator("#board tbody tr").first.locator("td.model")  # type: ignore[attr-defined]
        cell = model.bounding_box()
        assert cell is not None and 0 <= cell["x"] < 200 and model.inner_text().strip()
        apart = page.locator("#apart tbody tr")  # type: ignore[attr-defined]
        assert apart.count() == 3
        assert (
            "synthetic data" in apart.first.locator("td").last.inner_text()
            or "part of the cases" in apart.first.inner_text()
        )
