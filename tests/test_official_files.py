"""The official kit's prediction files as they come out of the kit: the layout, the failure messages it saved
as answers, and the two joins (by row order as the official scorers make them, by identity for strict)."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from pathlib import Path

import pytest

from u2eval.data.rows import RowIdentity
from u2eval.data.sources import resolve_source
from u2eval.errors import ConfigError
from u2eval.run.folder import RunFolder
from u2eval.run.runner import RunOptions, run
from u2eval.scoring.kit_files import KitRecord, Scorer, is_kit_failure, kit_files, kit_models, kit_record, read_records
from u2eval.scoring.official_files import KitSource, join_all, official_join, report_crash
from u2eval.scoring.summary_report import render_markdown

# --------------------------------------------------------------------------------- failure messages

KIT_MESSAGES = [
    "API call failed: 500",
    "API call failed: 429, Too Many Requests",
    "API response format error, no response content found",
    "Error occurred while calling API: timeout",
    "Multiple API call attempts failed",
    "API调用失败: 500",
    "API调用失败: 收到空响应",
    "API调用失败: 超过最大重试次数",
    "调用API时发生错误: Connection reset",
    "调用API时发生错误，请稍后再试: boom",
    "多次API调用尝试失败",
    "API响应格式错误，未找到响应内容",
    "API响应格式错误",
    "API调用被速率限制，请稍后再试",
    "[错误: 模型返回空响应，已重试 3 次]",
    "解析模型响应失败",
    "API返回了空响应",
    "错误: 没有有效的消息内容",
    "错误: 未找到模型 gpt-4o 的API KEY",
    "Failed to obtain answer via API.",
    "Failed to obtain answer via API. : Failed with all possible conversation turns.",
]
MODEL_ANSWERS = ["3", "benign", "The API call failed to show a lesion.", "BI-RADS 3", "500", "upper left", ""]


@pytest.mark.parametrize("message", KIT_MESSAGES)
def test_every_failure_message_of_the_kit_is_recognised(message: str) -> None:
    assert is_kit_failure(message) and is_kit_failure(f"  {message}\n")


@pytest.mark.parametrize("answer", MODEL_ANSWERS)
def test_model_answers_are_not_failure_messages(answer: str) -> None:
    assert not is_kit_failure(answer)


# ---------------------------------------------------------------------------------------- the joins


def _rows(n: int, task: str = "dd", dataset_id: str = "21", truth: str | None = "x") -> list[RowIdentity]:
    return [RowIdentity(task, dataset_id, f"{dataset_id}.tsv", i, i, f"{i:032x}", (), truth) for i in range(n)]


def _source(scorer: Scorer, key: str, records: list[KitRecord], model: str = "m") -> KitSource:
    return KitSource(scorer, key, f"{scorer}/{key}/{model}/f.jsonl", records, model)


def _record(i: int, response: object, *, question: bool = True, with_id: bool = True) -> KitRecord:
    data: dict[str, object] = {"response": response}
    if with_id:
        data["id"] = str(i)
    if question:
        data["question"] = [{"type": "image", "value": f"/c/{i:032x}.jpg"}, {"type": "text", "value": "Options: a"}]
    return kit_record(f"f.jsonl:{i + 1}", json.dumps(data))


def test_stage_a_drops_a_json_number_and_the_classification_file_is_then_skipped() -> None:
    records = [_record(0, "benign"), _record(1, 5), _record(2, 0), _record(3, "malignant")]
    official = official_join(_source("cla", "21", records), _rows(4))
    assert {o.skip for o in official} == {
        "the official classification scorer skips the file: 3 records (stage (a) dropped 1 line(s)) for 4 rows"
    }


def test_location_rows_shift_after_a_dropped_line_and_a_json_zero_stays() -> None:
    records = [_record(0, "center"), _record(1, 7.5), _record(2, 0), _record(3, "lower left")]
    official = official_join(_source("seg", "04", records), _rows(4, "ll", "04"))
    assert [o.answer for o in official[:3]] == ["center", 0, "lower left"]
    assert official[3].record is None and official[3].missing == "the file has 3 records for 4 rows"
    assert all(o.skip is None for o in official)


def test_measurement_stage_a_drops_numbers_and_records_without_a_response() -> None:
    no_response = kit_record("f.jsonl:9", json.dumps({"id": "1"}))
    records = [_record(0, "55"), no_response, _record(2, 42), _record(3, "null")]
    official = official_join(_source("measurement", "18", records), _rows(4, "cve", "18"))
    assert [o.answer for o in official[:2]] == ["55", "null"] and official[2].record is None


def test_without_a_question_stage_a_passes_numbers_and_stage_b_skips_the_file() -> None:
    records = [_record(0, "benign", question=False), _record(1, 3, question=False)]
    assert {o.skip for o in official_join(_source("seg", "04", records), _rows(2, "ll", "04"))} == {
        "f.jsonl:2: an answer stage (b) cannot read; the official skips the file"
    }
    plain = official_join(_source("seg", "04", [_record(0, "centre", question=False)]), _rows(1, "ll", "04"))
    assert plain[0].stage_a is False


def _blank(i: int) -> KitRecord:
    return kit_record(f"f.jsonl:{i + 1}", "\n")


def _no_response(i: int) -> KitRecord:
    return kit_record(f"f.jsonl:{i + 1}", json.dumps({"id": str(i)}))


@pytest.mark.parametrize(
    ("records", "truths", "crash"),
    [
        ([_record(i, "ok") for i in range(6)], ["r"] * 6, None),
        ([_record(0, "ok"), _record(1, None)], ["r"] * 2, "f.jsonl:2: a null answer among the first five"),
        ([*(_record(i, "ok") for i in range(5)), _record(5, None)], ["r"] * 6, None),  # past the first five: ""
        ([_record(0, "ok"), _record(1, 3)], ["r"] * 2, "f.jsonl:2: a non-string answer"),
        ([*(_record(i, "ok") for i in range(6)), _record(6, 3)], ["r"] * 7, "f.jsonl:7: a non-string answer"),
        ([_record(0, "ok", with_id=False)], ["r"], "report/39/m/f.jsonl: no record has an id (the scorer prints them)"),
        ([_record(0, "ok", with_id=False), _record(1, "ok")], ["r"] * 2, None),  # one id is enough: NaN for the other
        ([_record(0, "ok"), _record(1, "ok")], ["r", ""], "39.tsv:1: an empty reference among the first five rows"),
        ([_record(0, "ok"), _record(1, "ok")], ["r", "NA"], "39.tsv:1: an empty reference among the first five rows"),
        ([_record(0, "ok"), _record(1, "ok")], ["r", "  "], None),  # a blank string is a string to pandas
        ([_record(0, "ok"), _blank(1)], ["r"] * 2, "f.jsonl:2: not a JSON object"),  # json.loads('\n') raises
        ([*(_record(i, "ok") for i in range(6)), _no_response(6)], ["r"] * 7, "f.jsonl:7: no response (NaN to pandas)"),
        ([_record(0, None)], [], None),  # no rows: both lists are cut to nothing
    ],
)
def test_what_crashes_the_official_report_scorer(
    records: list[KitRecord], truths: list[str], crash: str | None
) -> None:
    rows = [RowIdentity("rg", "39", "39.tsv", i, i, f"{i:032x}", (), t or None) for i, t in enumerate(truths)]
    assert report_crash([_source("report", "39", records)], {("rg", "39"): rows}) == crash


def test_a_report_crash_loses_every_rg_and_cg_result_but_strict_reads_each_row() -> None:
    rg_rows = [RowIdentity("rg", "39", "39.tsv", i, i, f"{i:032x}", (), "report") for i in range(2)]
    cg_rows = [RowIdentity("cg", "10", "10.tsv", i, i, f"{i + 10:032x}", (), "caption") for i in range(2)]
    rg = [_record(0, "A report."), _record(1, None)]
    cg = [kit_record(f"c.jsonl:{i}", json.dumps({"id": str(i), "response": "A caption."})) for i in range(2)]
    joined, notes = join_all([*rg_rows, *cg_rows], [_source("report", "39", rg), _source("report", "10", cg)])
    assert all(
        (answer.official.skip or "").startswith("the official report scorer crashes") for answer in joined.values()
    )
    assert joined[("rg", "39.tsv", 1)].strict.answer is None and joined[("rg", "39.tsv", 1)].strict.where == "f.jsonl:2"
    assert any("every RG and CG result is lost" in note for note in notes)


def test_strict_tells_rows_with_one_image_apart_by_the_structure_the_prompt_names() -> None:
    rows = [
        RowIdentity("od", "37", "37.tsv", i, i, "a" * 32, (channel,), "{}")
        for i, channel in enumerate(("thyroid", "trachea"))
    ]

    def record(i: int, channel: str, answer: str) -> KitRecord:
        question = [
            {"type": "image", "value": f"/c/{'a' * 32}.jpg"},
            {"type": "text", "value": f"Locate the {channel}."},
        ]
        return kit_record(f"f.jsonl:{i}", json.dumps({"id": str(i), "question": question, "response": answer}))

    joined, notes = join_all(
        rows, [_source("seg", "37", [record(1, "trachea", "left"), record(2, "thyroid", "center")])]
    )
    assert "od/37 (reference): 2 row(s) judged against another row's record, paired by row order" in " ".join(notes)
    assert joined[("od", "37.tsv", 0)].strict.answer == "center" and joined[("od", "37.tsv", 1)].strict.answer == "left"
    assert joined[("od", "37.tsv", 0)].official.answer == "left"  # the official pairs by order


# ---------------------------------------------------------------------------------------- the layout


def test_the_kit_layout_lists_models_and_refuses_ambiguity(tmp_path: Path) -> None:
    for scorer, key, model in (("cla", "28", "m1"), ("seg", "04", "m2"), ("report", "11", "m1"), ("cla", "99", "m1")):
        folder = tmp_path / scorer / key / model
        folder.mkdir(parents=True)
        (folder / "a.jsonl").write_text('{"response": "x"}\n')
    assert kit_models(tmp_path) == ["m1", "m2"]
    files, notes = kit_files(tmp_path, "m1")
    assert [(f.scorer, f.key) for f in files] == [("cla", "28"), ("report", "11")]
    assert any("dataset 11" in n for n in notes) and any("cla/99 is not a key" in n for n in notes)
    (tmp_path / "cla" / "28" / "m1" / "b.jsonl").write_text("{}\n")
    with pytest.raises(ConfigError, match="2 prediction files; keep one per dataset"):
        kit_files(tmp_path, "m1")
    with pytest.raises(ConfigError, match="no prediction files for model 'm9'"):
        kit_files(tmp_path, "m9")


# -------------------------------------------------------------------------- a run over the kit's files

# Our (task, dataset) -> the kit's (scorer folder, key), written out here rather than taken from the code.
KIT_FOLDERS = {
    ("dd", "21"): ("cla", "21"),
    ("dd", "28_1"): ("cla", "28"),
    ("vra", "28"): ("cla", "28_class"),
    ("ll", "04"): ("seg", "04"),
    ("cve", "18"): ("measurement", "18"),
    ("rg", "39"): ("report", "39"),
    ("cg", "10"): ("report", "10"),
}


def _sample_rows(root: Path) -> dict[tuple[str, str], list[tuple[str, int, str]]]:
    """(task, dataset) -> [(file stem, row index, md5 of the img_data text)], read with the csv module."""
    folders = {"dd": "disease_diagnosis", "vra": "view_recognition_and_assessment", "ll": "lesion_localisation"}
    folders |= {"cve": "clinical_value_estimation", "rg": "report_generation", "cg": "caption_generation"}
    found: dict[tuple[str, str], list[tuple[str, int, str]]] = {}
    for (task, dataset_id), _ in KIT_FOLDERS.items():
        stem = {"28_1": "28_1", "18": "18_1"}.get(dataset_id, dataset_id)
        path = root / folders[task] / f"{stem}.tsv"
        with path.open(encoding="utf-8", newline="") as fh:
            rows = list(csv.DictReader(fh, dialect="excel-tab"))
        found[(task, dataset_id)] = [
            (path.stem, i, hashlib.md5(r["img_data"].encode()).hexdigest()) for i, r in enumerate(rows)
        ]
    return found


ANSWERS = {
    "dd": ["benign", "Malignant.", "No OA", "benign"],
    "vra": ["left lateral longitudinal"] * 4,
    "ll": ["center", "upper left", "lower center", "lower right"],
    "cve": ["55", "API call failed: 500", "40-45%", "61"],
    "rg": ["The liver is normal.", "No lesion.", "Normal spleen.", "Liver normal."],
    "cg": ["A fetal phantom.", "Fetal head.", "Abdomen plane.", "Femur plane."],
}


def _answer(task: str, i: int) -> object:
    return ANSWERS[task][i % 4]


def _write_kit(
    base: Path, rows: dict[tuple[str, str], list[tuple[str, int, str]]], *, lose: tuple[str, int] | None = None
) -> Path:
    keyed = []
    for (task, dataset_id), items in rows.items():
        scorer, key = KIT_FOLDERS[(task, dataset_id)]
        folder = base / scorer / key / "model-x"
        folder.mkdir(parents=True, exist_ok=True)
        lines = []
        for stem, i, md5 in items:
            answer = _answer(task, i)
            keyed.append({"case_id": f"{task}/{stem}/{i}/", "answer": answer})
            if lose == (f"{task}/{dataset_id}", i):
                continue
            question = [
                {"type": "image", "value": f"/root/.cache/vlmeval/images/{md5}.jpg"},
                {"type": "text", "value": "q"},
            ]
            lines.append(json.dumps({"id": str(i), "question": question, "response": answer}, ensure_ascii=False))
        (folder / "results.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return base


@pytest.fixture(scope="module")
def sample_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("kit") / "data"
    shutil.copytree(resolve_source("sample").root, root)
    return root


TASKS = ("dd", "vra", "ll", "cve", "rg", "cg")


def _datasets(summary_mode: object) -> dict[str, object]:
    return {f"{d.task}/{d.dataset_id}": d for d in summary_mode.datasets}  # type: ignore[attr-defined]


def test_a_run_over_the_kits_files_scores_each_row_by_its_own_answer(sample_copy: Path, tmp_path: Path) -> None:
    rows = _sample_rows(sample_copy)
    base = _write_kit(tmp_path / "kit", rows, lose=("dd/21", 1))
    result = run(
        RunOptions(model=f"replay/official:{base}@model-x", data=str(sample_copy), tasks=TASKS, out=tmp_path / "run")
    )
    strict, reference = (_datasets(result.summary.modes[m]) for m in ("strict", "reference"))
    judgements = {
        j["case_id"]: j for j in map(json.loads, (tmp_path / "run" / "judgements.jsonl").read_text().splitlines())
    }

    def verdict(prefix: str, mode: str) -> dict[str, object]:
        return next(j[mode] for cid, j in judgements.items() if cid.startswith(prefix))

    # dd/21 lost row 1's record: strict misses that row alone; the official skips the whole file.
    assert strict["dd/21"].n_counted == len(rows[("dd", "21")]) - 1  # type: ignore[attr-defined]
    assert next(j for c, j in judgements.items() if c.startswith("dd/21/1/"))["outcome"] == "infra_error"
    assert reference["dd/21"].quirk == "row_order_join" and reference["dd/21"].n_counted == 0  # type: ignore[attr-defined]
    assert verdict("dd/21/0/", "reference")["not_counted"] == "dataset_skipped"
    # The kit's failure message: an infra error in strict, the number 500 in the reference.
    failed = next(j for c, j in judgements.items() if c.startswith("cve/18_1/1/"))
    assert failed["outcome"] == "infra_error" and failed["reference"]["prediction"] == 500.0
    assert failed["reference"]["counted"] and failed["reference"]["from_official_file"]
    # KL grade (kit key 28) and knee view (kit key 28_class) land on their own datasets.
    assert verdict("dd/28_1/2/", "strict")["prediction"] == "no oa"
    assert verdict("vra/28/0/", "strict")["prediction"] == "left lateral longitudinal"
    # RG is scored against `report` in both modes.
    assert verdict("rg/39/0/", "strict")["truth"] == verdict("rg/39/0/", "reference")["truth"] != ""

    keyed = tmp_path / "keyed.jsonl"
    keyed.write_text(
        "".join(
            json.dumps({"case_id": j["case_id"], "answer": _answer(j["task"], int(j["case_id"].split("/")[2]))}) + "\n"
            for j in judgements.values()
        ),
        encoding="utf-8",
    )
    again = run(RunOptions(model=f"replay/{keyed}", data=str(sample_copy), tasks=TASKS, out=tmp_path / "keyed-run"))
    keyed_strict, keyed_reference = (_datasets(again.summary.modes[m]) for m in ("strict", "reference"))
    kit_datasets = {f"{t}/{d}" for t, d in KIT_FOLDERS}
    for name in kit_datasets - {"dd/21"}:  # the same answers by key score the same, but for the lost row
        assert strict[name].metrics == keyed_strict[name].metrics, name  # type: ignore[attr-defined]
        assert reference[name].metrics == keyed_reference[name].metrics, name  # type: ignore[attr-defined]
    assert keyed_reference["dd/21"].quirk is None and keyed_strict["dd/21"].n_counted == len(rows[("dd", "21")])  # type: ignore[attr-defined]


def test_a_limited_replay_is_laid_out_as_the_kit_run_on_the_rows_asked(sample_copy: Path, tmp_path: Path) -> None:
    probe = run(RunOptions(model="random", data=str(sample_copy), tasks=("dd",), limit=1, out=tmp_path / "probe"))
    first_rows = [c.case for c in RunFolder(probe.folder).cases()]
    keyed = tmp_path / "first-rows.jsonl"
    keyed.write_text("".join(json.dumps({"case_id": c.case_id, "answer": c.truth}) + "\n" for c in first_rows))
    replay = f"replay/{keyed}"
    limited = run(RunOptions(model=replay, data=str(sample_copy), tasks=("dd",), limit=1, out=tmp_path / "a"))
    reference = _datasets(limited.summary.modes["reference"])
    assert reference["dd/21"].n_counted == 1 and reference["dd/21"].metrics["accuracy"] == 1.0  # type: ignore[attr-defined]
    whole = run(RunOptions(model=replay, data=str(sample_copy), tasks=("dd",), out=tmp_path / "b"))
    assert _datasets(whole.summary.modes["reference"])["dd/21"].n_counted == 0  # type: ignore[attr-defined]
    # (asked for every row, the kit's file would hold 1 record for 4 rows: the official scorer skips it)
    assert whole.summary.modes["reference"].tasks["dd"].filled  # no DD result at all in reference mode...
    assert "| DD | Disease Diagnosis | accuracy | 1.0000 | – (filled 0.0000) |" in render_markdown(whole.summary)


def test_a_question_stored_as_the_whole_question_object_is_dropped_by_stage_a_but_read_by_strict() -> None:
    # The kit's multimodal batch script stores {id, messages, category} as the question: stage (a) iterates its
    # keys, fails, and drops the line; the image is still there for strict.
    messages = [{"type": "image", "value": f"/c/{1:032x}.jpg"}, {"type": "text", "value": "Options: a"}]
    whole = kit_record(
        "f.jsonl:2", json.dumps({"id": "1", "question": {"id": "1", "messages": messages}, "response": "b"})
    )
    assert whole.images == (f"{1:032x}",) and whole.question_breaks_stage_a
    records = [_record(0, "a"), whole]
    joined, _ = join_all(_rows(2), [_source("cla", "21", records)])
    assert joined[("dd", "21.tsv", 1)].strict.answer == "b"
    assert (joined[("dd", "21.tsv", 1)].official.skip or "").startswith("the official classification scorer skips")


def test_without_a_model_the_command_lists_the_models_found_in_one_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    for scorer, key, model in (("cla", "21", "gpt-4o"), ("seg", "04", "qwen-72b")):
        folder = tmp_path / "kit" / scorer / key / model
        folder.mkdir(parents=True)
        (folder / "r.jsonl").write_text('{"id": "0", "response": "benign"}\n')
    done = subprocess.run(
        [sys.executable, "-m", "u2eval", "run", "--model", f"replay/official:{tmp_path / 'kit'}", "--tasks", "dd"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert "holds answers of 2 model(s): gpt-4o, qwen-72b" in done.stderr and "@MODEL" in done.stderr


# ------------------------------------------------------------------- what the official code does, further


def test_a_location_file_left_with_no_record_is_scored_as_empty_answers_on_every_row() -> None:
    # An empty frame given the truth column takes the TSV's rows: every row gets the answer '' (wrong).
    official = official_join(_source("seg", "04", [_record(0, 5), _record(1, 7)]), _rows(3, "ll", "04"))
    assert [o.answer for o in official] == [None, None, None] and all(o.record for o in official)


def test_a_measurement_file_left_with_no_record_crashes_the_measurement_scorer() -> None:
    cve = [
        RowIdentity("cve", d, f"{d}.tsv", i, i, f"{i:032x}", (), "{'EF': 50}") for d in ("18", "50") for i in range(2)
    ]
    sources = [
        _source("measurement", "18", [_record(0, 42), _record(1, 43)]),
        _source("measurement", "50", [_record(0, "200")]),
    ]
    joined, notes = join_all(cve, sources)
    assert all((a.official.skip or "").startswith("the official measurement scorer crashes") for a in joined.values())
    assert any("every CVE result is lost" in n for n in notes)


@pytest.mark.parametrize(
    ("scorer", "response", "skipped"),
    [
        ("seg", 0, True),  # stage (a) leaves it (no options); stage (b) calls .strip() on anything but None
        ("seg", None, False),
        ("seg", [], True),
        ("cla", None, True),  # the classification scorer strips None too
        ("cla", "benign", False),
    ],
)
def test_answers_stage_b_cannot_read_without_a_question_skip_the_file(
    scorer: Scorer, response: object, skipped: bool
) -> None:
    records = [_record(0, "x", question=False), _record(1, response, question=False)]
    official = official_join(_source(scorer, "21" if scorer == "cla" else "04", records), _rows(2))
    assert (official[0].skip is not None) is skipped


@pytest.mark.parametrize("question", [None, 0, [{"type": "text", "value": None}], "a plain string"])
def test_questions_stage_a_cannot_iterate_drop_the_line(question: object) -> None:
    record = kit_record("f.jsonl:2", json.dumps({"id": "1", "question": question, "response": "benign"}))
    assert record.question_breaks_stage_a
    official = official_join(_source("cla", "21", [_record(0, "benign"), record]), _rows(2))
    assert (official[0].skip or "").startswith("the official classification scorer skips the file: 1 records")


def test_the_llava_answers_lose_their_first_space_in_the_official_scorers() -> None:
    from u2eval.benchmark.tasks import get_task
    from u2eval.records import CaseMeta, Completion
    from u2eval.scoring.judging import judge

    spec = get_task("vra")
    meta = CaseMeta(
        case_id="vra/03/0", task="vra", dataset_id="03", dataset_name="03.x", source_file="03.tsv", row_index=0,
        anatomy="fetus", scenario="", truth="fetal abdomen", options=list(spec.dataset("03").labels),
        image_sha256="0" * 64, columns={},
    )  # fmt: skip
    for model, right in (("LLaVA-1.5-13B-HF", False), ("llava-other", True)):
        official = official_join(
            _source("cla", "03", [_record(0, "fetal abdomen")], model=model), _rows(1, "vra", "03")
        )
        done = Completion(case_id=meta.case_id, key="k", text="fetal abdomen", official=official[0])
        assert judge(meta, done, spec).reference.correct is right, model


def test_lines_split_only_where_python_splits_a_file(tmp_path: Path) -> None:
    # The kit writes JSON with ensure_ascii=False: a line separator inside an answer stays inside its line.
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps({"id": "0", "response": "a\u2028b"}, ensure_ascii=False) + "\n", encoding="utf-8")
    (record,) = read_records(path)
    assert record.is_json and record.official_answer == "a\u2028b"


def test_strict_reads_the_prompt_from_text_content_and_the_structure_from_its_slot() -> None:
    rows = [
        RowIdentity("od", "53", "53.tsv", i, i, "b" * 32, (ch,), "{}")
        for i, ch in enumerate(("fetal head", "pubic symphysis"))
    ]

    def record(i: int, channel: str, answer: str) -> KitRecord:
        prompt = (
            "You are a radiologist analyzing an ultrasound image about fetal head and pubic symphysis.\n"
            f"Your task is to determine the primary location, relative to the image boundaries, for each visible "
            f"structure listed in {channel}.\n"
        )
        data = {"id": str(i), "text_content": prompt, "image_paths": [f"/c/{'b' * 32}.jpg"], "response": answer}
        return kit_record(f"f.jsonl:{i}", json.dumps(data))

    joined, _ = join_all(
        rows, [_source("seg", "53", [record(1, "pubic symphysis", "left"), record(2, "fetal head", "center")])]
    )
    assert joined[("od", "53.tsv", 0)].strict.answer == "center" and joined[("od", "53.tsv", 1)].strict.answer == "left"


def test_strict_refuses_to_guess_between_rows_it_cannot_tell_apart() -> None:
    rows = [RowIdentity("od", "37", "37.tsv", i, i, "c" * 32, (ch,), "{}") for i, ch in enumerate(("a", "b"))]
    question = [{"type": "image", "value": f"/c/{'c' * 32}.jpg"}, {"type": "text", "value": "Where is it?"}]
    record = kit_record("f.jsonl:1", json.dumps({"id": "0", "question": question, "response": "left"}))
    joined, notes = join_all(rows, [_source("seg", "37", [record])])
    assert all(a.strict.where is None for a in joined.values())
    assert any("does not tell which of 2 rows" in n for n in notes)


def test_a_failure_record_without_an_answer_is_a_recorded_failure() -> None:
    from model_adapters.replay import _strict_completion
    from u2eval.records import Completion
    from u2eval.scoring.official_files import StrictAnswer

    record = kit_record("f.jsonl:1", json.dumps({"id": "0", "success": False, "error": "API请求失败"}))
    assert record.failed
    done = _strict_completion(Completion(case_id="c", key="k"), StrictAnswer(record.answer, record.where, failed=True))
    assert done.error == "recorded_failure" and done.is_infra_error


def test_differences_name_the_row_order_join_for_rows_strict_has_no_record_for(
    sample_copy: Path, tmp_path: Path
) -> None:
    base = _write_kit(tmp_path / "kit", _sample_rows(sample_copy), lose=("ll/04", 1))
    result = run(
        RunOptions(model=f"replay/official:{base}@model-x", data=str(sample_copy), tasks=("ll",), out=tmp_path / "run")
    )
    diff = next(d for d in result.summary.differences if (d.task, d.dataset_id) == ("ll", "04"))
    assert "row_order_join (rows strict has no record for, paired with one by row order): 1 case" in diff.reasons
    assert not any(r.startswith("kit failure messages") for r in diff.reasons)


def test_a_replay_says_what_the_source_lacks_and_a_rerun_cannot_help(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    first = run(RunOptions(model="random", tasks=("dd",), limit=1, out=tmp_path / "r"))
    cases = [j for j in map(json.loads, (first.folder / "judgements.jsonl").read_text().splitlines())]
    source = tmp_path / "answers.jsonl"
    lines = [{"case_id": cases[0]["case_id"], "answer": "benign"}, {"case_id": "dd/99/0/deadbeef", "answer": "x"}]
    prefix, _ = cases[1]["case_id"].rsplit("/", 1)
    lines.append({"case_id": f"{prefix}/00000000", "answer": "benign"})  # the same row, another image
    source.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "u2eval", "run", "--model", f"replay{source}", "--tasks", "dd", "--limit", "1"]
        + ["--out", str(tmp_path / "replayed")],
        capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"}, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 4, done.stderr  # not 3: running again cannot help
    assert "no answer in the replay source" in done.stderr and "Run the same command again" not in done.stderr
    assert (
        "1 case id(s) in answers.jsonl match no row of the dataset" in done.stderr and "dd/99/0/deadbeef" in done.stderr
    )
    responses = (tmp_path / "replayed" / "responses.jsonl").read_text(encoding="utf-8")
    assert "answers this row for another image" in responses
