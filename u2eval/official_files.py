"""Prediction files made elsewhere, joined to the dataset's rows twice: as the official pipeline joins them, and
as they were meant.

The official kit writes ``BASE/{cla,seg,measurement,report}/<scorer key>/<model>/*.jsonl``, one record per
question (``id``, ``question``: the image as a cached file named after the md5 of the row's base64 text and
the prompt text, ``response``). Its scorers join record i to TSV row i by position (facts §1.4, §10). What that
does to a file that lost records or holds non-string answers is reproduced here, per dataset, into an
:class:`~u2eval.records.OfficialAnswer` for each row, which the reference mode scores:

- stage (a) rewrites the cla, seg and measurement files first and drops a line it cannot process (not JSON; a
  non-string answer other than 0 / null / ""; a measurement record without ``response``): later rows shift;
- classification: a file whose record count differs from the dataset's rows is skipped whole;
- location, measurement: rows beyond the records are not scored, and later rows are judged against the
  answer of the next record; records beyond the rows are scored against no truth (location: 'not visible';
  measurement: a NaN RMSE, which the table drops) - which no row can carry, so the dataset is marked;
- report: no stage (a); both lists are cut to the shorter; a null or non-string answer among the first five
  records, a missing ``id`` there, an empty reference there, a non-string answer anywhere or a line that is
  not JSON crashes the report scorer, and every RG and CG result is lost.

Strict joins each record to the row it answers by what identifies it - the image (its md5) and, where rows
share an image, the prompt naming the row's structure - and never by position, unless no record names its
image and the counts agree (said so); otherwise the dataset is refused in one line. The kit's failure
messages saved as answers (:data:`KIT_FAILURES`) are infra errors in strict, text in reference.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import JsonValue

from u2eval.data import RowIdentity
from u2eval.errors import ConfigError
from u2eval.records import OfficialAnswer

Scorer = Literal["cla", "seg", "measurement", "report"]
Ref = tuple[str, str]  # (task key, dataset id)

# The official scorers' keys (their TSV_PATH dicts) -> our (task, dataset). '28' is the KL grade (our DD 28_1)
# and '28_class' the knee view (our VRA 28); several internal files serve two tasks (23, 32, 50, 57, 18, 37, 53).
_CLA = {
    **{k: ("dd", k) for k in ("21", "23", "25", "32", "40", "42", "44", "57", "66", "70", "74is_normal", "75")},
    **{k: ("vra", k) for k in ("03", "10", "18", "37", "50", "53", "69", "74is_visible", "anatomy")},
    "28": ("dd", "28_1"),
    "28_class": ("vra", "28"),
}
_SEG = {
    **{k: ("ll", k) for k in ("04", "17", "23", "32", "64")},
    "48": ("kd", "48"),
    **{k: ("od", k) for k in ("09", "13", "16", "18", "31", "37", "38", "47", "49", "50", "52", "53", "67")},
}
KIT_KEYS: Mapping[Scorer, Mapping[str, Ref]] = {
    "cla": _CLA,
    "seg": _SEG,
    "measurement": {k: ("cve", k) for k in ("18", "27", "31", "50", "57")},
    "report": {"39": ("rg", "39"), "10": ("cg", "10"), "44": ("cg", "44")},
}
# Folder names the kit's scorers read: measurement answers after stage (a) sit in measurement_processed.
_FOLDERS: Mapping[str, Scorer] = {
    "cla": "cla",
    "seg": "seg",
    "measurement": "measurement",
    "measurement_processed": "measurement",
    "report": "report",
}
# Keys the report scorer reads (44 is commented out of it; 11 is scored but in no U2 task).
_REPORT_SCORER_KEYS = ("10", "11", "39")
_NOT_IN_U2 = {("report", "11"): "dataset 11 (thyroid captions) is in no U2-Bench task"}

# What the official kit saved instead of an answer when a call failed (u2-bench-evalkit vlmeval/silicon_test/,
# VLMEvalKit's API wrapper): an infra error in strict; the official scorer scored the text (digits included).
KIT_FAILURES = re.compile(
    r"(?:API call failed: |Error occurred while calling API: |API调用失败: |调用API时发生错误|错误: 未找到模型 )"
    r"|(?:API response format error, no response content found|Multiple API call attempts failed|多次API调用尝试失败"
    r"|API响应格式错误(?:，未找到响应内容)?|API调用被速率限制，请稍后再试|解析模型响应失败|API返回了空响应"
    r"|错误: 没有有效的消息内容|Failed to obtain answer via API\.|\[错误: 模型返回空响应，已重试 \d+ 次\])\s*$"
)
_MD5_NAME = re.compile(r"(?<![0-9a-f])([0-9a-f]{32})\.(?:jpe?g|png|bmp|gif|webp)\b", re.IGNORECASE)


def is_kit_failure(answer: str) -> bool:
    """Whether an answer is one of the kit's failure messages, not something a model said."""
    return KIT_FAILURES.match(answer.strip()) is not None


# ------------------------------------------------------------------------------------------- records


@dataclass(frozen=True)
class KitRecord:
    """One line of a prediction file, as much of it as the joins need."""

    where: str  # file:line
    is_json: bool
    has_response: bool
    answer: JsonValue  # the model's answer: `original_response` where stage (a) already rewrote `response`
    official_answer: JsonValue  # what the official scorer reads: `response`
    has_id: bool
    images: tuple[str, ...]  # md5 names of the images the record shows
    text: str  # the prompt text the record shows ("" when it stores none)
    has_question: bool  # stage (a) finds the options in the record's question; without one it leaves it as is
    question_breaks_stage_a: bool = False  # a question that is not a list of {type, value} items makes it raise


def _texts(question: object) -> tuple[list[str], list[str]]:
    """(image values, text values) of a kit `question`: a list of {type, value} items, the same under
    `messages` (the kit's batch script stores its whole question object), or a plain string."""
    if isinstance(question, dict):
        question = question.get("messages")
    if isinstance(question, str):
        return [], [question]
    images: list[str] = []
    texts: list[str] = []
    if isinstance(question, list):
        for item in question:
            if isinstance(item, dict) and isinstance(item.get("value"), str):
                (images if item.get("type") == "image" else texts).append(item["value"])
    return images, texts


def _images(record: Mapping[str, object], images: list[str]) -> tuple[str, ...]:
    """The md5 names of the images a record shows (its question's image items, or its `image_paths`)."""
    paths = record.get("image_paths")
    found: list[str] = []
    for value in [*images, *(paths if isinstance(paths, list) else [])]:
        if isinstance(value, str):
            found += [m.group(1).lower() for m in _MD5_NAME.finditer(value)]
    return tuple(dict.fromkeys(found))


def kit_record(where: str, line: str) -> KitRecord:
    """One line of a kit file; a line that is not a JSON object is kept as such (the pipeline drops or chokes)."""
    try:
        data = json.loads(line)
    except json.JSONDecodeError:
        data = None
    if not isinstance(data, dict):
        return KitRecord(where, False, False, None, None, False, (), "", False)
    question = data.get("question", [])
    images, texts = _texts(question)
    # Stage (a) reads `item.get('type')` for each item of the question: a string, a dict (it iterates the keys)
    # or a list holding anything but dicts raises, and the line is dropped.
    breaks = bool(question) and (not isinstance(question, list) or not all(isinstance(i, dict) for i in question))
    has_response = "response" in data
    official = data.get("response")
    answer = data.get("original_response", official)
    return KitRecord(
        where=where,
        is_json=True,
        has_response=has_response,
        answer=answer,
        official_answer=official,
        has_id="id" in data,
        images=_images(data, images),
        text="\n".join(texts),
        has_question=bool(texts),
        question_breaks_stage_a=breaks,
    )


def read_records(path: Path) -> list[KitRecord]:
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    return [kit_record(f"{path}:{number}", line) for number, line in enumerate(lines, start=1) if line.strip()]


# --------------------------------------------------------------------------------------- the layout


@dataclass(frozen=True)
class KitFile:
    scorer: Scorer
    key: str
    path: Path


def _scorer_dirs(base: Path) -> dict[Scorer, Path]:
    found: dict[Scorer, Path] = {}
    for name, scorer in _FOLDERS.items():
        folder = base / name
        if folder.is_dir() and scorer not in found:  # the raw answers win over stage (a)'s output
            found[scorer] = folder
    return found


def kit_models(base: Path) -> list[str]:
    """The model folders found anywhere in the kit's layout under ``base``."""
    models = {
        model.name
        for folder in _scorer_dirs(base).values()
        for key in folder.iterdir()
        if key.is_dir()
        for model in key.iterdir()
        if model.is_dir()
    }
    return sorted(models)


def kit_files(base: Path, model: str) -> tuple[list[KitFile], list[str]]:
    """The model's prediction files, one per scorer key, and notes on what was found but is not used.
    Several files for one key are refused: the kit averages one result row per file, so which answers a row
    would be a guess."""
    scorers = _scorer_dirs(base)
    if not scorers:
        raise ConfigError(f"{base}: no cla/, seg/, measurement/ or report/ folder (the official kit's layout)")
    files: list[KitFile] = []
    notes: list[str] = []
    for scorer, folder in scorers.items():
        for key_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
            model_dir = key_dir / model
            if not model_dir.is_dir():
                continue
            found = sorted(model_dir.glob("*.jsonl"))
            if len(found) > 1:
                raise ConfigError(f"{model_dir}: {len(found)} prediction files; keep one per dataset")
            if not found:
                continue
            if (scorer, key_dir.name) in _NOT_IN_U2:
                notes.append(f"{found[0]}: {_NOT_IN_U2[(scorer, key_dir.name)]}; not used")
            elif key_dir.name not in KIT_KEYS[scorer]:
                notes.append(f"{found[0]}: {scorer}/{key_dir.name} is not a key of the official {scorer} scorer")
                continue
            files.append(KitFile(scorer, key_dir.name, found[0]))
    if not files:
        raise ConfigError(f"{base}: no prediction files for model {model!r} (models found: {kit_models(base)})")
    return files, notes


# ----------------------------------------------------------------------------------------- the joins


@dataclass(frozen=True)
class StrictAnswer:
    """What strict mode reads for a row: a record's answer, or why there is none."""

    answer: JsonValue = None
    where: str | None = None  # the record; None: no answer for this row
    missing: str | None = None  # why there is no answer (set exactly when ``where`` is None)
    note: str | None = None  # how it was joined, when not by what identifies it


@dataclass(frozen=True)
class RowAnswer:
    strict: StrictAnswer
    official: OfficialAnswer


def _survives_stage_a(record: KitRecord, scorer: Scorer) -> bool:
    """Whether stage (a) writes the line out (it drops what it cannot process)."""
    if scorer == "report":
        return True  # no stage (a)
    if not record.is_json:
        return False
    value = record.official_answer
    if scorer == "measurement":
        return record.has_response and (isinstance(value, str) or not value)
    # cla/seg: with options found in the question, a truthy non-string answer raises; without, it passes as is.
    if record.question_breaks_stage_a:
        return False
    return isinstance(value, str) or not value or not record.has_question


def _positional_skip(scorer: Scorer, kept: Sequence[KitRecord], n_rows: int, dropped: int) -> str | None:
    lost = f" (stage (a) dropped {dropped} line(s))" if dropped else ""
    if scorer == "cla" and len(kept) != n_rows:
        return f"the official classification scorer skips the file: {len(kept)} records{lost} for {n_rows} rows"
    not_strings = [
        r for r in kept if not r.has_question and r.official_answer and not isinstance(r.official_answer, str)
    ]
    if scorer in ("cla", "seg") and not_strings:  # stage (a) passed them through; stage (b) calls .strip()
        return f"{not_strings[0].where}: a non-string answer stage (b) cannot read; the official skips the file"
    if scorer == "seg" and len(kept) > n_rows:
        return (
            f"{len(kept)} records for {n_rows} rows: the official scores the {len(kept) - n_rows} extra against "
            "'not visible', which no row here can carry (not reproduced)"
        )
    if scorer == "measurement" and any(_has_number(r.official_answer) for r in kept[n_rows:]):
        return (
            f"{len(kept)} records for {n_rows} rows: an extra record with a number makes the RMSE NaN, which the "
            "table drops"
        )
    return None


def _has_number(value: JsonValue) -> bool:
    return isinstance(value, str) and re.search(r"\d", value) is not None


def official_join(scorer: Scorer, rows: Sequence[RowIdentity], records: Sequence[KitRecord]) -> list[OfficialAnswer]:
    """Row i's record as the official pipeline pairs them (after stage (a)), and the file's fate."""
    kept = [r for r in records if _survives_stage_a(r, scorer)]
    skip = _positional_skip(scorer, kept, len(rows), len(records) - len(kept))
    answers = []
    for i in range(len(rows)):
        if skip is not None:
            answers.append(OfficialAnswer(skip=skip))
        elif i < len(kept):
            record = kept[i]
            answers.append(
                OfficialAnswer(answer=record.official_answer, record=record.where, stage_a=record.has_question)
            )
        else:
            answers.append(OfficialAnswer(missing=f"the file has {len(kept)} records for {len(rows)} rows"))
    return answers


def report_crash(files: Mapping[str, tuple[Sequence[RowIdentity], Sequence[KitRecord]]]) -> str | None:
    """Why the official report scorer crashes on this model's report files (keys it reads), if it does."""
    for key in _REPORT_SCORER_KEYS:
        if key not in files:
            continue
        rows, records = files[key]
        n = min(len(rows), len(records))
        for i, record in enumerate(records[:n]):
            if not record.is_json:
                return f"{record.where}: not JSON"
            value = record.official_answer
            if i < 5 and not record.has_id:
                return f"{record.where}: no id among the first five records"
            if i < 5 and not isinstance(value, str):
                return f"{record.where}: a {'null' if value is None else 'non-string'} answer among the first five"
            if value is not None and not isinstance(value, str):
                return f"{record.where}: a non-string answer"
            if i < 5 and not (rows[i].truth or "").strip():
                return f"{rows[i].source_file}:{rows[i].row_index}: an empty reference among the first five rows"
        if any(not r.is_json for r in records[n:]):
            return f"{next(r.where for r in records[n:] if not r.is_json)}: not JSON"
    return None


def _hint_filter(record: KitRecord, candidates: list[RowIdentity]) -> list[RowIdentity]:
    """Among rows sharing an image, those whose distinguishing cells the record's prompt names."""
    if len({c.hints for c in candidates}) < 2:
        return candidates
    named = [c for c in candidates if c.hints and all(h.lower() in record.text.lower() for h in c.hints)]
    return named or candidates


def strict_join(rows: Sequence[RowIdentity], records: Sequence[KitRecord]) -> list[StrictAnswer]:
    """Each record to the row it answers, by its image (and prompt where rows share an image), never by
    position - unless no record names an image and the counts agree."""
    named = [r for r in records if r.images]
    if not named:
        if len(records) == len(rows):
            note = "joined by row order: the records name no image, and the counts agree"
            return [StrictAnswer(r.answer, r.where, note=note) for r in records]
        why = f"{len(records)} records for {len(rows)} rows, and no record names its image: refused"
        return [StrictAnswer(missing=why) for _ in rows]
    free: dict[str, list[RowIdentity]] = defaultdict(list)
    for row in rows:
        free[row.image_md5].append(row)
    taken: dict[int, KitRecord] = {}
    for record in named:
        candidates = [c for md5 in record.images for c in free.get(md5, [])]
        if not candidates:
            continue
        row = _hint_filter(record, candidates)[0]
        free[row.image_md5].remove(row)
        taken[row.position] = record
    return [
        StrictAnswer(taken[row.position].answer, taken[row.position].where)
        if row.position in taken
        else StrictAnswer(missing="no record of the file shows this row's image")
        for row in rows
    ]


def case_prefix(task: str, source_file: str, row_index: int) -> str:
    """A case id without its image hash: ``{task}/{file stem}/{row index}`` (the row it names)."""
    return f"{task}/{Path(source_file).stem}/{row_index}"


def keyed_records(rows: Sequence[RowIdentity], answers: Mapping[str, tuple[str, JsonValue]]) -> list[KitRecord]:
    """Answers keyed by case id, laid out as the kit would have written them: one record per answered row,
    in row order, a row without an answer leaving no line (``answers``: case prefix -> (where, answer))."""
    records = []
    for row in rows:
        found = answers.get(case_prefix(row.task, row.source_file, row.row_index))
        if found is not None:
            where, answer = found
            records.append(KitRecord(where, True, True, answer, answer, True, (row.image_md5,), "", True))
    return records


def unmatched_records(rows: Sequence[RowIdentity], records: Sequence[KitRecord]) -> list[str]:
    """Records whose image is in no row of the dataset (they answer something else)."""
    images = {row.image_md5 for row in rows}
    return [r.where for r in records if r.images and not images.intersection(r.images)]


def join_all(
    rows: Iterable[RowIdentity], files: Mapping[Ref, tuple[Scorer, Sequence[KitRecord]]]
) -> tuple[dict[tuple[str, str, int], RowAnswer], list[str]]:
    """Both joins for every row of the datasets that have a file: (task, source file, row index) -> answers,
    and notes for people (how datasets were joined, records that answer no row, a report scorer crash)."""
    by_dataset: dict[Ref, list[RowIdentity]] = defaultdict(list)
    for row in rows:
        by_dataset[(row.task, row.dataset_id)].append(row)
    notes: list[str] = []
    report_files = {
        key: (by_dataset.get(ref, []), records)
        for (task, dataset_id), (scorer, records) in files.items()
        if scorer == "report"
        for key, ref in KIT_KEYS["report"].items()
        if ref == (task, dataset_id)
    }
    crash = report_crash(report_files)
    if crash is not None:
        notes.append(f"the official report scorer crashes ({crash}): every RG and CG result is lost in reference")
    joined: dict[tuple[str, str, int], RowAnswer] = {}
    for ref, (scorer, records) in files.items():
        dataset_rows = by_dataset.get(ref, [])
        official = official_join(scorer, dataset_rows, records)
        if crash is not None and scorer == "report":
            official = [OfficialAnswer(skip=f"the official report scorer crashes: {crash}") for _ in dataset_rows]
        strict = strict_join(dataset_rows, records)
        for row, s, o in zip(dataset_rows, strict, official, strict=True):
            joined[(row.task, row.source_file, row.row_index)] = RowAnswer(s, o)
        stray = unmatched_records(dataset_rows, records)
        if stray:
            notes.append(f"{ref[0]}/{ref[1]}: {len(stray)} record(s) show an image of no row, e.g. {stray[0]}")
        skips = {o.skip for o in official if o.skip}
        notes += [f"{ref[0]}/{ref[1]} (reference): {skip}" for skip in sorted(skips)]
        shifted = sum(1 for s, o in zip(strict, official, strict=True) if s.where and o.record and s.where != o.record)
        if shifted:
            notes.append(
                f"{ref[0]}/{ref[1]} (reference): {shifted} row(s) judged against another row's record, paired by "
                "row order as the official does"
            )
        joins = {s.note for s in strict if s.note} | {s.missing for s in strict if s.missing and "refused" in s.missing}
        notes += [f"{ref[0]}/{ref[1]} (strict): {note}" for note in sorted(joins)]
    return joined, notes
