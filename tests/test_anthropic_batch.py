"""Anthropic's Message Batches API (model_adapters/anthropic_batch.py) through the real ``anthropic`` SDK against the
stand-in (tests/anthropic_server.py): the items are the live bodies, the results the live answers, failed items
infra errors, and a batch created but never recorded is found again instead of submitted twice."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any

import pytest
from anthropic_server import AnthropicServer, BatchFault
from wire_checks import dispatch
from wire_server import Fault

from model_adapters.anthropic import AnthropicAdapter, to_request
from model_adapters.anthropic_batch import API_MAX_BYTES, BATCH_LIMITS, compact, label_tag, wire_bytes
from u2eval.benchmark.prompts import render
from u2eval.benchmark.tasks import get_task, select_tasks
from u2eval.data.reader import iter_cases
from u2eval.data.sources import resolve_source
from u2eval.errors import AdapterError
from u2eval.models.protocol import AdapterOptions, BatchStatus, ModelRequest
from u2eval.records import Completion, GenerationConfig, ImagePart, TextPart
from u2eval.run.pacing import DispatchOptions
from u2eval.run.store import request_key

KEY = "sk-ant-api03-u2eval-BATCH-KEY-do-not-log-0123456789"
TASKS = ("dd", "ll", "rg")
MARKER = "u2evalmark-"


def _answer(body: dict[str, Any]) -> str:
    """A different answer for each request, so that an answer joined to the wrong request would show."""
    digest = hashlib.sha256(json.dumps(body["messages"], sort_keys=True).encode()).hexdigest()
    return ("benign", "malignant", "The liver is enlarged.")[int(digest, 16) % 3] + "." * (int(digest[:2], 16) % 9)


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[AnthropicServer]:
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    for name in ("ANTHROPIC_BASE_URL", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_PROFILE", "ANTHROPIC_CUSTOM_HEADERS"):
        monkeypatch.delenv(name, raising=False)
    stand_in = AnthropicServer(KEY)
    stand_in.answer = _answer
    with stand_in.running():
        yield stand_in


def _adapter(server: AnthropicServer, **extra: object) -> AnthropicAdapter:
    adapter = AnthropicAdapter("claude-test", AdapterOptions(base_url=server.url, extra=extra))
    adapter.poll_s = 0.01
    return adapter


def _requests(adapter: AnthropicAdapter, limit: int = 1, tasks: Sequence[str] = TASKS) -> list[ModelRequest]:
    """The requests a run of the bundled sample makes, under the store keys it gives them."""
    specs = select_tasks(tuple(tasks))
    made = []
    for case in iter_cases(resolve_source("sample", tasks=specs), specs, limit=limit, on_error=print):
        prompt = render(case, get_task(case.task))
        made.append(ModelRequest(request_key(adapter.info, GenerationConfig(), prompt), case, prompt))
    return made


def _with(server: AnthropicServer, work: Callable[[AnthropicAdapter], Awaitable[Any]], **extra: object) -> Any:
    """``work`` done by a new adapter (what a run started after a kill has), closed after."""
    adapter = _adapter(server, **extra)

    async def go() -> Any:
        try:
            return await work(adapter)
        finally:
            await adapter.aclose()

    return asyncio.run(go())


def _submit(server: AnthropicServer, requests: list[ModelRequest], label: str, **extra: object) -> str:
    batch_id: str = _with(server, lambda a: a.submit_batch([a.batch_item(r) for r in requests], label), **extra)
    return batch_id


def _find(server: AnthropicServer, label: str, marker_wait_s: float = 600.0) -> str | None:
    def find(adapter: AnthropicAdapter) -> Awaitable[str | None]:
        adapter.marker_wait_s = marker_wait_s
        return adapter.find_batch(label)

    found: str | None = _with(server, find)
    return found


def _status(server: AnthropicServer, batch_id: str) -> BatchStatus:
    status: BatchStatus = _with(server, lambda a: a.batch_status(batch_id))
    return status


def _results(server: AnthropicServer, batch_id: str, requests: list[ModelRequest]) -> list[Completion]:
    done: list[Completion] = _with(server, lambda a: a.batch_results(batch_id, {r.key: r for r in requests}))
    return done


def _real_batches(server: AnthropicServer) -> list[str]:
    """The ids of the batches that are not markers, oldest first."""
    return [b.id for b in server.batches.values() if not b.requests[0]["custom_id"].startswith(MARKER)]


# -- items -----------------------------------------------------------------------------------------------


def test_an_item_is_the_live_body_keyed_by_the_store_key(server: AnthropicServer) -> None:
    settings: dict[str, object] = {
        "image_budget": {"max_long_edge": 100},
        "sampling": True,
        "api_version": "2023-06-01",
    }
    adapter = _adapter(server, **settings)
    requests = _requests(adapter)
    items = [adapter.batch_item(r) for r in requests]
    for request, item in zip(requests, items, strict=True):
        wire = to_request(request.prompt, GenerationConfig(), "claude-test", adapter._extra.image_budget, sampling=True)
        assert item == compact({"custom_id": request.key, "params": wire.body})
    live = dispatch(adapter, requests, DispatchOptions())
    assert all(c.error is None for c in live) and any(c.image_sent and c.image_sent.resized for c in live)
    live_bodies = [r.body for r in server.image_requests() if r.path == "/v1/messages"]
    batch = server.batches[_submit(server, requests, "run-1/0", **settings)]
    sent = {r["custom_id"]: r["params"] for r in batch.requests}
    assert sorted(sent) == sorted(f"{r.key}-{label_tag('run-1/0')}" for r in requests)
    assert sorted(map(compact, sent.values())) == sorted(map(compact, live_bodies))  # the live bodies, byte for byte
    assert batch.headers["anthropic-version"] == "2023-06-01"
    assert batch.body_bytes == wire_bytes(items)


def test_an_item_needs_a_key_that_can_be_a_custom_id_and_an_image_that_can_be_sent(server: AnthropicServer) -> None:
    adapter = _adapter(server)
    request = _requests(adapter, tasks=("ll",))[0]
    with pytest.raises(ValueError, match="custom_id"):
        adapter.batch_item(dataclasses.replace(request, key="ll/04/0/14e6a24e"))
    unreadable = dataclasses.replace(request.prompt, parts=(ImagePart(b"not an image", "image/png"),))
    with pytest.raises(AdapterError) as refused:
        adapter.batch_item(dataclasses.replace(request, prompt=unreadable))
    assert (refused.value.kind, refused.value.retryable) == ("bad_request", False)


# -- results ---------------------------------------------------------------------------------------------


def test_batch_answers_are_the_live_answers_to_the_same_requests(server: AnthropicServer) -> None:
    adapter = _adapter(server)
    requests = _requests(adapter, limit=2)
    assert len(requests) >= 6
    live = {c.key: c for c in dispatch(adapter, requests, DispatchOptions())}
    batch_id = _submit(server, requests, "run-1/0")
    batched = _results(server, batch_id, requests)
    assert [c.key for c in batched] == [r.key for r in requests]  # one per request, in their order
    assert len({c.text for c in batched}) > 1  # the answers differ: each was joined to its own request
    for answer in batched:
        assert answer.route == "batch" and answer.error is None and answer.usage is not None
        assert answer.model_copy(update={"route": None, "latency_s": live[answer.key].latency_s}) == live[answer.key]
    line = batched[0].model_dump_json()
    assert '"route":"batch"' in line and '"route"' not in live[batched[0].key].model_dump_json()


def test_errored_expired_cancelled_and_unanswered_items_are_infra_errors(server: AnthropicServer) -> None:
    adapter = _adapter(server)
    requests = _requests(adapter, limit=2)
    outcomes = {requests[0].key: "expired", requests[1].key: "errored", requests[2].key: "canceled"}
    server.item_outcomes = outcomes
    server.add_fault(Fault("bad_request"))  # the next request answered is refused as a live one would be
    server.add_fault(Fault("refusal"))  # and the one after is the model's refusal: an answer, not a failure
    done = {c.key: c for c in _results(server, _submit(server, requests[:-1], "run-1/0"), requests)}
    expired, errored, cancelled, never = (done[r.key] for r in (*requests[:3], requests[-1]))
    assert (expired.error, errored.error, cancelled.error, never.error) == ("timeout", "server", "missing", "missing")
    assert "expired" in (expired.error_message or "") and "cancelled" in (cancelled.error_message or "")
    assert "api_error: Internal server error" in (errored.error_message or "")
    assert "no answer" in (never.error_message or "")  # never in the batch: its results do not name it
    rest = sorted(c.error or "ok" for c in done.values() if c.key not in outcomes and c is not never)
    assert rest.count("bad_request") == 1 and rest.count("refused") == 1 and rest.count("ok") == len(rest) - 2
    assert all(c.is_infra_error == (c.error not in (None, "refused")) for c in done.values())
    assert all(c.route == "batch" and KEY not in c.model_dump_json() for c in done.values())


def test_status_follows_the_batch_and_results_wait_for_its_end(server: AnthropicServer) -> None:
    adapter = _adapter(server)
    requests = _requests(adapter, tasks=("dd",))
    n = len(requests)
    server.batch_polls = 3  # it ends at its third retrieve
    batch_id = _submit(server, requests, "run-1/0")
    running = _status(server, batch_id)
    with pytest.raises(AdapterError, match="has not ended") as early:
        _results(server, batch_id, requests)
    assert early.value.retryable is True
    ended = _status(server, batch_id)
    assert [(s.state, s.done, s.total) for s in (running, ended)] == [("in_progress", 0, n), ("ended", n, n)]
    assert ended.detail is None and all(c.error is None for c in _results(server, batch_id, requests))


def test_a_cancelled_batch_ends_its_requests_cancelled_and_archived_results_are_expired(
    server: AnthropicServer,
) -> None:
    adapter = _adapter(server)
    requests = _requests(adapter, tasks=("dd",))
    server.batch_polls = 5
    batch_id = _submit(server, requests, "run-1/0")
    _with(server, lambda a: a._client.messages.batches.cancel(batch_id))
    ended = _status(server, batch_id)
    assert (ended.state, ended.detail) == ("ended", f"{len(requests)} canceled")
    assert all(c.error == "missing" and c.is_infra_error for c in _results(server, batch_id, requests))
    server.archive(batch_id)
    assert _status(server, batch_id).state == "expired"
    gone = _results(server, batch_id, requests)
    assert all(c.error == "missing" and "no longer available" in (c.error_message or "") for c in gone)


def test_faults_at_the_batch_endpoints_are_classified_for_a_retry(server: AnthropicServer) -> None:
    adapter = _adapter(server)
    requests = _requests(adapter, tasks=("dd",))
    batch_id = _submit(server, requests, "run-1/0")
    server.batch_faults += [BatchFault("retrieve", "rate_limit"), BatchFault("retrieve", "overloaded", after=1)]
    server.batch_faults.append(BatchFault("results", "server_error"))

    def attempt(work: Callable[[AnthropicAdapter], Awaitable[Any]]) -> str:
        try:
            done = _with(server, work)
        except AdapterError as exc:
            return f"{exc.kind} {'retryable' if exc.retryable else 'final'}"
        return done.state if isinstance(done, BatchStatus) else f"{len(done)} results"

    seen = [attempt(lambda a: a.batch_status(batch_id)) for _ in range(4)]
    seen += [attempt(lambda a: a.batch_results(batch_id, {r.key: r for r in requests})) for _ in range(2)]
    assert seen == [
        "rate_limit retryable",
        "ended",
        "server retryable",  # 529 overloaded
        "ended",
        "server retryable",  # the results' 500
        f"{len(requests)} results",
    ]
    server.batch_faults.append(BatchFault("create", "server_error"))  # the marker's create: nothing is made
    before = len(server.batches)
    with pytest.raises(AdapterError) as failed:
        _submit(server, requests, "run-1/1")
    assert (failed.value.kind, failed.value.retryable, len(server.batches)) == ("server", True, before)


# -- finding a batch again ---------------------------------------------------------------------------------


def test_find_batch_recovers_a_batch_created_but_never_recorded(server: AnthropicServer) -> None:
    adapter = _adapter(server)
    requests = _requests(adapter, tasks=("dd",))
    for label in ("other-run/0", "other-run/1"):  # other batches of the workspace, of the same size
        _submit(server, requests, label)
    server.batch_polls = 1000  # ours is still running when the next run looks
    lost = _submit(server, requests, "run-1/0")  # the run was killed before it wrote this id down
    server.batch_polls = 0
    for n in range(60):  # and more batches made since: more than one page of the list
        _submit(server, requests[: 1 + n % 2], f"later/{n}")
    assert _find(server, "run-1/0") == lost
    assert _find(server, "run-1/1") is None  # a label never submitted
    assert _find(server, "other-run/1") == _real_batches(server)[1]  # an ended batch: told by its results' tags
    assert sum(1 for call in server.batch_calls if call[0] == "list") >= 6  # page after page, each time


def test_a_create_whose_reply_was_lost_is_found_instead_of_made_again(server: AnthropicServer) -> None:
    adapter = _adapter(server)
    requests = _requests(adapter, tasks=("dd", "ll"))
    server.batch_faults.append(BatchFault("create", "lost_reply", after=1))  # the batch's create, not the marker's
    batch_id = _submit(server, requests, "run-1/0")
    assert _real_batches(server) == [batch_id]  # made once, and its id came back all the same
    assert _find(server, "run-1/0") == batch_id


def test_a_run_killed_between_the_marker_and_the_batch_submits_it_once(server: AnthropicServer) -> None:
    adapter = _adapter(server)
    requests = _requests(adapter, tasks=("dd",))
    server.batch_faults.append(BatchFault("create", "drop", after=1))  # the batch's create never arrives
    with pytest.raises(AdapterError) as failed:
        _submit(server, requests, "run-1/0")
    assert failed.value.kind == "connection" and _real_batches(server) == []
    assert _find(server, "run-1/0") is None  # the marker is there and the batch is not: the run submits it
    batch_id = _submit(server, requests, "run-1/0")
    assert _find(server, "run-1/0") == batch_id and _real_batches(server) == [batch_id]


def test_a_marker_still_running_is_waited_for(server: AnthropicServer) -> None:
    adapter = _adapter(server)
    requests = _requests(adapter, tasks=("dd",))
    server.batch_polls = 4
    server.batch_faults.append(BatchFault("cancel", "drop"))  # as if killed before the marker was cancelled
    batch_id = _submit(server, requests, "run-1/0")
    assert _find(server, "run-1/0") == batch_id  # the marker answered its one request, and was read
    server.batch_faults.append(BatchFault("cancel", "drop"))
    _submit(server, requests, "run-1/1")
    with pytest.raises(AdapterError, match="still running") as waiting:
        _find(server, "run-1/1", marker_wait_s=0.0)
    assert waiting.value.retryable


def test_running_batches_that_cannot_be_told_apart_are_waited_for_never_resubmitted(server: AnthropicServer) -> None:
    adapter = _adapter(server)
    requests = _requests(adapter, tasks=("dd",))
    assert len(requests) > 1
    server.batch_polls = 3
    first = _submit(server, requests, "run-1/0")
    second = _submit(server, requests, "run-2/0")  # of the same size, made after the first one's marker
    assert _find(server, "run-2/0") == second  # the only candidate after its own marker
    with pytest.raises(AdapterError, match="cannot be told until they end") as undecided:
        _find(server, "run-1/0")
    assert undecided.value.retryable
    for _ in range(3):
        _status(server, first), _status(server, second)
    assert _find(server, "run-1/0") == first and _find(server, "run-2/0") == second  # ended: told by their tags


def test_batches_older_than_their_results_are_not_read(server: AnthropicServer) -> None:
    adapter = _adapter(server)
    _submit(server, _requests(adapter, tasks=("dd",)), "run-1/0")
    for batch in server.batches.values():
        batch.created_at -= 30 * 24 * 3600
    calls = len(server.batch_calls)
    assert _find(server, "run-1/0") is None
    assert [endpoint for endpoint, _ in server.batch_calls[calls:]] == ["list"]


# -- limits ------------------------------------------------------------------------------------------------


@pytest.mark.slow  # 256 MB through the SDK and the stand-in: ~15 s
def test_a_batch_at_the_limits_fits_anthropics_and_one_byte_more_is_never_sent(server: AnthropicServer) -> None:
    assert (BATCH_LIMITS.max_requests, API_MAX_BYTES) == (100_000, 256_000_000)  # Anthropic's published limits
    adapter = _adapter(server)
    request = _requests(adapter, tasks=("ll",))[0]
    base = adapter.batch_item(
        dataclasses.replace(request, prompt=dataclasses.replace(request.prompt, parts=(TextPart("x"),)))
    )
    # As many requests as a batch may hold, filling the byte limit to its last byte: the body still fits.
    n = BATCH_LIMITS.max_requests
    size, extra = divmod(BATCH_LIMITS.max_bytes, n)
    items = [
        base.replace(request.key.encode(), f"{i:032x}".encode()).replace(
            b'"text":"x"', b'"text":"' + b"x" * (1 + size - len(base) + (i < extra)) + b'"'
        )
        for i in range(n)
    ]
    assert len(items) == n and sum(map(len, items)) == BATCH_LIMITS.max_bytes
    server.batch_polls = 1000  # never answered: only the create is under test
    batch_id = _with(server, lambda a: a.submit_batch(items, "full/0"))
    assert server.batches[batch_id].body_bytes == wire_bytes(items) <= API_MAX_BYTES == server.max_batch_bytes
    before = len(server.batches)
    with pytest.raises(ValueError, match="do not fit"):
        _with(server, lambda a: a.submit_batch([*items[:-1], items[-1] + b" "], "full/1"))
    with pytest.raises(ValueError, match="do not fit"):
        _with(server, lambda a: a.submit_batch([*items, items[0]], "full/2"))
    assert len(server.batches) == before  # nothing sent
