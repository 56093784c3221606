"""The one wrapper around every adapter: bounded concurrency, bounded retries, timeouts and timing.

Requests flow through a bounded queue (never gather-all), so memory stays flat however many cases there
are. A batch that fails with a retryable ``AdapterError`` (or times out) is retried with exponential
backoff and jitter, waiting at least what the server's Retry-After said. A batch that still fails becomes
one infra-error Completion per request: data, never an exception, and never a model answer.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import cast, get_args

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, wait_random_exponential

from u2eval.adapters import ModelAdapter, ModelRequest
from u2eval.errors import AdapterError
from u2eval.records import Completion, ErrorKind


@dataclass(frozen=True)
class DispatchOptions:
    concurrency: int = 8
    max_attempts: int = 4
    timeout_s: float = 180.0
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 60.0


@dataclass
class DispatchStats:
    """Counters for the manifest and the end-of-run table (mutable: filled while the run goes)."""

    requests: int = 0
    batches: int = 0
    retries: int = 0
    infra_errors: int = 0
    errors_by_kind: dict[str, int] = field(default_factory=dict)


def _is_retryable(exc: BaseException) -> bool:
    if isinstance(exc, AdapterError):
        return exc.retryable
    return isinstance(exc, TimeoutError)


class _RetryAfterWait:
    """Exponential backoff with jitter, but never shorter than the server's Retry-After."""

    def __init__(self, initial: float, maximum: float) -> None:
        self._backoff = wait_random_exponential(multiplier=initial, max=maximum)

    def __call__(self, state: RetryCallState) -> float:
        wait = float(self._backoff(state))
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, AdapterError) and exc.retry_after_s is not None:
            wait = max(wait, exc.retry_after_s)
        return wait


_KNOWN_KINDS = frozenset(get_args(ErrorKind))


def _failure_kind(exc: BaseException) -> ErrorKind:
    if isinstance(exc, AdapterError) and exc.kind in _KNOWN_KINDS:
        return cast(ErrorKind, exc.kind)
    if isinstance(exc, TimeoutError):
        return "timeout"
    return "server"


def _take(iterator: Iterator[ModelRequest], count: int) -> list[ModelRequest]:
    return list(itertools.islice(iterator, count))


class Dispatcher:
    """Runs requests through an adapter and hands every finished batch to ``on_done`` as it completes."""

    def __init__(self, adapter: ModelAdapter, options: DispatchOptions) -> None:
        self.adapter = adapter
        self.options = options
        self.stats = DispatchStats()

    async def run(self, requests: Iterable[ModelRequest], on_done: Callable[[list[Completion]], None]) -> DispatchStats:
        batch_size = max(1, self.adapter.max_batch_size)
        queue: asyncio.Queue[list[ModelRequest] | None] = asyncio.Queue(maxsize=self.options.concurrency + 1)
        workers = [asyncio.create_task(self._worker(queue, on_done)) for _ in range(self.options.concurrency)]
        iterator = iter(requests)
        try:
            while True:
                # Reading and decoding cases is blocking work: keep it off the event loop.
                batch = await asyncio.to_thread(_take, iterator, batch_size)
                if not batch:
                    break
                await queue.put(batch)
            for _ in workers:
                await queue.put(None)
            await asyncio.gather(*workers)
        finally:
            for worker in workers:
                worker.cancel()
        return self.stats

    async def _worker(
        self, queue: asyncio.Queue[list[ModelRequest] | None], on_done: Callable[[list[Completion]], None]
    ) -> None:
        while (batch := await queue.get()) is not None:
            on_done(await self.call(batch))

    async def call(self, batch: Sequence[ModelRequest]) -> list[Completion]:
        """One batch with retries; always returns one Completion per request, in request order."""
        self.stats.batches += 1
        self.stats.requests += len(batch)
        started = time.perf_counter()
        attempts = 0
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.options.max_attempts),
            wait=_RetryAfterWait(self.options.backoff_initial_s, self.options.backoff_max_s),
            retry=retry_if_exception(_is_retryable),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    attempts += 1
                    completions = await asyncio.wait_for(self.adapter.generate(batch), timeout=self.options.timeout_s)
        except (AdapterError, TimeoutError) as exc:
            self.stats.retries += attempts - 1
            return self._failed(batch, exc, attempts, time.perf_counter() - started)
        self.stats.retries += attempts - 1
        return self._finished(batch, completions, attempts)

    def _finished(
        self, batch: Sequence[ModelRequest], completions: list[Completion], attempts: int
    ) -> list[Completion]:
        by_key = {c.key: c for c in completions}
        finished = []
        for request in batch:
            completion = by_key.get(request.key)
            if completion is None:
                completion = Completion(
                    case_id=request.case.case_id,
                    key=request.key,
                    error="malformed",
                    error_message="the adapter returned no completion for this request",
                )
            if attempts > 1:
                completion = completion.model_copy(update={"attempts": attempts})
            self._count(completion)
            finished.append(completion)
        return finished

    def _failed(
        self, batch: Sequence[ModelRequest], exc: BaseException, attempts: int, elapsed: float
    ) -> list[Completion]:
        kind = _failure_kind(exc)
        message = str(exc) or type(exc).__name__
        failed = [
            Completion(
                case_id=r.case.case_id,
                key=r.key,
                error=kind,
                error_message=message[:500],
                attempts=attempts,
                latency_s=round(elapsed, 4),
            )
            for r in batch
        ]
        for completion in failed:
            self._count(completion)
        return failed

    def _count(self, completion: Completion) -> None:
        if completion.error is None:
            return
        self.stats.errors_by_kind[completion.error] = self.stats.errors_by_kind.get(completion.error, 0) + 1
        if completion.is_infra_error:
            self.stats.infra_errors += 1
