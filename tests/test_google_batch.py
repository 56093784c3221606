"""The Gemini API's batch mode (model_adapters/google_batch.py) through the real ``google-genai`` SDK against the
Gemini stand-in (tests/google_server.py): items are the live requests, answers are the live answers, failures
are infra errors, a batch whose id was lost is found again, and files stay within the limits."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import math
import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from google.genai import _api_client
from google_server import GoogleServer, StandInJob, sent_images
from openai_server import varied_answer
from wire_checks import case_images, dispatch, request_for, sha
from wire_server import Fault, FaultKind

from model_adapters.google import GoogleAdapter
from model_adapters.google_batch import MAX_FILE_BYTES, GoogleBatchAdapter, JsonlItems
from u2eval.errors import AdapterError
from u2eval.models.protocol import AdapterOptions, BatchStatus, ModelRequest, SupportsBatch
from u2eval.models.registry import create_adapter, resolve_model
from u2eval.records import INFRA_ERROR_KINDS, Completion, Prompt, TextPart
from u2eval.run.pacing import DispatchOptions
from u2eval.run.runner import RunOptions, run

KEY = "AIzaSy-u2eval-TEST-KEY-do-not-log-0123456789"
TASKS = ("dd", "ll")
TRANSPORTS = ["httpx2"] + (["aiohttp"] if importlib.util.find_spec("aiohttp") else [])
T = TypeVar("T")
OUTCOMES: tuple[FaultKind, ...] = ("refusal", "refusal_finish", "empty")  # the model's, the same either way


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[GoogleServer]:
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    for name in ("GOOGLE_API_KEY", "GOOGLE_GEMINI_BASE_URL", "GOOGLE_GENAI_USE_VERTEXAI", "GOOGLE_GENAI_API_VERSION"):
        monkeypatch.delenv(name, raising=False)
    stand_in = GoogleServer(KEY, hang_s=2.0)
    stand_in.answer = lambda body: "answer-" + "".join(sha(data)[:12] for _, data in sent_images(body))  # its own
    with stand_in.running():
        yield stand_in


def _requests() -> list[ModelRequest]:
    return [request_for(case_id) for case_id in case_images(TASKS, 1)]


def _with(adapter: GoogleBatchAdapter, call: Callable[[GoogleBatchAdapter], Awaitable[T]]) -> T:
    async def go() -> T:
        try:
            return await call(adapter)
        finally:
            await adapter.aclose()

    return asyncio.run(go())


def _batch(server: GoogleServer, **extra: Any) -> GoogleBatchAdapter:
    return GoogleBatchAdapter("gemini-test", AdapterOptions(base_url=server.url, extra=extra, timeout_s=1.0))


async def _through(adapter: GoogleBatchAdapter, requests: list[ModelRequest], label: str = "u2eval-test") -> Any:
    """Submit, poll until it ends, collect: (the statuses seen, the Completions by key)."""
    batch_id = await adapter.submit_batch([adapter.batch_item(r) for r in requests], label)
    seen: list[BatchStatus] = [await adapter.batch_status(batch_id)]
    while seen[-1].state == "in_progress":
        seen.append(await adapter.batch_status(batch_id))
    done = await adapter.batch_results(batch_id, {r.key: r for r in requests})
    return seen, {c.key: c for c in done}


def _live(server: GoogleServer, requests: list[ModelRequest], **extra: Any) -> dict[str, Completion]:
    adapter = GoogleAdapter("gemini-test", AdapterOptions(base_url=server.url, extra=extra))
    done = dispatch(adapter, requests, DispatchOptions(max_attempts=1, concurrency=1))  # in order, as a batch goes
    return {c.key: c for c in done}


def test_the_google_adapter_has_batch_mode_within_googles_limits(server: GoogleServer) -> None:
    adapter = create_adapter(resolve_model("google/gemini-test"), AdapterOptions(base_url=server.url))
    assert isinstance(adapter, SupportsBatch) and isinstance(adapter, GoogleBatchAdapter)
    assert adapter.batch_limits.max_bytes == MAX_FILE_BYTES == 2_000_000_000  # "an input file is 2GB" at most
    asyncio.run(adapter.aclose())


def test_an_item_is_the_live_request_byte_for_byte(server: GoogleServer) -> None:
    extra = {"thinking_budget": 128, "image_budget": {"max_long_edge": 100, "max_bytes": 14_000_000}}
    one = request_for(next(iter(case_images(("ll",), 1))))
    system = Prompt(one.case.case_id, "You are a sonographer.", (*one.prompt.parts, TextPart("Sure?")), "t", "")
    requests = [*_requests(), ModelRequest("key-system", one.case, system)]
    adapter = _batch(server, **extra)
    items = [adapter.batch_item(r) for r in requests]
    asyncio.run(adapter.aclose())
    _live(server, requests, **extra)
    bodies = [r.body for r in server.image_requests()]  # as the SDK sent them, in order (one at a time)
    assert len(bodies) == len(items) and "systemInstruction" in bodies[-1]
    assert "thinking" in json.dumps(bodies[0]["generationConfig"]).lower()  # spelled as the SDK spells it
    for item, request, body in zip(items, requests, bodies, strict=True):
        assert item == json.dumps({"key": request.key, "request": body}).encode()  # the SDK's json.dumps
        assert b"\n" not in item


def test_batch_answers_are_the_live_answers(server: GoogleServer) -> None:
    requests = _requests()
    for kind in OUTCOMES:
        server.add_fault(Fault(kind))
    live = _live(server, requests)
    live_bodies = [r.body for r in server.image_requests()]
    for kind in OUTCOMES:
        server.add_fault(Fault(kind))
    seen, batch = _with(_batch(server), lambda a: _through(a, requests))
    assert [s.state for s in seen] == ["ended"]  # the stand-in ends a job at the first poll
    assert [r.body for r in server.batch_requests] == live_bodies  # the provider was asked the same
    assert list(batch) == [r.key for r in requests]
    for key, answer in batch.items():
        assert answer.route == "batch" and answer.latency_s == 0.0
        assert answer.model_copy(update={"route": None, "latency_s": live[key].latency_s}) == live[key]
    texts = {c.text for c in batch.values() if c.error is None}
    assert len(texts) == len(requests) - 3 and all(t and t.startswith("answer-") for t in texts)
    assert sorted(c.error for c in batch.values() if c.error) == ["empty", "refused", "refused"]
    # billed as the live call is (equal above): an image's 258 tokens and the text's
    assert all(c.usage is not None and (c.usage.input_tokens or 0) > 258 for c in batch.values())


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_failed_items_are_infra_errors_never_scored(
    server: GoogleServer, transport: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_api_client, "has_aiohttp", transport == "aiohttp")  # every call, either HTTP stack
    requests = _requests()
    assert len(requests) >= 6
    failures: tuple[FaultKind, ...] = ("server_error", "rate_limit", "bad_request", "drop", "malformed")
    for kind in failures:
        server.add_fault(Fault(kind))
    _, batch = _with(_batch(server), lambda a: _through(a, requests))
    outcome = [(c.error, c.is_infra_error) for c in batch.values()]
    assert outcome[:5] == [
        ("server", True),
        ("rate_limit", True),
        ("bad_request", True),
        ("missing", True),  # no line for it
        ("missing", True),  # a line cut short: its key cannot be read
    ]
    assert all(error is None for error, _ in outcome[5:])
    assert all(c.error in INFRA_ERROR_KINDS and c.text is None for c in list(batch.values())[:5])
    messages = [c.error_message or "" for c in batch.values()]
    assert messages[0].startswith("batch item: HTTP 500 INTERNAL") and "1 unreadable lines" in messages[4]
    assert all(KEY not in m for m in messages)


@pytest.mark.parametrize(
    ("outcome", "state", "kind"),
    [("failed", "failed", "server"), ("expired", "expired", "timeout"), ("cancelled", "cancelled", "missing")],
)
def test_a_batch_that_fails_expires_or_is_cancelled_answers_nothing(
    server: GoogleServer, outcome: str, state: str, kind: str
) -> None:
    server.batch_outcomes = [outcome]
    requests = _requests()[:3]
    seen, batch = _with(_batch(server), lambda a: _through(a, requests))
    assert [s.state for s in seen] == [state] and f"JOB_STATE_{outcome.upper()}" in (seen[0].detail or "")
    assert [(c.error, c.is_infra_error, c.route) for c in batch.values()] == [(kind, True, "batch")] * 3
    assert server.batch_requests == []  # nothing was answered


def test_a_batch_cancelled_through_the_sdk_while_it_runs_is_cancelled(server: GoogleServer) -> None:
    server.batch_polls = 5
    requests = _requests()[:2]

    async def cancel(adapter: GoogleBatchAdapter) -> Any:
        batch_id = await adapter.submit_batch([adapter.batch_item(r) for r in requests], "u2eval-cancel")
        running = await adapter.batch_status(batch_id)
        await adapter._batches().aio.batches.cancel(name=batch_id)  # POST /v1beta/batches/{id}:cancel
        status = await adapter.batch_status(batch_id)
        return running, status, await adapter.batch_results(batch_id, {r.key: r for r in requests})

    running, status, done = _with(_batch(server), cancel)
    assert (running.state, status.state) == ("in_progress", "cancelled") and "cancel" in server.batch_calls
    assert [(c.error, c.error_message) for c in done] == [("missing", "the batch was cancelled")] * 2


def test_a_job_runs_for_some_polls_and_cannot_be_collected_before_it_ends(server: GoogleServer) -> None:
    server.batch_polls = 2
    requests = _requests()[:2]

    async def early(adapter: GoogleBatchAdapter) -> Any:
        batch_id = await adapter.submit_batch([adapter.batch_item(r) for r in requests], "u2eval-early")
        with pytest.raises(AdapterError, match="nothing to collect yet"):
            await adapter.batch_results(batch_id, {r.key: r for r in requests})
        return await _through(adapter, requests, "u2eval-late")

    seen, batch = _with(_batch(server), early)
    assert [s.state for s in seen] == ["in_progress", "in_progress", "ended"]
    assert all(c.error is None for c in batch.values())


def test_find_batch_recovers_a_batch_whose_id_was_never_heard(server: GoogleServer) -> None:
    requests = _requests()[:2]
    server.fail("create", Fault("drop"))  # the batch is made, but its answer never comes back

    async def lost(adapter: GoogleBatchAdapter) -> Any:
        items = [adapter.batch_item(r) for r in requests]
        with pytest.raises(AdapterError) as timed_out:
            await adapter.submit_batch(items, "u2eval-lost")
        assert (timed_out.value.kind, timed_out.value.retryable) == ("connection", True)
        for n in range(150):  # newer batches of others: ours is on the second page of the list
            job = StandInJob(f"batches/other{n}", "gemini-test", f"other-{n}", "files/x", "succeeded", 0, 1)
            server.jobs[f"other{n}"] = job
        found = await adapter.find_batch("u2eval-lost")
        return found, await adapter.find_batch("u2eval-never"), await adapter.batch_status(found or "")

    found, never, status = _with(_batch(server), lost)
    assert server.batch_calls.count("create") == 1 and server.batch_calls.count("list") >= 2  # paged
    assert found is not None and found.startswith("batches/") and never is None and status.state == "ended"
    assert [j.display_name for j in server.jobs.values() if not j.name.startswith("batches/other")] == ["u2eval-lost"]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_the_uploaded_file_is_the_items_and_their_newlines_in_chunks(
    server: GoogleServer, transport: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_api_client, "has_aiohttp", transport == "aiohttp")  # the SDK's own switch
    monkeypatch.setattr(_api_client, "CHUNK_SIZE", 100_000)  # several chunks, as a large file goes
    requests = _requests()
    adapter = _batch(server)
    items = [adapter.batch_item(r) for r in requests]
    _with(adapter, lambda a: a.submit_batch(items, "u2eval-chunks"))
    (uploaded,) = [f for f in server.files.values() if not f.generated]
    assert bytes(uploaded.data) == b"".join(item + b"\n" for item in items)
    assert uploaded.mime_type == "jsonl" and uploaded.size == sum(len(item) + 1 for item in items)
    assert server.batch_calls.count("upload_chunk") == math.ceil(uploaded.size / 100_000) > 1


def test_the_byte_limit_is_the_file_size_and_a_file_over_it_is_refused(server: GoogleServer) -> None:
    requests = _requests()
    adapter = _batch(server)
    items = [adapter.batch_item(r) for r in requests]
    size = sum(len(item) + 1 for item in items)  # what u2eval.run.batch counts against max_bytes
    server.max_file_bytes = size

    async def both(adapter: GoogleBatchAdapter) -> str:
        with pytest.raises(AdapterError) as refused:
            await adapter.submit_batch([*items, items[0]], "u2eval-over")  # one item more than fits
        assert (refused.value.kind, refused.value.retryable) == ("bad_request", False)
        return await adapter.submit_batch(items, "u2eval-fits")  # exactly the limit

    assert _with(adapter, both).startswith("batches/")
    # A case of the bundled sample is a few hundred kilobytes as a line: a 2 GB file holds thousands of them.
    assert MAX_FILE_BYTES // max(len(item) + 1 for item in items) > 1000


def test_a_seekable_stream_of_lines_reads_like_the_joined_file() -> None:
    items = [b"a" * 5, b"", b"bc", b"d" * 11]
    joined = b"".join(item + b"\n" for item in items)
    stream = JsonlItems(items)
    assert stream.seek(0, 2) == len(joined) and stream.seek(0) == 0
    assert b"".join(iter(lambda: stream.read(3), b"")) == joined
    for position in range(len(joined) + 1):
        stream.seek(position)
        assert stream.read() == joined[position:]


# -- u2eval run --batch (u2eval/run/batch.py) on the bundled sample ------------------------------------------


def _varied(body: dict[str, Any]) -> str:
    """A mix of answers every parser outcome can come from, fixed by the image (text alone: the preflight)."""
    images = sent_images(body)
    return varied_answer(sha(images[0][1])) if images else "OK"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GEMINI_API_KEY": KEY, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "u2eval", *args], capture_output=True, text=True, timeout=300, env=env)


def _latest(folder: Path) -> dict[str, Completion]:
    lines = (folder / "responses.jsonl").read_text(encoding="utf-8").splitlines()
    return {c.key: c for c in (Completion.model_validate_json(line) for line in lines if line.strip())}


def test_u2eval_run_batch_wait_scores_the_sample_as_a_live_run_byte_for_byte(
    server: GoogleServer, tmp_path: Path
) -> None:
    server.answer = _varied
    args = ["run", "--model", "google/gemini-test", "--base-url", server.url, "--limit", "1"]
    live = _cli(*args, "--out", str(tmp_path / "live"))
    assert live.returncode == 0, live.stderr
    server.batch_polls = 2
    batch = _cli(*args, "--out", str(tmp_path / "batch"), "--batch", "--wait", "--poll-interval", "0")
    assert batch.returncode == 0, batch.stderr
    for name in ("summary.json", "summary.md", "judgements.jsonl", "cases.jsonl"):
        assert (tmp_path / "batch" / name).read_bytes() == (tmp_path / "live" / name).read_bytes(), name
    judged = (tmp_path / "live" / "judgements.jsonl").read_text(encoding="utf-8").splitlines()
    assert {json.loads(line)["outcome"] for line in judged} >= {"ok", "unparseable"}  # not all one outcome
    assert server.batch_calls.count("create") == 1 and server.batch_calls.count("get") >= 3
    asked = [json.dumps(r.body) for r in server.image_requests()]
    assert sorted(json.dumps(r.body) for r in server.batch_requests) == sorted(asked) and len(asked) > 20
    stored = _latest(tmp_path / "batch")
    assert {c.route for c in stored.values()} == {"batch"} and all(c.usage for c in stored.values())
    again = _cli(*args, "--out", str(tmp_path / "batch"), "--batch", "--wait", "--poll-interval", "0")
    assert again.returncode == 0 and server.batch_calls.count("create") == 1  # finished: nothing asked again


def test_the_byte_limit_splits_a_run_into_files_the_api_accepts(
    server: GoogleServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.answer = _varied
    options = {"model": "google/gemini-test", "base_url": server.url, "limit": 1, "tasks": TASKS}
    live = run(RunOptions(**options, out=tmp_path / "live"))
    adapter = _batch(server)
    sizes = [len(adapter.batch_item(r)) + 1 for r in _requests()]  # a line and its newline
    asyncio.run(adapter.aclose())
    limit = server.max_file_bytes = 4 * max(sizes)  # the stand-in refuses any file larger
    monkeypatch.setattr("model_adapters.google_batch.MAX_FILE_BYTES", limit)
    run(RunOptions(**options, out=tmp_path / "batch", batch=True, wait=True, poll_interval_s=0.0))
    inputs = [server.files[job.input_file[6:]].data for job in server.jobs.values()]  # in the order made
    assert len(inputs) >= math.ceil(sum(sizes) / limit) > 1 and all(len(data) <= limit for data in inputs)
    for full, following in zip(inputs, inputs[1:], strict=False):  # each file as full as the next line allows
        assert len(full) + len(following.splitlines()[0]) + 1 > limit
    assert sum(len(data.splitlines()) for data in inputs) == live.requested  # each request once
    assert (tmp_path / "batch" / "summary.json").read_bytes() == (tmp_path / "live" / "summary.json").read_bytes()


# A `u2eval run` that SIGKILLs itself at the first batches.jsonl line of one kind, before or after writing it.
_KILLER = r"""
import os, signal, sys
from u2eval.run.folder import RunFolder

when, event = os.environ["KILL_AT"].split(":")
record = RunFolder.record_batch

def recorded(self, line):
    if line.event == event and when == "before":
        os.kill(os.getpid(), signal.SIGKILL)
    record(self, line)
    if line.event == event:
        os.kill(os.getpid(), signal.SIGKILL)

RunFolder.record_batch = recorded
from u2eval.cli.app import main
sys.argv = ["u2eval", *sys.argv[1:]]
main()
"""


@pytest.mark.parametrize(
    ("kill_at", "made"),
    [("after:submitting", 0), ("before:submitted", 1)],  # announced, never asked; made, its id never recorded
)
def test_a_run_killed_around_the_create_submits_nothing_twice(
    server: GoogleServer, tmp_path: Path, kill_at: str, made: int
) -> None:
    server.answer = _varied
    args = ["run", "--model", "google/gemini-test", "--base-url", server.url, "--limit", "1", "--tasks", "dd,ll"]
    live = _cli(*args, "--out", str(tmp_path / "live"))
    assert live.returncode == 0, live.stderr
    asked = len(server.image_requests())
    args += ["--out", str(tmp_path / "r"), "--batch", "--wait", "--poll-interval", "0"]
    args += ["--batch-size", str(math.ceil(asked / 2))]
    env = {**os.environ, "GEMINI_API_KEY": KEY, "KILL_AT": kill_at}
    killed = subprocess.run([sys.executable, "-c", _KILLER, *args], capture_output=True, text=True, env=env)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert server.batch_calls.count("create") == made
    done = _cli(*args)
    assert done.returncode == 0, done.stderr[-2000:]
    assert server.batch_calls.count("create") == 2  # two batches in all, whenever the kill came
    files = [server.files[job.input_file[6:]].data for job in server.jobs.values()]
    keys = [json.loads(line)["key"] for data in files for line in data.splitlines()]
    assert len(keys) == len(set(keys)) == asked  # no request in two batches
    assert (tmp_path / "r" / "summary.json").read_bytes() == (tmp_path / "live" / "summary.json").read_bytes()
