"""The adapter protocol: what an adapter is given (a request, its options) and what it must do. Adapters never
retry and never schedule: the dispatcher does both, and the run layer owns every file."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import JsonValue

from u2eval.data.rows import RowIdentity
from u2eval.records import Case, Completion, GenerationConfig, ModelInfo, Prompt

DEFAULT_TIMEOUT_S = 180.0  # seconds per attempt unless the run says otherwise (the dispatcher's default too)


@dataclass(frozen=True)
class ModelRequest:
    """One case to answer: the rendered prompt, the case it came from, and its store key."""

    key: str
    case: Case
    prompt: Prompt


@dataclass(frozen=True)
class AdapterOptions:
    """What the run tells an adapter beyond its model name."""

    generation: GenerationConfig = GenerationConfig()
    seed: int = 0
    base_url: str | None = None  # several, comma-separated, where an adapter balances over them (openai)
    extra: Mapping[str, Any] = field(default_factory=dict)
    timeout_s: float = DEFAULT_TIMEOUT_S  # the dispatcher's per-attempt timeout, for an SDK's own backstop
    # The dataset's rows of the tasks named, read on demand, for adapters that join answers made elsewhere to
    # them (replay: the official report scorer reads RG and CG files together, whichever tasks a run asks for).
    rows: Callable[[Sequence[str]], Iterable[RowIdentity]] | None = None
    # The answers a u2eval run folder holds, by case id (where, answer), for replaying a run: read by the run
    # layer, which owns the folder's files (an adapter knows nothing of runs).
    run_answers: Callable[[Path], Mapping[str, tuple[str, JsonValue]]] | None = None
    # The requests carry text alone (a judge reading answers): a preflight then checks the text path, so a
    # model without vision may serve.
    text_only: bool = False


@runtime_checkable
class ModelAdapter(Protocol):
    """A model back-end. ``generate`` answers a batch; per-request failures come back as Completions with
    an ``error`` kind, and a whole-batch failure raises ``AdapterError`` for the dispatcher to classify."""

    @property
    def info(self) -> ModelInfo: ...

    @property
    def max_batch_size(self) -> int: ...

    async def generate(self, requests: Sequence[ModelRequest]) -> list[Completion]: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class SupportsPreflight(Protocol):
    """Optional for an adapter: one tiny call the dispatcher makes before the first request. It raises
    ``ConfigError`` (or a non-retryable ``AdapterError``) for a wrong key, an unknown model or a rejected
    parameter, which stops the run before any case is spent; a retryable ``AdapterError`` is retried."""

    async def preflight(self) -> None: ...


# ------------------------------------------------------------------------------------------ batch APIs


@dataclass(frozen=True)
class BatchLimits:
    """What one submission to a provider's batch API may hold: requests, and bytes of its payload (the
    uploaded file, or the inline body). With U2-Bench's images the bytes are the limit that binds."""

    max_requests: int
    max_bytes: int


BatchState = Literal["in_progress", "ended", "expired", "failed", "cancelled"]


@dataclass(frozen=True)
class BatchStatus:
    """Where a submitted batch stands, as its provider says: ``ended`` means its results can be collected
    (some items may still have failed); ``expired``, ``failed`` and ``cancelled`` mean whatever it did not
    answer never will be (those requests become infra errors, resubmitted by the next run)."""

    state: BatchState
    done: int | None = None  # requests finished so far, where the provider reports it
    total: int | None = None
    detail: str | None = None  # the provider's words, for a failed batch


@runtime_checkable
class SupportsBatch(Protocol):
    """Optional for an adapter: its provider's batch API (``u2eval run --batch``, ``u2eval.run.batch``).

    A batch item is exactly the body a live request sends (``batch_item``), keyed by the request's store key
    (the provider's ``custom_id``), so a batch answer is stored under the key a live one would be and scores
    alike. ``submit_batch`` uploads and creates the batch with ``label`` (the run's own name for it) attached
    where the provider keeps one (metadata, display name), so that ``find_batch(label)`` finds a batch whose
    id a killed run never recorded, and nothing is submitted twice. ``batch_results`` returns one Completion
    per key of the batch: the answer, or an infra error (the item failed, expired or was cancelled)."""

    @property
    def batch_limits(self) -> BatchLimits: ...

    def batch_item(self, request: ModelRequest) -> bytes: ...

    async def submit_batch(self, items: Sequence[bytes], label: str) -> str: ...

    async def find_batch(self, label: str) -> str | None: ...

    async def batch_status(self, batch_id: str) -> BatchStatus: ...

    async def batch_results(self, batch_id: str, requests: Mapping[str, ModelRequest]) -> list[Completion]: ...
