"""The crash-safe response store: one append-only JSONL file per run folder.

Each answer is appended (and flushed to disk) as soon as it arrives, keyed by a hash of the model identity,
the generation settings and everything the model saw. A resumed run skips every key already answered, so a
killed run loses at most the requests that were in flight. A later line for the same key wins, which is how
an infra error is replaced by the answer of a retry. A line cut short by a crash is reported and skipped.
An append that fails (a full disk) is undone to the last whole line before its error is raised, so the file
never holds half a line that a later append would run into, and what was stored before stays as it was.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path

from pydantic import ValidationError

from u2eval.records import Completion, GenerationConfig, ModelInfo, Prompt

log = logging.getLogger(__name__)

RESPONSES_FILE = "responses.jsonl"


def request_key(model: ModelInfo, generation: GenerationConfig, prompt: Prompt) -> str:
    """The store key: what would have to change for the model to give a different answer."""
    identity = json.dumps(
        {"model": model.model_dump(mode="json"), "generation": generation.model_dump(mode="json")},
        sort_keys=True,
    )
    return hashlib.sha256(f"{identity}\0{prompt.fingerprint()}".encode()).hexdigest()[:32]


class ResponseStore:
    """Append-only store of Completions, loaded into a key -> Completion map when opened."""

    def __init__(self, folder: Path, repair: bool = True) -> None:
        """``repair`` False: only read (another run's store): a line cut short is skipped, the file untouched."""
        self.path = folder / RESPONSES_FILE
        self._repair = repair
        self.skipped_lines: list[int] = []
        self._latest: dict[str, Completion] = {}
        self._load()
        self._fd: int | None = None

    def _load(self) -> None:
        if not self.path.exists():
            return
        # errors="replace": a kill can cut a line inside a multi-byte character; that line alone is skipped.
        with self.path.open("r", encoding="utf-8", errors="replace") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    completion = Completion.model_validate_json(line)
                except ValidationError:
                    # A line cut by a crash mid-write (or damaged by hand): its request is simply asked again.
                    self.skipped_lines.append(number)
                    continue
                self._latest[completion.key] = completion
        if self.skipped_lines:
            lines = ", ".join(map(str, self.skipped_lines))
            log.warning(
                "%s: skipped unreadable line(s) %s (cut short by a crash?); their requests are asked again",
                self.path,
                lines,
            )
            if self._repair:
                self._repair_tail()

    def _repair_tail(self) -> None:
        """Make sure the file ends with a newline, so the next append starts a fresh line."""
        with self.path.open("rb+") as handle:
            handle.seek(0, os.SEEK_END)
            if handle.tell() == 0:
                return
            handle.seek(-1, os.SEEK_END)
            if handle.read(1) != b"\n":
                handle.write(b"\n")

    def get(self, key: str) -> Completion | None:
        return self._latest.get(key)

    def answered(self, key: str) -> bool:
        """True when the stored completion needs no new request (anything but an infra error)."""
        completion = self._latest.get(key)
        return completion is not None and not completion.is_infra_error

    def answers(self) -> dict[str, Completion]:
        """Key -> stored completion, for every key with an answer (not an infra error)."""
        return {key: c for key, c in self._latest.items() if not c.is_infra_error}

    def __len__(self) -> int:
        return len(self._latest)

    def append(self, completions: Iterable[Completion]) -> None:
        """Write completions and push them to disk before returning: what returns is durable. On an error
        (OSError, e.g. a full disk) the file is cut back to where it was and none of them counts as stored."""
        batch = list(completions)
        if not batch:
            return
        data = "".join(c.model_dump_json(exclude_defaults=True) + "\n" for c in batch).encode("utf-8")
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        start = os.lseek(self._fd, 0, os.SEEK_END)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view) :]
            os.fsync(self._fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, start)  # no half line left behind (truncating needs no space)
            raise OSError(exc.errno, exc.strerror, str(self.path)) from exc
        for completion in batch:
            self._latest[completion.key] = completion

    @staticmethod
    def write_whole(folder: Path, completions: Iterable[Completion]) -> None:
        """A new store holding exactly these completions, written whole then renamed into place (``u2eval
        merge``: a merge that stops half-way leaves no half-merged store behind)."""
        tmp = folder / (RESPONSES_FILE + ".tmp")
        tmp.write_text("".join(c.model_dump_json(exclude_defaults=True) + "\n" for c in completions), encoding="utf-8")
        tmp.replace(folder / RESPONSES_FILE)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> ResponseStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
