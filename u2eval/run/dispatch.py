"""The one wrapper around every adapter: bounded concurrency, rate limits, bounded retries, timeouts, timing.

Requests flow through a bounded queue (never gather-all), so memory stays flat however many cases there
are. Before the first request, an adapter that can (``SupportsPreflight``) makes one tiny call: a wrong key
or an unknown model stops the run with one ``ConfigError`` line before any case is spent; it is skipped
when the store already answers everything. Optional requests-per-minute and tokens-per-minute limits are
token buckets in front of every attempt. A batch that fails with a retryable ``AdapterError`` (or times
out) is retried with exponential backoff and jitter; when the server said how long to wait (Retry-After),
the wait is exactly that plus at most 5% jitter, never shorter. A batch that still fails becomes one
infra-error Completion per request: data, never an exception, and never a model answer. Finished
completions reach the store from a worker thread, everything pending at once (group commit): its write and
fsync (several ms each under load) never stall the event loop. A slot takes its next request only once its
answers are on disk, so a killed run loses at most ``concurrency`` requests (batches), answered or not.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Iterable, Iterator, Sequence

from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt

from u2eval.errors import AdapterError, ConfigError
from u2eval.models.protocol import ModelAdapter, ModelRequest, SupportsPreflight
from u2eval.records import Completion
from u2eval.run.budget import CostBudget
from u2eval.run.pacing import (
    CountRetry,
    DispatchOptions,
    DispatchStats,
    RetryWait,
    TokenBucket,
    estimate_tokens,
    failure_kind,
    used_tokens,
)


def _take(iterator: Iterator[ModelRequest], batch_size: int, batches: int = 1) -> list[list[ModelRequest]]:
    """Up to ``batches`` batches of ``batch_size`` requests (fewer at the end; none when exhausted)."""
    taken = []
    for _ in range(batches):
        batch = list(itertools.islice(iterator, batch_size))
        if not batch:
            break
        taken.append(batch)
    return taken


class _Writer:
    """Hands finished completions to ``on_done`` from a worker thread, everything pending at each call
    (group commit); ``add`` returns a future that is done once ``on_done`` has returned for them."""

    def __init__(self, on_done: Callable[[list[Completion]], None]) -> None:
        self._on_done = on_done
        self._pending: list[Completion] = []
        self._waiting: list[asyncio.Future[None]] = []
        self._wake = asyncio.Event()
        self._closed = False
        self._failed: Exception | None = None

    def add(self, completions: list[Completion]) -> asyncio.Future[None]:
        if self._failed is not None:  # e.g. the disk is full: stop asking for answers that cannot be kept
            raise self._failed
        written: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.extend(completions)
        self._waiting.append(written)
        self._wake.set()
        return written

    def close(self) -> None:
        self._closed = True
        self._wake.set()

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._pending = self._pending, []
            waiting, self._waiting = self._waiting, []
            if batch:
                try:
                    await asyncio.to_thread(self._on_done, batch)
                except Exception as exc:
                    self._failed = exc
                    for written in waiting:
                        written.cancel()  # the workers waiting on it stop; the tripwire raises ``exc``
                    raise
            for written in waiting:
                written.set_result(None)
            if self._closed and not self._pending:
                return


class _Tripwire:
    """Set by the first worker (or the writer) that dies of an exception, so that the feeder raises that
    error instead of waiting forever on a full queue nobody empties (e.g. the disk is full). One future
    checked per put: waiting on every task instead costs ~1 ms per request at 256 in flight."""

    def __init__(self, tasks: Iterable[asyncio.Task[None]]) -> None:
        self.tripped: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        for task in tasks:
            task.add_done_callback(self._check)

    def _check(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None and not self.tripped.done():
            self.tripped.set_exception(task.exception())  # type: ignore[arg-type]

    async def put(self, queue: asyncio.Queue[list[ModelRequest] | None], item: list[ModelRequest] | None) -> None:
        if self.tripped.done():
            self.tripped.result()  # raises the dead task's error
        if not queue.full():  # the common case: no waiting
            queue.put_nowait(item)
            return
        put = asyncio.ensure_future(queue.put(item))
        await asyncio.wait((put, self.tripped), return_when=asyncio.FIRST_COMPLETED)
        if not put.done():
            put.cancel()
            self.tripped.result()
        put.result()

    def close(self) -> None:
        if self.tripped.done():
            self.tripped.exception()  # retrieved: raised elsewhere already, or by gather
        else:
            self.tripped.cancel()


class Dispatcher:
    """Runs requests through an adapter and hands every finished batch to ``on_done`` as it completes."""

    def __init__(self, adapter: ModelAdapter, options: DispatchOptions, budget: CostBudget | None = None) -> None:
        self.adapter = adapter
        self.options = options
        self.budget = budget  # --max-cost: a batch that would pass it is not sent (u2eval.run.budget)
        self.stats = DispatchStats()
        self._rpm = TokenBucket(options.rpm) if options.rpm else None
        self._tpm = TokenBucket(options.tpm) if options.tpm else None

    async def run(self, requests: Iterable[ModelRequest], on_done: Callable[[list[Completion]], None]) -> DispatchStats:
        """Answer every request; ``on_done`` gets the finished completions, in order of completion, on a
        worker thread, one call at a time (group commit: a store's write and fsync never block the loop,
        and completions that finish while one is being written go to disk together in the next call)."""
        batch_size = max(1, self.adapter.max_batch_size)
        iterator = iter(requests)
        # Reading and decoding cases is blocking work: keep it off the event loop, several small batches per
        # trip to the thread (a trip costs ~0.1 ms of hand-over, as much as an API request's bookkeeping).
        per_trip = max(1, 8 // batch_size)
        first = await asyncio.to_thread(_take, iterator, batch_size)
        if not first:
            return self.stats  # the store answers everything: no call, not even the preflight
        await self.preflight()
        queue: asyncio.Queue[list[ModelRequest] | None] = asyncio.Queue(maxsize=self.options.concurrency + 1)
        writer = _Writer(on_done)
        writing = asyncio.create_task(writer.run())
        workers = [asyncio.create_task(self._worker(queue, writer)) for _ in range(self.options.concurrency)]
        tripwire = _Tripwire((*workers, writing))
        try:
            batches = first
            while batches:
                for batch in batches:
                    await tripwire.put(queue, batch)
                batches = await asyncio.to_thread(_take, iterator, batch_size, per_trip)
            for _ in workers:
                await tripwire.put(queue, None)
            await asyncio.gather(*workers)
            writer.close()
            await writing
        finally:
            for task in (*workers, writing):
                task.cancel()
            tripwire.close()
        return self.stats

    async def _worker(self, queue: asyncio.Queue[list[ModelRequest] | None], writer: _Writer) -> None:
        # A worker ends early only by an exception (the store could not write); the tripwire re-raises it.
        # It holds its slot until its answers are durable: an answer received but not yet written is still
        # in flight, and what a kill can lose is bounded by the slots, not by how far the writer lags.
        while (batch := await queue.get()) is not None:
            await writer.add(await self.call(batch))

    def _retrying(self) -> AsyncRetrying:
        limit = self.options.max_retry_after_s

        def retryable(exc: BaseException) -> bool:
            if isinstance(exc, AdapterError):
                return exc.retryable and (exc.retry_after_s is None or exc.retry_after_s <= limit)
            return isinstance(exc, TimeoutError)

        return AsyncRetrying(
            stop=stop_after_attempt(self.options.max_attempts),
            wait=RetryWait(self.options),
            retry=retry_if_exception(retryable),
            before_sleep=CountRetry(self.stats),
            reraise=True,
        )

    async def _throttle(self, requests: int, tokens: int) -> None:
        if self._rpm is not None:
            self.stats.throttle_wait_s += await self._rpm.acquire(requests)
        if self._tpm is not None:
            self.stats.throttle_wait_s += await self._tpm.acquire(tokens)

    async def preflight(self) -> None:
        """The adapter's preflight call, retried like any request; any failure left is a ConfigError."""
        if not isinstance(self.adapter, SupportsPreflight):
            return
        name = f"{self.adapter.info.adapter}/{self.adapter.info.model}"
        attempts = 0
        try:
            async for attempt in self._retrying():
                with attempt:
                    attempts += 1
                    await self._throttle(1, 0)
                    await asyncio.wait_for(self.adapter.preflight(), timeout=self.options.timeout_s)
        except AdapterError as exc:
            verdict = "was refused" if not exc.retryable else f"failed after {self.options.max_attempts} attempts"
            raise ConfigError(f"{name}: the preflight call {verdict} ({exc.kind}): {exc}") from None
        except TimeoutError:
            raise ConfigError(f"{name}: the preflight call got no answer within {self.options.timeout_s:g} s") from None

    async def call(self, batch: Sequence[ModelRequest]) -> list[Completion]:
        """One batch with retries; always returns one Completion per request, in request order."""
        if self.budget is not None and not self.budget.reserve(batch):
            refused = self.budget.refusal(batch)
            for completion in refused:
                self._count(completion)
            return refused
        completions = await self._call(batch)
        if self.budget is not None:
            self.budget.settle(batch, completions)
        return completions

    async def _call(self, batch: Sequence[ModelRequest]) -> list[Completion]:
        self.stats.batches += 1
        self.stats.requests += len(batch)
        started = time.perf_counter()
        attempts = 0
        estimate = estimate_tokens(batch, self.options.output_tokens) if self._tpm is not None else 0
        try:
            async for attempt in self._retrying():
                with attempt:
                    attempts += 1
                    await self._throttle(len(batch), estimate)
                    completions = await asyncio.wait_for(self.adapter.generate(batch), timeout=self.options.timeout_s)
        except (AdapterError, TimeoutError) as exc:
            return self._failed(batch, exc, attempts, time.perf_counter() - started)
        except Exception as exc:  # noqa: BLE001 - a bug in an adapter must fail its cases, not hang the run
            wrapped = AdapterError(f"adapter error: {type(exc).__name__}: {exc}", kind="server", retryable=False)
            return self._failed(batch, wrapped, attempts, time.perf_counter() - started)
        if self._tpm is not None:
            used = used_tokens(completions)
            if used is not None:
                self._tpm.settle(estimate - used)
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
        kind = failure_kind(exc)
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
