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
import random
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import cast, get_args

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, wait_random_exponential

from u2eval.errors import AdapterError, ConfigError
from u2eval.models.protocol import DEFAULT_TIMEOUT_S, ModelAdapter, ModelRequest, SupportsPreflight
from u2eval.records import Completion, ErrorKind, ImagePart

# Tokens an image is assumed to cost before the response says (OpenAI's high-detail price of a
# 1024x768 image is 765); the usage in the response corrects the bucket afterwards.
IMAGE_TOKENS_ESTIMATE = 1000
RETRY_AFTER_JITTER = 0.05  # at most this fraction is added to a Retry-After wait, to de-synchronise clients


@dataclass(frozen=True)
class DispatchOptions:
    concurrency: int = 8
    max_attempts: int = 4
    timeout_s: float = DEFAULT_TIMEOUT_S  # per attempt, from sending to the answer (rate-limit waits not included)
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 60.0
    rpm: float | None = None  # requests per minute, every attempt counted
    tpm: float | None = None  # tokens (input + output) per minute
    output_tokens: int = 1024  # reserved per request against ``tpm`` until its usage is known
    max_retry_after_s: float = 300.0  # a longer Retry-After is not waited for: the case is left for the next run


@dataclass
class DispatchStats:
    """Counters for the manifest and the end-of-run table (mutable: filled while the run goes)."""

    requests: int = 0
    batches: int = 0
    retries: int = 0
    infra_errors: int = 0
    errors_by_kind: dict[str, int] = field(default_factory=dict)  # final outcomes, per request
    retries_by_kind: dict[str, int] = field(default_factory=dict)  # failed attempts that were retried
    retry_after_s: float = 0.0  # sum of the waits servers asked for (Retry-After)
    retry_wait_s: float = 0.0  # sum of the waits actually made before retries
    throttle_wait_s: float = 0.0  # time spent waiting for the rate limits

    def as_manifest(self) -> dict[str, int]:
        """Integer counters for ``Manifest.dispatch`` (times in milliseconds)."""
        counters = {
            "requests": self.requests,
            "retries": self.retries,
            "infra_errors": self.infra_errors,
            "retry_after_ms": round(self.retry_after_s * 1000),
            "retry_wait_ms": round(self.retry_wait_s * 1000),
            "throttle_wait_ms": round(self.throttle_wait_s * 1000),
        }
        counters |= {f"retries.{k}": v for k, v in sorted(self.retries_by_kind.items())}
        counters |= {f"errors.{k}": v for k, v in sorted(self.errors_by_kind.items())}
        return counters


class TokenBucket:
    """A rate limit: ``per_minute`` units refilled continuously, at most one second's worth banked.

    ``acquire(n)`` waits, first come first served, until the bucket holds ``min(n, capacity)`` and takes
    ``n``; the level may go negative (a request larger than the bucket is let through and its debt delays
    the next ones), so the long-run rate is exact. ``settle(delta)`` corrects a charge once the true cost
    is known (positive: give back).
    """

    def __init__(self, per_minute: float, clock: Callable[[], float] = time.monotonic) -> None:
        if per_minute <= 0:
            raise ConfigError(f"a rate limit must be positive, not {per_minute}")
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate)
        self.level = self.capacity
        self._clock = clock
        self._stamp = clock()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = self._clock()
        self.level = min(self.capacity, self.level + (now - self._stamp) * self.rate)
        self._stamp = now

    async def acquire(self, amount: float) -> float:
        """Take ``amount``; returns the seconds waited."""
        waited = 0.0
        async with self._lock:
            self._refill()
            need = min(amount, self.capacity)
            while self.level < need:
                delay = (need - self.level) / self.rate
                await asyncio.sleep(delay)
                waited += delay
                self._refill()
            self.level -= amount
        return waited

    def settle(self, delta: float) -> None:
        self._refill()
        self.level = min(self.capacity, self.level + delta)


def estimate_tokens(batch: Sequence[ModelRequest], output_tokens: int) -> int:
    """Tokens a batch may cost, before sending: ~4 characters a token, a fixed price per image, and the
    output budget (providers count ``max_tokens`` against the limit until the answer is known)."""
    total = 0
    for request in batch:
        chars = len(request.prompt.system or "")
        for part in request.prompt.parts:
            if isinstance(part, ImagePart):
                total += IMAGE_TOKENS_ESTIMATE
            else:
                chars += len(part.text)
        total += chars // 4 + 1 + output_tokens
    return total


def _used_tokens(completions: Sequence[Completion]) -> int | None:
    """Input + output tokens the responses report; None when any of them reports nothing."""
    total = 0
    for completion in completions:
        usage = completion.usage
        if usage is None or usage.input_tokens is None:
            return None
        total += usage.input_tokens + (usage.output_tokens or 0)
    return total


_KNOWN_KINDS = frozenset(get_args(ErrorKind))


def _failure_kind(exc: BaseException) -> ErrorKind:
    if isinstance(exc, AdapterError) and exc.kind in _KNOWN_KINDS:
        return cast(ErrorKind, exc.kind)
    if isinstance(exc, TimeoutError):
        return "timeout"
    return "server"


def _take(iterator: Iterator[ModelRequest], batch_size: int, batches: int = 1) -> list[list[ModelRequest]]:
    """Up to ``batches`` batches of ``batch_size`` requests (fewer at the end; none when exhausted)."""
    taken = []
    for _ in range(batches):
        batch = list(itertools.islice(iterator, batch_size))
        if not batch:
            break
        taken.append(batch)
    return taken


class _Wait:
    """Exponential backoff with jitter; when the server gave a Retry-After, exactly that (plus <= 5%)."""

    def __init__(self, options: DispatchOptions) -> None:
        self._backoff = wait_random_exponential(multiplier=options.backoff_initial_s, max=options.backoff_max_s)

    def __call__(self, state: RetryCallState) -> float:
        told = _retry_after(state)
        if told is None:
            return float(self._backoff(state))
        return told + random.uniform(0.0, RETRY_AFTER_JITTER * told)


def _retry_after(state: RetryCallState) -> float | None:
    exc = state.outcome.exception() if state.outcome is not None else None
    return exc.retry_after_s if isinstance(exc, AdapterError) else None


class _CountRetry:
    """Counts a retry when it happens - just before its wait - never when the wait is only computed: tenacity
    computes one after the last attempt too, before it sees that it must stop. So ``retries`` is the sum of
    ``retries_by_kind``, and the waits are the waits made."""

    def __init__(self, stats: DispatchStats) -> None:
        self._stats = stats

    def __call__(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        kind = _failure_kind(exc) if exc is not None else "unknown"
        self._stats.retries += 1
        self._stats.retries_by_kind[kind] = self._stats.retries_by_kind.get(kind, 0) + 1
        self._stats.retry_wait_s += state.upcoming_sleep
        told = _retry_after(state)
        if told is not None:
            self._stats.retry_after_s += told


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

    def __init__(self, adapter: ModelAdapter, options: DispatchOptions) -> None:
        self.adapter = adapter
        self.options = options
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
            wait=_Wait(self.options),
            retry=retry_if_exception(retryable),
            before_sleep=_CountRetry(self.stats),
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
            used = _used_tokens(completions)
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
