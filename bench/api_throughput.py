"""Throughput of u2eval against a local OpenAI-compatible server with a fixed latency.

The server (tests/openai_server.py) runs in its own process, so it does not share the client's GIL, and
answers every chat request L = 200 ms after it arrives. u2eval runs in another process, exactly as a user
runs it (``openai/<model>`` with ``--base-url``), on the full synthetic set (realistic image sizes, ~240 KB
PNGs), at concurrency 1, 8, 64 and 256, each on about min(7,241, 40 x concurrency) cases (the first rows of
every dataset). For each it prints:

- answered requests/s, measured by the server from the first case request's arrival to the last answer
  (the preflight's probe is not counted), and that divided by the ideal, concurrency / L (target >= 0.80
  at 64);
- u2eval's client CPU per request: the whole ``run`` (reading and decoding the TSV rows, rendering,
  hashing, encoding, HTTP, storing, scoring), and the part before scoring.

Then the same with 10% of the requests answered 429 with ``Retry-After: 1``: the waits told and made (made
= told + at most 5% jitter), and how much longer the run took than without the 429s ("extra span"), next
to the told waits spread over the slots ("told/conc"). Retries that cost no more than their waits keep
the extra span within told/conc plus one wait's tail (~1.2 s: the last 429 of the run leaves the other
slots idle while it waits); where the client's CPU is the bound, the waits overlap with that and cost less.

Then both again for u2eval's API path alone (the same cases read into memory first; dispatcher, OpenAI
adapter and response store timed): what bounds a run is the CPU of one Python process, and that table
shows how much of it is the dataset reading rather than the API path.

    python bench/api_throughput.py [--data data/full] [--concurrency 1,8,64,256] [--repeat 3]

The full synthetic set is generated under ./data/full on first use (git-ignored, ~2.3 GB), and the
subsets next to it.
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

from benchlib import wait_for_idle  # bench/ is the script's own folder: on sys.path

from u2eval.benchmark.tasks import all_tasks
from u2eval.data.reader import count_cases
from u2eval.data.sources import resolve_source
from u2eval.data.synth.generate import write_dataset

ROOT = Path(__file__).resolve().parent.parent
LATENCY_S = 0.2
MODEL = "gpt-4o-2024-08-06"
KEY = "sk-bench-not-a-real-key"
TARGET_AT_64 = 0.80

# The client, in its own process: one `u2eval run` as the CLI runs it, CPU time measured around it (the SDK
# imported first: a once-per-run cost that is no request's).
_RUN = """
import json, resource, sys, time
from pathlib import Path
import model_adapters.openai
from u2eval.run.runner import RunOptions, run
from u2eval.run.scoring_pass import score_folder
def children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime
args = json.loads(sys.argv[1])
cpu, reader = time.process_time(), children_cpu()
result = run(RunOptions(
    model=args["model"], data=args["data"], concurrency=args["concurrency"],
    base_url=args["base_url"], out=Path(args["out"]), max_attempts=8, timeout_s=120,
))
reader = children_cpu() - reader  # the dataset reader's process
cpu_run = time.process_time() - cpu + reader
cpu = time.process_time()
score_folder(Path(args["out"]))  # the same scoring again, to split it off the run's CPU
cpu_score = time.process_time() - cpu
print(json.dumps({"requested": result.requested, "cpu_s": cpu_run, "cpu_answer_s": cpu_run - cpu_score,
                  "cpu_reader_s": reader, "dispatch": result.manifest.dispatch}))
"""

# u2eval's API path alone: the same cases read, rendered and keyed first, then only the dispatcher, the
# OpenAI adapter and the response store are timed: what the client costs once reading the dataset is not
# its bottleneck.
_API = """
import asyncio, json, sys, time
from pathlib import Path
from u2eval.models.registry import create_adapter, resolve_model
from u2eval.models.protocol import AdapterOptions, ModelRequest
from u2eval.data.reader import iter_cases
from u2eval.data.sources import resolve_source
from u2eval.run.dispatch import Dispatcher
from u2eval.run.pacing import DispatchOptions
from u2eval.benchmark.prompts import render
from u2eval.records import GenerationConfig
from u2eval.run.store import ResponseStore, request_key
from u2eval.benchmark.tasks import all_tasks, get_task
args = json.loads(sys.argv[1])
generation = GenerationConfig(seed=0)  # what `u2eval run` sends with no preset
options = AdapterOptions(generation=generation, base_url=args["base_url"], timeout_s=120)
adapter = create_adapter(resolve_model(args["model"]), options)
tasks = all_tasks()
requests = []
for case in iter_cases(resolve_source(args["data"], tasks=tasks), tasks, on_error=print):
    prompt = render(case, get_task(case.task))
    requests.append(ModelRequest(request_key(adapter.info, generation, prompt), case, prompt))
dispatcher = Dispatcher(adapter, DispatchOptions(concurrency=args["concurrency"], max_attempts=8, timeout_s=120))
async def go():
    try:
        with ResponseStore(Path(args["out"])) as store:
            await dispatcher.run(requests, store.append)
    finally:
        await adapter.aclose()
cpu = time.process_time()
asyncio.run(go())
cpu = time.process_time() - cpu
print(json.dumps({"requested": len(requests), "cpu_s": cpu, "cpu_answer_s": cpu,
                  "dispatch": dispatcher.stats.as_manifest()}))
"""


@dataclass(frozen=True)
class Row:
    concurrency: int
    cases: int
    answered: int
    span_s: float
    cpu_ms: float
    cpu_answer_ms: float
    cpu_reader_ms: float  # of cpu_ms: the dataset reader's child process
    rate_limited: int
    told_s: float
    waited_s: float

    @property
    def throughput(self) -> float:
        return self.answered / self.span_s

    @property
    def ratio(self) -> float:
        return self.throughput / (self.concurrency / LATENCY_S)


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


def measure(server: Server, client: str, data: Path, concurrency: int, rate_429: float) -> Row:
    wait_for_idle(timeout_s=120.0, idle_share=0.9)
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
            [sys.executable, "-c", client, json.dumps(args)], capture_output=True, text=True, env=env, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"the client failed: {done.stderr[-2000:]}")
        result = json.loads(done.stdout.strip().splitlines()[-1])
    stats = server.call("/_stats")
    requested = max(1, result["requested"])
    dispatch = result["dispatch"]
    return Row(
        concurrency=concurrency,
        cases=result["requested"],
        answered=stats["case_answered"],
        span_s=stats["span_s"],
        cpu_ms=result["cpu_s"] * 1000 / requested,
        cpu_answer_ms=result["cpu_answer_s"] * 1000 / requested,
        cpu_reader_ms=result.get("cpu_reader_s", 0.0) * 1000 / requested,
        rate_limited=stats["faults"].get("rate_limit", 0),
        told_s=dispatch.get("retry_after_ms", 0) / 1000,
        waited_s=dispatch.get("retry_wait_ms", 0) / 1000,
    )


def median_row(rows: list[Row]) -> Row:
    return sorted(rows, key=lambda r: r.throughput)[len(rows) // 2]


def print_table(rows: list[Row], baseline: dict[int, Row] | None) -> None:
    """One line per concurrency. With a baseline (the same without 429s): what the retries cost."""
    header = f"{'conc':>5} {'cases':>6} {'answered/s':>10} {'ideal/s':>8} {'ratio':>6} {'CPU ms/req':>10}"
    header += f" {'(answer)':>9} {'(reader)':>9}"
    if baseline is not None:
        header += f" {'429s':>5} {'told s':>7} {'waited s':>8} {'extra span s':>12} {'told/conc s':>11}"
    print(header)
    for row in rows:
        line = (
            f"{row.concurrency:>5} {row.cases:>6} {row.throughput:>10.1f} {row.concurrency / LATENCY_S:>8.0f} "
            f"{row.ratio:>6.2f} {row.cpu_ms:>10.2f} {row.cpu_answer_ms:>9.2f} {row.cpu_reader_ms:>9.2f}"
        )
        if baseline is not None:
            # The time the run took beyond the same run without 429s, next to the waits it was told to make
            # spread over the slots: at most that (plus one wait's tail at the very end) means the retries
            # cost nothing beyond their waits.
            extra = row.span_s - row.answered / baseline[row.concurrency].throughput
            line += f" {row.rate_limited:>5} {row.told_s:>7.1f} {row.waited_s:>8.1f} {extra:>12.1f}"
            line += f" {row.told_s / row.concurrency:>11.1f}"
        print(line, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("data/full"))
    parser.add_argument("--concurrency", default="1,8,64,256", help="comma list")
    parser.add_argument("--per-slot", type=int, default=40, help="cases per unit of concurrency")
    parser.add_argument("--repeat", type=int, default=1, help="runs per cell; the median is shown")
    parser.add_argument("--skip-429", action="store_true", help="skip the runs with injected 429s")
    parser.add_argument("--skip-api-only", action="store_true", help="skip the API path alone")
    parser.add_argument("--skip-run", action="store_true", help="skip the whole `u2eval run`")
    args = parser.parse_args()
    data = ensure_dataset(args.data)
    sizes = [n for per in count_cases(resolve_source(str(data)), all_tasks()).values() for n in per.values() if n]
    levels = [int(c) for c in args.concurrency.split(",")]
    folders = {c: subset(data, limit_for(sizes, args.per_slot * c)) for c in levels}
    clients = [] if args.skip_run else [("u2eval run (reads, decodes, renders, sends, stores, scores)", _RUN)]
    if not args.skip_api_only:
        clients.append(("u2eval's API path alone (cases read into memory first)", _API))
    server = Server()
    verdict = None
    try:
        for title, client in clients:
            baseline: dict[int, Row] = {}
            for rate in (0.0,) if args.skip_429 else (0.0, 0.1):
                print(f"\n{title}; L = {LATENCY_S * 1000:.0f} ms; {rate:.0%} answered 429 with Retry-After 1 s")
                rows = []
                for concurrency in levels:
                    started = time.perf_counter()
                    runs = [
                        measure(server, client, folders[concurrency], concurrency, rate) for _ in range(args.repeat)
                    ]
                    rows.append(median_row(runs))
                    each = " ".join(f"{r.ratio:.2f}" for r in runs)
                    took = time.perf_counter() - started
                    print(f"  (concurrency {concurrency}: {took:.0f} s; ratio of each run: {each})", file=sys.stderr)
                print_table(rows, baseline if rate else None)
                if not rate:
                    baseline = {r.concurrency: r for r in rows}
                if not rate and client is _RUN and 64 in baseline:
                    verdict = baseline[64].ratio >= TARGET_AT_64
                    print(f"u2eval run, ratio at 64: {baseline[64].ratio:.2f} (target >= {TARGET_AT_64})")
    finally:
        server.stop()
    if verdict is None:
        return 0
    print("PASS" if verdict else "FAIL")
    return 0 if verdict else 1


if __name__ == "__main__":
    sys.exit(main())
