"""Data sources and the case reader: the bundled sample, local folders with every kind of corruption, and the
Hugging Face hub path end to end against a local stand-in (online, pinned, offline, gated, down)."""

from __future__ import annotations

import base64
import binascii
import csv
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hub_server import HubServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from u2eval.benchmark.prompts import render
from u2eval.benchmark.sectors import LOCATION_OPTIONS
from u2eval.benchmark.tasks import all_tasks, get_task, select_tasks
from u2eval.data.image_cells import check_image, strict_b64decode
from u2eval.data.reader import count_cases, iter_cases
from u2eval.data.rows import resolve_dataset_id
from u2eval.data.sources import DEFAULT_REPO, EXPLANATION_FILE, DataSource, resolve_source
from u2eval.data.synth.generate import EXPLANATION_ROW
from u2eval.data.synth.images import encode_png
from u2eval.data.synth.rows import COLUMNS, JPEG_IDS, SAMPLE_ROWS
from u2eval.errors import ConfigError, DataError
from u2eval.records import Case, ImagePart

TASKS = all_tasks()
N_SAMPLE = SAMPLE_ROWS * sum(len(t.datasets) for t in TASKS)
REPO_ROOT = Path(__file__).resolve().parents[1]


def _read(source: DataSource, keys: list[str] | None = None, **kwargs: object) -> tuple[list[Case], list[DataError]]:
    errors: list[DataError] = []
    tasks = select_tasks(keys)
    cases = list(iter_cases(source, tasks, on_error=errors.append, **kwargs))  # type: ignore[arg-type]
    return cases, errors


def _rows(path: Path) -> tuple[list[str], list[list[str]]]:
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh, dialect="excel-tab")
        return next(reader), list(reader)


def _write(path: Path, header: list[str], rows: list[list[str]], delimiter: str = "\t") -> None:
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, dialect="excel-tab", delimiter=delimiter, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def _set_cell(path: Path, row: int, column: str, value: str) -> None:
    header, rows = _rows(path)
    rows[row][header.index(column)] = value
    _write(path, header, rows)


def _sha8(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:8]


# ------------------------------------------------------------------------------------ sources


def test_resolve_source_kinds_and_clear_config_errors(sample_root: Path, tmp_path: Path) -> None:
    sample = resolve_source("sample")
    assert (sample.kind, sample.root) == ("sample", sample_root)
    local = resolve_source(str(sample_root))
    assert local.kind == "local" and local.root == sample_root.resolve() and local.commit_sha is None
    assert set(local.manifest()) == {"kind", "root", "repo", "revision", "sha", "description", "synthetic"}
    assert sample.synthetic and local.synthetic  # the sample's card says u2eval synth made it
    real = tmp_path / "real"
    shutil.copytree(sample_root, real)
    (real / "README.md").write_text("# U2-Bench\n", encoding="utf-8")  # a card of its own: not ours
    assert not resolve_source(str(real)).synthetic and "synthetic" not in resolve_source(str(real)).manifest()

    (tmp_path / "file.tsv").write_text("x", encoding="utf-8")
    (tmp_path / "unrelated").mkdir()
    cases = {
        str(tmp_path / "missing"): "data folder not found",
        str(tmp_path / "file.tsv"): "not a folder",
        str(tmp_path / "unrelated"): "none of the U2-Bench task folders",
        "hf:not a repo": "bad hub dataset",
    }
    for spec, message in cases.items():
        with pytest.raises(ConfigError, match=message) as info:
            resolve_source(spec)
        assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="hub only"):
        resolve_source("sample", revision="v1")
    with pytest.raises(ConfigError, match="two revisions"):
        resolve_source("hf:DolphinAI/u2-bench@a", revision="b")


@pytest.mark.parametrize(
    ("task", "name", "expected"),
    [
        ("dd", "21.Breast_Ultrasound_Segmentation_Dataset", "21"),
        ("dd", "57_1.Liver_Ultrasound_Segmentation_Dataset", "57"),
        ("cve", "57_1.Liver_Ultrasound_Segmentation_Dataset", "57"),
        ("vra", "18_1.Ultrasound_Heart_Segmentation_Dataset", "18"),
        ("ll", "17_1.Liver_Lesion_Dataset", "17"),
        ("dd", "28_1.Knee_Grading_Ultrasound_Classification_Dataset_Kellgren-Lawrence (KL) Grade", "28_1"),
        ("vra", "28.Knee_Classification", "28"),
        ("dd", "74.PCOS_Ovary_Dataset", "74is_normal"),
        ("vra", "74.PCOS_Ovary_Dataset", "74is_visible"),
        ("vra", "anatomy.Mixed_Anatomy", "anatomy"),
        ("od", "09.Kidney_Segmentation", "09"),
        ("od", "9.Kidney_Segmentation", "09"),  # leading zeros mean nothing: the official 03 file is '3_FETAL...'
        ("vra", "3.FETAL_Planes_US", "03"),
        ("dd", "99.Unknown", None),
        ("dd", "", None),
        ("kd", "48", "48"),
        # Any source name after the number (30 of 678 real PCOS rows carry another one), and a bare 74.
        ("dd", "74.Polycystic_Ovary_Other_Source", "74is_normal"),
        ("vra", "74.Polycystic_Ovary_Other_Source", "74is_visible"),
        ("dd", "74", "74is_normal"),
        ("vra", "74 . PCOS", "74is_visible"),
        ("dd", "28.Knee_Classification", None),  # the knee view is not a DD set
        ("vra", "ANATOMY.Mixed", "anatomy"),
        ("cve", "31.HC18_Head_Circumference", "31"),
        # Names in the style of the official files' names: no '.', the id still leads.
        ("dd", "74_is_normal", "74is_normal"),
        ("dd", "40_birads", "40"),
        ("vra", "3_FETAL_Planes_US", "03"),
        ("vra", "10_FetusOrientation", "10"),
    ],
)
def test_dataset_id_resolution(task: str, name: str, expected: str | None) -> None:
    assert resolve_dataset_id(get_task(task), name) == expected


@pytest.mark.parametrize(
    ("name", "stem", "expected"),
    [
        ("", "74_is_normal", "74is_normal"),  # no dataset_name: the file's own leading id
        ("74.X", "74_is_normal", "74is_normal"),
        ("", "notes", None),
        ("", "", None),
    ],
)
def test_dataset_id_from_the_file_name(name: str, stem: str, expected: str | None) -> None:
    assert resolve_dataset_id(get_task("dd"), name, stem) == expected


def test_a_number_shared_by_two_ids_of_one_task_is_told_apart_by_the_file_suffix() -> None:
    # A task listing both halves of the PCOS set would need the file's suffix to choose.
    dd = get_task("dd")
    extra = dd.dataset("74is_normal").model_copy(update={"id": "74is_visible"})
    both = dd.model_copy(update={"datasets": (*dd.datasets, extra)})
    assert resolve_dataset_id(both, "74.Any", "74_is_visible") == "74is_visible"
    assert resolve_dataset_id(both, "74.Any", "74_is_normal") == "74is_normal"
    assert resolve_dataset_id(both, "74.Any", "pcos") is None  # nothing certain: unknown, reported


# ------------------------------------------------------------------------------------ the sample


def test_sample_reads_every_task_with_stable_unique_ids(sample_root: Path) -> None:
    source = resolve_source("sample")
    cases, errors = _read(source)
    again, _ = _read(source)
    assert errors == [] and len(cases) == N_SAMPLE
    assert cases == again
    assert len({c.case_id for c in cases}) == len(cases)
    assert [c.task for c in cases] == sorted((c.task for c in cases), key=[t.key for t in TASKS].index)
    counts = count_cases(source, TASKS)
    assert counts == {t.key: dict.fromkeys(t.dataset_ids, SAMPLE_ROWS) for t in TASKS}
    for case in cases:
        stem = Path(case.source_file).stem
        assert case.case_id == f"{case.task}/{stem}/{case.row_index}/{case.image_sha256[:8]}"
        assert case.source_file.startswith(get_task(case.task).folder + "/")
        assert case.image_format == ("jpeg" if case.dataset_id in JPEG_IDS else "png")
        assert not {"img_data", "seg_data"} & set(case.columns)
        assert case.truth == case.columns[get_task(case.task).truth_column]


def test_case_fields_follow_each_task(sample_root: Path) -> None:
    cases, _ = _read(resolve_source("sample"))
    by = {(c.task, c.dataset_id, c.row_index): c for c in cases}
    kd = by[("kd", "48", 1)]
    assert kd.scenario == "mitral valve annulus" and kd.options == LOCATION_OPTIONS
    assert kd.truth is not None and kd.truth.startswith("{'mitral valve annulus'")
    od = by[("od", "18", 0)]
    assert (od.scenario, od.anatomy, od.dataset_name) == (
        "left ventricle",
        "heart",
        "18_1.Ultrasound_Heart_Segmentation_Dataset",
    )
    assert by[("dd", "44", 0)].options == ("0", "1", "2", "3")  # ints in the literal become label strings
    assert by[("vra", "10", 0)].scenario == "FetusOrientation"  # not the literal's first key
    assert by[("vra", "10", 0)].options == ("hdvb", "hdvf", "huvb", "huvf")
    anatomy = by[("vra", "anatomy", 0)]
    assert anatomy.truth is not None and anatomy.truth.startswith("{'Anatomy': ")
    assert by[("cve", "57", 0)].scenario == "fat value" and by[("cve", "57", 0)].options == ()
    rg = by[("rg", "39", 0)]
    assert rg.scenario == "" and rg.truth == rg.columns["report"] and rg.columns["caption"] is None
    assert set(rg.columns) >= {"report", "prompt"}
    empty = [c for c in cases if c.task == "cve" and c.dataset_id == "27" and c.truth is None]
    assert empty, "an empty truth cell is None, not ''"


def test_limit_is_per_dataset_id_and_takes_the_first_rows(sample_root: Path) -> None:
    source = resolve_source("sample")
    cases, errors = _read(source, ["dd", "od"], limit=2)
    assert errors == []
    per = Counter((c.task, c.dataset_id) for c in cases)
    assert set(per.values()) == {2} and len(per) == 26
    assert {c.row_index for c in cases} == {0, 1}
    assert _read(source, ["dd"], limit=0)[0] == []


# ------------------------------------------------------------------------------------ corruption


def _corrupt_copy(sample_root: Path, tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """disease_diagnosis with one broken row or file per kind; returns the folder and expected where -> reason."""
    root = tmp_path / "broken"
    shutil.copytree(sample_root / "disease_diagnosis", root / "disease_diagnosis")
    folder = root / "disease_diagnosis"
    expected: dict[str, str] = {}

    _set_cell(folder / "21.tsv", 1, "img_data", "not-base64!")
    expected["disease_diagnosis/21.tsv:1"] = "not base64"

    header, rows = _rows(folder / "23.tsv")
    png = base64.b64decode(rows[2][header.index("img_data")])
    _set_cell(folder / "23.tsv", 2, "img_data", base64.b64encode(png[: len(png) // 2]).decode())
    expected[f"dd/23/2/{_sha8(png[: len(png) // 2])}"] = "unreadable PNG"

    header, rows = _rows(folder / "25.tsv")
    jpeg = base64.b64decode(rows[0][header.index("img_data")])
    _set_cell(folder / "25.tsv", 0, "img_data", base64.b64encode(jpeg[: len(jpeg) * 2 // 3]).decode())
    expected[f"dd/25/0/{_sha8(jpeg[: len(jpeg) * 2 // 3])}"] = "end-of-image"

    def row_id(name: str, row: int) -> str:
        header, rows = _rows(folder / name)
        return f"dd/{Path(name).stem}/{row}/{_sha8(base64.b64decode(rows[row][header.index('img_data')]))}"

    _set_cell(folder / "32.tsv", 3, "options", "{'nodule_type': ['benign', 'malignant'")
    expected[row_id("32.tsv", 3)] = "not a Python literal"
    _set_cell(folder / "40.tsv", 1, "options", "{'BI-RADS': ['2', '3']}")
    expected[row_id("40.tsv", 1)] = "no key 'BIRADS'"
    _set_cell(folder / "42.tsv", 0, "dataset_name", "99.Unknown_Source")
    expected[row_id("42.tsv", 0)] = "unknown dataset id"
    _set_cell(folder / "74.tsv", 0, "img_data", base64.b64encode(b"<html>not an image</html>").decode())
    expected[f"dd/74/0/{_sha8(b'<html>not an image</html>')}"] = "not a PNG, JPEG"

    header, rows = _rows(folder / "70.tsv")
    rows[2].append("one too many")
    _write(folder / "70.tsv", header, rows)
    expected["disease_diagnosis/70.tsv:2"] = "18 fields, the header has 17"

    expected[row_id("75.tsv", 1)] = "column prompt is not valid UTF-8"
    raw = (folder / "75.tsv").read_bytes()
    second_prompt = raw.index(b"You are reviewing", raw.index(b"You are reviewing") + 1)  # row 1's prompt
    (folder / "75.tsv").write_bytes(raw[:second_prompt] + b"\xff" + raw[second_prompt:])

    header, rows = _rows(folder / "44.tsv")
    drop = header.index("class_label")
    _write(folder / "44.tsv", header[:drop] + header[drop + 1 :], [r[:drop] + r[drop + 1 :] for r in rows])
    expected["disease_diagnosis/44.tsv"] = "missing column(s) class_label"
    (folder / "57_1.tsv").write_bytes(b"")
    expected["disease_diagnosis/57_1.tsv"] = "empty file"
    header, rows = _rows(folder / "66.tsv")
    _write(folder / "66.tsv", header, rows, delimiter=",")
    expected["disease_diagnosis/66.tsv"] = "not tab-separated"
    header, _ = _rows(folder / "28_1.tsv")
    _write(folder / "28_1.tsv", header, [])
    expected["disease_diagnosis/28_1.tsv"] = "no data rows"
    return root, expected


def test_every_corruption_is_reported_by_id_and_the_rest_still_loads(sample_root: Path, tmp_path: Path) -> None:
    root, expected = _corrupt_copy(sample_root, tmp_path)
    cases, errors = _read(resolve_source(str(root)), ["dd"])
    reported = {e.where: e.reason for e in errors}
    assert set(reported) == set(expected), reported
    for where, fragment in expected.items():
        assert fragment in reported[where], (where, reported[where])
    broken_rows = sum(1 for w in expected if not w.startswith("disease_diagnosis/") or ":" in w)
    broken_files = sum(1 for w in expected if w.startswith("disease_diagnosis/") and ":" not in w)
    assert len(cases) == 13 * SAMPLE_ROWS - broken_rows - broken_files * SAMPLE_ROWS
    # count_cases does not decode images, so only the file-level and dataset problems remove rows there
    counts = count_cases(resolve_source(str(root)), [get_task("dd")])
    assert counts["dd"]["44"] == counts["dd"]["57"] == counts["dd"]["66"] == counts["dd"]["28_1"] == 0
    assert counts["dd"]["42"] == SAMPLE_ROWS - 1 and counts["dd"]["23"] == SAMPLE_ROWS


def test_missing_task_folder_is_reported_and_other_tasks_load(sample_root: Path, tmp_path: Path) -> None:
    shutil.copytree(sample_root / "keypoint_detection", tmp_path / "keypoint_detection")
    cases, errors = _read(resolve_source(str(tmp_path)), ["dd", "kd"])
    assert [e.where for e in errors] == ["disease_diagnosis"]
    assert len(cases) == SAMPLE_ROWS and {c.task for c in cases} == {"kd"}


def test_explanation_row_is_skipped_and_huge_cells_are_read(sample_root: Path, tmp_path: Path) -> None:
    folder = tmp_path / "organ_detection"
    folder.mkdir()
    header, rows = _rows(sample_root / "organ_detection" / "13.tsv")
    rows[0][header.index("seg_data")] = "A" * 3_000_000  # far over csv's default field limit
    rows.insert(1, [EXPLANATION_ROW[c] for c in COLUMNS])
    _write(folder / "13.tsv", header, rows)
    shutil.copy(sample_root / EXPLANATION_FILE, folder / EXPLANATION_FILE)  # must not be read as data
    cases, errors = _read(resolve_source(str(tmp_path)), ["od"])
    assert errors == []
    assert [c.row_index for c in cases] == [0, 2, 3, 4]  # physical data-row numbers


def test_image_base64_is_reused_only_when_the_cell_is_strict_base64(sample_root: Path, tmp_path: Path) -> None:
    """A strict cell travels to the adapters as is; a lenient one (line breaks) is decoded and re-encoded."""
    root = tmp_path / "wrapped"
    shutil.copytree(sample_root / "disease_diagnosis", root / "disease_diagnosis")
    header, rows = _rows(root / "disease_diagnosis" / "21.tsv")
    cell = rows[0][header.index("img_data")]
    _set_cell(
        root / "disease_diagnosis" / "21.tsv",
        0,
        "img_data",
        "\n".join(cell[i : i + 76] for i in range(0, len(cell), 76)),
    )
    cases, errors = _read(resolve_source(str(root)), ["dd"])
    assert errors == []
    by_row = {c.row_index: c for c in cases if c.source_file.endswith("/21.tsv")}
    assert by_row[0].image_b64 == ""  # re-encoded when sent
    assert by_row[1].image_b64 == rows[1][header.index("img_data")]
    for case in (by_row[0], by_row[1]):
        image = render(case, get_task("dd")).parts[0]
        assert isinstance(image, ImagePart)
        assert image.base64_text() == base64.b64encode(case.image).decode("ascii")
    assert by_row[0].image == base64.b64decode(cell)


def test_check_image_rejects_what_it_should() -> None:
    png = encode_png(np.zeros((4, 4), np.uint8), width=4, bit_depth=8, level=6)
    assert check_image(png) == "png"
    for bad, reason in (
        (png[:-12], "unreadable PNG"),
        (png[:30], "unreadable PNG"),
        (b"GIF89a" + b"\0" * 4, "unreadable GIF"),
        (b"\0\0\0\0", "not a PNG"),
    ):
        with pytest.raises(ValueError, match=reason):
            check_image(bad)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(st.characters(exclude_characters="\r", exclude_categories=["Cs"]), max_size=200))
def test_text_cells_survive_the_tsv_round_trip(tmp_path: Path, text: str) -> None:
    """Whatever a caption holds (tabs, quotes, newlines, non-Latin text), the reader returns it unchanged."""
    root = tmp_path / "rt"
    shutil.rmtree(root, ignore_errors=True)
    (root / "caption_generation").mkdir(parents=True)
    image = base64.b64encode(encode_png(np.zeros((2, 2), np.uint8), width=2, bit_depth=8, level=1))
    row = dict.fromkeys(COLUMNS, "") | {"dataset_name": "10.FPUS23", "img_data": image.decode(), "caption": text}
    _write(root / "caption_generation" / "10.tsv", list(COLUMNS), [[row[c] for c in COLUMNS]])
    cases, errors = _read(resolve_source(str(root)), ["cg"])
    assert errors == [] and len(cases) == 1
    assert cases[0].truth == (text or None)


# ------------------------------------------------------------------------------------ the hub


def test_hub_download_records_the_sha_and_matches_the_local_read(hf_env: Path, hub_server: HubServer) -> None:
    source = resolve_source("hub")
    assert (source.kind, source.repo_id, source.revision) == ("hub", DEFAULT_REPO, "main")
    assert source.commit_sha == hub_server.sha and source.root.name == hub_server.sha
    assert source.manifest()["sha"] == hub_server.sha
    assert str(source.root).startswith(str(hf_env))
    downloaded = hub_server.paths()
    assert downloaded["/api/datasets/DolphinAI/u2-bench/revision/main"] == 1
    assert not any("README.md" in p or ".gitattributes" in p for p in downloaded)  # allow_patterns
    assert _read(source)[0] == _read(resolve_source("sample"))[0]

    hub_server.reset()
    os.environ["HF_HUB_OFFLINE"] = "1"  # hf_env's monkeypatch restores it
    offline = resolve_source("hub")
    assert hub_server.count() == 0
    assert offline.root == source.root and offline.commit_sha == hub_server.sha


def test_hub_download_only_fetches_the_requested_tasks(hf_env: Path, hub_server: HubServer) -> None:
    source = resolve_source("hub", tasks=[get_task("kd")])
    fetched = {p.split(f"/resolve/{hub_server.sha}/", 1)[1] for p in hub_server.paths() if "/resolve/" in p}
    assert fetched == {"keypoint_detection/48.tsv", EXPLANATION_FILE}
    assert sorted(p.name for p in source.root.iterdir()) == [EXPLANATION_FILE, "keypoint_detection"]
    cases, errors = _read(source, ["kd", "dd"])
    assert len(cases) == SAMPLE_ROWS and [e.where for e in errors] == ["disease_diagnosis"]


def test_hub_revision_pinned_by_sha_skips_the_revision_lookup(hf_env: Path, hub_server: HubServer) -> None:
    source = resolve_source(f"hf:{DEFAULT_REPO}@{hub_server.sha}", tasks=[get_task("rg")])
    assert source.commit_sha == source.revision == hub_server.sha
    assert hub_server.count("/revision/") == 0 and hub_server.count("/resolve/") > 0


def test_hub_errors_are_one_line_config_errors(
    hf_env: Path, hub_server: HubServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    for spec, message in (
        ("hf:DolphinAI/u2-bench@no-such-branch", "revision 'no-such-branch' not found"),
        ("hf:Someone/else", "dataset repository not found"),
    ):
        with pytest.raises(ConfigError, match=message) as info:
            resolve_source(spec)
        assert "\n" not in str(info.value)
    hub_server.faults["/api/"] = 500  # the Hub is down and nothing is cached
    with pytest.raises(ConfigError, match="not in the local Hugging Face cache and the Hub could not be reached"):
        resolve_source("hub")
    hub_server.faults.clear()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub_server.reset()
    with pytest.raises(ConfigError, match="offline mode is on"):
        resolve_source("hub")
    assert hub_server.count() == 0


def test_hub_down_falls_back_to_the_filled_cache(hf_env: Path, hub_server: HubServer) -> None:
    first = resolve_source("hub", tasks=[get_task("cg")])
    hub_server.faults["/api/"] = 500
    second = resolve_source("hub", tasks=[get_task("cg")])
    assert second.root == first.root and second.commit_sha == hub_server.sha


def test_gated_repo_needs_hf_token(
    hf_env: Path, make_hub_server: Callable[..., HubServer], sample_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gated = make_hub_server(sample_root, token="hf_test_token")
    monkeypatch.setenv("HF_ENDPOINT", gated.url)
    with pytest.raises(ConfigError, match="gated"):
        resolve_source("hub", tasks=[get_task("kd")])
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    assert resolve_source("hub", tasks=[get_task("kd")]).commit_sha == gated.sha


def test_offline_from_a_fresh_process_makes_no_request(hf_env: Path, hub_server: HubServer) -> None:
    """The way users run it: HF_* set before huggingface_hub is imported (it reads them at import)."""
    online = resolve_source("hub")
    hub_server.reset()
    script = (
        "import json\n"
        "from u2eval.data.reader import iter_cases\nfrom u2eval.data.sources import resolve_source\n"
        "from u2eval.benchmark.tasks import all_tasks\n"
        "source = resolve_source('hub')\n"
        "ids = [c.case_id for c in iter_cases(source, all_tasks(), on_error=print)]\n"
        "print(json.dumps({'sha': source.commit_sha, 'ids': ids}))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env |= {"HF_ENDPOINT": hub_server.url, "HF_HOME": str(hf_env), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["sha"] == online.commit_sha == hub_server.sha
    assert result["ids"] == [c.case_id for c in _read(online)[0]]
    assert hub_server.count() == 0
    assert re.fullmatch(r"[0-9a-f]{40}", result["sha"])


def _decoded(decode: Callable[[str], bytes], text: str) -> bytes | None:
    try:
        return decode(text)
    except (binascii.Error, ValueError):
        return None


@st.composite
def _near_base64(draw: st.DrawFn) -> str:
    """Base64 text, then a few edits from the characters that decide strictness (padding, spaces, URL-safe...)."""
    text = list(base64.b64encode(draw(st.binary(max_size=40))).decode())
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(text)))
        char = draw(st.sampled_from("A/+=\n \t-_\x00é"))
        edit = draw(st.sampled_from(["insert", "delete", "replace"]))
        if edit == "insert":
            text.insert(at, char)
        elif text:
            at = min(at, len(text) - 1)
            if edit == "delete":
                del text[at]
            else:
                text[at] = char
    return "".join(text)


@settings(max_examples=3000, deadline=None)
@given(_near_base64())
def test_strict_b64decode_is_binascii_strict_mode(text: str) -> None:
    # the fast path (pybase64) must never accept what strict mode refuses, nor decode differently: a cell it
    # accepts is sent to APIs as the image's base64 unchanged
    strict_mode = _decoded(lambda cell: binascii.a2b_base64(cell, strict_mode=True), text)
    assert _decoded(strict_b64decode, text) == strict_mode


def test_rows_under_any_source_name_are_read_not_skipped(sample_root: Path, tmp_path: Path) -> None:
    # The real PCOS file holds rows whose dataset_name is '74.' plus other source names, and bare '74'.
    root = tmp_path / "data"
    shutil.copytree(sample_root, root)
    path = root / "disease_diagnosis" / "74.tsv"
    header, rows = _rows(path)
    column = header.index("dataset_name")
    rows[0][column], rows[1][column] = "74.Another_PCOS_Source", "74"
    _write(path, header, rows)
    path.rename(path.with_name("74_is_normal.tsv"))
    cases, errors = _read(resolve_source(str(root)), ["dd"])
    assert errors == []
    pcos = [c for c in cases if c.dataset_id == "74is_normal"]
    assert len(pcos) == len(rows)
    assert {c.dataset_name for c in pcos} >= {"74.Another_PCOS_Source", "74"}
