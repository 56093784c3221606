"""The official kit's prediction files as they lie on disk: its layout (``BASE/{cla,seg,measurement,report}/<scorer
key>/<model>/*.jsonl``), the scorers' keys for our datasets, and each line read as a :class:`KitRecord`. Joining
the records to the dataset's rows is ``u2eval.scoring.official_files``.

The kit saved a failure message instead of an answer when a request failed (:data:`KIT_FAILURES`): strict takes
those records for infra errors, the reference mode for the text the official scorer read.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import get_args

from pydantic import JsonValue

from u2eval.benchmark.tasks import OfficialScorer as Scorer
from u2eval.benchmark.tasks import all_tasks
from u2eval.errors import ConfigError

Ref = tuple[str, str]  # (task key, dataset id)
# An image the kit cached under the md5 of the row's base64 text.
_MD5_NAME = re.compile(r"(?<![0-9a-f])([0-9a-f]{32})\.(?:jpe?g|png|bmp|gif|webp)\b", re.IGNORECASE)


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
REPORT_SCORER_KEYS = ("10", "11", "39")


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


def is_kit_failure(answer: str) -> bool:
    """Whether an answer is one of the kit's failure messages, not something a model said."""
    return KIT_FAILURES.match(answer.strip()) is not None


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
