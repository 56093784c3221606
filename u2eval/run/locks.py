"""Guards of a run folder: one run at a time, and a full disk as one clear error.

- ``exclusive``: an advisory lock (``flock``) on ``.lock`` in the folder. The kernel releases it when the
  process ends, however it ends (SIGKILL included), so a killed run never blocks its own resume; a second
  ``u2eval run`` (or a ``u2eval score``) on a folder in use stops with one line instead of asking for the
  same cases twice or scoring half a run. ``reading``: the shared side, for ``u2eval merge``'s shards.
- ``disk_full_is_clear``: a full disk (or a file-size or quota limit) while the run writes becomes one
  ConfigError line saying what is kept and what to do; the store has already cut back any half line.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from u2eval.errors import ConfigError
from u2eval.run.store import RESPONSES_FILE

LOCK_FILE = ".lock"
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
