"""The resume stamp (``resume.json``): what a run folder's case list (cases.jsonl) was made from.

The run's settings (model identity, generation settings, prompt variant and template hashes, task definitions,
selection), the sha256 of u2eval's own code, and the size and modification time of every dataset file.
Re-running a finished run whose stamp still matches and whose store answers every case does not read the
dataset (the stat of each file stands in for its ~20 s of reading and hashing on the full set). The stamp also
records the size and modification time of the store and of the scores made from it (and the scoring
settings): when none of them changed either, the scores are up to date and are not made again.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path

from u2eval.run.store import RESPONSES_FILE, ResponseStore

STAMP_FILE = "resume.json"

# ------------------------------------------------------------------------------------------- resume stamp


@lru_cache(maxsize=1)
def code_sha256() -> str:
    """sha256 of u2eval's own modules: code that reads, renders or keys cases may have changed."""
    digest = hashlib.sha256()
    for name, path in code_files():
        digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def code_files() -> list[tuple[str, Path]]:
    """Every module of the u2eval package, by its path inside it ('data/reader.py')."""
    package = Path(__file__).resolve().parents[1]
    return [(path.relative_to(package).as_posix(), path) for path in sorted(package.rglob("*.py"))]


def dataset_files(root: Path, folders: Sequence[str]) -> dict[str, list[int] | None]:
    """Task folder / file name -> [size, mtime_ns] for every TSV the reader may read; None: no such folder."""
    files: dict[str, list[int] | None] = {}
    for name in folders:
        folder = root / name
        if not folder.is_dir():
            files[name] = None
            continue
        for path in sorted(folder.glob("*.tsv")):
            info = path.stat()
            files[f"{name}/{path.name}"] = [info.st_size, info.st_mtime_ns]
    return files


def _stat(path: Path) -> list[int] | None:
    try:
        info = path.stat()
    except OSError:
        return None
    return [info.st_size, info.st_mtime_ns]


# What the scores are made from (besides the code and the task files, in the stamp) and what they are.
_SCORED_FILES = ("cases.jsonl", RESPONSES_FILE, "judgements.jsonl", "summary.json", "summary.md", "grounded.json")


def scoring_state(folder: Path, settings: Mapping[str, object]) -> dict[str, object]:
    """The scoring settings, and the size and modification time of the files scores are made from and of
    the scores themselves (None: no such file)."""
    return {"settings": dict(settings), "files": {name: _stat(folder / name) for name in _SCORED_FILES}}


def make_stamp(settings: Mapping[str, object], root: Path, folders: Sequence[str]) -> dict[str, object]:
    blob = json.dumps(settings, sort_keys=True, default=str).encode()
    return {
        "settings_sha256": hashlib.sha256(blob).hexdigest(),
        "code_sha256": code_sha256(),
        "files": dataset_files(root, folders),
    }


def clear_stamp(folder: Path) -> None:
    """Forget the stamp before the case list is rewritten (a run killed half-way leaves none)."""
    (folder / STAMP_FILE).unlink(missing_ok=True)


def write_stamp(folder: Path, stamp: Mapping[str, object], scored: Mapping[str, object]) -> None:
    """Written last, once cases.jsonl, the scores and manifest.json are complete; atomically. ``scored``:
    ``scoring_state`` once the scores are written."""
    tmp = folder / (STAMP_FILE + ".tmp")
    record = {"inputs": stamp, "scored": scored}
    tmp.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, folder / STAMP_FILE)


def _recorded(folder: Path) -> dict[str, object]:
    try:
        record = json.loads((folder / STAMP_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def scores_up_to_date(folder: Path, settings: Mapping[str, object]) -> bool:
    """Whether the folder's scores were made with these settings from its store as it is now, and are as
    they were written. Only a finished run with an unchanged stamp can have them (any other run clears it)."""
    current: object = json.loads(json.dumps(scoring_state(folder, settings)))
    return _recorded(folder).get("scored") == current


def finished_cases(
    folder: Path, cases_file: str, store: ResponseStore, stamp: Mapping[str, object]
) -> list[str] | None:
    """The case ids of the run's case list when its stamp equals ``stamp`` and the store answers every case
    (nothing to ask); None otherwise: the run reads the dataset as usual."""
    if _recorded(folder).get("inputs") != json.loads(json.dumps(stamp)):
        return None
    case_ids = []
    try:
        with (folder / cases_file).open(encoding="utf-8") as handle:
            for line in handle:
                record = json.loads(line)
                if not store.answered(record["key"]):
                    return None
                case_ids.append(record["case"]["case_id"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return case_ids
