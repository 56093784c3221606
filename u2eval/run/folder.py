"""A run folder, and the one typed owner of what it holds: :class:`RunFolder`.

Every read and write of a run folder's manifest, case list, stored answers, judgements and summary goes
through it, so each file has one format in one place. A run folder holds:

    identity.json      the run's identity (u2eval.run.identity): another run is refused
    manifest.json      provenance (what produced the numbers), timings, the grounded settings
    cases.jsonl        every case of the run without its image, with its request key
    prompts.jsonl      each text sent, once (u2eval.run.sent_prompts)
    responses.jsonl    the append-only response store (u2eval.run.store)
    judgements.jsonl   one Judgement per case
    summary.json/.md   the scores; a pure function of cases.jsonl + responses.jsonl
    grounded.json      the answers' regions scored, when the run asks for it (grounded_cases.jsonl per case)
    batches.jsonl      the provider batches of `u2eval run --batch` (u2eval.run.batch): each submission's
                       label and request keys before it is made, its batch id, its collection; append-only
    judges/            what judge models read in the answers (``u2eval judge``), one folder per judge:
                       identity.json, responses.jsonl (its crash-safe store) and readings.jsonl; active.json
                       names the judge behind the ``judged`` mode
    resume.json        what cases.jsonl was made from (u2eval.run.resume): a finished run re-run with the same
                       inputs is re-scored without reading the dataset
    .lock              held by the run (or the re-scoring) in progress: a second one is refused
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import JsonValue, ValidationError

from u2eval.errors import ConfigError
from u2eval.grounded.boxes import get_convention
from u2eval.grounded.scorer import GROUNDED_CASES_FILE, GROUNDED_FILE, GroundedOptions
from u2eval.grounded.truth import dataset_root
from u2eval.records import CaseMeta, Completion, Judgement
from u2eval.run.records import BatchEvent, Manifest, RunCase
from u2eval.run.store import RESPONSES_FILE, ResponseStore
from u2eval.scoring.aggregate import Summary
from u2eval.scoring.judge_records import JudgeIdentity, JudgeReading

log = logging.getLogger(__name__)

MANIFEST_FILE = "manifest.json"
CASES_FILE = "cases.jsonl"
JUDGEMENTS_FILE = "judgements.jsonl"
SUMMARY_FILE = "summary.json"
JUDGES_DIR = "judges"
ACTIVE_JUDGE_FILE = "active.json"
JUDGE_IDENTITY_FILE = "identity.json"
READINGS_FILE = "readings.jsonl"
BATCHES_FILE = "batches.jsonl"


def write_json(path: Path, payload: object) -> None:
    """Deterministic JSON (sorted keys, fixed indent), written atomically."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


@dataclass(frozen=True)
class RunFolder:
    """One run folder's files, read and written as typed records."""

    path: Path

    # ------------------------------------------------------------------------------------------ manifest

    def manifest(self) -> Manifest | None:
        """The manifest; None for a run that has none yet, or one that cannot be read (said, naming the file:
        the next run rewrites it, and scoring goes on without it)."""
        path = self.path / MANIFEST_FILE
        try:
            return Manifest.model_validate_json(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValidationError) as exc:
            log.warning("%s cannot be read (%s); going on without it", path, _short(exc))
            return None

    def require_manifest(self) -> Manifest:
        """The manifest of a finished run, or a ConfigError naming the file."""
        path = self.path / MANIFEST_FILE
        if not path.is_file():
            raise ConfigError(
                f"{self.path} has no {MANIFEST_FILE} (an unfinished run?): resume it with u2eval run first"
            )
        try:
            return Manifest.model_validate_json(path.read_text(encoding="utf-8"))
        except (OSError, ValidationError) as exc:
            raise ConfigError(f"{path} cannot be read: {_short(exc)}") from exc

    def write_manifest(self, manifest: Manifest) -> None:
        write_json(self.path / MANIFEST_FILE, manifest.model_dump(mode="json"))

    def record_grounded(self, options: GroundedOptions) -> bool:
        """Record that the folder is scored with its regions, and how (``u2eval score --grounded``), so a plain
        re-score, a resumed run and the leaderboard redo the same grounded scoring. False when the folder has
        no manifest to record it in."""
        manifest = self.manifest()
        if manifest is None:
            return False
        spec = options.convention.spec if options.convention is not None else None
        if manifest.grounded is not options.enabled or manifest.box_convention != spec:
            self.write_manifest(manifest.model_copy(update={"grounded": options.enabled, "box_convention": spec}))
        return True

    def record_quirks(self, switches: Mapping[str, bool]) -> bool:
        """Record the reference quirks switched by hand (``u2eval score --quirk``), so every re-scoring redoes
        them. False when the folder has no manifest to record them in."""
        manifest = self.manifest()
        if manifest is None:
            return False
        if manifest.quirks != dict(switches):
            self.write_manifest(manifest.model_copy(update={"quirks": dict(switches)}))
        return True

    def grounded_options(self, convention: str | None = None) -> GroundedOptions:
        """The grounded scoring the folder asks for (as its manifest last recorded it): on or off, its box
        convention (or ``convention`` instead), and where its dataset is now."""
        manifest = self.manifest()
        spec = convention or (manifest.box_convention if manifest is not None else None)
        return GroundedOptions(
            enabled=manifest is not None and manifest.grounded,
            convention=get_convention(spec) if spec else None,
            source_root=dataset_root(manifest.dataset) if manifest is not None else None,
        )

    # ------------------------------------------------------------------------------------ cases, answers

    def cases(self) -> list[RunCase]:
        """The run's case list (cases.jsonl); a ConfigError naming the line for a record that cannot be read."""
        return list(self.iter_cases())

    def iter_cases(self) -> Iterator[RunCase]:
        """The run's case list read one line at a time (for a pass that keeps none of them)."""
        path = self.path / CASES_FILE
        if not path.is_file() and (self.path / (CASES_FILE + ".part")).is_file():
            raise ConfigError(
                f"{self.path} holds an interrupted run (its case list was never finished): run the same `u2eval "
                "run` command again to resume it, then score it"
            )
        if not path.is_file():
            raise ConfigError(f"{self.path} is not a u2eval run folder (no {CASES_FILE})")
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                try:
                    yield RunCase.model_validate_json(line)
                except ValidationError as exc:
                    raise ConfigError(f"{path}:{number}: unreadable case record ({exc.error_count()} errors)") from exc

    def write_cases(self, cases: Sequence[RunCase]) -> None:
        """A whole case list, written then renamed into place (``u2eval merge``; a run streams its own)."""
        tmp = self.path / (CASES_FILE + ".tmp")
        tmp.write_text("".join(case.model_dump_json() + "\n" for case in cases), encoding="utf-8")
        tmp.replace(self.path / CASES_FILE)

    def answers(self, store: ResponseStore | None = None) -> list[tuple[CaseMeta, Completion]]:
        """Every case with its stored answer; a case with no stored answer gets a 'missing' infra error.
        ``store``: the store a run holds open (else the folder's own is read)."""
        return [(run_case.case, completion) for run_case, completion in self.iter_answers(store)]

    def iter_answers(self, store: ResponseStore | None = None) -> Iterator[tuple[RunCase, Completion]]:
        """Each case of the list with its stored answer, one at a time (as ``answers``)."""
        store = store if store is not None else ResponseStore(self.path, repair=False)
        for run_case in self.iter_cases():
            meta = run_case.case
            completion = store.get(run_case.key)
            if completion is None:
                completion = Completion(
                    case_id=meta.case_id, key=run_case.key, error="missing", error_message="no answer stored"
                )
            elif completion.case_id != meta.case_id:
                # Identical prompts share one stored answer; it is judged once per case.
                completion = completion.model_copy(update={"case_id": meta.case_id})
            yield run_case, completion

    def replay_answers(self) -> dict[str, tuple[str, JsonValue]]:
        """case_id -> (where, answer text), for replaying the run (infra errors are not answers)."""
        if not (self.path / RESPONSES_FILE).is_file():
            raise ConfigError(f"{self.path} is not a u2eval run folder (no {RESPONSES_FILE})")
        return {
            meta.case_id: (f"{self.path}:{meta.case_id}", completion.text)
            for meta, completion in self.answers()
            if not completion.is_infra_error  # a case with nothing stored is 'missing', an infra error too
        }

    # -------------------------------------------------------------------------------------------- scores

    def write_judgements(self, judgements: Sequence[Judgement]) -> None:
        ordered = sorted(judgements, key=lambda j: j.case_id)
        with (self.path / JUDGEMENTS_FILE).open("w", encoding="utf-8") as out:
            out.writelines(j.model_dump_json() + "\n" for j in ordered)

    def write_summary(self, summary: Summary) -> None:
        write_json(self.path / SUMMARY_FILE, summary.model_dump(mode="json"))

    def read_summary(self) -> Summary | None:
        """The stored summary, or None when there is none that can be read (score the folder again)."""
        try:
            return Summary.model_validate_json((self.path / SUMMARY_FILE).read_text(encoding="utf-8"))
        except (OSError, ValidationError):
            return None

    # ------------------------------------------------------------------------------------------- batches

    def batch_events(self) -> list[BatchEvent]:
        """The lines of ``batches.jsonl`` in order (none: no batch was ever submitted from this folder). A line
        cut short by a kill is skipped: what it announced never went on (it is written before the step)."""
        path = self.path / BATCHES_FILE
        if not path.is_file():
            return []
        events = []
        with path.open(encoding="utf-8", errors="replace") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    events.append(BatchEvent.model_validate_json(line))
                except ValidationError as exc:
                    log.warning("%s:%d cannot be read (%s); skipped (cut short by a kill?)", path, number, _short(exc))
        return events

    def record_batch(self, event: BatchEvent) -> None:
        """Append one line to ``batches.jsonl`` and push it to disk before returning: what returns is durable.
        A line cut short by a kill is closed first, so this one starts a line of its own."""
        path = self.path / BATCHES_FILE
        data = (event.model_dump_json(exclude_defaults=True) + "\n").encode("utf-8")
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            end = os.lseek(fd, 0, os.SEEK_END)
            if end and os.pread(fd, 1, end - 1) != b"\n":
                data = b"\n" + data
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)

    # -------------------------------------------------------------------------------------------- judges

    def judge_path(self, name: str) -> Path:
        """A judge's folder (its store, identity and readings)."""
        return self.path / JUDGES_DIR / name

    def judges(self) -> list[JudgeIdentity]:
        """Every judge that has read this run, by name."""
        root = self.path / JUDGES_DIR
        found = sorted(root.glob(f"*/{JUDGE_IDENTITY_FILE}")) if root.is_dir() else []
        return [self._judge_identity(path) for path in found]

    def judge(self, name: str) -> JudgeIdentity:
        """One judge of this run by name; a ConfigError listing the others when it has not read the run."""
        path = self.judge_path(name) / JUDGE_IDENTITY_FILE
        if not path.is_file():
            known = ", ".join(j.name for j in self.judges()) or "none"
            raise ConfigError(f"{self.path}: no judge {name!r} has read this run (its judges: {known})")
        return self._judge_identity(path)

    def _judge_identity(self, path: Path) -> JudgeIdentity:
        try:
            return JudgeIdentity.model_validate_json(path.read_text(encoding="utf-8"))
        except (OSError, ValidationError) as exc:
            raise ConfigError(f"{path} cannot be read: {_short(exc)}") from exc

    def write_judge_identity(self, identity: JudgeIdentity) -> Path:
        folder = self.judge_path(identity.name)
        folder.mkdir(parents=True, exist_ok=True)
        write_json(folder / JUDGE_IDENTITY_FILE, identity.model_dump(mode="json"))
        return folder

    def active_judge(self) -> JudgeIdentity | None:
        """The judge behind the ``judged`` mode (the last one run, or the one ``u2eval score --judge`` chose)."""
        path = self.path / JUDGES_DIR / ACTIVE_JUDGE_FILE
        if not path.is_file():
            return None
        try:
            name = json.loads(path.read_text(encoding="utf-8"))["judge"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(
                f"{path} cannot be read ({exc}): choose the judge again with u2eval score --judge"
            ) from exc
        if not (self.judge_path(str(name)) / JUDGE_IDENTITY_FILE).is_file():
            log.warning("%s names judge %s, whose folder is gone: no judged mode (u2eval score --judge)", path, name)
            return None
        return self.judge(str(name))

    def set_active_judge(self, name: str | None) -> None:
        """Make ``name`` the judge behind the ``judged`` mode (None: no judged mode)."""
        path = self.path / JUDGES_DIR / ACTIVE_JUDGE_FILE
        if name is None:
            path.unlink(missing_ok=True)
            return
        self.judge(name)
        write_json(path, {"judge": name})

    def judge_readings(self, name: str) -> dict[str, JudgeReading]:
        """case id -> what the judge read in its answer; a ConfigError naming the line for one that cannot be read."""
        path = self.judge_path(name) / READINGS_FILE
        readings: dict[str, JudgeReading] = {}
        if not path.is_file():
            return readings
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                try:
                    reading = JudgeReading.model_validate_json(line)
                except ValidationError as exc:
                    raise ConfigError(f"{path}:{number}: unreadable judge reading ({_short(exc)})") from exc
                readings[reading.case_id] = reading
        return readings

    def write_judge_readings(self, name: str, readings: Sequence[JudgeReading]) -> None:
        """All of a judge's readings, in case-id order, written then renamed into place."""
        path = self.judge_path(name) / READINGS_FILE
        tmp = path.with_suffix(".jsonl.tmp")
        ordered = sorted(readings, key=lambda r: r.case_id)
        with tmp.open("w", encoding="utf-8") as out:
            out.writelines(r.model_dump_json() + "\n" for r in ordered)
            out.flush()
            os.fsync(out.fileno())  # on disk before it replaces the old readings, as the store's answers are
        os.replace(tmp, path)

    def forget_grounded(self) -> None:
        """Remove grounded figures: made under settings no longer in force, they would mislead."""
        for name in (GROUNDED_FILE, GROUNDED_CASES_FILE):
            (self.path / name).unlink(missing_ok=True)


def _short(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "the record"
        return f"{where}: {first['msg']}"
    return str(exc)
