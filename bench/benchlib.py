"""What the reliability benchmarks share: the OpenAI stand-in in its own process, `u2eval run` as a user runs
it, and readers of a run folder that do not trust the run's own bookkeeping.

The stand-in (tests/openai_server.py) logs every case request with the sha256 of its image; a case id ends
in the first 8 hex digits of the same sha256, so the server's log and the client's store can be compared
case by case (the synthetic sets have one image per case; ``case_images`` checks it).
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from u2eval.data.synth.generate import write_dataset
from u2eval.records import INFRA_ERROR_KINDS
from u2eval.run.store import RESPONSES_FILE

ROOT = Path(__file__).resolve().parent.parent
MODEL = "gpt-4o-2024-08-06"
KEY = "sk-bench-not-a-real-key"
# Log outcomes the client stores as an answer: a 200 with content, or the model's own refusal / empty answer.
ANSWER_FAULTS = (None, "refusal", "empty_content", "content_filter", "no_choices")


DATA_ROOT = Path(os.environ.get("U2EVAL_BENCH_DATA", ROOT / "data"))  # where the synthetic sets are kept


def full_set(data_root: Path = DATA_ROOT, scale: int = 1) -> Path:
    """The full-size synthetic set (7,241 cases; ``scale`` times that), generated once under ./data."""
    folder = data_root / ("full" if scale == 1 else f"full-x{scale}")
    if not (folder / "an_explanation_of_the_columns.tsv").exists():
        print(f"generating the full synthetic set x{scale} in {folder} ...", flush=True)
        write_dataset(folder, size="full", seed=0, scale=scale)
    return folder


def synthetic_set(n_cases: int, data_root: Path = DATA_ROOT) -> Path:
    """The sample-sized synthetic set scaled to ``n_cases`` (a multiple of 200), generated once under ./data
    (or $U2EVAL_BENCH_DATA)."""
    scale = max(1, round(n_cases / 200))
    folder = data_root / f"sample-x{scale}"
    if not (folder / "an_explanation_of_the_columns.tsv").exists():
        write_dataset(folder, size="sample", seed=0, scale=scale)
    return folder


class Server:
    """tests/openai_server.py in its own process (no shared GIL with the client or this script)."""

    def __init__(self, *options: str) -> None:
        """``options``: more of the server's own, e.g. ``--judge``."""
        command = [sys.executable, str(ROOT / "tests" / "openai_server.py"), "--api-key", KEY, "--model", MODEL]
        command += list(options)
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line.startswith("READY"):
            raise RuntimeError(f"the stand-in server did not start: {line!r}")
        self.url = f"http://127.0.0.1:{int(line.split()[1])}"
        self._next = 0
        self.entries: list[dict[str, Any]] = []

    def call(self, path: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        data = json.dumps(payload).encode() if payload is not None else None
        request = urllib.request.Request(self.url + path, data=data, method="POST" if data else "GET")
        with urllib.request.urlopen(request, timeout=30) as response:
            result: dict[str, Any] = json.loads(response.read())
            return result

    def reset(self, **settings: Any) -> None:
        """New settings (see ``OpenAIServer._reset``), counters and log; the request log is always on."""
        self.call("/_reset", {"log": True, **settings})
        self._next = 0
        self.entries = []

    def answered(self) -> int:
        return int(self.call("/_stats")["case_answered"])

    def fetch_log(self) -> list[dict[str, Any]]:
        """Every logged case request since the last reset (fetched incrementally)."""
        new = self.call(f"/_log?since={self._next}")
        self.entries.extend(new["entries"])
        self._next = int(new["next"])
        return self.entries

    def settle(self, timeout_s: float = 10.0) -> list[dict[str, Any]]:
        """The log once every logged request has ended (a killed client's requests still run to their end)."""
        deadline = time.monotonic() + timeout_s
        while True:
            self.entries, self._next = [], 0
            entries = self.fetch_log()
            if all(e["ended"] is not None for e in entries) or time.monotonic() > deadline:
                return entries
            time.sleep(0.05)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def stored_answer(entry: dict[str, Any]) -> bool:
    """Whether a logged request gave the client something it stores as the case's answer."""
    return entry["status"] == 200 and entry["fault"] in ANSWER_FAULTS


@dataclass(frozen=True)
class RunOutcome:
    returncode: int
    seconds: float
    stdout: str
    stderr: str


def run_command(folder: Path, data: Path, server: Server, *, concurrency: int, extra: Sequence[str] = ()) -> list[str]:
    """`u2eval run` against the stand-in, as a user types it."""
    command = [sys.executable, "-m", "u2eval", "run", "--model", f"openai/{MODEL}", "--data", str(data)]
    command += ["--out", str(folder), "--base-url", server.url + "/v1", "--concurrency", str(concurrency)]
    return command + list(extra)


SLOW_DISK = Path(__file__).resolve().parent / "slow_disk"


def client_env(fsync_ms: float = 0.0) -> dict[str, str]:
    """The environment of a u2eval process under test; ``fsync_ms``: each fsync that much slower (a slow disk,
    ``bench/slow_disk``)."""
    env = {**os.environ, "OPENAI_API_KEY": KEY, "COLUMNS": "200"}
    if fsync_ms > 0:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SLOW_DISK), env.get("PYTHONPATH", "")]))
        env["U2EVAL_BENCH_FSYNC_MS"] = f"{fsync_ms:g}"
    return env


def run_u2eval(command: Sequence[str], *, file_size_limit: int | None = None, timeout_s: float = 600) -> RunOutcome:
    """Run a command to its end; ``file_size_limit`` (bytes) caps every file it writes (RLIMIT_FSIZE)."""
    preexec: Callable[[], None] | None = None
    if file_size_limit is not None:
        limit = file_size_limit

        def preexec() -> None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    started = time.perf_counter()
    done = subprocess.run(
        list(command), capture_output=True, text=True, env=client_env(), preexec_fn=preexec, timeout=timeout_s
    )
    return RunOutcome(done.returncode, time.perf_counter() - started, done.stdout, done.stderr)


def case_images(folder: Path) -> dict[str, str]:
    """case_id -> image sha256 prefix (8 hex) for every case of a finished run; checks they are unique."""
    ids = [json.loads(line)["case"]["case_id"] for line in (folder / "cases.jsonl").open(encoding="utf-8")]
    prefixes = {case_id: case_id.rsplit("/", 1)[1] for case_id in ids}
    if len(set(prefixes.values())) != len(ids):
        raise SystemExit(f"{folder}: two cases share an image; the server log cannot tell them apart")
    return prefixes


def _store_lines(folder: Path) -> list[dict[str, Any]]:
    """The store's records, read as plain JSON (not through u2eval): a line cut by a kill is skipped."""
    path = folder / RESPONSES_FILE
    if not path.exists():
        return []
    records = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


def _is_answer(record: dict[str, Any]) -> bool:
    return record.get("error") not in INFRA_ERROR_KINDS


def stored_images(folder: Path) -> set[str]:
    """Image sha256 prefixes (8 hex) of the cases the store answers (what a resumed run will not ask again):
    the latest line per key, unless it is an infra error."""
    latest = {r["key"]: r for r in _store_lines(folder)}
    return {r["case_id"].rsplit("/", 1)[1] for r in latest.values() if _is_answer(r)}


def duplicated_answers(folder: Path) -> int:
    """Keys stored with an answer more than once (an infra error replaced by an answer is not a duplicate)."""
    counts = Counter(r["key"] for r in _store_lines(folder) if _is_answer(r))
    return sum(1 for n in counts.values() if n > 1)


RESULT_FILES = ("summary.json", "summary.md", "judgements.jsonl")


def same_files(a: Path, b: Path, names: Sequence[str] = RESULT_FILES) -> list[str]:
    """The names whose bytes differ between two run folders (empty: identical)."""
    return [n for n in names if (a / n).read_bytes() != (b / n).read_bytes()]


def descendants(pid: int) -> list[int]:
    """The process ids below ``pid`` (Linux /proc; empty elsewhere)."""
    found: list[int] = []
    for path in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            for child in map(int, path.read_text().split()):
                found += [child, *descendants(child)]
    return found


def survivors(pids: Sequence[int], wait_s: float = 5.0) -> list[int]:
    """Those of ``pids`` still running (not zombies) after up to ``wait_s`` seconds."""
    deadline = time.monotonic() + wait_s
    while True:
        alive = []
        for pid in pids:
            with contextlib.suppress(OSError, IndexError):
                if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                    alive.append(pid)
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.05)


def wait_for_idle(timeout_s: float = 60.0, idle_share: float = 0.8) -> None:
    """Wait until the CPUs have been >= ``idle_share`` idle for a second (Linux), so a timing is not someone
    else's: on a shared 2-core machine another process's test run halves the figures."""
    stat = Path("/proc/stat")
    if not stat.exists():
        return

    def sample() -> tuple[int, int]:
        fields = [int(v) for v in stat.read_text().splitlines()[0].split()[1:]]
        return fields[3] + fields[4], sum(fields)

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        idle, total = sample()
        time.sleep(1.0)
        idle2, total2 = sample()
        if (idle2 - idle) >= idle_share * max(1, total2 - total):
            return
    print("  (the machine stayed busy: timings may be high)", file=sys.stderr)


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def verdict(checks: Sequence[tuple[str, bool]]) -> int:
    """Print every promise with PASS / FAIL; 0 when all hold."""
    print()
    for name, ok in checks:
        print(f"  {'PASS' if ok else 'FAIL'}  {name}")
    failed = sum(1 for _, ok in checks if not ok)
    print("PASS" if not failed else f"FAIL ({failed} promise(s) broken)")
    return 0 if not failed else 1
