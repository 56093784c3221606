"""The synthetic data generator: determinism, the exact U2-Bench layout, the cell encodings, and coverage of
the cases the scorers must handle (every location sector, boundary boxes, unscorable IMT values)."""

from __future__ import annotations

import ast
import base64
import csv
import io
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from u2eval.benchmark.sectors import LOCATION_OPTIONS
from u2eval.benchmark.tasks import TaskSpec, all_tasks
from u2eval.data.synth.generate import CARD_FILE, EXPLANATION_FILE, EXPLANATION_ROW, write_dataset
from u2eval.data.synth.rows import COLUMNS, JPEG_IDS, SAMPLE_ROWS, make_row, planned_counts
from u2eval.errors import ConfigError

TASKS = all_tasks()
TASK_BY_FOLDER = {t.folder: t for t in TASKS}


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _read_tsv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh, dialect="excel-tab")
        header = next(reader)
        return header, [dict(zip(header, row, strict=True)) for row in reader]


def _rows(root: Path) -> Iterator[tuple[TaskSpec, Path, dict[str, str]]]:
    for task in TASKS:
        for path in sorted((root / task.folder).glob("*.tsv")):
            for row in _read_tsv(path)[1]:
                yield task, path, row


def _sector(cx: float, cy: float) -> str:
    """The reference scorer's rule (facts sheet 4.3): strict '<' at 0.45 and 0.55."""
    row = "upper" if cy < 0.45 else "middle" if cy < 0.55 else "lower"
    col = "left" if cx < 0.45 else "center" if cx < 0.55 else "right"
    return "center" if (row, col) == ("middle", "center") else f"{row} {col}"


def _first_structure(cell: str) -> list[float]:
    parsed = ast.literal_eval(cell)
    first = parsed[0] if isinstance(parsed, list) else parsed
    return list(next(iter(first.values())))


# ------------------------------------------------------------------------------------ determinism


def test_bundled_sample_equals_a_fresh_generation(sample_root: Path, tmp_path: Path) -> None:
    write_dataset(tmp_path / "fresh", size="sample", seed=0)
    fresh, bundled = _tree(tmp_path / "fresh"), _tree(sample_root)
    assert sorted(fresh) == sorted(bundled)
    changed = [name for name in fresh if fresh[name] != bundled[name]]
    assert not changed, (
        f"bundled sample is stale in {changed[:5]}: regenerate with `python -m u2eval.data.synth.generate`"
    )


def test_same_seed_same_bytes_other_seed_other_images(tmp_path: Path) -> None:
    first = write_dataset(tmp_path / "a", seed=7)
    second = write_dataset(tmp_path / "b", seed=7)
    write_dataset(tmp_path / "c", seed=8)
    a, b, c = _tree(tmp_path / "a"), _tree(tmp_path / "b"), _tree(tmp_path / "c")
    assert a == b
    assert first.counts == second.counts and first.n_bytes == second.n_bytes == sum(map(len, a.values()))
    data_files = [name for name in a if "/" in name]
    assert len(data_files) == sum(len(t.datasets) for t in TASKS)
    assert all(a[name] != c[name] for name in data_files)
    assert a[EXPLANATION_FILE] == c[EXPLANATION_FILE]  # no randomness in the explanation file


def test_workers_write_the_same_bytes_and_progress_counts_up_to_every_case(tmp_path: Path) -> None:
    seen: list[tuple[int, int]] = []
    report = write_dataset(
        tmp_path / "pool", seed=3, workers=2, progress=lambda done, total: seen.append((done, total))
    )
    write_dataset(tmp_path / "one", seed=3, workers=1)
    assert _tree(tmp_path / "pool") == _tree(tmp_path / "one")  # files finish in any order, the bytes do not change
    assert len(seen) == sum(len(t.datasets) for t in TASKS)  # one step per dataset file
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)
    assert seen[-1] == (report.n_cases, report.n_cases) and {total for _, total in seen} == {report.n_cases}


def test_rewriting_its_own_folder_drops_stale_files_but_foreign_folders_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "synth"
    write_dataset(root)
    stale = root / "disease_diagnosis" / "stale.tsv"
    stale.write_text("dataset_name\n", encoding="utf-8")
    write_dataset(root)
    assert not stale.exists()

    foreign = tmp_path / "real-copy"
    (foreign / "disease_diagnosis").mkdir(parents=True)
    (foreign / "disease_diagnosis" / "21.tsv").write_text("precious", encoding="utf-8")
    with pytest.raises(ConfigError, match="not empty"):
        write_dataset(foreign)
    assert (foreign / "disease_diagnosis" / "21.tsv").read_text(encoding="utf-8") == "precious"


def test_bad_arguments_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        write_dataset(tmp_path / "x", seed=-1)
    with pytest.raises(ConfigError):
        write_dataset(tmp_path / "x", scale=0)
    with pytest.raises(ConfigError):
        planned_counts("huge")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------ layout


def test_folders_files_and_explanation_file(sample_root: Path) -> None:
    folders = {p.name for p in sample_root.iterdir() if p.is_dir()}
    assert folders == set(TASK_BY_FOLDER)
    assert {p.name for p in sample_root.iterdir() if p.is_file()} == {EXPLANATION_FILE, CARD_FILE}
    header, rows = _read_tsv(sample_root / EXPLANATION_FILE)
    assert tuple(header) == COLUMNS and len(COLUMNS) == 17
    assert rows == [dict(EXPLANATION_ROW)]
    # The HF viewer's minimum cell lengths for these two columns are the description texts.
    assert len(rows[0]["img_data"]) == 20 and len(rows[0]["seg_data"]) == 32


def test_every_tsv_has_the_17_columns_and_every_dataset_id_its_rows(sample_root: Path) -> None:
    per_source: Counter[tuple[str, str]] = Counter()
    for task in TASKS:
        for path in (sample_root / task.folder).glob("*.tsv"):
            header, rows = _read_tsv(path)
            assert tuple(header) == COLUMNS, path
            assert len({r["dataset_name"] for r in rows}) == 1, path
            per_source.update((task.key, r["dataset_name"]) for r in rows)
    for task in TASKS:
        for spec in task.datasets:
            assert per_source[(task.key, spec.source)] == SAMPLE_ROWS >= 3, (task.key, spec.id)


def test_tsv_is_written_like_pandas_to_csv(sample_root: Path) -> None:
    raw = (sample_root / "report_generation" / "39.tsv").read_bytes()
    assert b"\r" not in raw and raw.endswith(b"\n")
    assert raw.startswith(("\t".join(COLUMNS) + "\n").encode())
    # The prompt holds paragraph breaks, so csv quoting must wrap it (a naive line split would break rows).
    assert b'\t"You are reviewing an ultrasound image of the {anatomy_location}.\n\n' in raw
    total = sum(len(data) for data in _tree(sample_root).values())
    assert total < 3_500_000


# ------------------------------------------------------------------------------------ cells


def test_literal_cells_parse_and_agree_with_the_task_specs(sample_root: Path) -> None:
    for task, path, row in _rows(sample_root):
        spec = next(d for d in task.datasets if d.source == row["dataset_name"])
        for column in ("options", "class_label", "gt_bbox", "keypoints", "measurement", "demographic"):
            if row[column].startswith(("{", "[")):
                ast.literal_eval(row[column])
        assert "{anatomy_location}" in row["prompt"], path
        assert row["anatomy_location"] == spec.anatomy
        if task.capability == "classification":
            options = ast.literal_eval(row["options"])
            assert [str(x) for x in options[row["classification_task"]]] == list(spec.labels)
            label = row["class_label"]
            if spec.truth_format == "anatomy_dict":
                label = ast.literal_eval(label)["Anatomy"].lower()
            assert label in spec.labels, (path, row["class_label"])
        else:
            assert row["options"] == row["classification_task"] == row["class_label"] == ""


def test_options_have_extra_keys_and_int_labels_like_the_real_data(sample_root: Path) -> None:
    def options(folder: str, name: str) -> dict[str, list[object]]:
        return dict(ast.literal_eval(_read_tsv(sample_root / folder / name)[1][0]["options"]))

    fpus = options("view_recognition_and_assessment", "10.tsv")
    assert list(fpus) == ["DiagnosticPlane", "FetusOrientation"]  # its own key is not the first one
    assert options("disease_diagnosis", "44.tsv") == {"LUS_score": [0, 1, 2, 3]}
    assert set(options("disease_diagnosis", "74.tsv")) == {"is_normal", "is_visible"}


def test_images_decode_with_the_sniffed_format_and_masks_match(sample_root: Path) -> None:
    for task, path, row in _rows(sample_root):
        image = Image.open(io.BytesIO(base64.b64decode(row["img_data"])))
        image.load()
        spec_id = next(d.id for d in task.datasets if d.source == row["dataset_name"])
        assert image.format == ("JPEG" if spec_id in JPEG_IDS else "PNG"), path
        assert image.mode == "L" and 96 <= image.width <= 128 and 60 <= image.height <= 100
        if task.key in ("ll", "od") and row["gt_bbox"]:
            mask = Image.open(io.BytesIO(base64.b64decode(row["seg_data"])))
            mask.load()
            assert mask.mode == "1" and mask.size == image.size
            assert mask.getbbox() is not None  # the structure is drawn
        else:
            assert row["seg_data"] == ""


def test_location_truths_cover_every_sector_and_the_boundaries(sample_root: Path) -> None:
    sectors: Counter[str] = Counter()
    coordinates: set[float] = set()
    as_list = 0
    for task, _, row in _rows(sample_root):
        if task.key not in ("ll", "od"):
            continue
        if not row["gt_bbox"]:
            sectors["not visible"] += 1
            continue
        as_list += row["gt_bbox"].startswith("[")
        cx, cy, w, h = _first_structure(row["gt_bbox"])
        assert all(0.0 < v < 1.0 for v in (cx, cy, w, h))
        sectors[_sector(cx, cy)] += 1
        coordinates.update((cx, cy))
    assert set(sectors) == set(LOCATION_OPTIONS)
    assert {0.45, 0.55} <= coordinates
    assert as_list >= 3
    kd = [_first_structure(r["keypoints"]) for t, _, r in _rows(sample_root) if t.key == "kd"]
    assert len({_sector(x, y) for x, y in kd}) == SAMPLE_ROWS


def test_measurements_use_each_datasets_key_and_some_imt_rows_are_unscorable(sample_root: Path) -> None:
    by_id: dict[str, list[str]] = {}
    for task, _, row in _rows(sample_root):
        if task.key == "cve":
            by_id.setdefault(row["dataset_name"].split(".")[0], []).append(row["measurement"])
    imt = [ast.literal_eval(c).get("IMT") if c else None for c in by_id["27"]]
    scorable = [v for v in imt if isinstance(v, list) and v and isinstance(v[0], float)]
    assert 0 < len(scorable) < len(imt)
    assert all(isinstance(ast.literal_eval(c)["fat value"], int) for c in by_id["57_1"])
    assert all(set(ast.literal_eval(c)) == {"head_circumference", "pixel_size_mm"} for c in by_id["31"])
    assert all(10 <= ast.literal_eval(c)["EF"] <= 75 for c in by_id["18_1"])


def test_report_and_caption_texts(sample_root: Path) -> None:
    rows = {(t.key, r["dataset_name"].split(".")[0]): r for t, _, r in _rows(sample_root)}
    reports = [r["report"] for (task, _), r in rows.items() if task == "rg"]
    for (task, _), row in rows.items():
        if task == "rg":
            assert row["caption"] == ""  # the report is in `report` alone, as on the real RG rows
            assert row["report"].count(". ") >= 3
            for organ in ("liver", "gallbladder", "pancreas", "spleen"):
                assert organ in row["report"].lower()
    assert reports
    assert "phantom" in rows[("cg", "10")]["caption"]
    assert "lung" in rows[("cg", "44")]["caption"].lower() or "B-line" in rows[("cg", "44")]["caption"]


# ------------------------------------------------------------------------------------ full size


def test_full_counts_are_the_published_7241_and_scale_multiplies() -> None:
    full = planned_counts("full")
    assert sum(sum(per.values()) for per in full.values()) == 7241
    for task in TASKS:
        assert full[task.key] == {d.id: d.n_full for d in task.datasets}
    doubled = planned_counts("full", scale=2)
    assert sum(sum(per.values()) for per in doubled.values()) == 2 * 7241


def test_full_size_rows_have_realistic_images() -> None:
    for task, dataset_id, fmt in (("od", "37", "PNG"), ("dd", "40", "JPEG"), ("rg", "39", "PNG")):
        row = make_row(task, dataset_id, 3, size="full")
        data = base64.b64decode(row["img_data"])
        image = Image.open(io.BytesIO(data))
        image.load()
        assert image.format == fmt
        assert 600 <= image.width <= 1000 and 450 <= image.height <= 800
        assert 60_000 <= len(data) <= 400_000, len(data)


def test_rows_do_not_depend_on_scale_or_neighbours(tmp_path: Path) -> None:
    """Row r is a function of (seed, task, dataset, r) only: a scaled set extends the unscaled one."""
    report = write_dataset(tmp_path / "x2", scale=2)
    assert report.n_cases == 2 * sum(sum(per.values()) for per in planned_counts("sample").values())
    _, rows = _read_tsv(tmp_path / "x2" / "organ_detection" / "13.tsv")
    assert len(rows) == 2 * SAMPLE_ROWS
    for index in (0, SAMPLE_ROWS - 1, SAMPLE_ROWS + 1):
        assert rows[index] == make_row("od", "13", index)
