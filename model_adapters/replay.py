"""Answers produced elsewhere, scored as if a model gave them now.

``replay/PATH`` where PATH is one of:
- a u2eval run folder: its stored answers, matched by case id;
- a ``.jsonl`` or ``.csv`` file with a ``case_id`` column and an answer column (``answer``, ``response``,
  ``prediction`` or ``text``);
- ``official:DIR``: prediction files of the official U2-Bench kit, laid out ``DIR/<task>/<dataset_id>/*.jsonl``
  (records with a ``response`` field). The official scorer joins them to the dataset by row order, so record
  i answers row i of that dataset's TSV; we do the same and say so in the model identity.

A case with no answer in the source comes back as a ``missing`` infra error, never as a wrong answer.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from u2eval.adapters import AdapterOptions, ModelRequest
from u2eval.errors import ConfigError
from u2eval.records import Completion, ModelInfo
from u2eval.store import RESPONSES_FILE, ResponseStore

ANSWER_COLUMNS = ("answer", "response", "prediction", "text")
OFFICIAL_PREFIX = "official:"


def _answer_field(row: Mapping[str, object], where: str) -> str | None:
    for column in ANSWER_COLUMNS:
        if column in row:
            value = row[column]
            return None if value is None else str(value)
    raise ConfigError(f"{where}: no answer column (expected one of {', '.join(ANSWER_COLUMNS)})")


def _jsonl_records(path: Path) -> Iterator[tuple[int, dict[str, object]]]:
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{path}:{number}: not JSON ({exc.msg})") from exc
            if not isinstance(record, dict):
                raise ConfigError(f"{path}:{number}: expected a JSON object")
            yield number, record


def load_keyed_answers(path: Path) -> dict[str, str | None]:
    """case_id -> answer from a JSONL or CSV file."""
    answers: dict[str, str | None] = {}
    if path.suffix == ".csv":
        # utf-8-sig: spreadsheet programs save CSV with a byte-order mark before the first column name.
        with path.open(encoding="utf-8-sig", newline="") as handle:
            for number, row in enumerate(csv.DictReader(handle), start=2):
                if "case_id" not in row:
                    raise ConfigError(f"{path}: no case_id column")
                answers[row["case_id"]] = _answer_field(row, f"{path}:{number}")
        return answers
    for number, record in _jsonl_records(path):
        if "case_id" not in record:
            raise ConfigError(f"{path}:{number}: no case_id field")
        answers[str(record["case_id"])] = _answer_field(record, f"{path}:{number}")
    return answers


def load_run_answers(folder: Path) -> dict[str, str | None]:
    """case_id -> answer text from a u2eval run folder (infra errors are not answers)."""
    from u2eval.folder_scoring import read_run_cases  # it owns the run-folder layout

    store = ResponseStore(folder)
    answers: dict[str, str | None] = {}
    for run_case in read_run_cases(folder):
        completion = store.get(run_case.key)
        if completion is not None and not completion.is_infra_error:
            answers[run_case.case.case_id] = completion.text
    return answers


def load_official_answers(root: Path) -> dict[tuple[str, str, int], str | None]:
    """(task, dataset_id, row) -> answer from the official kit's per-dataset JSONL files, by row order."""
    answers: dict[tuple[str, str, int], str | None] = {}
    for task_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for dataset_dir in sorted(p for p in task_dir.iterdir() if p.is_dir()):
            files = sorted(dataset_dir.glob("*.jsonl"))
            if len(files) > 1:
                # The kit averages one results row per file; which file answers row i would be a guess.
                raise ConfigError(f"{dataset_dir}: {len(files)} prediction files; keep one per dataset")
            for path in files:
                for row, (number, record) in enumerate(_jsonl_records(path)):
                    answers[(task_dir.name, dataset_dir.name, row)] = _answer_field(record, f"{path}:{number}")
    if not answers:
        raise ConfigError(f"{root}: no official prediction files found under <task>/<dataset_id>/*.jsonl")
    return answers


def _digest(path: Path) -> str:
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir() and file.suffix not in {".jsonl", ".csv"}:
            continue
        digest.update(file.name.encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()[:16]


class ReplayAdapter:
    def __init__(self, spec: str) -> None:
        self._official = spec.startswith(OFFICIAL_PREFIX)
        path = Path(spec.removeprefix(OFFICIAL_PREFIX))
        if not path.exists():
            raise ConfigError(f"replay source not found: {path}")
        self._keyed: dict[str, str | None] = {}
        self._by_row: dict[tuple[str, str, int], str | None] = {}
        if self._official:
            if not path.is_dir():
                raise ConfigError(f"replay/official: needs a folder laid out <task>/<dataset_id>/*.jsonl, not {path}")
            self._by_row = load_official_answers(path)
        elif path.is_dir():
            if not (path / RESPONSES_FILE).is_file():
                raise ConfigError(f"{path} is not a u2eval run folder (no {RESPONSES_FILE})")
            self._keyed = load_run_answers(path)
        else:
            self._keyed = load_keyed_answers(path)
        name = ("official:" if self._official else "") + path.name
        self._info = ModelInfo(adapter="replay", model=name, revision=_digest(path))

    @property
    def info(self) -> ModelInfo:
        return self._info

    @property
    def max_batch_size(self) -> int:
        return 64

    def _lookup(self, request: ModelRequest) -> tuple[bool, str | None]:
        case = request.case
        if self._official:
            row_key = (case.task, case.dataset_id, case.row_index)
            return row_key in self._by_row, self._by_row.get(row_key)
        return case.case_id in self._keyed, self._keyed.get(case.case_id)

    async def generate(self, requests: Sequence[ModelRequest]) -> list[Completion]:
        completions = []
        for request in requests:
            found, text = self._lookup(request)
            case_id = request.case.case_id
            if not found:
                completion = Completion(
                    case_id=case_id,
                    key=request.key,
                    error="missing",
                    error_message="no answer in replay source",
                )
            elif text is None:
                completion = Completion(
                    case_id=case_id,
                    key=request.key,
                    error="empty",
                    error_message="null answer in replay source",
                )
            else:
                completion = Completion(case_id=case_id, key=request.key, text=text)
            completions.append(completion)
        return completions

    async def aclose(self) -> None:
        return None


def create(model: str, options: AdapterOptions) -> ReplayAdapter:
    if not model:
        raise ConfigError("replay needs a source: replay/PATH (run folder, .jsonl, .csv) or replay/official:DIR")
    return ReplayAdapter(model)
