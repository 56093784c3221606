"""``u2eval run --batch`` (u2eval/run/batch.py) with Claude: the bundled sample through Anthropic's Message Batches
API (the stand-in, tests/anthropic_server.py, driven by the real SDK) scores as a live run does, byte for byte;
Anthropic's byte limit, made small, splits a run into batches the API accepts."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from anthropic_server import AnthropicServer, sent_images
from openai_server import varied_answer
from wire_checks import completions, sha

from model_adapters import anthropic_batch
from model_adapters.anthropic_batch import compact, key_of
from u2eval.models.protocol import BatchLimits
from u2eval.run.folder import RunFolder
from u2eval.run.records import BatchEvent
from u2eval.run.runner import RunOptions, run

KEY = "sk-ant-api03-u2eval-BATCH-KEY-do-not-log-0123456789"
MESSAGES = "/v1/messages"


def _varied(body: dict[str, Any]) -> str:
    """A mix of answers every parser outcome can come from, fixed by the image (text alone: preflight, marker)."""
    images = sent_images(body)
    return varied_answer(sha(images[0][1])) if images else "OK"


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[AnthropicServer]:
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    for name in ("ANTHROPIC_BASE_URL", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_PROFILE", "ANTHROPIC_CUSTOM_HEADERS"):
        monkeypatch.delenv(name, raising=False)
    stand_in = AnthropicServer(KEY)
    stand_in.answer = _varied
    with stand_in.running():
        yield stand_in


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ANTHROPIC_API_KEY": KEY, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "u2eval", *args], capture_output=True, text=True, timeout=300, env=env)


def _batched(server: AnthropicServer) -> list[list[dict[str, Any]]]:
    """The requests of each batch the run made (markers left out), in the order the batches were made."""
    made = [b.requests for b in server.batches.values()]
    return [requests for requests in made if not requests[0]["custom_id"].startswith("u2evalmark-")]


def test_u2eval_run_batch_wait_scores_the_sample_as_a_live_run_byte_for_byte(
    server: AnthropicServer, tmp_path: Path
) -> None:
    args = ["run", "--model", "anthropic/claude-test", "--base-url", server.url, "--limit", "1"]
    live = _cli(*args, "--out", str(tmp_path / "live"))
    assert live.returncode == 0, live.stderr
    asked_live = sorted(compact(r.body) for r in server.image_requests() if r.path == MESSAGES)
    server.batch_polls = 2
    batch = _cli(*args, "--out", str(tmp_path / "batch"), "--batch", "--wait", "--poll-interval", "0")
    assert batch.returncode == 0, batch.stderr
    for name in ("summary.json", "summary.md", "judgements.jsonl", "cases.jsonl"):
        assert (tmp_path / "batch" / name).read_bytes() == (tmp_path / "live" / name).read_bytes(), name
    outcomes = {j.split('"outcome":')[1].split(",")[0] for j in (tmp_path / "live" / "judgements.jsonl").open()}
    assert {'"ok"', '"unparseable"'} <= outcomes  # not all one outcome
    (made,) = _batched(server)  # one batch: the sample is far below Anthropic's limits
    assert sorted(compact(r["params"]) for r in made) == asked_live and len(asked_live) > 20  # the live bytes
    assert len([r for r in server.requests if r.path == MESSAGES and sent_images(r.body)]) == len(asked_live)
    stored = completions(tmp_path / "batch")
    assert {c.route for c in stored.values()} == {"batch"} and all(c.usage for c in stored.values())
    calls = len(server.batch_calls)
    again = _cli(*args, "--out", str(tmp_path / "batch"), "--batch", "--wait", "--poll-interval", "0")
    assert again.returncode == 0 and len(_batched(server)) == 1  # finished: nothing asked again
    assert [c for c in server.batch_calls[calls:] if c[0] == "create"] == []


class Killed(BaseException):
    """What a kill does to a run: it stops where it is (a BaseException, so nothing catches it on the way)."""


def test_a_run_killed_before_it_recorded_its_batch_id_collects_that_batch(
    server: AnthropicServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    options: dict[str, Any] = {"model": "anthropic/claude-test", "base_url": server.url, "limit": 1}
    options["tasks"] = ("dd", "ll")
    run(RunOptions(**options, out=tmp_path / "live"))
    record = RunFolder.record_batch

    def killed_when_the_id_comes(folder: RunFolder, event: BatchEvent) -> None:
        if event.event == "submitted":
            raise Killed
        record(folder, event)

    monkeypatch.setattr(RunFolder, "record_batch", killed_when_the_id_comes)
    server.batch_polls = 3  # still running when the next run looks for it
    with pytest.raises(Killed):
        run(RunOptions(**options, out=tmp_path / "batch", batch=True, wait=True, poll_interval_s=0.0))
    monkeypatch.setattr(RunFolder, "record_batch", record)
    (made,) = _batched(server)
    again = run(RunOptions(**options, out=tmp_path / "batch", batch=True, wait=True, poll_interval_s=0.0))
    assert _batched(server) == [made]  # found by its label, collected, never made again
    events = [line.split('"event":"')[1].split('"')[0] for line in (tmp_path / "batch" / "batches.jsonl").open()]
    assert events == ["submitting", "submitted", "collected"]
    assert again.infra_errors == 0
    assert (tmp_path / "batch" / "summary.json").read_bytes() == (tmp_path / "live" / "summary.json").read_bytes()


def test_the_byte_limit_splits_a_run_into_batches_the_api_accepts(
    server: AnthropicServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    options: dict[str, Any] = {"model": "anthropic/claude-test", "base_url": server.url, "limit": 1}
    options["tasks"] = ("dd", "ll", "rg")
    live = run(RunOptions(**options, out=tmp_path / "live"))

    def item_bytes(custom_id: str, params: dict[str, Any]) -> int:  # an item and its newline, as the run counts
        return len(compact({"custom_id": custom_id, "params": params})) + 1

    largest = max(item_bytes("0" * 32, r.body) for r in server.image_requests())
    limit = 4 * largest
    monkeypatch.setattr(anthropic_batch, "BATCH_LIMITS", BatchLimits(100_000, limit))
    run(RunOptions(**options, out=tmp_path / "batch", batch=True, wait=True, poll_interval_s=0.0))
    chunks = [[item_bytes(key_of(r["custom_id"]), r["params"]) for r in made] for made in _batched(server)]
    assert len(chunks) > 2 and all(sum(chunk) <= limit for chunk in chunks)
    for full, following in zip(chunks, chunks[1:], strict=False):  # each batch as full as the next item allows
        assert sum(full) + following[0] > limit
    assert sum(map(len, chunks)) == live.requested  # each request once
    assert (tmp_path / "batch" / "summary.json").read_bytes() == (tmp_path / "live" / "summary.json").read_bytes()
