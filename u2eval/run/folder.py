"""Guards of a run folder: one run at a time, a full disk as one clear error, and the stamp that lets a
finished run resume without reading the dataset again.

- ``exclusive``: an advisory lock (``flock``) on ``.lock`` in the folder. The kernel releases it when the
  process ends, however it ends (SIGKILL included), so a killed run never blocks its own resume; a second
  ``u2eval run`` (or a ``u2eval score``) on a folder in use stops with one line instead of asking for the
  same cases twice or scoring half a run. ``reading``: the shared side, for ``u2eval merge``'s shards.
- ``disk_full_is_clear``: a full disk (or a file-size or quota limit) while the run writes becomes one
  ConfigError line saying what is kept and what to do; the store has already cut back any half line.
- The resume stamp (``resume.json``): what the case list (cases.jsonl) was made from: the run's settings
  (model identity, generation settings, prompt variant and template hashes, task definitions, selection),
  the sha256 of u2eval's own code, and the size and modification time of every dataset file. Re-running a
  finished run whose stamp still matches and whose store answers every case does not read the dataset
  (the stat of each file stands in for its ~20 s of reading and hashing on the full set). The stamp also
  records the size and modification time of the store and of the scores made from it (and the scoring
  settings): when none of them changed either, the scores are up to date and are not made again.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from functools import lru_cache
from pathlib import Path

from u2eval.errors import ConfigError
from u2eval.run.store import RESPONSES_FILE, ResponseStore

LOCK_FILE = ".lock"
STAMP_FILE = "resume.json"
_DISK_FULL = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT})


@contextlib.contextmanager
def exclusive(folder: Path) -> Iterator[None]:
    """Hold ``folder`` for this process; ConfigError when another process holds or reads it (no lock on
    Windows). For what writes a run folder: ``u2eval run``, ``u2eval score``, ``u2eval merge``'s output."""
    if sys.platform == "win32":
        yield
        return
    import fcntl

    try:
        fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:  # a read-only or missing folder: nothing could be written there anyway
        raise ConfigError(f"cannot use {folder} as a run folder: {exc.strerror or exc}") from exc
    try:
        _lock_or_refuse(fd, fcntl.LOCK_EX, folder)
        with contextlib.suppress(OSError):  # the pid is for the message above only; a full disk may refuse it
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield
        finally:
            with contextlib.suppress(OSError):  # a pid left behind would name this process to the next refusal
                os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # releases the lock


@contextlib.contextmanager
def reading(folder: Path) -> Iterator[None]:
    """Read ``folder`` while no process writes it: a shared lock, so readers do not exclude each other but a
    run in progress (which holds it exclusively) is refused with one line, and cannot start meanwhile.
    Writes nothing: a folder that was never locked (no ``.lock``) or a read-only one is read as it is."""
    if sys.platform == "win32":
        yield
        return
    import fcntl

    try:
        fd = os.open(folder / LOCK_FILE, os.O_RDONLY)
    except OSError:
        yield  # no run ever held it
        return
    try:
        _lock_or_refuse(fd, fcntl.LOCK_SH, folder)
        yield
    finally:
        os.close(fd)


def _lock_or_refuse(fd: int, kind: int, folder: Path) -> None:
    import fcntl

    try:
        fcntl.flock(fd, kind | fcntl.LOCK_NB)
    except BlockingIOError:
        raise ConfigError(
            f"{folder} is in use by another u2eval process ({_holder(fd)}): wait for it to end, or choose another --out"
        ) from None


def _holder(fd: int) -> str:
    """Who holds the lock, as far as the file tells: the pid a writer left, when that process is alive; else
    a reader (``reading`` writes no pid, so the file may still name an earlier, finished run)."""
    text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    if text.isdigit() and int(text) > 0 and _alive(int(text)):
        return f"pid {text}"
    return "a reader, such as u2eval merge"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, another user's
    return True


def _stored_lines(folder: Path) -> int:
    try:
        with (folder / RESPONSES_FILE).open("rb") as handle:
            return sum(1 for line in handle if line.endswith(b"\n"))
    except OSError:
        return 0


@contextlib.contextmanager
def disk_full_is_clear(folder: Path) -> Iterator[None]:
    """Turn a full disk (ENOSPC, EFBIG, EDQUOT) met while writing the run into one ConfigError line."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in _DISK_FULL:
            raise
        where = exc.filename or folder
        stored = _stored_lines(folder)
        raise ConfigError(
            f"cannot write {where}: {exc.strerror} (errno {exc.errno}). The {stored} answer(s) already in "
            f"{folder / RESPONSES_FILE} are kept: make room, then run the same command again to resume"
        ) from None


class LineFile:
    """A file written line by line with plain ``os.write`` calls: a write that fails (a full disk) raises
    there, and closing never writes, so the error is not raised again when the file is closed, or printed
    as an ignored exception when a generator holding it is collected."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)

    def write(self, text: str) -> None:
        view = memoryview(text.encode("utf-8"))
        try:
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError as exc:
            raise OSError(exc.errno, exc.strerror, str(self.path)) from exc

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> LineFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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
