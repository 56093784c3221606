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
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import get_args

from pydantic import JsonValue

from u2eval.benchmark.tasks import OfficialScorer as Scorer
from u2eval.benchmark.tasks import all_tasks
from u2eval.data.reader import RowIdentity
from u2eval.errors import ConfigError
from u2eval.records import OfficialAnswer
from u2eval.scoring.official import PANDAS_NA

Ref = tuple[str, str]  # (task key, dataset id)


def kit_keys() -> dict[Scorer, dict[str, Ref]]:
    """The official scorers' keys (their TSV_PATH dicts) -> our (task, dataset), from the task files: a task's
    ``official.scorer``, a dataset's ``official.key`` where it differs from its id ('28' is the KL grade, our DD
    28_1; '28_class' the knee view, our VRA 28). Several internal files serve two tasks (23, 32, 50, 57, ...)."""
    keys: dict[Scorer, dict[str, Ref]] = {scorer: {} for scorer in get_args(Scorer)}
    for task in all_tasks():
        if task.official is not None:
            for dataset in task.datasets:
                keys[task.official.scorer][dataset.official_key] = (task.key, dataset.id)
    return keys


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
    r"(?:API call failed: |Error occurred while calling API: |API调用失败: |调用API时发生错误|错误: 未找到模型 "
    r"|Failed to obtain answer via API\.)"  # VLMEvalKit appends the last error to this one
    r"|(?:API response format error, no response content found|Multiple API call attempts failed|多次API调用尝试失败"
    r"|API响应格式错误(?:，未找到响应内容)?|API调用被速率限制，请稍后再试|解析模型响应失败|API返回了空响应"
    r"|错误: 没有有效的消息内容|\[错误: 模型返回空响应，已重试 \d+ 次\])\s*$"
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
    is_json: bool  # a JSON object (a blank line, other JSON or broken text is not)
    has_response: bool
    answer: JsonValue  # the model's answer: `original_response` where stage (a) already rewrote `response`
    official_answer: JsonValue  # what the official scorer reads: `response`
    has_id: bool
    images: tuple[str, ...]  # md5 names of the images the record shows
    text: str  # the prompt text the record shows ("" when it stores none)
    has_question: bool  # stage (a) finds the options in the record's question; without one it leaves it as is
    question_breaks_stage_a: bool = False  # a question stage (a) cannot iterate makes it raise: the line is dropped
    failed: bool = False  # a failure record without an answer (the Gemini scripts: success false, an error)
    model: str | None = None  # the record's own `model` field


def _items(question: object) -> list[object]:
    """The items of a kit `question`: a list of {type, value} items, or the same under `messages` (the kit's
    batch script stores its whole question object)."""
    if isinstance(question, dict):
        question = question.get("messages")
    return list(question) if isinstance(question, list) else []


def _texts(question: object, text_content: object) -> tuple[list[str], list[str]]:
    """(image values, text values) of a record: its question's items, a plain-string question, `text_content`."""
    images: list[str] = []
    texts: list[str] = [question] if isinstance(question, str) else []
    for item in _items(question):
        if isinstance(item, dict) and isinstance(item.get("value"), str):
            (images if item.get("type") == "image" else texts).append(item["value"])
    if isinstance(text_content, str):
        texts.append(text_content)
    return images, texts


def _breaks_stage_a(data: Mapping[str, object]) -> bool:
    """Whether stage (a)'s option extraction raises on the record's question: it iterates the question and
    calls ``item.get('type')`` and, on text items, ``value.lower()``. A missing question is [] (no options)."""
    if "question" not in data:
        return False
    question = data["question"]
    if not isinstance(question, list | str | dict):
        return True  # null, a number, a boolean: not iterable
    for item in question:  # a string gives characters, a dict its keys: neither has .get
        if not isinstance(item, dict):
            return True
        if item.get("type") == "text" and not isinstance(item.get("value", ""), str):
            return True
    return False


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
    images, texts = _texts(data.get("question"), data.get("text_content"))
    has_response = "response" in data
    official = data.get("response")
    model = data.get("model")
    return KitRecord(
        where=where,
        is_json=True,
        has_response=has_response,
        answer=data.get("original_response", official),
        official_answer=official,
        has_id="id" in data,
        images=_images(data, images),
        text="\n".join(texts),
        has_question=any(isinstance(i, dict) and i.get("type") == "text" for i in _items(data.get("question"))),
        question_breaks_stage_a=_breaks_stage_a(data),
        failed=not has_response and (data.get("success") is False or "error" in data),
        model=model if isinstance(model, str) else None,
    )


def read_records(path: Path) -> list[KitRecord]:
    """Every line of a kit file, split as ``for line in f`` splits it (blank lines too: a scorer reading the file
    as JSON lines chokes on them; stage (a) drops them)."""
    with path.open(encoding="utf-8", errors="replace") as handle:
        lines = list(handle)
    return [kit_record(f"{path}:{number}", line) for number, line in enumerate(lines, start=1)]


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
            elif key_dir.name not in kit_keys()[scorer]:
                notes.append(f"{found[0]}: {scorer}/{key_dir.name} is not a key of the official {scorer} scorer")
                continue
            files.append(KitFile(scorer, key_dir.name, found[0]))
    if not files:
        raise ConfigError(f"{base}: no prediction files for model {model!r} (models found: {kit_models(base)})")
    return files, notes


# ----------------------------------------------------------------------------------------- the joins

# The model whose answers the official scorers edit: its first space is removed before stage (b).
FIRST_SPACE_MODEL = "LLaVA-1.5-13B-HF"
# The keys the measurement scorer reads, in its order (31 is commented out of it).
_MEASUREMENT_SCORER_KEYS = ("18", "27", "50", "57")


@dataclass(frozen=True)
class KitSource:
    """One prediction file: which scorer reads it under which key, its records, and its model's name."""

    scorer: Scorer
    key: str
    label: str  # the file, for people
    records: Sequence[KitRecord]
    model: str  # the model folder's name (the official falls back to it when records carry no `model`)

    @property
    def ref(self) -> Ref | None:
        """Our (task, dataset), or None for a file the scorer reads that is in no U2-Bench task (report/11)."""
        return kit_keys()[self.scorer].get(self.key)

    @property
    def first_space_dropped(self) -> bool:
        """The official removes the first space of every answer of this model (cla, seg, measurement)."""
        first = self.records[0].model if self.records and self.records[0].model else self.model
        return first == FIRST_SPACE_MODEL and self.scorer != "report"


def kit_key(scorer: Scorer, ref: Ref) -> str | None:
    """The official scorer's key for our (task, dataset)."""
    return next((key for key, found in kit_keys()[scorer].items() if found == ref), None)


@dataclass(frozen=True)
class StrictAnswer:
    """What strict mode reads for a row: a record's answer, or why there is none."""

    answer: JsonValue = None
    where: str | None = None  # the record; None: no answer for this row
    missing: str | None = None  # why there is no answer (set exactly when ``where`` is None)
    note: str | None = None  # how it was joined, when not by what identifies it
    failed: bool = False  # the record is a failure record (no answer)


@dataclass(frozen=True)
class RowAnswer:
    strict: StrictAnswer
    official: OfficialAnswer


def _survives_stage_a(record: KitRecord, scorer: Scorer) -> bool:
    """Whether stage (a) writes the line out (it drops what it cannot process)."""
    if scorer == "report":
        return True  # no stage (a)
    if not record.is_json:
        return False  # json.loads(line.strip()) raises (a blank line too), or `data.get` on a non-object
    value = record.official_answer
    if scorer == "measurement":
        return record.has_response and (isinstance(value, str) or not value)
    if record.question_breaks_stage_a:
        return False
    # cla/seg: with options found in the question, a truthy non-string answer raises; without, it passes as is.
    return isinstance(value, str) or not value or not record.has_question


def _stage_b_reads(source: KitSource, kept: Sequence[KitRecord]) -> str | None:
    """Why stage (b) cannot read an answer stage (a) passed through unchanged (no options in the question):
    classification calls ``.strip()`` on every answer (None and NaN included); location on every one that is
    not None, where a record without `response` beside ones with it is NaN."""
    some_have_response = any(r.has_response for r in kept)
    for r in kept:
        if r.has_question:
            continue  # stage (a) rewrote it to an option string
        value = r.official_answer
        if source.scorer == "cla" and (not r.has_response or not isinstance(value, str)):
            return (
                f"{r.where}: an answer stage (b) cannot read ({'none' if not r.has_response else type(value).__name__})"
            )
        if source.scorer == "seg" and (
            (r.has_response and value is not None and not isinstance(value, str))
            or (not r.has_response and some_have_response)
        ):
            return f"{r.where}: an answer stage (b) cannot read"
    return None


def _positional_skip(source: KitSource, kept: Sequence[KitRecord], n_rows: int, dropped: int) -> str | None:
    lost = f" (stage (a) dropped {dropped} line(s))" if dropped else ""
    if source.scorer == "cla" and len(kept) != n_rows:
        return f"the official classification scorer skips the file: {len(kept)} records{lost} for {n_rows} rows"
    if source.scorer in ("cla", "seg") and (why := _stage_b_reads(source, kept)) is not None:
        return f"{why}; the official skips the file"
    if source.scorer == "seg" and len(kept) > n_rows:
        return (
            f"{len(kept)} records for {n_rows} rows: the official scores the {len(kept) - n_rows} extra against "
            "'not visible', which no row here can carry (not reproduced)"
        )
    if source.scorer == "measurement" and any(_has_number(r.official_answer) for r in kept[n_rows:]):
        return (
            f"{len(kept)} records for {n_rows} rows: an extra record with a number makes the RMSE NaN, which the "
            "table drops"
        )
    return None


def _has_number(value: JsonValue) -> bool:
    return isinstance(value, str) and re.search(r"\d", value) is not None


def official_join(source: KitSource, rows: Sequence[RowIdentity]) -> list[OfficialAnswer]:
    """Row i's record as the official pipeline pairs them (after stage (a)), and the file's fate."""
    kept = [r for r in source.records if _survives_stage_a(r, source.scorer)]
    skip = _positional_skip(source, kept, len(rows), len(source.records) - len(kept))
    if skip is not None:
        return [OfficialAnswer(skip=skip) for _ in rows]
    if source.scorer == "seg" and not kept:
        # An empty frame given the truth column takes the TSV's rows: every row is scored with the answer ''.
        where = f"{source.label}: no record after stage (a); the official scores '' on every row"
        return [OfficialAnswer(answer=None, record=where) for _ in rows]
    drop = source.first_space_dropped
    answers = []
    for i in range(len(rows)):
        if i < len(kept):
            r = kept[i]
            answers.append(
                OfficialAnswer(
                    answer=r.official_answer, record=r.where, stage_a=r.has_question, first_space_dropped=drop
                )
            )
        else:
            answers.append(OfficialAnswer(missing=f"the file has {len(kept)} records for {len(rows)} rows"))
    return answers


def _nan_reference(row: RowIdentity) -> bool:
    return row.truth is None or row.truth in PANDAS_NA


def _report_file_crash(source: KitSource, rows: Sequence[RowIdentity] | None) -> str | None:
    """Why the report scorer crashes on one file (``rows`` None: a file of no U2 dataset, its rows unknown).
    It reads every line with json.loads, prints the first five records (their `id`, `response[:100]` and the
    reference `caption[:100]`), then strips every answer that is not None."""
    records = source.records
    broken = next((r for r in records if not r.is_json), None)
    if broken is not None:
        return f"{broken.where}: not a JSON object"
    n = len(records) if rows is None else min(len(records), len(rows))
    if n == 0:
        return None  # an empty frame is skipped, not printed
    if not any(r.has_id for r in records):
        return f"{source.label}: no record has an id (the scorer prints them)"
    if not any(r.has_response for r in records):
        return f"{source.label}: no record has a response"
    for i, r in enumerate(records[:n]):
        value = r.official_answer
        if not r.has_response:
            return f"{r.where}: no response (NaN to pandas)"
        if value is not None and not isinstance(value, str):
            return f"{r.where}: a non-string answer"
        if i < 5 and value is None:
            return f"{r.where}: a null answer among the first five"
        if i < 5 and rows is not None and _nan_reference(rows[i]):
            return f"{rows[i].source_file}:{rows[i].row_index}: an empty reference among the first five rows"
    return None


def report_crash(sources: Sequence[KitSource], rows: Mapping[Ref, Sequence[RowIdentity]]) -> str | None:
    """Why the official report scorer crashes on this model's report files (10, 11, 39, in its order)."""
    by_key = {s.key: s for s in sources if s.scorer == "report"}
    for key in _REPORT_SCORER_KEYS:
        source = by_key.get(key)
        if source is not None:
            ref = source.ref
            crash = _report_file_crash(source, None if ref is None else rows.get(ref, []))
            if crash is not None:
                return crash
    return None


def measurement_crash(sources: Sequence[KitSource], rows: Mapping[Ref, Sequence[RowIdentity]]) -> str | None:
    """Why the official measurement scorer crashes: a file left with no record by stage (a) makes
    `row['response']` raise on the frame the truth column gives it, and nothing catches it."""
    by_key = {s.key: s for s in sources if s.scorer == "measurement"}
    for key in _MEASUREMENT_SCORER_KEYS:
        source = by_key.get(key)
        has_rows = source is not None and source.ref is not None and bool(rows.get(source.ref))
        if source is not None and has_rows and not any(_survives_stage_a(r, "measurement") for r in source.records):
            return f"{source.label}: no record after stage (a)"
    return None


_SLOT = re.compile(r"listed in (.+?)\.\n")  # the kit's OD prompt names the structure here


def _hint_filter(record: KitRecord, candidates: list[RowIdentity]) -> list[RowIdentity]:
    """Among rows sharing an image, those the record's prompt names: by the structure in the OD prompt's slot,
    else by the longest structure name the text contains. Rows alike in every hint are the same question."""
    if len({c.hints for c in candidates}) < 2:
        return candidates
    slot = _SLOT.search(record.text)
    if slot is not None:
        named = [c for c in candidates if c.hints and c.hints[0].lower() == slot.group(1).strip().lower()]
        if named:
            return named
    text = record.text.lower()
    found = [c for c in candidates if c.hints and all(h.lower() in text for h in c.hints)]
    longest = max((len(" ".join(c.hints)) for c in found), default=0)
    return [c for c in found if len(" ".join(c.hints)) == longest]


def strict_join(rows: Sequence[RowIdentity], records: Sequence[KitRecord]) -> tuple[list[StrictAnswer], list[str]]:
    """Each record to the row it answers, by its image (and prompt where rows share an image), never by
    position - unless no record names an image and the counts agree. Also: notes on records it cannot place."""
    records = [r for r in records if r.is_json]
    named = [r for r in records if r.images]
    if not named:
        if len(records) == len(rows):
            note = "joined by row order: the records name no image, and the counts agree"
            return [_strict(r, note) for r in records], []
        why = f"{len(records)} records for {len(rows)} rows, and no record names its image: refused"
        return [StrictAnswer(missing=why) for _ in rows], []
    free: dict[str, list[RowIdentity]] = defaultdict(list)
    for row in rows:
        free[row.image_md5].append(row)
    taken: dict[int, KitRecord] = {}
    notes: list[str] = []
    for record in named:
        candidates = [c for md5 in record.images for c in free.get(md5, [])]
        if not candidates:
            continue
        chosen = _hint_filter(record, candidates)
        if len({c.hints for c in chosen}) != 1:
            notes.append(f"{record.where}: its prompt does not tell which of {len(candidates)} rows with its image")
            continue
        row = chosen[0]
        free[row.image_md5].remove(row)
        taken[row.position] = record
    notes += [f"{r.where}: names no image although others do" for r in records if not r.images]
    answers = [
        _strict(taken[row.position]) if row.position in taken else StrictAnswer(missing=_no_record(row, records))
        for row in rows
    ]
    return answers, notes


def _no_record(row: RowIdentity, records: Sequence[KitRecord]) -> str:
    if any(row.image_md5 in r.images for r in records):
        return "the records showing this row's image answer other rows, or do not tell which"
    return "no record of the file shows this row's image"


def _strict(record: KitRecord, note: str | None = None) -> StrictAnswer:
    return StrictAnswer(record.answer, record.where, note=note, failed=record.failed)


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


CrashCheck = Callable[[Sequence[KitSource], Mapping[Ref, Sequence[RowIdentity]]], str | None]


def join_all(
    rows: Iterable[RowIdentity], sources: Sequence[KitSource]
) -> tuple[dict[tuple[str, str, int], RowAnswer], list[str]]:
    """Both joins for every row of the datasets that have a file: (task, source file, row index) -> answers,
    and notes for people (how datasets were joined, records that answer no row, a scorer crash)."""
    by_dataset: dict[Ref, list[RowIdentity]] = defaultdict(list)
    for row in rows:
        by_dataset[(row.task, row.dataset_id)].append(row)
    notes: list[str] = []
    crashes: dict[Scorer, str] = {}
    checks: tuple[tuple[Scorer, CrashCheck, str], ...] = (
        ("report", report_crash, "every RG and CG result is lost"),
        ("measurement", measurement_crash, "every CVE result is lost"),
    )
    for scorer, find, lost in checks:
        crash = find(sources, by_dataset)
        if crash is not None:
            crashes[scorer] = crash
            notes.append(f"the official {scorer} scorer crashes ({crash}): {lost} in reference")
    joined: dict[tuple[str, str, int], RowAnswer] = {}
    for source in sources:
        ref = source.ref
        if ref is None:
            continue
        dataset_rows = by_dataset.get(ref, [])
        if source.scorer in crashes:
            why = f"the official {source.scorer} scorer crashes: {crashes[source.scorer]}"
            official = [OfficialAnswer(skip=why) for _ in dataset_rows]
        else:
            official = official_join(source, dataset_rows)
        strict, strict_notes = strict_join(dataset_rows, source.records)
        for row, s, o in zip(dataset_rows, strict, official, strict=True):
            joined[(row.task, row.source_file, row.row_index)] = RowAnswer(s, o)
        name = f"{ref[0]}/{ref[1]}"
        stray = unmatched_records(dataset_rows, source.records)
        if stray:
            notes.append(f"{name}: {len(stray)} record(s) show an image of no row, e.g. {stray[0]}")
        notes += [f"{name} (reference): {skip}" for skip in sorted({o.skip for o in official if o.skip})]
        shifted = sum(1 for s, o in zip(strict, official, strict=True) if s.where and o.record and s.where != o.record)
        if shifted:
            notes.append(
                f"{name} (reference): {shifted} row(s) judged against another row's record, paired by row order as "
                "the official does"
            )
        joins = {s.note for s in strict if s.note} | {s.missing for s in strict if s.missing and "refused" in s.missing}
        notes += [f"{name} (strict): {note}" for note in sorted(joins)] + [
            f"{name} (strict): {n}" for n in strict_notes
        ]
    return joined, notes
