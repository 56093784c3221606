"""Throughput of u2eval against a local OpenAI-compatible server with a fixed latency.

The server (tests/openai_server.py) runs in its own process, so it does not share the client's GIL, and
answers every chat request L = 200 ms after it arrives. u2eval runs in another process, exactly as a user
runs it (``openai/<model>`` with ``--base-url``), on the full synthetic set (realistic image sizes), at
concurrency 1, 8, 64 and 256, each on about min(7,241, 40 x concurrency) cases. For each it prints:

- answered requests/s, measured by the server from the first case request's arrival to the last answer
  (the preflight probe is not counted), divided by the ideal concurrency / L (target >= 0.80 at 64);
- u2eval's client CPU per request: the whole ``run`` (reading, decoding, rendering, hashing, encoding,
  HTTP, storing, scoring), and the part before scoring.

Then the same with 10% of the requests answered 429 with ``Retry-After: 1``: each retry holds its slot for
the wait it was told, so the ideal becomes concurrency / (L + told waits per answer); the last columns
compare the measured rate with that ideal and the waits made with the waits told.

    python bench/api_throughput.py [--data data/full] [--concurrency 1,8,64,256] [--per-slot 40]

The full synthetic set is generated under ./data/full on first use (git-ignored, ~2.3 GB).
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from u2eval.data import count_cases, resolve_source
from u2eval.synth import write_dataset
from u2eval.tasks import all_tasks

ROOT = Path(__file__).resolve().parent.parent
LATENCY_S = 0.2
MODEL = "gpt-4o-2024-08-06"
KEY = "sk-bench-not-a-real-key"
TARGET_AT_64 = 0.80

# The client: one `u2eval run`, as the CLI would run it, with its CPU time measured around it.
_CLIENT = """
import json, sys, time, os
if os.environ.get("SWITCH"): sys.setswitchinterval(float(os.environ["SWITCH"]))
from pathlib import Path
from u2eval.runner import RunOptions, run, score_folder
args = json.loads(sys.argv[1])
cpu = time.process_time()
result = run(RunOptions(
    model=args["model"], data=args["data"], concurrency=args["concurrency"],
    base_url=args["base_url"], out=Path(args["out"]), max_attempts=8, timeout_s=120,
))
cpu_run = time.process_time() - cpu
cpu = time.process_time()
score_folder(Path(args["out"]))  # the same scoring again, to split it off the run's CPU
cpu_score = time.process_time() - cpu
print(json.dumps({
    "requested": result.requested, "infra_errors": result.infra_errors, "cpu_run_s": cpu_run,
    "cpu_score_s": cpu_score, "dispatch": result.manifest.dispatch, "answer_s": result.manifest.timings["answer_s"],
}))
"""


@dataclass(frozen=True)
class Row:
    concurrency: int
    rate_429: float
    cases: int
    answered: int
    span_s: float
    cpu_ms: float
    cpu_answer_ms: float
    rate_limited: int
    told_s: float
    waited_s: float

    @property
    def throughput(self) -> float:
        return self.answered / self.span_s

    @property
    def ratio(self) -> float:
        return self.throughput / (self.concurrency / LATENCY_S)

    @property
    def ratio_with_waits(self) -> float:
        """Measured / ideal, the ideal counting each told wait as slot time (what the retries must cost)."""
        slot_seconds = self.answered * LATENCY_S + self.told_s
        return self.throughput / (self.answered / (slot_seconds / self.concurrency))


def ensure_dataset(folder: Path) -> Path:
    if not (folder / "an_explanation_of_the_columns.tsv").exists():
        print(f"generating the full synthetic set in {folder} ...", flush=True)
        write_dataset(folder, size="full", seed=0, scale=1)
    return folder


def limit_for(sizes: list[int], target: int) -> int | None:
    """The rows per dataset whose total is closest to ``target`` (None: everything)."""
    if target >= sum(sizes):
        return None
    return min(range(1, max(sizes) + 1), key=lambda n: abs(sum(min(n, s) for s in sizes) - target))


def subset(full: Path, limit: int | None) -> Path:
    """The first ``limit`` rows of every dataset file, as a folder of its own (cached next to ``full``).

    Not ``--limit``: the loader still parses the rest of each file after its dataset is full (~2 ms of CSV
    per 300 KB row), which would bill the client for rows it never sends.
    """
    if limit is None:
        return full
    folder = full.parent / f"{full.name}-first{limit}"
    if (folder / "an_explanation_of_the_columns.tsv").exists():
        return folder
    csv.field_size_limit(sys.maxsize)
    for source in sorted(full.glob("*/*.tsv")):
        target = folder / source.relative_to(full)
        target.parent.mkdir(parents=True, exist_ok=True)
        with source.open(newline="", encoding="utf-8") as fin, target.open("w", newline="", encoding="utf-8") as fout:
            writer = csv.writer(fout, dialect="excel-tab", lineterminator="\n")
            writer.writerows(itertools.islice(csv.reader(fin, dialect="excel-tab"), limit + 1))
    for name in ("an_explanation_of_the_columns.tsv", "README.md"):
        shutil.copyfile(full / name, folder / name)
    return folder


class Server:
    def __init__(self) -> None:
        command = [sys.executable, str(ROOT / "tests" / "openai_server.py"), "--latency", str(LATENCY_S)]
        command += ["--api-key", KEY, "--model", MODEL]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line.startswith("READY"):
            raise RuntimeError(f"the server did not start: {line!r}")
        self.url = f"http://127.0.0.1:{int(line.split()[1])}"

    def call(self, path: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        data = json.dumps(payload).encode() if payload is not None else None
        request = urllib.request.Request(self.url + path, data=data, method="POST" if data else "GET")
        with urllib.request.urlopen(request, timeout=30) as response:
            result: dict[str, Any] = json.loads(response.read())
            return result

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def measure(server: Server, data: Path, concurrency: int, rate_429: float) -> Row:
    server.call("/_reset", {"latency_s": LATENCY_S, "rate_429": rate_429, "retry_after_s": 1.0, "seed": 1})
    with tempfile.TemporaryDirectory(prefix="u2eval-bench-") as out:
        args = {
            "model": f"openai/{MODEL}",
            "data": str(data),
            "concurrency": concurrency,
            "base_url": server.url + "/v1",
            "out": out,
        }
        env = {**os.environ, "OPENAI_API_KEY": KEY}
        done = subprocess.run(
            [sys.executable, "-c", _CLIENT, json.dumps(args)], capture_output=True, text=True, env=env, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"u2eval failed: {done.stderr[-2000:]}")
        client = json.loads(done.stdout.strip().splitlines()[-1])
    stats = server.call("/_stats")
    requested = max(1, client["requested"])
    dispatch = client["dispatch"]
    return Row(
        concurrency=concurrency,
        rate_429=rate_429,
        cases=client["requested"],
        answered=stats["case_answered"],
        span_s=stats["span_s"],
        cpu_ms=client["cpu_run_s"] * 1000 / requested,
        cpu_answer_ms=(client["cpu_run_s"] - client["cpu_score_s"]) * 1000 / requested,
        rate_limited=stats["faults"].get("rate_limit", 0),
        told_s=dispatch.get("retry_after_ms", 0) / 1000,
        waited_s=dispatch.get("retry_wait_ms", 0) / 1000,
    )


def print_table(rows: list[Row], with_429: bool) -> None:
    header = (
        f"{'conc':>5} {'cases':>6} {'answered/s':>10} {'ideal/s':>8} {'ratio':>6} {'CPU ms/req':>10} {'(answer)':>9}"
    )
    if with_429:
        header += f" {'429s':>5} {'told s':>7} {'waited s':>8} {'ratio vs ideal+waits':>21}"
    print(header)
    for row in rows:
        line = (
            f"{row.concurrency:>5} {row.cases:>6} {row.throughput:>10.1f} {row.concurrency / LATENCY_S:>8.0f} "
            f"{row.ratio:>6.2f} {row.cpu_ms:>10.2f} {row.cpu_answer_ms:>9.2f}"
        )
        if with_429:
            line += f" {row.rate_limited:>5} {row.told_s:>7.1f} {row.waited_s:>8.1f} {row.ratio_with_waits:>21.2f}"
        print(line, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("data/full"))
    parser.add_argument("--concurrency", default="1,8,64,256", help="comma list")
    parser.add_argument("--per-slot", type=int, default=40, help="cases per unit of concurrency")
    parser.add_argument("--skip-429", action="store_true", help="skip the run with injected 429s")
    args = parser.parse_args()
    data = ensure_dataset(args.data)
    sizes = [n for per in count_cases(resolve_source(str(data)), all_tasks()).values() for n in per.values() if n]
    levels = [int(c) for c in args.concurrency.split(",")]
    server = Server()
    ok = True
    try:
        for rate in (0.0,) if args.skip_429 else (0.0, 0.1):
            print(f"\nlatency {LATENCY_S * 1000:.0f} ms, {rate:.0%} of requests answered 429 (Retry-After 1 s)")
            rows = []
            for concurrency in levels:
                cases = subset(data, limit_for(sizes, args.per_slot * concurrency))
                started = time.perf_counter()
                rows.append(measure(server, cases, concurrency, rate))
                print(f"  (concurrency {concurrency}: {time.perf_counter() - started:.0f} s)", file=sys.stderr)
            print_table(rows, with_429=rate > 0)
            at_64 = [r for r in rows if r.concurrency == 64]
            if rate == 0 and at_64:
                ok = at_64[0].ratio >= TARGET_AT_64
                print(f"ratio at 64: {at_64[0].ratio:.2f} (target >= {TARGET_AT_64})")
    finally:
        server.stop()
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
