"""Answers produced elsewhere, scored as if a model gave them now.

``replay/PATH`` where PATH is one of:
- a u2eval run folder: its stored answers, matched by case id;
- a ``.jsonl`` or ``.csv`` file with a ``case_id`` column and an answer column (``answer``, ``response``,
  ``prediction`` or ``text``); in JSONL the answer keeps its JSON type (a number, null);
- ``official:BASE@MODEL``: the official kit's prediction files as it writes them,
  ``BASE/{cla,seg,measurement,report}/<scorer key>/<MODEL>/*.jsonl`` (``official:BASE`` alone lists the models);
  the older u2eval layout ``official:DIR`` with ``DIR/<task>/<dataset_id>/*.jsonl`` is read too.

Strict reads each row's own answer (by case id; in the kit's files by the image and prompt each record shows,
:mod:`u2eval.scoring.official_files`). For files and the kit's layout the reference also gets, per row, what the
official pipeline pairs with it by row order (``Completion.official``). A case with no answer comes back as a
``missing`` infra error, a kit failure message as a ``recorded_failure``: never as a wrong answer.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from pydantic import JsonValue

from model_adapters._base import Identified
from u2eval.benchmark.tasks import OfficialScorer as Scorer
from u2eval.benchmark.tasks import all_tasks
from u2eval.data.rows import RowIdentity
from u2eval.errors import ConfigError
from u2eval.models.protocol import AdapterOptions, ModelRequest
from u2eval.records import Completion, ModelInfo, OfficialAnswer
from u2eval.scoring.kit_files import Ref, is_kit_failure, kit_files, kit_models, read_records
from u2eval.scoring.official_files import (
    KitSource,
    RowAnswer,
    StrictAnswer,
    case_prefix,
    join_all,
    keyed_records,
    kit_key,
)

log = logging.getLogger(__name__)

ANSWER_COLUMNS = ("answer", "response", "prediction", "text")
OFFICIAL_PREFIX = "official:"


def _scorer_of_task() -> dict[str, Scorer]:
    """Which official scorer reads each task's files (the task files' ``official.scorer``)."""
    return {task.key: task.official.scorer for task in all_tasks() if task.official is not None}


def _report_tasks() -> set[str]:
    """The tasks the official report scorer reads together (one crash of it loses all of them)."""
    return {key for key, scorer in _scorer_of_task().items() if scorer == "report"}


def _answer_field(row: Mapping[str, object], where: str) -> JsonValue:
    for column in ANSWER_COLUMNS:
        if column in row:
            return row[column]  # type: ignore[return-value]
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


def _keep(answers: dict[str, tuple[str, JsonValue]], case_id: str, where: str, answer: JsonValue) -> None:
    """One answer per case: a repeat of the same answer is harmless, two different ones cannot both count."""
    earlier = answers.get(case_id)
    if earlier is not None and earlier[1] != answer:
        raise ConfigError(
            f"{where}: case {case_id} is answered twice, differently ({earlier[0]}: {earlier[1]!r}; here: "
            f"{answer!r}): keep one answer per case"
        )
    answers.setdefault(case_id, (where, answer))


def load_keyed_answers(path: Path) -> dict[str, tuple[str, JsonValue]]:
    """case_id -> (file:line, answer) from a JSONL or CSV file."""
    answers: dict[str, tuple[str, JsonValue]] = {}
    if path.suffix == ".csv":
        # utf-8-sig: spreadsheet programs save CSV with a byte-order mark before the first column name.
        with path.open(encoding="utf-8-sig", newline="") as handle:
            for number, row in enumerate(csv.DictReader(handle), start=2):
                if "case_id" not in row:
                    raise ConfigError(f"{path}: no case_id column")
                _keep(answers, row["case_id"], f"{path}:{number}", _answer_field(row, f"{path}:{number}"))
        return answers
    for number, record in _jsonl_records(path):
        if "case_id" not in record:
            raise ConfigError(f"{path}:{number}: no case_id field")
        _keep(answers, str(record["case_id"]), f"{path}:{number}", _answer_field(record, f"{path}:{number}"))
    return answers


def _older_layout_files(root: Path) -> list[tuple[Scorer, str, Path]]:
    """DIR/<task>/<dataset_id>/*.jsonl, one file per dataset: (scorer, its key, file)."""
    files: list[tuple[Scorer, str, Path]] = []
    scorers = _scorer_of_task()
    for task_dir in sorted(p for p in root.iterdir() if p.is_dir() and p.name in scorers):
        for dataset_dir in sorted(p for p in task_dir.iterdir() if p.is_dir()):
            found = sorted(dataset_dir.glob("*.jsonl"))
            if len(found) > 1:
                # The kit averages one results row per file; which file answers row i would be a guess.
                raise ConfigError(f"{dataset_dir}: {len(found)} prediction files; keep one per dataset")
            scorer = scorers[task_dir.name]
            key = kit_key(scorer, (task_dir.name, dataset_dir.name))
            if found and key is not None:
                files.append((scorer, key, found[0]))
    return files


def _tasks_read(sources: Sequence[KitSource]) -> list[str]:
    """The tasks whose rows the joins need: those with files, and all the report scorer's (RG and CG) together
    when any report file is there (one crash of the report scorer loses them all)."""
    tasks = {s.ref[0] for s in sources if s.ref is not None}
    if any(s.scorer == "report" for s in sources):
        tasks |= _report_tasks()
    return sorted(tasks)


def _digest(paths: Sequence[Path]) -> str:
    digest = hashlib.sha256()
    for file in sorted(paths):
        digest.update(file.name.encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()[:16]


class _Official:
    """The kit's files for one model, joined to the dataset's rows on first use."""

    def __init__(self, spec: str, options: AdapterOptions) -> None:
        base_text, _, model = spec.rpartition("@") if "@" in spec else (spec, "", "")
        base = Path(base_text)
        if not base.is_dir():
            raise ConfigError(f"replay/official: needs the folder the official kit wrote, not {base}")
        if any((base / name).is_dir() for name in ("cla", "seg", "measurement", "measurement_processed", "report")):
            if not model:
                models = kit_models(base)
                raise ConfigError(
                    f"replay/official:{base} holds answers of {len(models)} model(s): {', '.join(models) or 'none'}; "
                    f"choose one with replay/official:{base}@MODEL"
                )
            found, notes = kit_files(base, model)
            self.files = [(f.scorer, f.key, f.path) for f in found]
            self.notes = notes
        else:
            self.files = _older_layout_files(base)
            self.notes = []
            if not self.files:
                raise ConfigError(
                    f"{base}: no prediction files in the official kit's layout "
                    "(cla|seg|measurement|report/<key>/<model>/*.jsonl) or under <task>/<dataset_id>/*.jsonl"
                )
        self.model = model
        self.name = f"official:{base.name}" + (f"@{model}" if model else "")
        self.revision = _digest([path for _, _, path in self.files])
        self._rows = options.rows
        self._joined: dict[tuple[str, str, int], RowAnswer] | None = None

    def joined(self) -> dict[tuple[str, str, int], RowAnswer]:
        if self._joined is None:
            if self._rows is None:
                raise ConfigError(
                    "replay/official: needs the dataset's rows to join the files to (run it with u2eval run)"
                )
            sources = [
                KitSource(scorer, key, str(path), read_records(path), self.model or path.parent.name)
                for scorer, key, path in self.files
            ]
            self._joined, notes = join_all(self._rows(_tasks_read(sources)), sources)
            for note in [*self.notes, *notes]:
                log.warning("%s", note)
        return self._joined


def _strict_completion(base: Completion, strict: StrictAnswer) -> Completion:
    """What strict reads from a record: the answer, or why there is none (never a wrong answer)."""
    answer = strict.answer
    if strict.where is None:
        return base.model_copy(update={"error": "missing", "error_message": strict.missing})
    if strict.failed:
        message = f"{strict.where}: a failure record of the kit (no answer)"
        return base.model_copy(update={"error": "recorded_failure", "error_message": message})
    if answer is None:
        return base.model_copy(update={"error": "empty", "error_message": f"null answer at {strict.where}"})
    if isinstance(answer, str):
        if is_kit_failure(answer):
            message = f"{strict.where}: the kit saved a failed call instead of an answer: {answer[:120]!r}"
            return base.model_copy(update={"error": "recorded_failure", "error_message": message})
        return base.model_copy(update={"text": answer})
    # A JSON number is the answer it is ("5", "4.5"); anything else is its JSON text.
    return base.model_copy(update={"text": json.dumps(answer, ensure_ascii=False)})


_BATCH = 64  # answers are looked up, not computed: any batch is cheap


class ReplayAdapter(Identified):
    def __init__(self, spec: str, options: AdapterOptions | None = None) -> None:
        options = options or AdapterOptions()
        self._official: _Official | None = None
        self._keyed: dict[str, tuple[str, JsonValue]] = {}
        self._rows = options.rows
        self._positional: dict[tuple[str, str, int], OfficialAnswer] | None = None
        self._prefixes: dict[str, str] | None = None
        if spec.startswith(OFFICIAL_PREFIX):
            self._official = _Official(spec.removeprefix(OFFICIAL_PREFIX), options)
            info = ModelInfo(adapter="replay", model=self._official.name, revision=self._official.revision)
            super().__init__(info, _BATCH)
            return
        path = Path(spec)
        if not path.exists() and not path.is_absolute() and Path("/" + spec).exists():
            path = Path("/" + spec)  # replay//abs/path written as replay/abs/path
        if not path.exists():
            raise ConfigError(f"replay source not found: {path}")
        if path.is_dir():
            if options.run_answers is None:
                raise ConfigError(f"replaying the run folder {path} needs the run layer to read it")
            self._keyed = dict(options.run_answers(path))
            self._rows = None  # a run's own answers: no file order to reproduce
            revision = _digest([p for p in path.rglob("*") if p.is_file() and p.suffix in {".jsonl", ".csv"}])
        else:
            self._keyed = load_keyed_answers(path)
            revision = _digest([path])
        super().__init__(ModelInfo(adapter="replay", model=path.name, revision=revision), _BATCH)

    def _by_prefix(self) -> dict[str, str]:
        """Case id without its image hash -> the source's case id (built once)."""
        if self._prefixes is None:
            self._prefixes = {cid.rsplit("/", 1)[0]: cid for cid in self._keyed}
        return self._prefixes

    def _keyed_positions(self) -> dict[tuple[str, str, int], OfficialAnswer]:
        """Keyed answers laid out as the kit would have written them, paired with rows as the official does."""
        if self._positional is None:
            assert self._rows is not None
            by_prefix: dict[str, tuple[str, JsonValue]] = {}
            for case_id, found in self._keyed.items():
                by_prefix[case_id.rsplit("/", 1)[0]] = found
            tasks = sorted({case_id.split("/", 1)[0] for case_id in self._keyed} | _report_tasks())
            datasets: dict[Ref, list[RowIdentity]] = defaultdict(list)
            for row in self._rows(tasks):
                datasets[(row.task, row.dataset_id)].append(row)
            rows_known = {case_prefix(r.task, r.source_file, r.row_index) for rs in datasets.values() for r in rs}
            stray = sorted(cid for cid in self._keyed if cid.rsplit("/", 1)[0] not in rows_known)
            if stray:
                log.warning(
                    "%d case id(s) in %s match no row of the dataset (another dataset or version?), e.g. %s",
                    len(stray),
                    self._info.model,
                    ", ".join(stray[:5]),
                )
            sources = []
            scorers = _scorer_of_task()
            for ref, rows in datasets.items():
                scorer = scorers.get(ref[0])
                if scorer is None:
                    continue  # a task the official kit never had: no file of its to lay out
                key, records = kit_key(scorer, ref), keyed_records(rows, by_prefix)
                if key is not None and records:  # a dataset without answers would have had no file
                    sources.append(KitSource(scorer, key, str(self._info.model), records, ""))
            joined, notes = join_all([r for rows in datasets.values() for r in rows], sources)
            for note in notes:
                if "(reference)" in note or "scorer crashes" in note:
                    log.warning("%s", note)
            self._positional = {key: answer.official for key, answer in joined.items()}
        return self._positional

    def _complete(self, request: ModelRequest) -> Completion:
        case = request.case
        base = Completion(case_id=case.case_id, key=request.key)
        row = (case.task, case.source_file, case.row_index)
        if self._official is not None:
            joined = self._official.joined().get(row)
            if joined is None:
                return base.model_copy(
                    update={"error": "missing", "error_message": "no prediction file for its dataset"}
                )
            return _strict_completion(base, joined.strict).model_copy(update={"official": joined.official})
        found = self._keyed.get(case.case_id)
        if found is None:
            other = self._by_prefix().get(case.case_id.rsplit("/", 1)[0])
            why = "no answer in the replay source"
            if other is not None:
                why = f"the replay source answers this row for another image ({other}): the data differ"
            strict = StrictAnswer(missing=why)
        else:
            strict = StrictAnswer(found[1], found[0])
        completion = _strict_completion(base, strict)
        if self._rows is not None:
            completion = completion.model_copy(update={"official": self._keyed_positions().get(row)})
        return completion

    async def generate(self, requests: Sequence[ModelRequest]) -> list[Completion]:
        return [self._complete(request) for request in requests]

    async def aclose(self) -> None:
        return None


def create(model: str, options: AdapterOptions) -> ReplayAdapter:
    if not model:
        raise ConfigError("replay needs a source: replay/PATH (run folder, .jsonl, .csv) or replay/official:BASE@MODEL")
    return ReplayAdapter(model, options)
