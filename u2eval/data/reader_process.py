"""``iter_cases`` in a child process, so that reading the dataset does not share the run's CPU.

A run is one Python process: what its event loop and the API SDK spend per request (~2 ms) and what reading
a case costs (splitting a ~300 KB row, base64-decoding, hashing and checking the image: ~1 ms) add up under
one GIL. Reading in a child process lets the two overlap on two cores; the parent only unpickles finished
cases (~0.25 ms each). Order, limits and error reports are exactly those of ``iter_cases``: the child runs
it unchanged and sends its cases and errors, in the order they happen, as pickles on its stdout.

The child is ``python -m u2eval.data.reader_process``, not a multiprocessing process: those re-import the
parent's ``__main__`` (a user's script, a notebook), which is not ours to run twice.
"""

from __future__ import annotations

import os
import pickle
import queue
import subprocess
import sys
import threading
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import fields
from pathlib import Path
from typing import IO, Any

from u2eval.benchmark.tasks import TaskSpec
from u2eval.data.image_cells import strict_b64decode
from u2eval.data.reader import iter_cases
from u2eval.data.rows import OnError
from u2eval.data.sources import DataSource
from u2eval.errors import DataError, U2EvalError
from u2eval.records import Case, freeze_columns

BATCH = 8  # cases per message: fewer wake-ups, a few MB each
READ_AHEAD = 4  # messages the parent holds unread, so memory stays flat while the child keeps working

_CASE_FIELDS = tuple(f.name for f in fields(Case))
_COLUMNS_AT = _CASE_FIELDS.index("columns")
_IMAGE_AT = _CASE_FIELDS.index("image")
_IMAGE_B64_AT = _CASE_FIELDS.index("image_b64")

# ("cases", [field tuples]) | ("error", (where, reason)) | ("done", None) | ("crash", traceback text)
Message = tuple[str, Any]


def _pack(case: Case) -> tuple[Any, ...]:
    values = [getattr(case, name) for name in _CASE_FIELDS]
    values[_COLUMNS_AT] = dict(case.columns)  # a MappingProxyType does not pickle
    if case.image_b64:
        # The image crosses once, as the row's base64: decoding it again costs the parent ~0.02 ms, receiving
        # its bytes as well cost ~0.1 ms a case (0.35 vs 0.24 ms to receive a case of the full set).
        values[_IMAGE_AT] = None
    return tuple(values)


def _unpack(values: tuple[Any, ...]) -> Case:
    items = list(values)
    items[_COLUMNS_AT] = freeze_columns(items[_COLUMNS_AT])
    if items[_IMAGE_AT] is None:
        items[_IMAGE_AT] = strict_b64decode(items[_IMAGE_B64_AT])
    return Case(*items)


def serve(request: IO[bytes], out: IO[bytes]) -> None:
    """The child's side: read (source, tasks, limit) from ``request``, write messages to ``out``."""
    source, tasks, limit = pickle.load(request)
    batch: list[tuple[Any, ...]] = []

    def send(message: Message) -> None:
        pickle.dump(message, out, protocol=pickle.HIGHEST_PROTOCOL)
        out.flush()

    def flush_batch() -> None:
        if batch:
            send(("cases", batch.copy()))
            batch.clear()

    def on_error(error: DataError) -> None:
        flush_batch()  # keep cases and errors in the order iter_cases produced them
        send(("error", (error.where, error.reason)))

    try:
        for case in iter_cases(source, tasks, on_error=on_error, limit=limit):
            batch.append(_pack(case))
            if len(batch) >= BATCH:
                flush_batch()
        flush_batch()
        send(("done", None))
    except BrokenPipeError:
        return  # the parent stopped reading: nothing left to do
    except Exception:  # whatever the reader raises must reach the parent, not die with the child
        send(("crash", traceback.format_exc()))


def _pump(stream: IO[bytes], inbox: queue.Queue[Message | BaseException]) -> None:
    """Parent thread: unpickle the child's messages into a bounded queue (reading the pipe frees the GIL)."""
    try:
        while True:
            message: Message = pickle.load(stream)
            inbox.put(message)
            if message[0] in ("done", "crash"):
                return
    except (EOFError, OSError, pickle.UnpicklingError) as exc:
        inbox.put(exc)


def _widen_pipe(fd: int) -> None:
    """Let the pipe hold a few cases (1 MB, Linux's default cap for a user) instead of 64 KB."""
    try:
        import fcntl

        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, 1 << 20)
    except (ImportError, AttributeError, OSError):
        return  # not Linux, or a lower cap: the default pipe works, only with more wake-ups


def import_root() -> Path:
    """The folder that holds this u2eval package (what the child puts first on its path)."""
    return Path(__file__).resolve().parents[2]


def iter_cases_in_child(
    source: DataSource, tasks: Sequence[TaskSpec], *, on_error: OnError, limit: int | None = None
) -> Iterator[Case]:
    """``iter_cases``, read by a child process. Closing the iterator early stops the child."""
    package_root = str(import_root())  # the child imports this very u2eval
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])))
    child = subprocess.Popen(
        [sys.executable, "-m", "u2eval.data.reader_process"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
    )
    assert child.stdin is not None and child.stdout is not None
    _widen_pipe(child.stdout.fileno())
    inbox: queue.Queue[Message | BaseException] = queue.Queue(maxsize=READ_AHEAD)
    pump = threading.Thread(target=_pump, args=(child.stdout, inbox), name="u2eval-reader-pump", daemon=True)
    try:
        pickle.dump((source, tuple(tasks), limit), child.stdin, protocol=pickle.HIGHEST_PROTOCOL)
        child.stdin.close()
        pump.start()
        while True:
            message = inbox.get()
            if isinstance(message, BaseException):
                code = child.wait()
                raise U2EvalError(f"the dataset reader process stopped early (exit code {code}): {message!r}")
            kind, payload = message
            if kind == "cases":
                for values in payload:
                    yield _unpack(values)
            elif kind == "error":
                on_error(DataError(*payload))
            elif kind == "done":
                return
            else:
                raise U2EvalError(f"the dataset reader process failed:\n{payload}")
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
        while pump.is_alive():  # unblock the pump (it may wait on a full queue) so it sees the pipe close
            try:
                inbox.get(timeout=0.05)
            except queue.Empty:
                continue
        child.stdout.close()


def _main() -> None:
    # The pickles own file descriptor 1; anything else printed (a library's warning) goes to stderr.
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    serve(sys.stdin.buffer, out)
    out.close()


if __name__ == "__main__":
    _main()
