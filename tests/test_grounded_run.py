"""Grounded scoring of whole runs: outcomes, official sector verdicts from regions, the metrics' populations
and aggregation, the truth read from the dataset, re-scoring, and the stand-in model end to end."""

from __future__ import annotations

import asyncio
import csv
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from model_adapters.grounded_standin import GroundedStandIn, create
from u2eval.benchmark.tasks import get_task
from u2eval.errors import ConfigError
from u2eval.grounded.boxes import CONVENTIONS, BoxConvention, get_convention
from u2eval.grounded.placement import GroundTruth, truth_from_cells
from u2eval.grounded.regions import mask_from_array
from u2eval.grounded.scorer import GROUNDED_CASES_FILE, GROUNDED_FILE, GroundedOptions, answer_regions, grounded_cases
from u2eval.grounded.stats import GroundedCase, summarise_grounded
from u2eval.grounded.truth import TRUTH_FILE, read_truths
from u2eval.models.protocol import AdapterOptions, ModelRequest
from u2eval.records import Box, CaseMeta, Completion, ImageSent, Judgement, Point, Regions
from u2eval.resources import sample_dir
from u2eval.run.folder import RunFolder
from u2eval.run.runner import RunOptions, run
from u2eval.run.scoring_pass import judge_answers, score_folder
from u2eval.scoring.judging import judge

DETECTION = ("ll", "od", "kd")


def meta(task: str = "ll", gt_bbox: str | None = None, keypoints: str | None = None, n: int = 0) -> CaseMeta:
    dataset = {"ll": "04", "od": "09", "kd": "48", "dd": "21"}[task]
    return CaseMeta(
        case_id=f"{task}/{dataset}/{n}/abcd1234",
        task=task,  # type: ignore[arg-type]
        dataset_id=dataset,
        dataset_name=dataset,
        source_file=f"x/{dataset}.tsv",
        row_index=n,
        anatomy="kidney",
        scenario="lesion",
        truth=gt_bbox if task != "kd" else keypoints,
        options=[],
        image_sha256="ab" * 32,
        image_width=200,
        image_height=100,
        columns={"gt_bbox": gt_bbox, "keypoints": keypoints},
    )


def placed(
    answers: list[tuple[CaseMeta, Completion]], truths: dict[str, GroundTruth], convention: BoxConvention | None
) -> tuple[list[GroundedCase], list[Judgement], frozenset[str]]:
    """The grounded pass over these answers, after the text pass (as a run scores them)."""
    return grounded_cases(answers, truths, convention, judge_answers(answers))


def answer(case: CaseMeta, **fields: object) -> Completion:
    return Completion.model_validate({"case_id": case.case_id, "key": f"k-{case.case_id}", **fields})


def box(cx: float, cy: float, w: float = 0.1, h: float = 0.1) -> Box:
    return Box(x0=cx - w / 2, y0=cy - h / 2, x1=cx + w / 2, y1=cy + h / 2)


def truths_of(cases: list[CaseMeta]) -> dict[str, GroundTruth]:
    return {c.case_id: truth_from_cells(c, {k: v for k, v in c.columns.items() if k != "seg_data"}) for c in cases}


def stand_in_run(folder: Path, model: GroundedStandIn | None = None, **options: object) -> Path:
    opts = RunOptions(model="unused", out=folder, tasks=DETECTION, **options)  # type: ignore[arg-type]
    run(opts, adapter=model or GroundedStandIn("oracle", None, 0.0, 0))
    return folder


def grounded(folder: Path) -> dict[str, object]:
    return json.loads((folder / GROUNDED_FILE).read_text(encoding="utf-8"))  # type: ignore[no-any-return]


# ----------------------------------------------------------------------------------- one answer


def test_where_an_answers_regions_come_from() -> None:
    case = meta(gt_bbox="{'lesion': [0.5, 0.5, 0.2, 0.2]}")
    native = Regions(boxes=[box(0.2, 0.2)])
    assert answer_regions(case, answer(case, text="[1, 2, 3, 4]", regions=native), get_convention("pixels")) == (
        "region",
        native,
        None,
    )  # the model's own regions win over its text
    outcome, regions, _ = answer_regions(case, answer(case, text="[20, 10, 60, 30]"), get_convention("pixels"))
    assert outcome == "region" and regions is not None
    assert (regions.boxes[0].x0, regions.boxes[0].y1) == (0.1, 0.3)  # against the case's 200 x 100 image
    sent = ImageSent(width=100, height=50, bytes=1, media_type="image/png", resized=True)
    _, resized, _ = answer_regions(
        case, answer(case, text="[20, 10, 60, 30]", image_sent=sent), get_convention("pixels")
    )
    assert resized is not None and (resized.boxes[0].x0, resized.boxes[0].y1) == (0.2, 0.6)  # against what was sent
    assert answer_regions(case, answer(case, text="upper left"), None) == (
        "no_region",
        None,
        "no regions in the answer and no box convention to read its text",
    )
    outcome, _, reason = answer_regions(case, answer(case, text="[0.2, 0.2, 3.5, 0.4]"), get_convention("relative"))
    assert outcome == "ungroundable" and reason is not None and "3.5" in reason
    assert answer_regions(case, answer(case, error="timeout"), None)[0] == "infra_error"
    empty_mask = Regions(masks=[mask_from_array(np.zeros((4, 4)))])
    assert answer_regions(case, answer(case, text="", regions=empty_mask), None)[0] == "no_region"


def test_region_sectors_are_judged_as_the_official_scorer_judges_the_words() -> None:
    lower_center = meta("ll", "{'lesion': [0.5, 0.8, 0.1, 0.1]}", n=0)
    hidden = meta("od", None, n=1)
    outside = meta("od", "{'lesion': [0.2, 0.2, 0.1, 0.1]}", n=2)
    answers = [
        (lower_center, answer(lower_center, text="no idea", regions=Regions(boxes=[box(0.5, 0.8)]))),
        (hidden, answer(hidden, text="", regions=Regions())),  # marks nothing
        (outside, answer(outside, text="[0.1, 0.1, 2.0, 0.3]")),  # ungroundable under 'relative'
    ]
    records, judgements, _ = placed(answers, truths_of([lower_center, hidden, outside]), get_convention("relative"))
    by_id = {j.case_id: j for j in judgements}
    # lower center: right in strict; the official stage (b) reads any 'center' as center, so wrong there.
    assert by_id[lower_center.case_id].strict.correct is True
    assert by_id[lower_center.case_id].reference.correct is False
    # No region is 'not visible', and right in both modes on OD, whose official options end 'not visible.'.
    assert by_id[hidden.case_id].strict.correct is True and by_id[hidden.case_id].reference.correct is True
    bare = judge(hidden, answer(hidden, text="not visible"), get_task("od"))
    assert bare.reference.correct is False  # why the region answer is phrased 'Not visible.'
    # Ungroundable counts wrong in both modes.
    assert by_id[outside.case_id].strict.counted and by_id[outside.case_id].strict.correct is False
    assert by_id[outside.case_id].reference.correct is False
    assert {r.case_id: r.sector for r in records} == {
        lower_center.case_id: "lower center",
        hidden.case_id: None,
        outside.case_id: None,
    }


def test_a_missing_region_is_a_miss_only_for_kinds_the_model_gives() -> None:
    hit = meta("ll", "{'lesion': [0.5, 0.5, 0.2, 0.2]}", n=0)
    miss = meta("ll", "{'lesion': [0.2, 0.2, 0.2, 0.2]}", n=1)
    boxes_run = [(hit, answer(hit, regions=Regions(boxes=[box(0.5, 0.5, 0.2, 0.2)]))), (miss, answer(miss, text="?"))]
    records, _, gives = placed(boxes_run, truths_of([hit, miss]), None)
    assert gives == {"box", "point"}
    assert [r.box_iou for r in records] == [pytest.approx(1.0), 0.0]
    points_run = [(hit, answer(hit, regions=Regions(points=[Point(x=0.5, y=0.5)]))), (miss, answer(miss, text="?"))]
    records, _, gives = placed(points_run, truths_of([hit, miss]), None)
    assert gives == {"point"} and all(r.box_iou is None and r.dice is None for r in records)


def test_empty_truths_are_counted_apart() -> None:
    hidden = meta("ll", None, n=0)
    shown = meta("ll", "{'lesion': [0.5, 0.5, 0.5, 0.5]}", n=1)
    pixels = np.zeros((100, 200), dtype=bool)
    pixels[25:75, 50:150] = True
    truths = {
        hidden.case_id: truth_from_cells(hidden, {"gt_bbox": None, "seg_data": None}),  # empty box and mask
        shown.case_id: truth_from_cells(shown, {"gt_bbox": shown.columns["gt_bbox"]}).model_copy(
            update={"mask": mask_from_array(pixels), "mask_state": "present"}
        ),
    }
    quiet = Regions(masks=[mask_from_array(np.zeros((100, 200)))])
    exact = Regions(masks=[mask_from_array(pixels)])
    records, judgements, gives = placed(
        [(hidden, answer(hidden, regions=quiet)), (shown, answer(shown, regions=exact))], truths, None
    )
    assert gives == {"box", "mask", "point"}
    first, second = records
    assert first.mask_empty_correct is True and first.box_empty_correct is True and first.dice is None
    assert second.dice == 1.0 and second.mask_iou == 1.0 and second.box_iou == pytest.approx(1.0)
    summary = summarise_grounded(records, judgements, truths, gives, None, None)
    stats = summary.tasks["ll"]
    assert stats.mask is not None and (stats.mask.n, stats.mask.empty_truth_n, stats.mask.dice) == (1, 1, 1.0)
    loud = Regions(masks=[mask_from_array(pixels)])
    records, _, _ = placed([(hidden, answer(hidden, regions=loud))], truths, None)
    assert records[0].mask_empty_correct is False and records[0].box_empty_correct is False


def test_task_figures_are_means_over_datasets_not_over_cases() -> None:
    def record(dataset: str, n: int, iou: float) -> GroundedCase:
        return GroundedCase(
            case_id=f"od/{dataset}/{n}/x", task="od", dataset_id=dataset, outcome="region", kinds=["box"], box_iou=iou
        )

    records = [record("09", 0, 1.0), record("09", 1, 0.0), record("09", 2, 0.5), record("13", 0, 0.25)]
    summary = summarise_grounded(records, [], {}, frozenset({"box"}), None, None)
    per = {d.dataset_id: d.stats.box for d in summary.datasets}
    assert per["09"] is not None and per["09"].mean_iou == 0.5 and per["09"].acc_at_50 == pytest.approx(2 / 3)
    assert per["13"] is not None and per["13"].acc_at_50 == 0.0
    task = summary.tasks["od"].box
    assert task is not None and task.n == 4
    assert task.mean_iou == pytest.approx((0.5 + 0.25) / 2)  # not (1 + 0 + 0.5 + 0.25) / 4
    assert task.acc_at_50 == pytest.approx((2 / 3 + 0) / 2, abs=1e-6)  # dataset figures are reported to 6 places


# ------------------------------------------------------------------------------------- whole runs


def test_a_perfect_grounded_model_scores_perfectly_and_the_u2_score_is_untouched(tmp_path: Path) -> None:
    with_regions = stand_in_run(tmp_path / "grounded", grounded=True)
    without = stand_in_run(tmp_path / "plain")
    assert (with_regions / "summary.json").read_bytes() == (without / "summary.json").read_bytes()
    assert not (without / GROUNDED_FILE).exists()
    report = grounded(with_regions)
    strict = report["sectors"]["strict"]["tasks"]  # type: ignore[index]
    assert strict == {"ll": 1.0, "od": 1.0, "kd": 1.0}
    overall = report["overall"]  # type: ignore[index]
    # The synthetic gt_bbox is its structure's mask extent, so the exact box has IoU 1.
    assert overall["box"]["mean_iou"] == 1.0 and overall["box"]["acc_at_50"] == 1.0
    assert overall["box"]["empty_truth_correct"] == 1.0 and overall["box"]["empty_truth_n"] > 0
    assert overall["point"]["mean_distance"] == 0.0 and overall["point"]["in_mask"] == 1.0
    assert 0.7 < overall["mask"]["dice"] < 1.0  # an ellipse drawn in the box, not the truth's own pixels
    assert "## Grounded answers" in (with_regions / "summary.md").read_text(encoding="utf-8")
    manifest = json.loads((with_regions / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["grounded"] is True and manifest["box_convention"] is None


def test_rescoring_reproduces_every_grounded_file(tmp_path: Path) -> None:
    folder = stand_in_run(tmp_path / "run", GroundedStandIn("oracle", None, 0.2, 3), grounded=True)
    names = (GROUNDED_FILE, GROUNDED_CASES_FILE, TRUTH_FILE, "summary.json", "summary.md")
    before = {name: (folder / name).read_bytes() for name in names}
    score_folder(folder)  # the manifest says grounded: it is redone
    assert {name: (folder / name).read_bytes() for name in names} == before
    (folder / TRUTH_FILE).unlink()
    score_folder(folder)  # the truth is read from the dataset again, identically
    assert {name: (folder / name).read_bytes() for name in names} == before


def test_a_corrupt_truth_cache_line_is_read_again_not_fatal(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = stand_in_run(tmp_path / "run", GroundedStandIn("oracle", None, 0.2, 3), grounded=True)
    names = (GROUNDED_FILE, GROUNDED_CASES_FILE, TRUTH_FILE, "summary.md")
    before = {name: (folder / name).read_bytes() for name in names}
    lines = (folder / TRUTH_FILE).read_bytes().splitlines(keepends=True)
    lines[1] = lines[1][: len(lines[1]) // 2] + b"\n"  # a write cut short
    lines[2] = b"\xff\xfe not even text\n"
    (folder / TRUTH_FILE).write_bytes(b"".join(lines))
    score_folder(folder)
    assert {name: (folder / name).read_bytes() for name in names} == before  # the cache rewritten whole
    warned = [r.getMessage() for r in caplog.records if "unreadable grounded truth" in r.getMessage()]
    assert [m.split(": unreadable")[0].rsplit(":", 1)[1] for m in warned] == ["2", "3"]


def test_any_run_can_be_scored_with_its_regions_afterwards(tmp_path: Path) -> None:
    model = GroundedStandIn("oracle", get_convention("internvl"), 0.0, 0)
    folder = stand_in_run(tmp_path / "run", model)  # not --grounded: nothing grounded written
    assert not (folder / GROUNDED_FILE).exists()
    summary = (folder / "summary.json").read_bytes()
    score_folder(folder, grounded=GroundedOptions(convention=get_convention("internvl"), source_root=sample_dir()))
    report = grounded(folder)
    assert report["box_convention"] == "internvl" and report["outcomes"]["od"]["region"] > 0  # type: ignore[index]
    assert (folder / "summary.json").read_bytes() == summary


def _copy_sample(sample_root: Path, target: Path) -> Path:
    shutil.copytree(sample_root, target)
    return target


def test_masks_come_from_the_dataset_once_then_from_the_run_folder(sample_root: Path, tmp_path: Path) -> None:
    data = _copy_sample(sample_root, tmp_path / "data")
    folder = stand_in_run(tmp_path / "run", data=str(data), grounded=True)
    first = grounded(folder)
    truths = read_truths(folder)
    assert {t.origin for t in truths.values()} == {"source"}
    assert sum(t.mask_state == "present" for t in truths.values()) == first["truth"]["mask_present"] > 0  # type: ignore[index]
    shutil.rmtree(data)
    score_folder(folder)  # the dataset is gone; the cache in the run folder has every mask
    assert grounded(folder) == first
    (folder / TRUTH_FILE).unlink()
    score_folder(folder)  # no cache and no dataset: boxes from cases.jsonl, masks unavailable
    degraded = grounded(folder)
    assert degraded["truth"]["mask_unavailable"] == degraded["truth"]["cases"]  # type: ignore[index]
    assert degraded["overall"]["mask"] is None  # type: ignore[index]
    assert degraded["overall"]["box"] == first["overall"]["box"]  # type: ignore[index]
    assert degraded["sectors"] == first["sectors"]


def test_a_row_that_changed_since_the_run_lends_no_mask(sample_root: Path, tmp_path: Path) -> None:
    data = _copy_sample(sample_root, tmp_path / "data")
    folder = stand_in_run(tmp_path / "run", data=str(data), grounded=True)
    path = data / "lesion_localisation" / "04.tsv"
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle, dialect="excel-tab"))
    csv.field_size_limit(1 << 30)
    header = rows[0]
    rows[1][header.index("img_data")] = rows[2][header.index("img_data")]  # row 0 now shows row 1's image
    with path.open("w", encoding="utf-8", newline="") as handle:
        csv.writer(handle, dialect="excel-tab", lineterminator="\n").writerows(rows)
    (folder / TRUTH_FILE).unlink()
    score_folder(folder)
    truths = read_truths(folder)
    changed = next(t for case_id, t in truths.items() if case_id.startswith("ll/04/0/"))
    assert changed.origin == "columns" and changed.mask_state == "unavailable"
    assert all(t.origin == "source" for case_id, t in truths.items() if not case_id.startswith("ll/04/0/"))


def _case_lines(folder: Path) -> dict[str, GroundedCase]:
    lines = (folder / GROUNDED_CASES_FILE).read_text(encoding="utf-8").splitlines()
    return {r.case_id: r for r in map(GroundedCase.model_validate_json, lines)}


def _near_a_threshold(case: CaseMeta) -> bool:
    """Whether the truth's centre is within one pixel of 0.45 / 0.55, where rounding a box to the
    convention's grid may move it across."""
    cell = case.columns.get("keypoints" if case.task == "kd" else "gt_bbox")
    centre = truths_of([case])[case.case_id]
    first = (centre.points or [None])[0] if case.task == "kd" else (centre.boxes or [None])[0]
    if cell is None or first is None:
        return False
    x, y = (first.x, first.y) if isinstance(first, Point) else ((first.x0 + first.x1) / 2, (first.y0 + first.y1) / 2)
    step = 1 / min(case.image_width or 1, case.image_height or 1)
    return any(abs(v - t) <= step for v in (x, y) for t in (0.45, 0.55))


@pytest.mark.parametrize("name", sorted(CONVENTIONS))
def test_regions_written_in_a_convention_score_as_the_native_ones(name: str, tmp_path: Path) -> None:
    native_folder = stand_in_run(tmp_path / "native", grounded=True)
    model = GroundedStandIn("oracle", get_convention(name), 0.0, 0)
    folder = stand_in_run(tmp_path / name, model, grounded=True, box_convention=name)
    assert grounded(folder)["box_convention"] == name
    native, text = _case_lines(native_folder), _case_lines(folder)
    assert set(native) == set(text) and all(r.outcome != "ungroundable" for r in text.values())
    cases = {c.case.case_id: c.case for c in RunFolder(folder).cases()}
    # The same sector for every case, except where writing the box on the convention's grid (1/1000 of the
    # image, or one pixel) can move a centre that sits on a threshold across it.
    moved = [case_id for case_id in native if native[case_id].sector != text[case_id].sector]
    assert all(_near_a_threshold(cases[case_id]) for case_id in moved), moved
    assert len(moved) <= 5
    ious = [r.box_iou for r in text.values() if r.box_iou is not None]
    assert ious and float(np.mean(ious)) > 0.9  # boxes of 7-25 pixels: a pixel of rounding shows


def test_text_read_under_the_wrong_convention_is_not_rescued(tmp_path: Path) -> None:
    model = GroundedStandIn("oracle", get_convention("qwen2-vl"), 0.0, 0)
    wrong = grounded(stand_in_run(tmp_path / "wrong", model, grounded=True, box_convention="relative"))
    outcomes = wrong["outcomes"]["od"]  # type: ignore[index]
    assert outcomes["region"] == 0 and outcomes["ungroundable"] > 0  # (310,290) is no 0-1 point
    assert wrong["ungroundable_examples"] and "outside 0-1" in wrong["ungroundable_examples"][0]  # type: ignore[index]
    none = grounded(stand_in_run(tmp_path / "none", model, grounded=True))
    assert none["outcomes"]["od"]["region"] == 0 and none["gives"] == []  # type: ignore[index]


def test_an_unknown_convention_stops_the_run_before_any_answer(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown box convention 'yolo'"):
        stand_in_run(tmp_path / "run", grounded=True, box_convention="yolo")
    assert not (tmp_path / "run" / "responses.jsonl").exists()


# ------------------------------------------------------------------------------------- the stand-in


def test_stand_in_modes_noise_and_determinism(sample_root: Path) -> None:
    from u2eval.data.reader import iter_cases
    from u2eval.data.sources import resolve_source

    cases = [c for c in iter_cases(resolve_source("sample"), [get_task("od")], on_error=print)][:6]
    requests = [ModelRequest(key=c.case_id, case=c, prompt=None) for c in cases]  # type: ignore[arg-type]
    oracle = create("oracle", AdapterOptions(seed=1, extra={"noise": 0.3}))
    first = asyncio.run(oracle.generate(requests))
    again = asyncio.run(
        create("oracle", AdapterOptions(seed=1, extra={"noise": 0.3})).generate(list(reversed(requests)))
    )
    assert first == list(reversed(again))
    other = asyncio.run(create("oracle", AdapterOptions(seed=2, extra={"noise": 0.3})).generate(requests))
    assert first != other
    rnd = asyncio.run(create("random", AdapterOptions(seed=1)).generate(requests))
    for completion in rnd:
        assert completion.regions is not None and len(completion.regions.boxes) == 1
        b = completion.regions.boxes[0]
        assert 0 <= b.x0 < b.x1 <= 1 and 0 <= b.y0 < b.y1 <= 1
    with pytest.raises(ConfigError, match="mode must be one of oracle, random"):
        create("psychic", AdapterOptions())
    with pytest.raises(ConfigError, match="noise"):
        create("oracle", AdapterOptions(extra={"noise": 2}))
    with pytest.raises(ConfigError, match="unknown box convention"):
        create("oracle:yolo", AdapterOptions())
    assert create("oracle:gemini", AdapterOptions()).info.model == "oracle:gemini"


# ------------------------------------------------------------------------ bad regions, failures, settings


def _u2eval(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "u2eval", *args], capture_output=True, text=True, timeout=300, env=env)


def _corrupt(folder: Path, edits: dict[str, Callable[[dict[str, Any]], None]]) -> dict[str, str]:
    """Edit the stored regions of the first case of each kind named in ``edits`` (by hand, as a foreign tool
    or a broken adapter would leave them); returns kind -> the edited case's id."""
    path = folder / "responses.jsonl"
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    chosen: dict[str, str] = {}
    for record in lines:
        regions = record.get("regions") or {}
        want = "points" if record["case_id"].startswith("kd/") else "masks"
        kinds = [k for k, edit in edits.items() if k not in chosen and regions.get(want) and k.startswith(want[0])]
        if kinds:
            edits[kinds[0]](regions)
            chosen[kinds[0]] = record["case_id"]
    assert set(chosen) == set(edits), chosen
    path.write_text("".join(json.dumps(r) + "\n" for r in lines), encoding="utf-8")  # NaN written as NaN
    return chosen


def test_bad_stored_regions_are_ungroundable_and_never_stop_scoring(tmp_path: Path) -> None:
    folder = stand_in_run(tmp_path / "run", grounded=True)
    summary = (folder / "summary.json").read_bytes()
    nan, huge = float("nan"), 1e308

    def box(**values: object) -> Callable[[dict[str, Any]], None]:
        return lambda regions: regions["boxes"][0].update(values)

    def mask(**values: object) -> Callable[[dict[str, Any]], None]:
        return lambda regions: regions["masks"][0].update(values)

    def point(**values: object) -> Callable[[dict[str, Any]], None]:
        return lambda regions: regions["points"][0].update(values)

    edits: dict[str, Callable[[dict[str, Any]], None]] = {
        "m: NaN box": box(x0=nan),
        "m: box from -5 to 1e308": box(x0=-5.0, y0=-5.0, x1=huge, y1=huge),
        "m: runs short of the mask": mask(counts=[1, 2, 3]),
        "m: negative run": lambda regions: regions["masks"][0]["counts"].__setitem__(1, -1),
        "m: 0 x 0 mask": mask(width=0, height=0, counts=[]),
        "m: huge mask": mask(width=100_000, height=100_000, counts=[10**10]),
        "m: not even a number": box(x0="left"),
        "p: NaN point": point(x=nan),
    }
    cases = _corrupt(folder, edits)
    done = _u2eval("score", str(folder))
    assert done.returncode == 0, done.stderr
    assert (folder / "summary.json").read_bytes() == summary  # every answer loaded; the U2-Score as it was
    from u2eval.run.store import ResponseStore

    assert ResponseStore(folder).skipped_lines == []
    records = _case_lines(folder)
    reasons = {
        "m: NaN box": "not finite",
        "m: box from -5 to 1e308": "not a box on the image",
        "m: runs short of the mask": "runs cover 6 pixels",
        "m: negative run": "negative run",
        "m: 0 x 0 mask": "0 x 0 pixels is not a usable size",
        "m: huge mask": "100000 x 100000 pixels is not a usable size",
        "m: not even a number": "stored regions do not load (boxes.0.x0",
        "p: NaN point": "not a point on the image",
    }
    for kind, case_id in cases.items():
        record = records[case_id]
        assert record.outcome == "ungroundable" and record.sector is None and record.sector_correct is False, kind
        assert record.reason is not None and reasons[kind] in record.reason, (kind, record.reason)
    assert grounded(folder)["overall"]["box"]["mean_iou"] < 1.0  # type: ignore[index]


def test_a_grounded_failure_never_aborts_a_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import u2eval.grounded.scorer as grounded_run
    import u2eval.run.scoring_pass as scoring_pass

    real = grounded_run._metrics

    def flaky(case: CaseMeta, *args: Any) -> dict[str, object]:
        if case.row_index == 0:
            raise RuntimeError("a bug in a metric")
        return real(case, *args)

    monkeypatch.setattr(grounded_run, "_metrics", flaky)
    folder = stand_in_run(tmp_path / "cases", grounded=True)
    assert (folder / "manifest.json").is_file()
    failed = [r for r in _case_lines(folder).values() if r.reason and "a bug in a metric" in r.reason]
    assert failed and all(r.outcome == "ungroundable" and r.sector_correct is False for r in failed)
    monkeypatch.setattr(grounded_run, "_metrics", real)

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("the truth cache is damaged")

    monkeypatch.setattr(scoring_pass, "score_grounded", broken)
    whole = stand_in_run(tmp_path / "whole", grounded=True)
    assert (whole / "manifest.json").is_file() and (whole / "summary.json").is_file()
    assert not (whole / GROUNDED_FILE).exists()
    assert "Grounded scoring failed (RuntimeError: the truth cache is damaged)" in (whole / "summary.md").read_text()


def test_a_perfect_mask_only_model_places_rows_of_several_structures(tmp_path: Path) -> None:
    """Each case answered with its own truth mask (the union of the row's structures, as seg_data is)."""
    folder = stand_in_run(tmp_path / "run", grounded=True)
    truths = read_truths(folder)
    cases = [c.case for c in RunFolder(folder).cases() if c.case.task in ("ll", "od")]
    answers = []
    for case in cases:
        truth = truths[case.case_id]
        masks = [truth.mask] if truth.mask is not None else []
        answers.append((case, answer(case, text="", regions=Regions(masks=masks))))
    records, _, gives = placed(answers, truths, None)
    assert gives == {"box", "mask", "point"}
    scored = [r for r in records if r.dice is not None]
    several = {c.case_id for c in cases if len(truths[c.case_id].boxes or []) > 1}
    assert len(scored) == 65 and len(several) == 14 and all(r.dice == 1.0 for r in scored)
    wrong = sorted(r.case_id for r in records if r.sector_correct is not True)
    # Placed by the union's extent, 5 of the 14 were wrong. By the largest component only one is: two
    # structures of 19 pixels each, where the row lists the later one (in raster order) first.
    assert [w.split("/")[:3] for w in wrong] == [["od", "37", "3"]]
    ious = [r.box_iou for r in records if r.case_id in several and r.case_id not in wrong]
    assert ious == pytest.approx([1.0] * 13, abs=1e-4)  # the truth boxes are written to 6 decimals


def test_a_run_without_any_region_gets_no_region_scores(tmp_path: Path) -> None:
    from u2eval.grounded.report import render_grounded_markdown
    from u2eval.grounded.scorer import NO_REGIONS_WARNING, read_grounded
    from u2eval.reports.grounded_board import grounded_cells
    from u2eval.reports.rundata import load_run

    folder = tmp_path / "text"
    run(RunOptions(model="random", out=folder, tasks=DETECTION, grounded=True))
    report = read_grounded(folder)
    assert report is not None and report.sectors == {} and report.warnings == [NO_REGIONS_WARNING]
    assert report.outcomes["ll"]["no_region"] > 0  # still counted, but not judged as 'not visible'
    assert f"Warning: {NO_REGIONS_WARNING}." in render_grounded_markdown(report)
    cells = grounded_cells(load_run(folder), "strict")
    assert cells.values["ll_regions"] is None and cells.values["od_regions"] is None
    # A model that returns regions as data, even none at all, is placed: no region means 'not visible'.
    hidden = meta("od", None)
    records, judgements, _ = placed([(hidden, answer(hidden, regions=Regions()))], truths_of([hidden]), None)
    assert judgements and records[0].sector_correct is True


def test_grounded_settings_given_to_score_are_recorded_and_redone(tmp_path: Path) -> None:
    from u2eval.reports.grounded_board import grounded_cells
    from u2eval.reports.rundata import load_run

    model = GroundedStandIn("oracle", get_convention("internvl"), 0.0, 0)
    folder = stand_in_run(tmp_path / "run", model, grounded=True, box_convention="relative")  # the wrong one
    assert grounded(folder)["outcomes"]["od"]["region"] == 0  # type: ignore[index]
    done = _u2eval("score", str(folder), "--grounded", "--box-convention", "internvl")
    assert done.returncode == 0, done.stderr
    report = (folder / GROUNDED_FILE).read_bytes()
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["grounded"] is True and manifest["box_convention"] == "internvl"
    assert grounded(folder)["outcomes"]["od"]["region"] > 0  # type: ignore[index]
    again = _u2eval("score", str(folder))  # plain: redoes the recorded grounded scoring
    assert again.returncode == 0, again.stderr
    assert (folder / GROUNDED_FILE).read_bytes() == report
    cells = grounded_cells(load_run(folder), "strict")
    assert cells.box_convention == "internvl" and cells.values["od_regions"] == 1.0
    # A run that was never grounded, scored --grounded once: a plain re-score redoes it (not left stale).
    plain = stand_in_run(tmp_path / "plain", model)
    assert _u2eval("score", str(plain), "--grounded", "--box-convention", "internvl").returncode == 0
    first = (plain / GROUNDED_FILE).read_bytes()
    (plain / GROUNDED_FILE).unlink()
    assert _u2eval("score", str(plain)).returncode == 0
    assert (plain / GROUNDED_FILE).read_bytes() == first
    # Resuming the run without --grounded keeps it on, with the recorded convention.
    stand_in_run(tmp_path / "plain", model)
    assert (plain / GROUNDED_FILE).read_bytes() == first


def test_the_sector_table_is_in_task_order(tmp_path: Path) -> None:
    from u2eval.grounded.report import render_grounded_markdown
    from u2eval.grounded.scorer import read_grounded

    report = read_grounded(stand_in_run(tmp_path / "run", grounded=True))  # read back: keys sorted kd, ll, od
    assert report is not None
    rows = [line.split("|")[1].strip() for line in render_grounded_markdown(report).splitlines() if "|" in line]
    assert [r for r in rows if r in ("LL", "OD", "KD")][:3] == ["LL", "OD", "KD"]
