"""What the in-process engine adapters (vllm, ray-vllm, hf) share: the engine thread, the engine made on first
use, a preset's settings read with one-line errors, its chat template, and a case whose input cannot be sent.

Not an adapter (no ``create``), so it has no line in the ADAPTERS table.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from model_adapters._wire import one_line
from u2eval.errors import AdapterError, ConfigError
from u2eval.models.protocol import ModelRequest
from u2eval.models.registry import PRESETS_DIR
from u2eval.records import Completion, ImagePart, Prompt, TextPart

T = TypeVar("T")
P = TypeVar("P")
M = TypeVar("M", bound=BaseModel)

# A 32x32 mid-grey PNG: the preflight's image, so a model that takes no images fails before any case.
PROBE_PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAACAAAAAgCAAAAABWESUoAAAAGUlEQVR4nGNsYMAPmAjIjyoYVTCqYNgqAACXvgDAMsm0fAAAAABJRU5ErkJggg=="
)


def probe_prompt(text_only: bool) -> Prompt:
    """The preflight's prompt: one small image and one line, or the line alone for an adapter that will send text
    only (a judge), so a model without vision may serve it."""
    image = () if text_only else (ImagePart(PROBE_PNG, "image/png"),)
    return Prompt("preflight", None, (*image, TextPart("Reply OK.")), "", "")


def parse_settings(adapter: str, extra: Mapping[str, Any], model: type[M]) -> M:
    """A preset's ``extra`` read as the adapter's settings: every problem on one line."""
    try:
        return model.model_validate(dict(extra))
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{adapter}: invalid preset extra: {problems}") from None


def read_template(name: str | None) -> str | None:
    """The text of the chat template a preset names; None: the one the model ships."""
    if name is None:
        return None
    for path in (Path(name).expanduser(), PRESETS_DIR / name):
        if path.is_file():
            return path.read_text(encoding="utf-8")
    raise ConfigError(
        f"chat_template {name!r}: no such file (absolute, or relative to the working directory or {PRESETS_DIR})"
    )


def input_failure(request: ModelRequest, exc: ValueError) -> Completion:
    """A case whose input cannot be answered (an unreadable image, a prompt the engine refuses): reported on the
    case as an infra error, never scored, and asked again by the next run."""
    return Completion(
        case_id=request.case.case_id, key=request.key, error="bad_request", error_message=one_line(str(exc), 500)
    )


class LoadOnce(Generic[T]):
    """An engine (or model) made on first use, on the engine thread. Whatever goes wrong while making it (a
    missing model, a bad argument, too little memory: engines report all of them as any exception) is one
    ConfigError line that says what did not start."""

    def __init__(self, make: Callable[[], T], failed: str) -> None:
        self._make, self._failed = make, failed
        self._value: T | None = None

    @property
    def loaded(self) -> bool:
        return self._value is not None

    def get(self) -> T:
        if self._value is None:
            try:
                self._value = self._make()
            except (ConfigError, AdapterError):
                raise
            except Exception as exc:  # noqa: BLE001 - see the class: engines fail in any way at all
                raise ConfigError(f"{self._failed}: {one_line(str(exc) or type(exc).__name__, 400)}") from exc
        return self._value

    def drop(self) -> None:
        """Forget the engine (at close), so its memory can go."""
        self._value = None


class EngineThread:
    """One thread that owns an in-process engine: it builds it and runs every call on it, one at a time, while a
    helper thread prepares the next call's input (encoding a chunk's images overlaps the engine's work).

    The dispatcher's per-attempt timeout cannot stop work on a thread, so a timed-out call keeps running and
    the retry of the same batch waits for it again (jobs are keyed by the batch's request keys, and registered
    before anything is awaited) instead of queueing a second copy. Cancellation never reaches the threads.
    """

    def __init__(self, name: str) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._helper = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{name}-prepare")
        self._jobs: dict[tuple[str, ...], concurrent.futures.Future[Any]] = {}

    def has(self, job: tuple[str, ...]) -> bool:
        future = self._jobs.get(job)
        return future is not None and not future.cancelled()

    def submit(self, job: tuple[str, ...], prepare: Callable[[], P], work: Callable[[P], Any]) -> None:
        """``prepare()`` starts at once on the helper thread; ``work`` gets its result on the engine thread."""
        prepared = self._helper.submit(prepare)
        self._jobs[job] = self._pool.submit(lambda: work(prepared.result()))

    async def result(self, job: tuple[str, ...]) -> Any:
        future = self._jobs[job]
        waiting = asyncio.wrap_future(future)
        # A waiter abandoned by a timeout still gets the outcome; retrieving it keeps asyncio from logging it.
        waiting.add_done_callback(lambda f: f.cancelled() or f.exception())
        try:
            return await asyncio.shield(waiting)
        finally:
            if future.done():
                self._jobs.pop(job, None)

    async def run(self, job: tuple[str, ...], prepare: Callable[[], P], work: Callable[[P], T]) -> T:
        """The job's outcome: the running one when a retry comes back for it, else a new one."""
        if not self.has(job):
            self.submit(job, prepare, work)
        result: T = await self.result(job)
        return result

    def close(self) -> None:
        self._helper.shutdown(wait=False, cancel_futures=True)
        self._pool.shutdown(wait=False, cancel_futures=True)
