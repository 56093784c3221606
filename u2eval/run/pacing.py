"""The dispatcher's settings and counters, and how it paces requests: token buckets for requests and tokens per
minute (with an estimate of a batch's tokens before it is sent), and the waits between attempts (exponential
with jitter, or exactly what a Retry-After asked for, plus at most 5%).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import cast, get_args

from tenacity import RetryCallState, wait_random_exponential

from u2eval.errors import AdapterError, ConfigError
from u2eval.models.protocol import DEFAULT_TIMEOUT_S, ModelRequest
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


def used_tokens(completions: Sequence[Completion]) -> int | None:
    """Input + output tokens the responses report; None when any of them reports nothing."""
    total = 0
    for completion in completions:
        usage = completion.usage
        if usage is None or usage.input_tokens is None:
            return None
        total += usage.input_tokens + (usage.output_tokens or 0)
    return total


_KNOWN_KINDS = frozenset(get_args(ErrorKind))


def failure_kind(exc: BaseException) -> ErrorKind:
    if isinstance(exc, AdapterError) and exc.kind in _KNOWN_KINDS:
        return cast(ErrorKind, exc.kind)
    if isinstance(exc, TimeoutError):
        return "timeout"
    return "server"


class RetryWait:
    """Exponential backoff with jitter; when the server gave a Retry-After, exactly that (plus <= 5%)."""

    def __init__(self, options: DispatchOptions) -> None:
        self._backoff = wait_random_exponential(multiplier=options.backoff_initial_s, max=options.backoff_max_s)

    def __call__(self, state: RetryCallState) -> float:
        told = retry_after(state)
        if told is None:
            return float(self._backoff(state))
        return told + random.uniform(0.0, RETRY_AFTER_JITTER * told)


def retry_after(state: RetryCallState) -> float | None:
    exc = state.outcome.exception() if state.outcome is not None else None
    return exc.retry_after_s if isinstance(exc, AdapterError) else None


class CountRetry:
    """Counts a retry when it happens - just before its wait - never when the wait is only computed: tenacity
    computes one after the last attempt too, before it sees that it must stop. So ``retries`` is the sum of
    ``retries_by_kind``, and the waits are the waits made."""

    def __init__(self, stats: DispatchStats) -> None:
        self._stats = stats

    def __call__(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        kind = failure_kind(exc) if exc is not None else "unknown"
        self._stats.retries += 1
        self._stats.retries_by_kind[kind] = self._stats.retries_by_kind.get(kind, 0) + 1
        self._stats.retry_wait_s += state.upcoming_sleep
        told = retry_after(state)
        if told is not None:
            self._stats.retry_after_s += told
