"""``u2eval run --batch`` through the real ``openai`` SDK against the OpenAI stand-in's Files and Batches API
(tests/openai_batches.py): the scores equal a live run's, the batch file holds the live bodies byte for byte,
a run killed (SIGKILL) at each step of submit and collect loses nothing and submits nothing twice, failed and
expired items are infra errors that the next run asks again (and only those), batch and live answers mix, the
byte limit splits a run into several batches."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openai_batches import BatchFate
from openai_server import Fault, OpenAIServer

from u2eval.models.protocol import BatchLimits
from u2eval.records import Completion
from u2eval.run.batch import BatchesInProgress
from u2eval.run.batch_ledger import submissions
from u2eval.run.folder import RunFolder
from u2eval.run.records import BatchEvent
from u2eval.run.runner import RunOptions, RunResult, run

KEY = "sk-batch-0123456789abcdefSECRET"
MODEL = "gpt-4o-2024-08-06"  # no preset: no price, so a summary holds no cost (batch answers cost half)


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[OpenAIServer]:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    started = OpenAIServer(api_key=KEY, models=(MODEL,)).start()
    started.answers = "varied"  # answers fixed per image, so the scores are not all one number
    yield started
    started.stop()


def _options(server: OpenAIServer, out: Path, **more: Any) -> RunOptions:
    fields: dict[str, Any] = {"model": f"openai/{MODEL}", "base_url": server.url, "out": out, "limit": 1}
    return RunOptions(**(fields | more))


def _batch(server: OpenAIServer, out: Path, **more: Any) -> RunResult:
    return run(_options(server, out, batch=True, wait=True, poll_interval_s=0.0, **more))


def _latest(folder: Path) -> dict[str, Completion]:
    """key -> the latest stored line."""
    lines = (folder / "responses.jsonl").read_text(encoding="utf-8").splitlines()
    return {c.key: c for c in (Completion.model_validate_json(line) for line in lines if line.strip())}


def _answered_twice(folder: Path) -> list[str]:
    """Keys stored with an answer (not an infra error) more than once."""
    lines = (folder / "responses.jsonl").read_text(encoding="utf-8").splitlines()
    counts = Counter(c.key for c in map(Completion.model_validate_json, lines) if not c.is_infra_error)
    return [key for key, n in counts.items() if n > 1]


def _keys(folder: Path) -> list[str]:
    """The run's request keys, case by case (from the case list a run with batches open has not finished yet)."""
    path = folder / "cases.jsonl"
    path = path if path.is_file() else folder / "cases.jsonl.part"
    return [json.loads(line)["key"] for line in path.read_text(encoding="utf-8").splitlines()]


def _body(line: bytes) -> bytes:
    """The body's bytes inside a batch line (``{"custom_id":...,"body":<body>}``)."""
    return line[line.index(b',"body":') + len(b',"body":') : -1]


# -- the same scores, the same bytes --------------------------------------------------------------------------


def test_a_batch_run_scores_as_a_live_run_and_sends_the_live_bodies(server: OpenAIServer, tmp_path: Path) -> None:
    live = run(_options(server, tmp_path / "live"))
    live_bodies = sorted(r.raw for r in server.case_requests())
    assert live.requested == len(live_bodies) > 20

    batch = _batch(server, tmp_path / "batch")
    assert server.batch_api.created == 1
    assert batch.requested == live.requested
    for name in ("summary.json", "summary.md", "judgements.jsonl", "cases.jsonl"):
        assert (tmp_path / "batch" / name).read_bytes() == (tmp_path / "live" / name).read_bytes(), name
    lines = server.batch_api.input_lines()
    assert sorted(_body(line) for line in lines) == live_bodies  # byte for byte
    assert [json.loads(line)["custom_id"] for line in lines] == list(dict.fromkeys(_keys(tmp_path / "batch")))
    stored = _latest(tmp_path / "batch")
    assert {c.route for c in stored.values()} == {"batch"}
    assert all(c.usage is not None and c.usage.input_tokens for c in stored.values())  # read as a live answer
    assert {k: v for k, v in batch.manifest.dispatch.items() if k.startswith("answers.")} == {
        "answers.batch": batch.manifest.n_cases,
        "answers.live": 0,
    }
    assert live.manifest.dispatch["answers.live"] == live.manifest.n_cases
    # Nothing is asked again: the run is finished.
    again = _batch(server, tmp_path / "batch")
    assert (again.requested, server.batch_api.created) == (0, 1)


def test_without_wait_a_run_submits_exits_and_the_next_collects(server: OpenAIServer, tmp_path: Path) -> None:
    server.batch_api.polls = 2  # two retrieves say in_progress
    out = tmp_path / "run"
    with pytest.raises(BatchesInProgress, match=r"1 batch\(es\) in progress, \d+ requests; run the same command"):
        run(_options(server, out, batch=True))
    assert not (out / "summary.json").exists()
    assert [e.event for e in RunFolder(out).batch_events()] == ["submitting", "submitted"]
    with pytest.raises(BatchesInProgress):
        run(_options(server, out, batch=True))  # second poll: still in progress
    result = run(_options(server, out, batch=True))
    assert (out / "summary.json").exists() and result.infra_errors == 0
    assert server.batch_api.created == 1
    assert [e.event for e in RunFolder(out).batch_events()] == ["submitting", "submitted", "collected"]


def test_the_cli_says_how_to_go_on_and_exits_with_its_own_status(server: OpenAIServer, tmp_path: Path) -> None:
    server.batch_api.polls = 1
    args = ["run", "--model", f"openai/{MODEL}", "--base-url", server.url, "--limit", "1", "--out", str(tmp_path / "r")]
    first = _cli(*args, "--batch")
    assert first.returncode == 5, first.stderr
    assert (
        "1 batch(es) in progress, " in first.stderr
        and "run the same command again to collect, or --wait" in first.stderr
    )
    done = _cli(*args, "--batch", "--wait", "--poll-interval", "0")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "r" / "summary.json").is_file() and "requested" in done.stderr
    wrong = _cli(*args, "--wait")
    assert wrong.returncode == 2 and "--wait, --poll-interval and --batch-size go with --batch" in wrong.stderr


def test_a_model_without_a_batch_api_is_refused_before_anything_is_asked(tmp_path: Path) -> None:
    from u2eval.errors import ConfigError

    with pytest.raises(ConfigError, match="has no batch API"):
        run(RunOptions(model="random", out=tmp_path / "r", limit=1, batch=True))


# -- the limits ----------------------------------------------------------------------------------------------


def test_the_byte_limit_splits_a_run_into_batches(
    server: OpenAIServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    live = run(_options(server, tmp_path / "live"))
    sizes = [len(r.raw) for r in server.case_requests()]
    line = max(sizes) + 200  # a body and its line's keys
    limit = 6 * line
    monkeypatch.setattr("model_adapters.openai.LIMITS", BatchLimits(max_requests=50_000, max_bytes=limit))
    _batch(server, tmp_path / "batch")
    made = server.batch_api.batches.values()
    files = [server.batch_api.files[b.input_file_id].data for b in made]
    assert len(files) >= math.ceil(sum(sizes) / limit) and len(files) > 3
    assert all(len(data) <= limit for data in files)
    assert sum(len(data.splitlines()) for data in files) == live.requested
    assert server.batch_api.stats()["items_repeated"] == 0
    assert (tmp_path / "batch" / "summary.json").read_bytes() == (tmp_path / "live" / "summary.json").read_bytes()


def test_a_request_larger_than_a_batch_is_an_infra_error_asked_live_later(
    server: OpenAIServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("model_adapters.openai.LIMITS", BatchLimits(max_requests=50_000, max_bytes=1_000))
    result = _batch(server, tmp_path / "r")
    assert server.batch_api.created == 0
    assert result.infra_errors == result.manifest.n_cases
    assert {c.error for c in _latest(tmp_path / "r").values()} == {"bad_request"}
    assert "one batch holds at most 1000" in (next(iter(_latest(tmp_path / "r").values())).error_message or "")
    live = run(_options(server, tmp_path / "r"))
    assert live.infra_errors == 0 and live.requested == len(set(_keys(tmp_path / "r")))


def test_batch_size_caps_requests_a_batch(server: OpenAIServer, tmp_path: Path) -> None:
    result = _batch(server, tmp_path / "r", batch_size=10)
    assert server.batch_api.created == math.ceil(result.requested / 10)
    assert max(b.counts["total"] for b in server.batch_api.batches.values()) == 10


# -- failures become infra errors, asked again -----------------------------------------------------------------


def test_expired_items_are_infra_errors_and_the_next_run_asks_only_those(server: OpenAIServer, tmp_path: Path) -> None:
    server.batch_api.fate(BatchFate("expired", answered=7))
    out = tmp_path / "r"
    first = _batch(server, out)
    n = first.requested
    assert first.infra_errors == n - 7
    errors = [c for c in _latest(out).values() if c.is_infra_error]
    assert {c.error for c in errors} == {"timeout"} and all("expired" in (c.error_message or "") for c in errors)
    assert first.summary.infra_error_case_ids and len(first.summary.infra_error_case_ids) == n - 7
    second = _batch(server, out)
    assert second.infra_errors == 0 and second.requested == n - 7
    second_batch = list(server.batch_api.batches.values())[1]
    assert second_batch.counts["total"] == n - 7
    assert set(
        json.loads(line)["custom_id"] for line in server.batch_api.files[second_batch.input_file_id].data.splitlines()
    ) == {c.key for c in errors}
    assert not _answered_twice(out)


def test_a_failed_batch_and_failed_items_become_infra_errors_then_live_answers(
    server: OpenAIServer, tmp_path: Path
) -> None:
    out = tmp_path / "r"
    server.batch_api.fate(BatchFate("failed"))
    first = _batch(server, out, batch_size=20)
    failed = [c for c in _latest(out).values() if c.is_infra_error]
    assert len(failed) == 20 and {c.error for c in failed} == {"rate_limit"}  # token_limit_exceeded
    assert "Enqueued token limit" in (failed[0].error_message or "")
    assert first.infra_errors == 20
    # Items the server fails one by one (an error file line): 500s and a 400.
    server.add_fault(Fault("server_error"), times=3)
    server.add_fault(Fault("bad_request"), times=1)
    second = _batch(server, out, batch_size=20)
    assert second.requested == 20 and second.infra_errors == 4
    kinds = Counter(c.error for c in _latest(out).values() if c.is_infra_error)
    assert kinds == {"server": 3, "bad_request": 1}
    # The rest, live: only those four are asked, and the manifest says which answer came which way.
    before = len(server.case_requests())
    third = run(_options(server, out))
    assert third.infra_errors == 0 and len(server.case_requests()) - before == 4
    routes = {k: v for k, v in third.manifest.dispatch.items() if k.startswith("answers.")}
    assert routes == {"answers.batch": third.manifest.n_cases - 4, "answers.live": 4}


def test_a_live_run_on_a_folder_with_open_batches_asks_only_what_they_do_not_hold(
    server: OpenAIServer, tmp_path: Path
) -> None:
    out = tmp_path / "r"
    server.batch_api.polls = 1
    with pytest.raises(BatchesInProgress):
        run(_options(server, out, batch=True, tasks=("dd",)))  # the bulk, by batch
    held = set(submissions(RunFolder(out)).popitem()[1].keys)
    next(iter(server.batch_api.batches.values())).polls_left = 5
    with pytest.raises(BatchesInProgress):
        run(_options(server, out))  # every task, live: the batch's requests are not asked
    assert len(server.case_requests()) == len(set(_keys(out))) - len(held)
    assert not held & {k for k, c in _latest(out).items() if c.route is None}
    server.batch_api.batches[next(iter(server.batch_api.batches))].polls_left = 0
    done = run(_options(server, out))  # collects the batch; nothing more is asked
    assert done.infra_errors == 0 and server.batch_api.created == 1
    assert done.manifest.dispatch["answers.batch"] >= len(held) and done.manifest.dispatch["answers.live"] > 0
    assert done.manifest.dispatch["answers.batch"] + done.manifest.dispatch["answers.live"] == done.manifest.n_cases


def test_an_answer_lost_after_the_batch_was_made_makes_no_second_batch(server: OpenAIServer, tmp_path: Path) -> None:
    server.batch_api.add_fault("create", Fault("server_error"), after=True)  # made, then a 500
    server.batch_api.add_fault("upload", Fault("rate_limit", retry_after_s=0.01))  # a 429 before the upload
    result = _batch(server, tmp_path / "r")
    assert result.infra_errors == 0
    assert server.batch_api.created == 1 and server.batch_api.stats()["items_repeated"] == 0


# -- kills -----------------------------------------------------------------------------------------------------

# A `u2eval run` that kills itself (SIGKILL) at a point of its batch path: before or after a line of
# batches.jsonl is written, or once a batch's answers are stored and before 'collected' is recorded.
_DRIVER = r"""
import os, signal, sys
from u2eval.run.folder import RunFolder
from u2eval.run.store import ResponseStore

point = os.environ["KILL_AT"]
record, append, seen = RunFolder.record_batch, ResponseStore.append, []

def kill(where):
    seen.append(where)
    if point == where + "#" + str(seen.count(where)):
        os.kill(os.getpid(), signal.SIGKILL)

def recorded(self, event):
    kill("before:" + event.event)
    record(self, event)
    kill("after:" + event.event)

def appended(self, completions):
    completions = list(completions)
    append(self, completions)
    if any(c.route == "batch" for c in completions):
        kill("after:store")

RunFolder.record_batch, ResponseStore.append = recorded, appended
from u2eval.cli.app import main
sys.argv = ["u2eval", *sys.argv[1:]]
main()
"""


def _cli(*args: str, kill_at: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OPENAI_API_KEY": KEY, "COLUMNS": "200"} | ({"KILL_AT": kill_at} if kill_at else {})
    command = [sys.executable, "-c", _DRIVER, *args] if kill_at else [sys.executable, "-m", "u2eval", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=180, env=env, check=False)


@pytest.mark.parametrize(
    ("kill_at", "made_by_the_killed_run"),
    [
        ("after:submitting#1", 0),  # announced, never asked
        ("before:submitted#1", 1),  # made, its id never recorded: found by its label
        ("after:submitted#2", 2),  # both made and recorded, nothing polled
        ("after:store#1", 3),  # the first batch's answers stored, 'collected' not recorded
        ("before:collected#2", 3),  # the second's too (the store is ahead of batches.jsonl)
    ],
)
def test_a_run_killed_anywhere_loses_nothing_and_submits_nothing_twice(
    server: OpenAIServer, tmp_path: Path, kill_at: str, made_by_the_killed_run: int
) -> None:
    reference = run(_options(server, tmp_path / "live"))
    out = tmp_path / "r"
    args = ["run", "--model", f"openai/{MODEL}", "--base-url", server.url, "--limit", "1", "--out", str(out)]
    args += ["--batch", "--wait", "--poll-interval", "0", "--batch-size", str(math.ceil(reference.requested / 3))]
    killed = _cli(*args, kill_at=kill_at)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert server.batch_api.created == made_by_the_killed_run
    stored_before = (
        {k for k, c in _latest(out).items() if not c.is_infra_error} if (out / "responses.jsonl").exists() else set()
    )
    done = _cli(*args)
    assert done.returncode == 0, done.stderr[-2000:]
    assert server.batch_api.created == 3  # three batches in all, whenever the kill came
    assert server.batch_api.stats()["items_repeated"] == 0  # no request in two batches
    assert not _answered_twice(out)
    assert stored_before <= {k for k, c in _latest(out).items() if not c.is_infra_error}
    assert (out / "summary.json").read_bytes() == (tmp_path / "live" / "summary.json").read_bytes()
    states = {s.state for s in submissions(RunFolder(out)).values()}
    assert states <= {"collected", "abandoned"} and "collected" in states


# -- batches.jsonl ---------------------------------------------------------------------------------------------


def test_a_line_of_batches_jsonl_cut_by_a_kill_is_skipped_and_the_next_starts_its_own(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path)
    folder.record_batch(BatchEvent(event="submitting", label="a", at="t", keys=["k1", "k2"]))
    with (tmp_path / "batches.jsonl").open("ab") as handle:
        handle.write(b'{"event":"submitted","label":"a","at":"t","batch_')  # cut short
    folder.record_batch(BatchEvent(event="abandoned", label="a", at="t"))
    assert [e.event for e in folder.batch_events()] == ["submitting", "abandoned"]
    assert submissions(folder)["a"].state == "abandoned"


def test_a_budget_counts_open_batches_in_flight_and_stops_before_passing(server: OpenAIServer, tmp_path: Path) -> None:
    from u2eval.models.pricing import parse_price

    price = parse_price("in=2.5,out=10,batch_in=1.25,batch_out=5")
    out = tmp_path / "r"
    server.batch_api.polls = 1
    with pytest.raises(BatchesInProgress):
        run(_options(server, out, batch=True, price=price, max_cost_usd=0.1))
    first = next(iter(server.batch_api.batches.values()))
    budget = [c for c in _latest(out).values() if c.error == "budget"]
    n = len(set(_keys(out)))
    assert 0 < first.counts["total"] < n and len(budget) == n - first.counts["total"]
    # The open batch is in flight: a second run with the same budget asks nothing more, and collects it.
    assert run(_options(server, out, batch=True, price=price, max_cost_usd=0.1)).infra_errors == len(budget)
    assert server.batch_api.created == 1
    # A higher budget: the rest, and only the rest.
    done = _batch(server, out, price=price, max_cost_usd=10.0)
    assert done.infra_errors == 0 and server.batch_api.created == 2
    assert list(server.batch_api.batches.values())[1].counts["total"] == len(budget)
