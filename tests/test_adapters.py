"""Adapter table, model resolution, the random baseline and replay of answers produced elsewhere."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path

import pytest

from model_adapters.random import SECTORS, guess
from u2eval.benchmark.sectors import LOCATION_OPTIONS
from u2eval.data.rows import RowIdentity
from u2eval.errors import ConfigError
from u2eval.models.protocol import AdapterOptions, ModelRequest
from u2eval.models.registry import create_adapter, resolve_model
from u2eval.records import Case, Completion, Prompt, TextPart


def _case(task: str, dataset_id: str, i: int = 0, options: tuple[str, ...] = ()) -> Case:
    return Case(
        case_id=f"{task}/{dataset_id}/{i}/abc",
        task=task,  # type: ignore[arg-type]
        dataset_id=dataset_id,
        dataset_name=f"{dataset_id}.x",
        source_file=f"{dataset_id}.tsv",
        row_index=i,
        anatomy="x",
        scenario="",
        truth=None,
        options=options,
        image=b"",
        image_format="png",
    )


def _request(case: Case) -> ModelRequest:
    return ModelRequest(
        key=f"key-{case.case_id}", case=case, prompt=Prompt(case.case_id, None, (TextPart("q"),), "t", "")
    )


def test_unknown_adapter_is_one_clear_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown model or adapter 'nosuch'"):
        resolve_model("nosuch/model")


def test_random_is_deterministic_per_seed_and_case() -> None:
    case = _case("dd", "23", options=("normal", "benign", "malignant"))
    assert guess(case, 0) == guess(case, 0)
    answers = {guess(_case("dd", "23", i, ("normal", "benign", "malignant")), 0) for i in range(50)}
    assert answers == {"normal", "benign", "malignant"}
    assert [guess(_case("dd", "23", i, ("a", "b")), 1) for i in range(20)] != [
        guess(_case("dd", "23", i, ("a", "b")), 2) for i in range(20)
    ]


def test_random_detection_is_uniform_over_the_nine_sectors() -> None:
    counts = Counter(guess(_case("od", "37", i, LOCATION_OPTIONS), 0) for i in range(9000))
    assert set(counts) == set(SECTORS) and "not visible" not in counts
    assert all(900 < n < 1100 for n in counts.values())


def test_random_regression_stays_in_the_dataset_range() -> None:
    values = [float(guess(_case("cve", "18", i), 0)) for i in range(500)]
    assert 10.0 <= min(values) < 15.0 and 70.0 < max(values) <= 75.0
    assert all(guess(_case("cve", "57", i), 0).isdigit() for i in range(50))  # integer fat value


def test_random_text_baseline_is_empty() -> None:
    assert guess(_case("rg", "39"), 0) == ""


def test_replay_from_jsonl_and_csv_with_missing_answers(tmp_path: Path) -> None:
    cases = [_case("dd", "21", i, ("benign", "malignant")) for i in range(3)]
    jsonl = tmp_path / "answers.jsonl"
    jsonl.write_text(
        json.dumps({"case_id": cases[0].case_id, "answer": "benign"})
        + "\n"
        + json.dumps({"case_id": cases[1].case_id, "answer": None})
        + "\n"
    )
    csv_file = tmp_path / "answers.csv"
    csv_file.write_text(f"case_id,response\n{cases[0].case_id},malignant\n")
    for path, first in ((jsonl, "benign"), (csv_file, "malignant")):
        adapter = create_adapter(resolve_model(f"replay/{path}"), AdapterOptions())
        done: list[Completion] = asyncio.run(adapter.generate([_request(c) for c in cases]))
        assert done[0].text == first and done[0].error is None
        assert done[2].error == "missing" and done[2].is_infra_error
    assert done[1].error == "missing"  # the CSV has no row for case 1


def _rows(task: str, dataset_id: str, n: int) -> list[RowIdentity]:
    return [RowIdentity(task, dataset_id, f"{dataset_id}.tsv", i, i, f"{i:032x}", (), f"truth {i}") for i in range(n)]


def _image(i: int) -> list[dict[str, str]]:
    return [{"type": "image", "value": f"/cache/{i:032x}.jpg"}, {"type": "text", "value": "Where is the lesion?"}]


def test_replay_official_files_join_by_image_in_strict_and_by_row_order_in_reference(tmp_path: Path) -> None:
    folder = tmp_path / "official" / "ll" / "04"
    folder.mkdir(parents=True)
    # The kit lost row 1's record and wrote row 3 before row 2: strict must follow the images, the official
    # pairs record i with row i.
    records = [(0, "center"), (3, None), (2, "lower left")]
    lines = [json.dumps({"id": str(i), "question": _image(i), "response": answer}) for i, answer in records]
    (folder / "preds.jsonl").write_text("\n".join(lines) + "\n")
    options = AdapterOptions(rows=lambda tasks: _rows("ll", "04", 4))
    adapter = create_adapter(resolve_model(f"replay/official:{tmp_path / 'official'}"), options)
    assert adapter.info.model == "official:official"
    done = asyncio.run(adapter.generate([_request(_case("ll", "04", i)) for i in range(4)]))
    assert [c.text for c in done] == ["center", None, "lower left", None]
    assert done[1].error == "missing" and "image" in (done[1].error_message or "")
    assert done[3].error == "empty"  # a null response, shown by its image
    official = [c.official for c in done]
    assert [o.answer if o else "-" for o in official] == ["center", None, "lower left", None]
    assert [o.record.rsplit(":", 1)[1] if o and o.record else None for o in official] == ["1", "2", "3", None]
    assert official[3] is not None and "3 records for 4 rows" in (official[3].missing or "")


def test_replay_official_files_without_images_are_refused_in_strict_when_counts_differ(tmp_path: Path) -> None:
    folder = tmp_path / "official" / "ll" / "04"
    folder.mkdir(parents=True)
    (folder / "preds.jsonl").write_text("".join(json.dumps({"response": a}) + "\n" for a in ("center", "left")))
    for n_rows, refused in ((3, True), (2, False)):
        options = AdapterOptions(rows=lambda tasks, n=n_rows: _rows("ll", "04", n))
        adapter = create_adapter(resolve_model(f"replay/official:{tmp_path / 'official'}"), options)
        done = asyncio.run(adapter.generate([_request(_case("ll", "04", i)) for i in range(n_rows)]))
        if refused:
            assert {c.error for c in done} == {"missing"}
            assert "no record names its image: refused" in (done[0].error_message or "")
        else:
            assert [c.text for c in done] == ["center", "left"]  # by row order, said so in the log


def test_replay_rejects_a_file_without_an_answer_column(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"case_id": "x", "output": "y"}) + "\n")
    with pytest.raises(ConfigError, match="no answer column"):
        create_adapter(resolve_model(f"replay/{bad}"), AdapterOptions())


def test_replay_reads_a_spreadsheet_csv_with_a_byte_order_mark(tmp_path: Path) -> None:
    case = _case("dd", "21", 0, ("benign", "malignant"))
    csv_file = tmp_path / "excel.csv"
    csv_file.write_bytes(f"\ufeffcase_id,answer\n{case.case_id},benign\n".encode())
    adapter = create_adapter(resolve_model(f"replay/{csv_file}"), AdapterOptions())
    assert asyncio.run(adapter.generate([_request(case)]))[0].text == "benign"


def test_replay_refuses_a_case_answered_twice_differently_and_takes_a_repeat(tmp_path: Path) -> None:
    case = _case("dd", "21", 0, ("benign", "malignant"))
    repeated = tmp_path / "repeated.jsonl"
    line = json.dumps({"case_id": case.case_id, "answer": "benign"})
    repeated.write_text(f"{line}\n{line}\n")
    adapter = create_adapter(resolve_model(f"replay/{repeated}"), AdapterOptions())
    assert asyncio.run(adapter.generate([_request(case)]))[0].text == "benign"
    conflicting = tmp_path / "conflicting.csv"
    conflicting.write_text(f"case_id,answer\n{case.case_id},malignant\n{case.case_id},benign\n")
    with pytest.raises(ConfigError, match=r"conflicting.csv:3: case dd/21/0/\w+ is answered twice, differently"):
        create_adapter(resolve_model(f"replay/{conflicting}"), AdapterOptions())


def test_replay_official_needs_a_folder(tmp_path: Path) -> None:
    lone = tmp_path / "preds.jsonl"
    lone.write_text('{"response": "center"}\n')
    with pytest.raises(ConfigError, match="needs the folder"):
        create_adapter(resolve_model(f"replay/official:{lone}"), AdapterOptions())
