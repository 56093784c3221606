"""Controls: does the model look at the image? A grey image, no image, or another case's image in each case's
image's place (u2eval.data.controls), checked at the wire, in the run folder, and in the ablation report's
survival numbers against the runs' own summaries."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import logging
import os
import shutil
import subprocess
import sys
import zlib
from collections import defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from browser import needs_browser
from fake_models import true_answer
from openai_server import OpenAIServer, decode_data_url, image_parts
from PIL import Image

from u2eval.benchmark.tasks import select_tasks
from u2eval.data import tsv
from u2eval.data.controls import ControlImages, grey_png, partner_cycle
from u2eval.data.reader import iter_cases
from u2eval.data.row_places import image_at, task_row_places
from u2eval.data.sources import resolve_source
from u2eval.errors import ConfigError
from u2eval.models.protocol import ModelRequest
from u2eval.records import Case, Completion, ImagePart, ModelInfo
from u2eval.reports.ablation import AblationOptions, AblationReport, compare_folders, run_ablation
from u2eval.reports.ablation_report import render_markdown, write_report
from u2eval.reports.leaderboard import BoardOptions, build_board
from u2eval.run.folder import RunFolder
from u2eval.run.merge import merge_runs
from u2eval.run.records import RunCase
from u2eval.run.runner import RunOptions, default_folder, run

KEY = "sk-fake-controls-0123456789"
MODEL = "gpt-4o-2024-08-06"
NO_IMAGE = "I see no ultrasound image."


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sample_cases(tasks: Sequence[str] | None = None) -> list[Case]:
    specs = select_tasks(list(tasks) if tasks else None)
    return list(iter_cases(resolve_source("sample", tasks=specs), specs, on_error=print))


def sent_image(case: RunCase) -> str | None:
    """The sha256 of the image the case's request held, as cases.jsonl records it (None: no image part)."""
    assert case.prompt is not None
    images = [p.sha256 for p in case.prompt.parts if p.part == "image"]
    assert len(images) <= 1
    return images[0] if images else None


def text_parts(case: RunCase) -> list[tuple[str, str]]:
    assert case.prompt is not None
    return [(p.part, p.sha256) for p in case.prompt.parts if p.part != "image"]


def sent(folder: Path) -> dict[str, str | None]:
    """case id -> the sha256 of the image sent for it."""
    return {c.case.case_id: sent_image(c) for c in RunFolder(folder).cases()}


class ImageReader:
    """A model that answers from the image it is sent, never from the case: the truth of the sample case that
    has this image (the one whose structure the prompt names, where rows share an image); NO_IMAGE for an
    image it does not know (the grey one) or none. A control that really changes the image changes its answers."""

    info = ModelInfo(adapter="reader", model="reads-the-image")
    max_batch_size = 64

    def __init__(self) -> None:
        self.by_image: dict[str, list[Case]] = defaultdict(list)
        for case in sample_cases():
            self.by_image[case.image_sha256].append(case)

    def answer(self, request: ModelRequest) -> str:
        image = next((p for p in request.prompt.parts if isinstance(p, ImagePart)), None)
        cases = self.by_image.get(sha(image.data), []) if image is not None else []
        if not cases:
            return NO_IMAGE
        text = request.prompt.text.lower()
        named = [c for c in cases if c.scenario and c.scenario.lower() in text]
        return true_answer((named or cases)[0])

    async def generate(self, requests: Sequence[ModelRequest]) -> list[Completion]:
        return [Completion(case_id=r.case.case_id, key=r.key, text=self.answer(r)) for r in requests]

    async def aclose(self) -> None:
        return None


# -- the grey image -----------------------------------------------------------------------------------------


def _chunks(png: bytes) -> Iterator[tuple[bytes, bytes]]:
    at = 8
    while at < len(png):
        length = int.from_bytes(png[at : at + 4], "big")
        kind, data = png[at + 4 : at + 8], png[at + 8 : at + 8 + length]
        assert zlib.crc32(kind + data) == int.from_bytes(png[at + 8 + length : at + 12 + length], "big")
        yield kind, data
        at += 12 + length


@pytest.mark.parametrize("size", [(1, 1), (2, 1), (1, 3), (86, 85), (104, 78), (259, 7), (800, 600)])
def test_the_grey_image_is_uniform_grey_rgb_of_the_size_asked(size: tuple[int, int]) -> None:
    png = grey_png(*size)
    with Image.open(io.BytesIO(png)) as image:
        image.load()
        assert image.format == "PNG" and image.mode == "RGB" and image.size == size
        assert image.getextrema() == ((128, 128), (128, 128), (128, 128))
    chunks = list(_chunks(png))
    assert [kind for kind, _ in chunks] == [b"IHDR", b"IDAT", b"IEND"]
    width, height = size
    # zlib checks the stream's adler32 as it inflates: the pixel data are exactly the scan lines, filter 0
    assert zlib.decompress(chunks[1][1]) == (b"\x00" + b"\x80" * 3 * width) * height


def test_the_grey_image_is_the_same_bytes_everywhere() -> None:
    # The store key hashes the image: another machine's zlib must not make another request of the same one.
    assert sha(grey_png(104, 78)) == "bcbdcd70e5bf07c6cb13d12c901cb559513db920632403ecf0b575dc3d0c8283"
    assert len(grey_png(800, 600)) < 12_000  # deflated: a grey image is small, whatever its size
    with pytest.raises(ValueError, match="at least one pixel"):
        grey_png(0, 5)


# -- rows read again by their place ---------------------------------------------------------------------------


def test_records_are_read_again_from_where_they_start() -> None:
    data = (
        b"a\tb\tc\n"
        b"1\tplain\tx\n"
        b'2\t"two\nlines, ""quoted"""\ty\n'
        b"3\tcrlf\tz\r\n"
        b"4\tstray\tcr\r5\tafter\tcr\n"
        b"\n"
        b'6\t"\r\ninside"\tw\n'
        b"7\tlast\tno end"
    )
    placed = tsv.PlacedRecords(io.BytesIO(data))
    seen = []
    for record in placed:
        again = next(tsv.records(tsv.text_lines(io.BytesIO(data[placed.start :]))))
        assert again == record
        seen.append(record)
    assert seen == list(tsv.records(tsv.text_lines(io.BytesIO(data))))
    assert len(seen) == 9 and seen[-1] == ["7", "last", "no end"]


def test_every_rows_image_is_read_back_from_its_place() -> None:
    source = resolve_source("sample")
    places = [p for task in select_tasks(None) for p in task_row_places(source, task)]
    images = {p.identity: image_at(p) for p in places}
    cases = {(c.source_file, c.row_index): c for c in sample_cases()}
    assert images.keys() == cases.keys() and len(images) == 200
    for identity, image in images.items():
        case = cases[identity]
        assert image.sha256 == case.image_sha256 and image.data == case.image
        assert image.media_type == f"image/{case.image_format}"


# -- the partner of each case -------------------------------------------------------------------------------


def _partners(seed: int, tasks: Sequence[str] = ("dd", "od", "cve")) -> dict[str, str | None]:
    specs = select_tasks(list(tasks))
    controls = ControlImages("other-image", resolve_source("sample", tasks=specs), specs, seed)
    found = {}
    for case in sample_cases(tasks):
        image = controls.image(case, ImagePart(case.image, "image/png"))
        found[case.case_id] = image.sha256 if image is not None else None
    assert controls.not_controlled == []
    return found


def test_other_image_is_another_image_of_the_same_dataset_reproducibly_by_seed() -> None:
    cases = {c.case_id: c for c in sample_cases(("dd", "od", "cve"))}
    of_dataset: dict[tuple[str, str], set[str]] = defaultdict(set)
    for case in cases.values():
        of_dataset[(case.task, case.dataset_id)].add(case.image_sha256)
    first, again, other = _partners(0), _partners(0), _partners(1)
    assert first == again  # the same seed, the same pairing
    assert first != other  # another seed, another pairing
    for partners in (first, other):
        for case_id, image in partners.items():
            case = cases[case_id]
            assert image != case.image_sha256  # never its own image
            assert image in of_dataset[(case.task, case.dataset_id)]


def test_the_cycle_is_the_documented_order() -> None:
    source = resolve_source("sample")
    (dd,) = select_tasks(["dd"])
    places = [p for p in task_row_places(source, dd) if p.dataset_id == "21"]
    cycle = partner_cycle(places, 7)
    key = lambda p: sha("\0".join(["7", "dd", "21", p.source_file, str(p.row_index)]).encode())  # noqa: E731
    assert cycle == sorted(places, key=key) and sorted(map(key, cycle)) == list(map(key, cycle))
    controls = ControlImages("other-image", source, [dd], 7)
    by_place = {(c.source_file, c.row_index): c for c in sample_cases(("dd",))}
    for i, place in enumerate(cycle):  # each row gets the image of the next row along (the sample's differ)
        case, after = by_place[place.identity], by_place[cycle[(i + 1) % len(cycle)].identity]
        image = controls.image(case, ImagePart(case.image, "image/png"))
        assert image is not None and image.sha256 == after.image_sha256


# -- runs, at the wire ------------------------------------------------------------------------------------------


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[OpenAIServer]:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    server = OpenAIServer(api_key=KEY, models=(MODEL,)).start()
    yield server
    server.stop()


def _wire(server: OpenAIServer) -> list[dict[str, Any]]:
    """The case requests' bodies (the preflight's probe left out: its text is 'Reply OK.')."""
    bodies = [r.body for r in server.requests if r.path.endswith("/chat/completions")]
    return [b for b in bodies if b["messages"][-1]["content"][-1]["text"] != "Reply OK."]


def _run(tmp_path: Path, name: str, **settings: Any) -> Path:
    options = RunOptions(model="random", tasks=("dd", "od", "cve"), out=tmp_path / name, **settings)
    run(options)
    return tmp_path / name


def test_no_image_sends_grey_pixels_of_each_cases_own_size(server: OpenAIServer, tmp_path: Path) -> None:
    baseline = {c.case.case_id: c for c in RunFolder(_run(tmp_path, "ours")).cases()}
    out = tmp_path / "grey"
    result = run(
        RunOptions(model=f"openai/{MODEL}", base_url=server.url, tasks=("dd", "od", "cve"), out=out, control="no-image")
    )
    assert result.infra_errors == 0 and result.manifest.control is not None
    assert result.manifest.control.name == "no-image" and result.manifest.control.not_controlled == []
    received: dict[str, tuple[int, int]] = {}
    for body in _wire(server):
        (url,) = image_parts(body)
        media_type, data = decode_data_url(url)
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            assert media_type == "image/png" and image.mode == "RGB"
            assert image.getextrema() == ((128, 128), (128, 128), (128, 128))  # every pixel grey
            received[sha(data)] = image.size
    cases = RunFolder(out).cases()
    assert len(cases) == len(baseline) == 124
    for case in cases:
        own = baseline[case.case.case_id]
        size = (case.case.image_width, case.case.image_height)
        assert received[sent_image(case) or ""] == size == (own.case.image_width, own.case.image_height)
        assert case.case.image_sha256 == own.case.image_sha256  # the truth's image is still the case's own
        assert text_parts(case) == text_parts(own)  # the same words
    # Identical requests are asked once: cases of one size with the same words share one grey request.
    assert result.requested == len(_wire(server)) < len(cases)


def test_text_only_sends_no_image_part(server: OpenAIServer, tmp_path: Path) -> None:
    out = tmp_path / "text"
    result = run(RunOptions(model=f"openai/{MODEL}", base_url=server.url, tasks=("dd",), out=out, control="text-only"))
    assert result.infra_errors == 0
    bodies = _wire(server)
    assert bodies and all(image_parts(b) == [] for b in bodies)
    assert all(part["type"] == "text" for b in bodies for m in b["messages"] for part in m["content"])
    assert all(sent_image(c) is None for c in RunFolder(out).cases())


def test_other_image_sends_another_cases_image_of_the_same_dataset(server: OpenAIServer, tmp_path: Path) -> None:
    out = tmp_path / "other"
    run(RunOptions(model=f"openai/{MODEL}", base_url=server.url, tasks=("dd", "od"), out=out, control="other-image"))
    images = {c.image_sha256: c.image for c in sample_cases(("dd", "od"))}
    received = {sha(decode_data_url(url)[1]) for body in _wire(server) for url in image_parts(body)}
    cases = RunFolder(out).cases()
    of_dataset: dict[tuple[str, str], set[str]] = defaultdict(set)
    for case in cases:
        of_dataset[(case.case.task, case.case.dataset_id)].add(case.case.image_sha256)
    for case in cases:
        image = sent_image(case)
        assert image is not None and image != case.case.image_sha256
        assert image in of_dataset[(case.case.task, case.case.dataset_id)]
        assert image in received and image in images  # another case's bytes, as they are in the data
    assert received == {sent_image(c) for c in cases}
    assert sent(out) == {k: v for k, v in _partners(0, ("dd", "od")).items()}


def test_the_pairing_does_not_depend_on_the_cases_a_run_keeps(tmp_path: Path) -> None:
    full = sent(_run(tmp_path, "full", control="other-image", seed=3))
    assert sent(_run(tmp_path, "again", control="other-image", seed=3)) == full
    parts = [sent(_run(tmp_path, f"limit{n}", control="other-image", seed=3, limit=n)) for n in (1, 2)]
    shards = [sent(_run(tmp_path, f"shard{i}", control="other-image", seed=3, shard=(i, 2))) for i in (0, 1)]
    for part in (*parts, *shards):
        assert part and all(full[case_id] == image for case_id, image in part.items())
    assert sent(_run(tmp_path, "seed4", control="other-image", seed=4)) != full
    merged = merge_runs([tmp_path / "shard0", tmp_path / "shard1"], tmp_path / "merged")
    assert merged.manifest.control is not None and merged.manifest.control.name == "other-image"
    assert sent(tmp_path / "merged") == full


def _one_image_datasets(tmp_path: Path) -> Path:
    """The sample, with DD dataset 21 cut to one row, DD dataset 23 to two rows of the same image, and the
    image of DD dataset 25's second row broken."""
    root = tmp_path / "data"
    shutil.copytree(resolve_source("sample").root, root)
    for name, keep, change in (("21.tsv", 1, None), ("23.tsv", 2, "same image"), ("25.tsv", 4, "broken")):
        path = root / "disease_diagnosis" / name
        records = [r for r in tsv.records(tsv.text_lines(io.BytesIO(path.read_bytes()))) if isinstance(r, list)]
        header, rows = records[0], records[1 : 1 + keep]
        column = header.index("img_data")
        if change is not None:
            rows[1][column] = rows[0][column] if change == "same image" else "bm90IGFuIGltYWdl"  # "not an image"
        with path.open("w", newline="", encoding="utf-8") as handle:
            csv.writer(handle, dialect="excel-tab").writerows([header, *rows])
    return root


def test_a_case_without_another_image_is_said_and_counted_not_controlled(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = str(_one_image_datasets(tmp_path))
    settings = {"model": "random", "data": data, "tasks": ("dd",), "reader_process": False}
    run(RunOptions(**settings, out=tmp_path / "ours"))  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, logger="u2eval.data.controls"):
        result = run(RunOptions(**settings, out=tmp_path / "other", control="other-image"))  # type: ignore[arg-type]
    cases = {c.case.case_id: c for c in RunFolder(tmp_path / "other").cases()}
    alone = sorted(i for i, c in cases.items() if c.case.dataset_id in ("21", "23"))
    assert len(alone) == 3
    assert result.manifest.control is not None and sorted(result.manifest.control.not_controlled) == alone
    for case_id, case in cases.items():
        assert (sent_image(case) == case.case.image_sha256) == (case_id in alone)
    assert sum("keeps its own image" in r.getMessage() for r in caplog.records) == 3
    # The broken row is no case (a data error) and no partner: the cases of its dataset get one of the others.
    assert len(result.data_errors) == 1 and result.data_errors[0].startswith("dd/25/1/")
    others = {c.case.image_sha256 for c in cases.values() if c.case.dataset_id == "25"}
    assert len(others) == 3
    assert all(sent_image(c) in others - {c.case.image_sha256} for c in cases.values() if c.case.dataset_id == "25")
    assert any("25.tsv:1 skipped as a partner" in r.getMessage() for r in caplog.records)
    manifest = json.loads((tmp_path / "other" / "manifest.json").read_text())
    assert sorted(manifest["control"]["not_controlled"]) == alone and manifest["control"]["seed"] == 0
    report = compare_folders(tmp_path / "ours", tmp_path / "other", resamples=50)
    (control,) = report.controls
    assert sorted(control.not_controlled) == alone
    assert "**3 case(s) not controlled**" in render_markdown(report)


# -- a control run is its own run -----------------------------------------------------------------------------


def test_a_control_run_never_shares_a_folder_with_the_run_it_controls(tmp_path: Path) -> None:
    plain = RunOptions(model="random", tasks=("dd",), limit=1, results_root=tmp_path)
    grey = RunOptions(model="random", tasks=("dd",), limit=1, results_root=tmp_path, control="no-image")
    assert default_folder(grey) == tmp_path / "random__sample__ours__no-image__seed0__dd__limit1"
    assert default_folder(plain) == tmp_path / "random__sample__ours__seed0__dd__limit1"
    for first, second in ((plain, grey), (grey, plain)):
        out = tmp_path / f"out-{first.control}"
        run(dataclasses.replace(first, out=out))
        with pytest.raises(ConfigError, match="holds another run .*control"):
            run(dataclasses.replace(second, out=out))
    with pytest.raises(ConfigError, match=r"unknown control 'no-imag' \(did you mean 'no-image'\?\)"):
        run(RunOptions(model="random", control="no-imag", out=tmp_path / "typo"))


def test_a_control_run_is_listed_apart_on_a_leaderboard(tmp_path: Path) -> None:
    folders = [_run(tmp_path, "ours"), _run(tmp_path, "grey", control="no-image")]
    board = build_board(folders, BoardOptions(resamples=20))
    apart = {row.run: row.apart for row in board.rows}
    assert apart[str(folders[0])] is None
    assert apart[str(folders[1])] is not None and "a control run (no-image" in apart[str(folders[1])]


# -- the report ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def controls_ablation(tmp_path_factory: pytest.TempPathFactory) -> tuple[AblationReport, Path]:
    options = AblationOptions(
        model="reader",
        variants=("ours",),
        controls=("no-image", "text-only", "other-image"),
        out=tmp_path_factory.mktemp("ablate") / "controls",
        resamples=200,
    )
    return run_ablation(options, adapter_factory=ImageReader)


def _task_scores(folder: Path, mode: str = "strict") -> dict[str, float | None]:
    summary = json.loads((folder / "summary.json").read_text())
    scores = {task: result["score"] for task, result in summary["modes"][mode]["tasks"].items()}
    return scores | {"u2": summary["modes"][mode]["u2_over_present_tasks"]}


def test_survival_is_the_controls_task_score_over_the_baselines(controls_ablation: tuple[AblationReport, Path]) -> None:
    report, out = controls_ablation
    assert [r.variant for r in report.runs] == ["ours", "no-image", "text-only", "other-image"]
    assert [c.control for c in report.controls] == ["no-image", "text-only", "other-image"]
    baseline = _task_scores(out / "ours")
    assert baseline["dd"] == 1.0 and baseline["od"] == 1.0  # the model reads the truth from the image
    for control in report.controls:
        scores = _task_scores(out / control.control)
        assert control.run_control == str(out / control.control) and control.not_controlled == []
        tasks = [r.task for r in control.tasks]
        assert tasks == ["dd", "vra", "ll", "od", "kd", "cve", "rg", "cg", "u2"] and set(tasks) == set(baseline)
        for row in control.tasks:
            assert row.baseline == baseline[row.task] and row.control == scores[row.task]
            expected = None if not baseline[row.task] else scores[row.task] / baseline[row.task]
            assert row.survival == expected
    grey, text, other = ({r.task: r for r in c.tasks} for c in report.controls)
    assert grey["dd"].survival == 0.0 and text["dd"].survival == 0.0  # nothing to read: no answer is right
    assert 0 < (other["dd"].survival or 0) < 1  # another case's label is right only where the labels agree
    assert 0 < (other["rg"].survival or 0) < 1 and grey["rg"].survival is not None and grey["rg"].survival < 0.2


def test_the_controls_table_shows_survival_and_the_paired_tests(
    controls_ablation: tuple[AblationReport, Path], tmp_path: Path
) -> None:
    report, _ = controls_ablation
    write_report(report, tmp_path, plots=False)
    assert AblationReport.model_validate_json((tmp_path / "ablation.json").read_text()) == report
    md = (tmp_path / "ablation.md").read_text()
    assert md.startswith("# Controls: ours vs no-image vs text-only vs other-image")
    assert "## Controls: how much of the score survives without the right image" in md
    assert "| task | task score | ours | no-image | survival (no-image / ours) | p (Holm) |" in md
    by_name = {c.b: c for c in report.comparisons}
    for control in report.controls:
        tests = {r.task: r for r in by_name[control.control].tasks}
        for row in control.tasks:
            test = tests.get(row.task)
            if row.task in ("cve", "rg", "cg"):  # no McNemar, their survival all the same
                assert test is not None and test.p is None and row.survival is not None
            elif row.task != "u2":
                assert test is not None and test.p_holm is not None
            line = f"| {row.task.upper() if row.task != 'u2' else '**U2**'} | {row.metric} | {row.baseline:.3f} |"
            assert line in md
    grey_dd = next(r for r in by_name["no-image"].tasks if r.task == "dd")
    assert grey_dd.b == grey_dd.n and grey_dd.c == 0 and grey_dd.p_holm is not None and grey_dd.p_holm < 1e-6
    assert "| DD | accuracy | 1.000 | 0.000 | 0.00 |" in md


def test_ablation_json_is_unchanged_without_controls(tmp_path: Path) -> None:
    options = AblationOptions(model="random", variants=("ours", "ours-noanatomy"), tasks=("vra",), out=tmp_path)
    report, out = run_ablation(options)
    write_report(report, out, plots=False)
    data = json.loads((out / "ablation.json").read_text())
    assert "controls" not in data and "controls" not in data["design"]
    assert "control" not in json.loads((out / "ours" / "identity.json").read_text())


# -- the command line ------------------------------------------------------------------------------------------


def _u2eval(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "u2eval", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300
    )


def test_cli_ablate_with_controls(tmp_path: Path) -> None:
    out = tmp_path / "ablate"
    done = _u2eval(
        "ablate", "--model", "random", "--controls", "no-image,other-image", "--tasks", "dd,cve", "--seed", "2",
        "--out", str(out), "--bootstrap", "200", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = AblationReport.model_validate_json((out / "ablation.json").read_text())
    assert report.design["controls"] == ["no-image", "other-image"] and report.design["variants"] == ["ours"]
    baseline = _task_scores(out / "ours")
    for control in report.controls:
        manifest = json.loads((out / control.control / "manifest.json").read_text())
        assert manifest["control"]["name"] == control.control and manifest["prompt_variant"] == "ours"
        assert manifest["control"]["seed"] == (2 if control.control == "other-image" else None)
        scores = _task_scores(out / control.control)
        for row in control.tasks:
            assert row.survival == (scores[row.task] / baseline[row.task] if baseline[row.task] else None)
            survived = "–" if row.survival is None else f"{row.survival:.2f}"
            label = "**U2**" if row.task == "u2" else row.task.upper()
            assert f"| {label} | {row.metric} | {row.baseline:.3f} | {row.control:.3f} | {survived} |" in done.stdout
    assert "## Controls: how much of the score survives" in done.stdout and "## other-image vs ours" in done.stdout
    for args, message in (
        (("--variants", "ours,no-image"), "'no-image' is a control, not a prompt variant: give it with --controls"),
        (("--controls", "grey"), "unknown control 'grey'"),
        (("--controls", ""), "--controls is empty"),
    ):
        usage = _u2eval("ablate", "--model", "random", *args, cwd=tmp_path)
        assert usage.returncode == 2 and len(usage.stderr.strip().splitlines()) == 1, usage.stderr
        assert message in usage.stderr


def test_cli_run_with_a_control(tmp_path: Path) -> None:
    done = _u2eval("run", "--model", "random", "--control", "text-only", "--tasks", "dd", "--limit", "1", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    folder = tmp_path / "results" / "random__sample__ours__text-only__seed0__dd__limit1"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["control"] == {
        "name": "text-only",
        "sends": "the text alone, with no image part",
        "seed": None,
        "not_controlled": [],
    }
    assert all(sent_image(c) is None for c in RunFolder(folder).cases())


@needs_browser
def test_a_control_runs_summary_and_case_view_say_what_the_model_was_sent(tmp_path: Path) -> None:
    from browser import open_page

    from u2eval.view.page import build_view

    folder = tmp_path / "grey"
    run(RunOptions(model="random", tasks=("dd",), limit=1, out=folder, control="no-image"))
    markdown = (folder / "summary.md").read_text()
    assert "## Control run: no-image" in markdown and "a uniform grey PNG" in markdown
    plain = tmp_path / "plain"
    run(RunOptions(model="random", tasks=("dd",), limit=1, out=plain))
    assert "Control run" not in (plain / "summary.md").read_text()
    page = build_view(folder, tmp_path / "view").page
    with open_page(page, 1200, 900) as browser:
        assert "A control run (no-image)" in browser.inner_text("#control")
        browser.click("#rows .row")
        assert "The model was sent a uniform grey PNG" in browser.inner_text("#case")
