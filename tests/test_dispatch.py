"""The dispatcher: bounded retries that honour Retry-After, timeouts, infra errors as data, bounded flight.

The adapters here are real implementations of the adapter protocol with scripted behaviour, standing in
for a provider; the dispatcher under test is the real one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import pytest

from u2eval.errors import AdapterError, ConfigError
from u2eval.models.protocol import ModelAdapter, ModelRequest
from u2eval.records import Case, Completion, ModelInfo, Prompt, TextPart, Usage
from u2eval.run.dispatch import Dispatcher
from u2eval.run.pacing import DispatchOptions, TokenBucket


def _request(i: int) -> ModelRequest:
    case = Case(
        case_id=f"dd/21/{i}/x",
        task="dd",
        dataset_id="21",
        dataset_name="21.x",
        source_file="21.tsv",
        row_index=i,
        anatomy="breast",
        scenario="tumor_type",
        truth="benign",
        options=("benign", "malignant"),
        image=b"",
        image_format="png",
    )
    prompt = Prompt(case.case_id, None, (TextPart("q"),), "t", "")
    return ModelRequest(key=f"k{i}", case=case, prompt=prompt)


class ScriptedAdapter:
    """Fails the first ``failures`` calls per key with the given error, then answers."""

    def __init__(self, failures: int, error: AdapterError | None = None, delay_s: float = 0.0) -> None:
        self.failures = failures
        self.error = error or AdapterError("HTTP 429", kind="rate_limit", retryable=True, retry_after_s=0.3)
        self.delay_s = delay_s
        self.calls: dict[str, int] = {}
        self.cancelled = 0  # calls cut short (a timeout cancels the attempt's coroutine)
        self.in_flight = 0
        self.max_in_flight = 0

    @property
    def info(self) -> ModelInfo:
        return ModelInfo(adapter="scripted", model="m")

    @property
    def max_batch_size(self) -> int:
        return 1

    async def generate(self, requests: Sequence[ModelRequest]) -> list[Completion]:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            key = requests[0].key
            self.calls[key] = self.calls.get(key, 0) + 1
            try:
                await asyncio.sleep(self.delay_s)
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
            if self.calls[key] <= self.failures:
                raise self.error
            return [Completion(case_id=r.case.case_id, key=r.key, text="benign") for r in requests]
        finally:
            self.in_flight -= 1

    async def aclose(self) -> None:
        return None


def _run(adapter: ModelAdapter, n: int, options: DispatchOptions) -> tuple[list[Completion], Dispatcher]:
    done: list[Completion] = []
    dispatcher = Dispatcher(adapter, options)
    asyncio.run(dispatcher.run((_request(i) for i in range(n)), done.extend))
    return done, dispatcher


def test_transient_failures_are_retried_and_wait_what_retry_after_says() -> None:
    adapter = ScriptedAdapter(failures=2)
    started = time.perf_counter()
    done, dispatcher = _run(adapter, 1, DispatchOptions(concurrency=1, backoff_initial_s=0.01, max_attempts=4))
    elapsed = time.perf_counter() - started
    assert [c.text for c in done] == ["benign"]
    assert done[0].attempts == 3
    assert adapter.calls["k0"] == 3
    assert dispatcher.stats.retries == 2
    # Two Retry-After waits of 0.3 s each, not the 0.01 s backoff: counted, and at least that long (a loaded
    # machine only makes it longer).
    assert dispatcher.stats.retry_after_s == pytest.approx(0.6)
    assert 0.6 <= dispatcher.stats.retry_wait_s <= 0.6 * 1.05 and elapsed >= 0.6


def test_persistent_failure_becomes_an_infra_error_after_bounded_attempts() -> None:
    error = AdapterError("HTTP 429", kind="rate_limit", retryable=True)
    adapter = ScriptedAdapter(failures=99, error=error)
    done, dispatcher = _run(adapter, 2, DispatchOptions(concurrency=2, backoff_initial_s=0.01, max_attempts=3))
    assert {c.case_id for c in done} == {"dd/21/0/x", "dd/21/1/x"}
    assert all(c.error == "rate_limit" and c.is_infra_error and c.text is None for c in done)
    assert all(c.attempts == 3 for c in done)
    assert adapter.calls == {"k0": 3, "k1": 3}
    assert dispatcher.stats.infra_errors == 2
    # Counted when they happen: two retries each, none after the last attempt (the manifest's counters agree).
    assert dispatcher.stats.retries == 4 == sum(dispatcher.stats.retries_by_kind.values())
    assert dispatcher.stats.retries_by_kind == {"rate_limit": 4}
    manifest = dispatcher.stats.as_manifest()
    assert manifest["retries"] == manifest["retries.rate_limit"] == 4


def test_non_retryable_failure_is_not_retried() -> None:
    error = AdapterError("HTTP 400 bad image", kind="bad_request", retryable=False)
    adapter = ScriptedAdapter(failures=1, error=error)
    done, _ = _run(adapter, 1, DispatchOptions(concurrency=1, backoff_initial_s=0.01))
    assert adapter.calls["k0"] == 1
    assert done[0].error == "bad_request" and done[0].error_message == "HTTP 400 bad image"


def test_hang_past_the_timeout_is_a_timeout_error() -> None:
    adapter = ScriptedAdapter(failures=0, delay_s=30.0)  # a broken timeout shows as no cancellation, not a hang
    done, dispatcher = _run(
        adapter, 1, DispatchOptions(concurrency=1, timeout_s=0.1, max_attempts=2, backoff_initial_s=0.01)
    )
    assert done[0].error == "timeout" and done[0].attempts == 2
    assert adapter.cancelled == 2  # each hanging attempt was cut at the timeout, never waited out
    assert dispatcher.stats.retries_by_kind == {"timeout": 1}


def test_in_flight_requests_never_exceed_the_concurrency() -> None:
    adapter = ScriptedAdapter(failures=0, delay_s=0.01)
    done, _ = _run(adapter, 40, DispatchOptions(concurrency=4))
    assert len(done) == 40
    assert adapter.max_in_flight == 4


def test_a_retry_after_wait_is_exact_and_counted() -> None:
    adapter = ScriptedAdapter(failures=1)  # one 429 with Retry-After 0.3 s
    started = time.perf_counter()
    done, dispatcher = _run(adapter, 1, DispatchOptions(concurrency=1, backoff_initial_s=5.0))
    assert done[0].text == "benign"
    assert time.perf_counter() - started >= 0.3  # the told wait was waited (its length: the counters below)
    stats = dispatcher.stats
    assert stats.retries_by_kind == {"rate_limit": 1} and stats.retry_after_s == 0.3
    assert 0.3 <= stats.retry_wait_s <= 0.315
    manifest = stats.as_manifest()
    assert manifest["retries.rate_limit"] == 1 and manifest["retry_after_ms"] == 300


def test_a_retry_after_beyond_the_limit_is_not_waited_for() -> None:
    error = AdapterError("HTTP 429", kind="rate_limit", retryable=True, retry_after_s=3600)
    adapter = ScriptedAdapter(failures=1, error=error)
    done, dispatcher = _run(adapter, 1, DispatchOptions(concurrency=1, max_retry_after_s=60))
    assert done[0].error == "rate_limit" and done[0].attempts == 1  # left for the next run
    assert dispatcher.stats.retries == 0 and dispatcher.stats.retry_wait_s == 0.0  # nothing waited


class UsageAdapter(ScriptedAdapter):
    """Answers at once, reporting ``used`` tokens (or no usage at all)."""

    def __init__(self, used: int | None) -> None:
        super().__init__(failures=0)
        self.used = used

    async def generate(self, requests: Sequence[ModelRequest]) -> list[Completion]:
        usage = Usage(input_tokens=self.used, output_tokens=0) if self.used is not None else None
        return [Completion(case_id=r.case.case_id, key=r.key, text="benign", usage=usage) for r in requests]


def test_tokens_per_minute_reserve_the_estimate_and_settle_on_the_usage() -> None:
    # 60,000 a minute = 1,000 a second (the bucket holds one second's worth); each request is estimated
    # at ~101 tokens (text / 4 + 1 + 100 output), so 15 of them need ~0.5 s beyond the first second's
    # 1,000 unless the usage (10 each) gives the difference back.
    options = DispatchOptions(concurrency=1, tpm=60_000, output_tokens=100)
    _, settled = _run(UsageAdapter(used=10), 15, options)
    started = time.perf_counter()
    _, unsettled = _run(UsageAdapter(used=None), 15, options)
    # Bounds that load cannot break: the settled run's counted waits (a slow machine refills the bucket
    # meanwhile, so they only shrink), and how long the unsettled run took at least (load only adds).
    assert settled.stats.throttle_wait_s < 0.2
    assert time.perf_counter() - started >= 0.4 and unsettled.stats.throttle_wait_s > 0


def test_the_token_bucket_lets_a_large_request_through_and_its_debt_delays_the_next() -> None:
    async def go() -> tuple[float, float]:
        bucket = TokenBucket(per_minute=6000)  # 100 a second, holds 100
        first = await bucket.acquire(115)  # more than it holds: waits for nothing, owes 15
        second = await bucket.acquire(1)  # waits for the debt: (15 + 1) / 100 s
        return first, second

    first, second = asyncio.run(go())
    # The wait it computes for the debt, (15 + 1) / 100 s at most (time passing meanwhile refills a little);
    # without the debt it would be 1 / 100 s.
    assert first == 0.0 and 0.011 < second <= 0.16 + 1e-9


class PreflightAdapter(ScriptedAdapter):
    """A scripted adapter with a preflight that fails ``failures`` times with ``error``."""

    def __init__(self, preflight_failures: int, error: AdapterError) -> None:
        super().__init__(failures=0)
        self.preflight_failures = preflight_failures
        self.preflight_error = error
        self.preflights = 0

    async def preflight(self) -> None:
        self.preflights += 1
        if self.preflights <= self.preflight_failures:
            raise self.preflight_error


def test_preflight_runs_once_before_any_request_and_is_retried_when_transient() -> None:
    transient = AdapterError("HTTP 503", kind="server", retryable=True, retry_after_s=0.01)
    adapter = PreflightAdapter(preflight_failures=1, error=transient)
    done, dispatcher = _run(adapter, 3, DispatchOptions(concurrency=2))
    assert adapter.preflights == 2 and len(done) == 3 and dispatcher.stats.retries == 1
    nothing_to_do = PreflightAdapter(preflight_failures=0, error=transient)
    _run(nothing_to_do, 0, DispatchOptions())
    assert nothing_to_do.preflights == 0  # everything stored: not even the preflight is paid


def test_a_refused_preflight_is_one_config_error_line_and_no_request_is_sent() -> None:
    refused = AdapterError("HTTP 401: Incorrect API key provided", kind="auth", retryable=False)
    adapter = PreflightAdapter(preflight_failures=1, error=refused)
    with pytest.raises(ConfigError, match=r"scripted/m: the preflight call was refused \(auth\): HTTP 401"):
        _run(adapter, 3, DispatchOptions())
    assert adapter.calls == {}
    busy = PreflightAdapter(preflight_failures=9, error=AdapterError("HTTP 503", kind="server", retryable=True))
    with pytest.raises(ConfigError, match="failed after 2 attempts"):
        _run(busy, 1, DispatchOptions(max_attempts=2, backoff_initial_s=0.01))


class BuggyAdapter:
    """An adapter with a bug: it raises something that is not an AdapterError."""

    @property
    def info(self) -> ModelInfo:
        return ModelInfo(adapter="buggy", model="m")

    @property
    def max_batch_size(self) -> int:
        return 1

    async def generate(self, requests: Sequence[ModelRequest]) -> list[Completion]:
        raise KeyError("choices")

    async def aclose(self) -> None:
        return None


def test_an_adapter_bug_fails_its_cases_instead_of_hanging_the_run() -> None:
    done, dispatcher = _run(BuggyAdapter(), 5, DispatchOptions(concurrency=2, max_attempts=3))
    assert len(done) == 5
    assert all(c.error == "server" and c.is_infra_error and "KeyError" in (c.error_message or "") for c in done)
    assert all(c.attempts == 1 for c in done)  # a bug is not retried


def test_a_store_that_cannot_write_stops_the_run_with_its_error() -> None:
    import pytest

    def full_disk(_: list[Completion]) -> None:
        raise OSError(28, "No space left on device")

    dispatcher = Dispatcher(ScriptedAdapter(failures=0), DispatchOptions(concurrency=2))
    with pytest.raises(OSError, match="No space left"):
        asyncio.run(asyncio.wait_for(dispatcher.run((_request(i) for i in range(50)), full_disk), timeout=20))


def test_a_slot_takes_its_next_request_only_once_its_answer_is_on_disk() -> None:
    """What a kill can lose is bounded by the slots: requests sent but not yet durable never exceed the
    concurrency, however slow the store is (here 20 ms a write, against an instant model)."""
    import threading

    lock = threading.Lock()
    counts = {"started": 0, "written": 0, "worst": 0}

    class Counting(ScriptedAdapter):
        async def generate(self, requests: Sequence[ModelRequest]) -> list[Completion]:
            with lock:
                counts["started"] += len(requests)
                counts["worst"] = max(counts["worst"], counts["started"] - counts["written"])
            return await super().generate(requests)

    def slow_store(done: list[Completion]) -> None:
        time.sleep(0.02)
        with lock:
            counts["written"] += len(done)

    dispatcher = Dispatcher(Counting(failures=0), DispatchOptions(concurrency=4))
    asyncio.run(dispatcher.run((_request(i) for i in range(60)), slow_store))
    assert counts["written"] == 60
    assert counts["worst"] == 4  # every slot busy at times, never more than the slots in flight
