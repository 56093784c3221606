"""The dispatcher: bounded retries that honour Retry-After, timeouts, infra errors as data, bounded flight.

The adapters here are real implementations of the adapter protocol with scripted behaviour, standing in
for a provider; the dispatcher under test is the real one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from u2eval.adapters import ModelAdapter, ModelRequest
from u2eval.dispatch import Dispatcher, DispatchOptions
from u2eval.errors import AdapterError
from u2eval.records import Case, Completion, ModelInfo, Prompt, TextPart


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
            await asyncio.sleep(self.delay_s)
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
    assert elapsed >= 0.6  # two Retry-After waits of 0.3 s each


def test_persistent_failure_becomes_an_infra_error_after_bounded_attempts() -> None:
    error = AdapterError("HTTP 429", kind="rate_limit", retryable=True)
    adapter = ScriptedAdapter(failures=99, error=error)
    done, dispatcher = _run(adapter, 2, DispatchOptions(concurrency=2, backoff_initial_s=0.01, max_attempts=3))
    assert {c.case_id for c in done} == {"dd/21/0/x", "dd/21/1/x"}
    assert all(c.error == "rate_limit" and c.is_infra_error and c.text is None for c in done)
    assert all(c.attempts == 3 for c in done)
    assert adapter.calls == {"k0": 3, "k1": 3}
    assert dispatcher.stats.infra_errors == 2


def test_non_retryable_failure_is_not_retried() -> None:
    error = AdapterError("HTTP 400 bad image", kind="bad_request", retryable=False)
    adapter = ScriptedAdapter(failures=1, error=error)
    done, _ = _run(adapter, 1, DispatchOptions(concurrency=1, backoff_initial_s=0.01))
    assert adapter.calls["k0"] == 1
    assert done[0].error == "bad_request" and done[0].error_message == "HTTP 400 bad image"


def test_hang_past_the_timeout_is_a_timeout_error() -> None:
    adapter = ScriptedAdapter(failures=0, delay_s=5.0)
    started = time.perf_counter()
    done, _ = _run(adapter, 1, DispatchOptions(concurrency=1, timeout_s=0.1, max_attempts=2, backoff_initial_s=0.01))
    assert done[0].error == "timeout"
    assert time.perf_counter() - started < 2.0


def test_in_flight_requests_never_exceed_the_concurrency() -> None:
    adapter = ScriptedAdapter(failures=0, delay_s=0.01)
    done, _ = _run(adapter, 40, DispatchOptions(concurrency=4))
    assert len(done) == 40
    assert adapter.max_in_flight == 4
