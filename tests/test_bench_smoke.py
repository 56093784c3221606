"""The reliability and speed benchmarks at small scale (``--quick``), as a user runs them: each script must
exit 0 (every promise it checks holds) and print the figures its README section describes.

These run the real scripts in bench/ against the OpenAI stand-in in its own process, on a 200-case set
generated into a temporary folder; together they take about a minute.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the benchmarks read /proc"),
]


@pytest.fixture(scope="module")
def bench_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bench-data")


def _bench(script: str, data: Path, *args: str) -> str:
    env = {**os.environ, "U2EVAL_BENCH_DATA": str(data)}
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), "--quick", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert done.stdout.rstrip().endswith("PASS")
    return done.stdout


def _number(pattern: str, text: str) -> float:
    match = re.search(pattern, text)
    assert match is not None, f"{pattern!r} not in the output"
    return float(match.group(1))


def test_crash_safety(bench_data: Path) -> None:
    out = _bench("crash_safety.py", bench_data)
    assert _number(r"kills that hit a live process: (\d+)", out) >= 2
    assert _number(r"answers lost \(in flight\) per kill: max (\d+)", out) <= 8  # --quick runs 8 in flight
    assert _number(r"requests repeated for stored answers: (\d+)", out) == 0
    assert _number(r"keys stored twice: (\d+)", out) == 0
    assert "files differing from the reference: none" in out
    assert "is in use by another u2eval process" in out
    assert "responses.jsonl: File too large (errno 27)" in out


def test_faults(bench_data: Path) -> None:
    out = _bench("faults.py", bench_data)
    assert _number(r"run 1: exit (\d+)", out) == 3  # infra errors left, reported
    assert _number(r"attempts per case: max (\d+)", out) <= 4
    assert _number(r"run 2: exit (\d+)", out) == 0
    assert "differs from the fault-free run: none" in out
    injected = {
        kind: _number(rf"(?m)^\s+{kind}\s+(\d+)", out)
        for kind in (
            "rate_limit",
            "server_error",
            "overloaded",
            "hang",
            "malformed",
            "drop",
            "refusal",
            "empty_content",
        )
    }
    assert injected["rate_limit"] > 0 and injected["overloaded"] > 0 and sum(injected.values()) >= 20, injected


def test_bad_input(bench_data: Path) -> None:
    out = _bench("bad_input.py", bench_data)
    assert "10,000 answers" in out and "broken promises: {}" in out
    assert "MISSING" not in out and "EXTRA" not in out
    assert _number(r"(\d+) corruptions", out) >= 13


def test_speed(bench_data: Path) -> None:
    out = _bench("overhead.py", bench_data)
    assert _number(r"model calls (\d+)", out) == 0
    assert _number(r"u2eval score\s+([\d.]+) s\s+\(realistic", out) > 0


def test_judge_throughput(bench_data: Path) -> None:
    out = _bench("judge_throughput.py", bench_data)
    sent = _number(r"= (\d+) of 200 cases", out)
    calls = _number(r"judge calls: (\d+)", out)
    assert 0 < calls <= sent <= 200
    assert _number(r"\n\s+8\s+\d+\s+[\d.]+ / [\d.]+ / [\d.]+\s+40\s+([\d.]+)", out) >= 0.8


def test_batch(bench_data: Path) -> None:
    out = _bench("batch.py", bench_data)
    assert "files differing from the live run: none" in out
    assert _number(r"kills that hit a live process: (\d+)", out) >= 2
    assert _number(r"kills that lost stored answers: (\d+)", out) == 0
    assert _number(r"requests in two batches: (\d+)", out) == 0
    assert "files differing from the unkilled batch run: none" in out
