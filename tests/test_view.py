"""The case browser (``u2eval view``): every case of a run on one offline page, with its image and what is drawn on
it, both verdicts and the prompt as sent; filters that change what is shown; untrusted text kept as text."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from browser import needs_browser, open_page
from PIL import Image

from model_adapters.grounded_standin import GroundedStandIn
from u2eval.models.protocol import ModelRequest
from u2eval.records import Completion, ModelInfo
from u2eval.resources import sample_dir
from u2eval.run.runner import RunOptions, run
from u2eval.view.page import build_view

EVIL = '<img src=x onerror="document.body.dataset.pwned=1"><script>document.body.dataset.pwned=2</script></script>'


def _data(page: Path) -> dict[str, object]:
    """The JSON the page carries, read back as the page's script reads it."""
    found = re.search(r'<script id="view-data" type="application/json">(.*?)</script>', page.read_text(), re.S)
    assert found is not None
    data: dict[str, object] = json.loads(found.group(1))
    return data


@pytest.fixture(scope="module")
def grounded_view(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object]]:
    """A grounded stand-in's run on a copy of the sample (it misplaces some regions), and its view."""
    root = tmp_path_factory.mktemp("view")
    data = root / "data"
    shutil.copytree(sample_dir(), data)
    folder = root / "run"
    run(
        RunOptions(model="grounded", data=str(data), out=folder, grounded=True),
        adapter=GroundedStandIn("oracle", None, 1.0, 0),
    )
    result = build_view(folder, root / "view")
    assert result.cases == 200 and result.images == 200 and result.missing_images == 0
    return result.page, _data(result.page)


def test_every_case_is_on_the_page_with_its_verdicts_prompt_and_image(
    grounded_view: tuple[Path, dict[str, object]],
) -> None:
    page, data = grounded_view
    cases = data["cases"]
    assert isinstance(cases, list) and len(cases) == 200
    ll = next(c for c in cases if c["task"] == "ll")
    assert {"strict", "reference", "prompt", "answer", "image", "truth_regions"} <= set(ll)
    assert ll["strict"]["label"] in ("right", "wrong") and ll["truth_regions"]["boxes"]
    texts = data["texts"]
    assert isinstance(texts, dict) and all(sha in texts for _, sha in ll["prompt"])  # every part's text kept once
    with Image.open(page.parent / ll["image"]["file"]) as full, Image.open(page.parent / ll["image"]["thumb"]) as thumb:
        assert list(full.size) == ll["image"]["size"] and max(thumb.size) <= 160
    cve = next(c for c in cases if c["task"] == "cve" and c["strict"]["counted"])
    assert "normalised_error" in cve["strict"] and len(cve["range"]) == 2
    rg = next(c for c in cases if c["task"] == "rg" and c["strict"]["counted"])
    assert set(rg["strict"]["metrics"]) == {"bleu4", "rouge_l"}


def test_without_the_dataset_the_page_says_why_each_image_is_missing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(sample_dir(), data)
    folder = tmp_path / "run"
    run(RunOptions(model="random", data=str(data), out=folder, tasks=("kd",)))
    first = build_view(folder, tmp_path / "view")
    shutil.rmtree(data)
    # The images an earlier view wrote are reused, found by their digest: the dataset is not read again.
    again = build_view(folder, tmp_path / "view")
    assert again.images == first.images == again.cases > 0 and again.missing_images == 0
    result = build_view(folder, tmp_path / "elsewhere")
    shown = _data(result.page)
    assert result.images == 0 and result.missing_images == result.cases > 0
    assert set(shown["images_missing"].values()) == {"the run's dataset is not on this machine"}  # type: ignore[union-attr]


class Mischief:
    """A model whose name and answers are markup: the page must show them as text and run none of it."""

    info = ModelInfo(adapter="<script>document.body.dataset.pwned=3</script>", model=EVIL)
    max_batch_size = 16

    async def generate(self, requests: Sequence[ModelRequest]) -> list[Completion]:
        return [Completion(case_id=r.case.case_id, key=r.key, text=EVIL) for r in requests]

    async def aclose(self) -> None:
        return None


@needs_browser
def test_markup_in_answers_and_model_names_stays_text(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    run(RunOptions(model="mischief", out=folder, tasks=("dd",), limit=1), adapter=Mischief())
    page = build_view(folder, tmp_path / "view").page
    with open_page(page) as browser:
        assert browser.evaluate("document.body.dataset.rendered") == "ok"
        browser.click("#rows .row")
        browser.wait_for_selector(".answer-text")
        assert browser.inner_text(".answer-text") == EVIL  # shown, character for character
        assert EVIL in browser.inner_text("#title")
        assert browser.evaluate("document.body.dataset.pwned") is None  # and nothing of it ran
        assert browser.evaluate("document.querySelectorAll('#case img[src=x], #case script').length") == 0


def _tint(image: Image.Image, box: tuple[float, float, float, float]) -> float:
    """Mean green minus red over the middle of a box given in 0-1 of the image."""
    w, h = image.size
    x0, y0, x1, y1 = box
    inner = image.crop((int((x0 + 0.3 * (x1 - x0)) * w), int((y0 + 0.3 * (y1 - y0)) * h),
                        int((x1 - 0.3 * (x1 - x0)) * w), int((y1 - 0.3 * (y1 - y0)) * h))).convert("RGB")  # fmt: skip
    pixels = np.asarray(inner, dtype=np.float64)
    return float((pixels[:, :, 1] - pixels[:, :, 0]).mean())


SECTORS = {"upper left": (0, 0, 0.45, 0.45), "upper right": (0.55, 0, 1, 0.45), "lower left": (0, 0.55, 0.45, 1),
           "lower right": (0.55, 0.55, 1, 1)}  # fmt: skip


@needs_browser
def test_filters_change_the_cases_and_a_case_shows_its_sectors_on_its_image(
    grounded_view: tuple[Path, dict[str, object]],
) -> None:
    page, data = grounded_view
    cases = data["cases"]
    assert isinstance(cases, list)
    wrong_ll = [c for c in cases if c["task"] == "ll" and c["strict"]["label"] == "wrong"]
    case = next(
        c
        for c in wrong_ll
        if c["strict"]["truth"] in SECTORS
        and c["strict"]["prediction"] in SECTORS
        and 0.02 < c["answer_regions"]["boxes"][0][1] < 0.98  # its top edge inside the image, to look at
    )
    with open_page(page, 1500, 1000) as browser:
        assert browser.inner_text("#count") == "200 of 200 cases"
        browser.select_option("#f-task", "ll")
        assert browser.inner_text("#count") == f"{sum(c['task'] == 'll' for c in cases)} of 200 cases"
        browser.select_option("#f-strict", "wrong")
        assert browser.inner_text("#count") == f"{len(wrong_ll)} of 200 cases"
        browser.fill("#f-q", case["id"])
        assert browser.inner_text("#count") == "1 of 200 cases"
        browser.click("#rows .row")
        figure = browser.wait_for_selector(".figure")
        assert figure is not None
        assert browser.get_attribute("#case .figure a", "href") == case["image"]["file"]  # a click: full size
        shot = Image.open(io.BytesIO(figure.screenshot()))
        truth, answered = SECTORS[case["strict"]["truth"]], SECTORS[case["strict"]["prediction"]]
        others = [
            box for name, box in SECTORS.items() if name not in (case["strict"]["truth"], case["strict"]["prediction"])
        ]
        plain = sum(_tint(shot, box) for box in others) / len(others)
        assert _tint(shot, truth) > plain + 20  # the truth's sector is washed green
        assert _tint(shot, answered) < plain - 20  # the answered one red
        # The answer's box is outlined in orange: the middle of its top edge is orange on the screen.
        x0, y0, x1, _ = case["answer_regions"]["boxes"][0][:4]
        w, h = shot.size
        edge = np.asarray(shot.convert("RGB"), dtype=np.float64)[
            round(y0 * h) - 1 : round(y0 * h) + 2, round((x0 + x1) / 2 * w) - 1 : round((x0 + x1) / 2 * w) + 2
        ].mean(axis=(0, 1))
        assert edge[0] > 200 and 100 < edge[1] < 190 and edge[2] < 80, edge
        # A link into the cases (as a dataset's matrix cell gives) opens them filtered.
        browser.evaluate("location.hash = '#task=cve'")
        browser.wait_for_function("document.getElementById('count').textContent.startsWith('20 of')")


def test_the_view_command_writes_the_page_and_says_what_it_wrote(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    run(RunOptions(model="random", out=folder, tasks=("od",)))
    done = subprocess.run(
        [sys.executable, "-m", "u2eval", "view", str(folder), "--no-images"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert f"wrote {folder / 'view' / 'index.html'} (52 cases, 0 images" in done.stderr.replace("\n", "")
    missing = subprocess.run(
        [sys.executable, "-m", "u2eval", "view", str(tmp_path / "nope")], capture_output=True, text=True
    )
    assert missing.returncode == 2 and "no such run folder" in missing.stderr


@needs_browser
def test_two_runs_show_mcnemars_cells_as_the_paired_comparison_counts_them(tmp_path: Path) -> None:
    from u2eval.reports.paired import compare
    from u2eval.reports.rundata import load_run

    run_a, run_b = tmp_path / "a", tmp_path / "b"
    run(RunOptions(model="random", out=run_a, tasks=("dd", "ll")))
    run(RunOptions(model="random", seed=1, out=run_b, tasks=("dd", "ll")))
    page = build_view(run_a, tmp_path / "view", with_images=False, run_b=run_b).page
    comparison = compare(load_run(run_a), load_run(run_b), "A", "B", mode="strict", resamples=50)
    with open_page(page) as browser:
        for task in comparison.tasks:
            row = f"#pairs tr[data-task='{task.task}']"
            b = int(browser.inner_text(f"{row} td[data-cell='right under A only']"))
            c = int(browser.inner_text(f"{row} td[data-cell='right under B only']"))
            both = [
                int(browser.inner_text(f"{row} td[data-cell='{cell}']"))
                for cell in ("right under both", "wrong under both")
            ]
            assert (b, c) == (task.b, task.c) and b + c + sum(both) == task.n, task.task
        # A cell's count leads to its cases, each beside run B's answer.
        browser.click("#pairs tr[data-task='dd'] td[data-cell='right under A only'] a")
        browser.wait_for_function(
            f"document.getElementById('count').textContent.startsWith('{comparison.tasks[0].b} of')"
        )
        browser.click("#rows .row")
        assert browser.inner_text("#case").count("Run B: random/random-guess (right under A only)") == 1
        assert browser.query_selector(".answer-b") is not None


def test_a_leaderboard_row_links_its_runs_case_browser_only_where_one_was_made(tmp_path: Path) -> None:
    from u2eval.reports.leaderboard import BoardOptions, build_board
    from u2eval.reports.leaderboard_files import write_board

    seen, unseen = tmp_path / "runs" / "seen", tmp_path / "runs" / "unseen"
    run(RunOptions(model="random", out=seen, tasks=("dd",)))
    run(RunOptions(model="random", seed=3, out=unseen, tasks=("dd",)))
    page = build_view(seen, seen / "view", with_images=False).page
    board = build_board([tmp_path / "runs"], BoardOptions(resamples=20))
    written = write_board(board, tmp_path / "board", plots=False)
    html = next(p for p in written if p.suffix == ".html").read_text(encoding="utf-8")
    assert html.count('title="every case of the run"') == 1
    assert f'href="{page.resolve().as_uri()}"' in html


def test_an_ablation_report_gives_the_command_that_shows_the_cases_behind_b_and_c(tmp_path: Path) -> None:
    out = tmp_path / "ablate"
    command = [sys.executable, "-m", "u2eval", "ablate", "--model", "random", "--variants", "ours,ours-noanatomy"]
    done = subprocess.run([*command, "--tasks", "dd", "--out", str(out)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    report = (out / "ablation.md").read_text(encoding="utf-8")
    shown = re.search(r"`u2eval view (\S+) (\S+)`", report)
    assert shown is not None, report
    view = subprocess.run(
        [sys.executable, "-m", "u2eval", "view", shown.group(1), shown.group(2), "--no-images"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert view.returncode == 0, view.stderr
    assert (Path(shown.group(1)) / f"view-vs-{Path(shown.group(2)).name}" / "index.html").is_file()


def test_serve_gives_the_page_over_loopback_http(tmp_path: Path) -> None:
    import urllib.request

    folder = tmp_path / "run"
    run(RunOptions(model="random", out=folder, tasks=("kd",)))
    command = [sys.executable, "-m", "u2eval", "view", str(folder), "--no-images", "--serve"]
    server = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        assert server.stderr is not None
        url = None
        for line in server.stderr:
            found = re.search(r"serving (http://127\.0\.0\.1:\d+/)", line)
            if found:
                url = found.group(1)
                break
        assert url is not None
        with urllib.request.urlopen(url + "index.html", timeout=10) as response:
            body = response.read().decode("utf-8")
        assert response.status == 200 and 'id="view-data"' in body
    finally:
        server.terminate()
        server.wait(timeout=10)


@needs_browser
def test_each_detection_dataset_maps_its_true_and_answered_sectors_on_the_image_grid(
    grounded_view: tuple[Path, dict[str, object]],
) -> None:
    page, data = grounded_view
    cases = data["cases"]
    assert isinstance(cases, list)
    ll04 = [c for c in cases if c["task"] == "ll" and c["dataset"] == "04" and c["strict"]["counted"]]
    with open_page(page, 1500, 1000) as browser:
        browser.click("#to-datasets")
        browser.wait_for_selector(".sector-map")
        detection = {(c["task"], c["dataset"]) for c in cases if c["task"] in ("ll", "od", "kd")}
        assert len(browser.query_selector_all(".sector-map")) == 2 * len(detection)  # true and answered, each
        section = browser.query_selector(".dataset:has(h3:text-is('LL 04 (4 cases)'))")
        assert section is not None
        true_map, answered_map = section.query_selector_all(".sector-map")
        for sector_map, key in ((true_map, "truth"), (answered_map, "prediction")):
            for cell in sector_map.query_selector_all("td.sector"):
                name = cell.get_attribute("data-sector")
                shown = int(cell.inner_text().split(" ")[0])
                assert shown == sum(c["strict"][key] == name for c in ll04), (key, name)
        first = true_map.query_selector("td.sector a")
        assert first is not None
        name = first.evaluate("a => a.parentElement.dataset.sector")
        first.click()
        wanted = sum(c["strict"]["truth"] == name for c in ll04)
        # its cases, the list shown again (once the address has changed: a link's hashchange comes after the click)
        browser.wait_for_function(f"document.getElementById('count').textContent === '{wanted} of 200 cases'")


@needs_browser
def test_masks_are_drawn_pixel_for_pixel_over_the_image(grounded_view: tuple[Path, dict[str, object]]) -> None:
    import base64

    page, data = grounded_view
    cases = data["cases"]
    assert isinstance(cases, list)
    case = next(c for c in cases if "mask" in c.get("truth_regions", {}) and "mask" in (c.get("answer_regions") or {}))
    for drawn, colour in (
        (case["truth_regions"]["mask"], (0, 255, 110)),
        (case["answer_regions"]["mask"], (255, 150, 0)),
    ):
        with Image.open(io.BytesIO(base64.b64decode(drawn.split(",", 1)[1]))) as mask:
            pixels = np.asarray(mask.convert("RGBA"))
            on = pixels[:, :, 3] > 0
            assert on.any() and (pixels[on][:, :3] == colour).all()  # one colour where the mask is, clear elsewhere
            assert list(mask.size) == case["image"]["size"]  # at the image's own size
    with open_page(page, 1500, 1000) as browser:
        browser.fill("#f-q", case["id"])
        browser.click("#rows .row")
        assert len(browser.query_selector_all("#case svg image.mask")) == 2


def test_a_run_started_afresh_takes_its_folders_old_view_with_it(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    run(RunOptions(model="random", out=folder, tasks=("kd",)))
    build_view(folder, folder / "view", with_images=False)
    run(RunOptions(model="random", out=folder, tasks=("kd",)))  # the same run resumed: its view stays
    assert (folder / "view" / "index.html").is_file()
    run(RunOptions(model="random", seed=5, out=folder, tasks=("kd",), force=True))  # another run: it goes
    assert not (folder / "view").exists()


class GeminiMasks:
    """Answers every case as Gemini writes a segmentation: a box with its mask as a PNG, in the text."""

    info = ModelInfo(adapter="gemini-text", model="masks")
    max_batch_size = 16

    async def generate(self, requests: Sequence[ModelRequest]) -> list[Completion]:
        buffer = io.BytesIO()
        Image.fromarray(np.full((40, 40), 220, dtype=np.uint8)).save(buffer, format="PNG")
        uri = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
        text = f'```json\n[{{"box_2d": [100, 100, 600, 600], "mask": "{uri}", "label": "lesion"}}]\n```'
        return [Completion(case_id=r.case.case_id, key=r.key, text=text) for r in requests]

    async def aclose(self) -> None:
        return None


def test_masks_written_in_an_answers_text_are_drawn_too(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    options = RunOptions(model="gemini-text", out=folder, tasks=("ll",), grounded=True, box_convention="gemini")
    run(options, adapter=GeminiMasks())
    data = _data(build_view(folder, tmp_path / "view", with_images=False).page)
    drawn = [c["answer_regions"] for c in data["cases"] if c.get("answer_regions")]  # type: ignore[union-attr]
    assert drawn and all("mask" in regions and regions["masks"] for regions in drawn)


def test_a_run_that_cannot_be_read_to_its_end_leaves_no_half_page(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    run(RunOptions(model="random", out=folder, tasks=("kd",)))
    lines = (folder / "cases.jsonl").read_text(encoding="utf-8").splitlines()
    lines[2] = '{"broken": '
    (folder / "cases.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    command = [sys.executable, "-m", "u2eval", "view", str(folder), "--no-images"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    assert done.returncode == 2 and "cases.jsonl:3: unreadable case record" in done.stderr
    assert "Traceback" not in done.stderr and not any((folder / "view").iterdir())
