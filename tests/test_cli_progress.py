"""A CLI that says where it stands: the run's progress (total, rate, time left, retries, infra errors), Ctrl-C
as one line saying what is kept and how to resume, and an interrupted folder named as such by `u2eval score`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from openai_server import OpenAIServer
from test_runner import FlakyRandom

from u2eval.run.runner import RunOptions, RunProgress, run

KEY = "sk-test-not-a-real-key"
MODEL = "gpt-4o-2024-08-06"


def test_the_progress_hook_knows_the_total_and_counts_retries_and_infra_errors(tmp_path: Path) -> None:
    seen: list[RunProgress] = []
    options = RunOptions(model="flaky", tasks=("dd", "ll"), limit=2, out=tmp_path / "a")
    probe = run(options, adapter=FlakyRandom(set()))
    first = probe.summary.n_judgements
    result = run(
        RunOptions(model="flaky", tasks=("dd", "ll"), limit=2, out=tmp_path / "b"),
        adapter=FlakyRandom(set()),
        progress=seen.append,
    )
    assert seen[-1].total == first == 2 * 18 and seen[-1].done == first
    assert [p.done for p in seen] == sorted(p.done for p in seen)  # never goes back
    assert result.requested == first
    again: list[RunProgress] = []
    run(
        RunOptions(model="flaky", tasks=("dd", "ll"), limit=2, out=tmp_path / "b"),
        adapter=FlakyRandom(set()),
        progress=again.append,
    )
    assert again == [] or again[-1].done == first  # a finished run resumed: nothing to ask
    anatomy: list[RunProgress] = []
    run(
        RunOptions(model="flaky", tasks=("dd",), anatomy=("breast",), out=tmp_path / "c"),
        adapter=FlakyRandom(set()),
        progress=anatomy.append,
    )
    assert anatomy and anatomy[-1].total is None  # unknown up front: not made up


def test_infra_errors_show_in_the_progress_as_they_happen(tmp_path: Path) -> None:
    probe = run(RunOptions(model="flaky", tasks=("dd",), limit=1, out=tmp_path / "p"), adapter=FlakyRandom(set()))
    from u2eval.run.folder import RunFolder

    failing = {rc.case.case_id for rc in RunFolder(probe.folder).cases()[:2]}
    seen: list[RunProgress] = []
    run(
        RunOptions(model="flaky", tasks=("dd",), limit=1, out=tmp_path / "f"),
        adapter=FlakyRandom(failing),
        progress=seen.append,
    )
    assert seen[-1].infra_errors == 2 and seen[-1].done == probe.summary.n_judgements


def _u2eval(*args: str) -> list[str]:
    return [sys.executable, "-m", "u2eval", *args]


def test_ctrl_c_ends_with_one_line_saying_what_is_stored_and_how_to_resume(tmp_path: Path) -> None:
    server = OpenAIServer(api_key=KEY, models=(MODEL,), latency_s=0.3).start()
    try:
        env = {**os.environ, "OPENAI_API_KEY": KEY, "COLUMNS": "200"}
        folder = tmp_path / "run"
        args = [
            "run",
            "--model",
            f"openai/{MODEL}",
            "--base-url",
            server.url,
            "--concurrency",
            "2",
            "--out",
            str(folder),
        ]
        process = subprocess.Popen(_u2eval(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        deadline = time.monotonic() + 60
        responses = folder / "responses.jsonl"
        while time.monotonic() < deadline and (not responses.is_file() or responses.stat().st_size == 0):
            time.sleep(0.1)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
        assert process.returncode == 130, err
        lines = [line for line in err.strip().splitlines() if line.strip()]
        assert lines[-1].startswith("interrupted: ") and "run the same command again to resume" in lines[-1]
        assert "Traceback" not in err
        stored = int(lines[-1].split()[1])
        assert stored >= 1 and stored == sum(1 for line in responses.read_text().splitlines() if line.strip())
        score = subprocess.run(_u2eval("score", str(folder)), capture_output=True, text=True, env=env, timeout=60)
        assert score.returncode == 2 and "holds an interrupted run" in score.stderr
    finally:
        server.stop()


def test_the_progress_bar_on_a_terminal_shows_done_of_total(tmp_path: Path) -> None:
    # A pseudo-terminal, so rich draws the bar as a user sees it.
    folder = tmp_path / "run"
    command = f"{sys.executable} -m u2eval run --model random --tasks dd --out {folder}"
    done = subprocess.run(["script", "-qc", command, "/dev/null"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "160"})  # fmt: skip
    assert done.returncode == 0
    assert "52/52" in done.stdout and "ETA" in done.stdout


def test_ablate_takes_what_run_takes_and_gets_through_a_faulty_server(tmp_path: Path) -> None:
    import json

    # One request in five is refused with a 429: with its attempts and timeout, ablate goes through, as run does.
    server = OpenAIServer(api_key=KEY, models=(MODEL,), rate_429=0.2, retry_after_s=0.05).start()
    try:
        env = {**os.environ, "OPENAI_API_KEY": KEY, "COLUMNS": "200"}
        args = ["ablate", "--model", f"openai/{MODEL}", "--base-url", server.url, "--variants", "ours,ours-brief"]
        args += ["--tasks", "dd", "--limit", "1", "--max-attempts", "10", "--timeout", "10", "--rpm", "6000"]
        args += ["--temperature", "0.2", "--max-tokens", "32", "--out", str(tmp_path / "ab")]
        done = subprocess.run(_u2eval(*args), capture_output=True, text=True, env=env, timeout=300, check=False)
        assert done.returncode == 0, done.stderr[-2000:]
        for variant in ("ours", "ours-brief"):
            manifest = json.loads((tmp_path / "ab" / variant / "manifest.json").read_text())
            assert manifest["generation"]["temperature"] == 0.2 and manifest["generation"]["max_tokens"] == 32
            assert manifest["dispatch"]["infra_errors"] == 0
        assert sum(server.stats.faults.values()) > 0  # the faults happened and were retried through
    finally:
        server.stop()
