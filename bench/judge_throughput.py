"""A judge pass's throughput and cost: `u2eval judge` against the judge stand-in at a fixed latency.

The stand-in (tests/openai_server.py --judge, its own process) first answers a run of the synthetic set as a model
whose every answer differs (tests/openai_server.unique_answer: the benchmarks' mix of answers, each tagged with
its case), so strict mode cannot parse many of them and no two judge prompts are the same. Then, for each
concurrency, a fresh copy of that run is read by `u2eval judge` (as a user types it) while the server answers every
judge request L = 200 ms after it arrives, the same latency as bench/api_throughput.py. It prints:

- the cost of a judge pass: the run's cases, the answers sent for extraction (strict could not parse them) and for
  the clinical score (every report and caption), and the judge calls made (identical prompts are asked once);
- judge requests/s, measured by the server from the first judge request's arrival to the last answer (the
  preflight not counted), and that over the ideal concurrency / L: the same ratio a run reaches
  (bench/README.md: 0.80 is the run's target at 64 in flight);
- a second `u2eval judge` of the same run: the calls it makes (0: every reading is stored).

PASS when every second pass makes no call and every median ratio is at least 0.80, a run's own target.

    python bench/judge_throughput.py [--cases 2000] [--concurrency 8,64] [--repeat 3] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import KEY, MODEL, Server, synthetic_set, wait_for_idle  # bench/ is the script's own folder

LATENCY_S = 0.2
TARGET = 0.80  # judge calls/s over concurrency / latency, as for a run (bench/api_throughput.py)


def _u2eval(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OPENAI_API_KEY": KEY}
    done = subprocess.run([sys.executable, "-m", "u2eval", *args], capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"u2eval {args[0]} failed ({done.returncode}): {done.stderr[-2000:]}")
    return done


def answered_run(server: Server, data: Path, folder: Path) -> None:
    server.call("/_reset", {"latency_s": 0.0, "answers": "unique"})
    _u2eval("run", "--model", f"openai/{MODEL}", "--data", str(data), "--out", str(folder),
            "--base-url", server.url + "/v1", "--concurrency", "64")  # fmt: skip


def judge_pass(server: Server, run: Path, concurrency: int) -> dict[str, float]:
    server.call("/_reset", {"latency_s": LATENCY_S, "answers": "fixed"})
    started = time.perf_counter()
    _u2eval("judge", str(run), "--model", f"openai/{MODEL}", "--base-url", server.url + "/v1",
            "--concurrency", str(concurrency))  # fmt: skip
    wall = time.perf_counter() - started
    stats = server.call("/_stats")
    return {"requests": stats["case_requests"], "span_s": stats["span_s"] or 0.0, "wall_s": wall}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=2000, help="synthetic cases (a multiple of 200)")
    parser.add_argument("--concurrency", default="8,64")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="200 cases, concurrency 8, once (a smoke test)")
    args = parser.parse_args()
    cases, levels, repeat = (
        (200, [8], 1) if args.quick else (args.cases, [int(c) for c in args.concurrency.split(",")], args.repeat)
    )
    data = synthetic_set(cases)
    server = Server("--judge")
    try:
        with tempfile.TemporaryDirectory(prefix="u2eval-judge-bench-") as tmp:
            base = Path(tmp) / "run"
            answered_run(server, data, base)
            summary = json.loads((base / "summary.json").read_text())
            n_cases = summary["n_judgements"]
            rows = []
            for concurrency in levels:
                runs = []
                for _ in range(repeat):
                    wait_for_idle(timeout_s=60.0, idle_share=0.9)
                    copy = Path(tmp) / f"c{concurrency}"
                    shutil.rmtree(copy, ignore_errors=True)
                    shutil.copytree(base, copy)
                    runs.append(judge_pass(server, copy, concurrency))
                judged = json.loads((copy / "summary.json").read_text())["judge"]["outcomes"]
                again = judge_pass(server, copy, concurrency)
                spans = sorted(r["requests"] / r["span_s"] for r in runs if r["span_s"])
                rows.append((concurrency, runs[0]["requests"], spans, again["requests"], judged))
    finally:
        server.stop()
    print(f"judge stand-in latency {LATENCY_S * 1000:.0f} ms; run of {n_cases} cases ({data.name})")
    extraction = sum(rows[0][4].get("extraction", {}).values())
    clinical = sum(rows[0][4].get("clinical", {}).values())
    print(f"sent to the judge: {extraction} answers strict could not parse + {clinical} reports and captions = "
          f"{extraction + clinical} of {n_cases} cases ({(extraction + clinical) / n_cases:.1%}); "
          f"judge calls: {rows[0][1]} (identical prompts asked once)")  # fmt: skip
    print(f"{'in flight':>9} {'judge calls':>11} {'calls/s min/median/max':>24} {'ideal':>7} {'median/ideal':>12} "
          f"{'2nd pass calls':>14}")  # fmt: skip
    passed = True
    for concurrency, requests, spans, again, _ in rows:
        ideal = concurrency / LATENCY_S
        median = statistics.median(spans)
        figures = f"{spans[0]:.1f} / {median:.1f} / {spans[-1]:.1f}"
        print(f"{concurrency:>9} {requests:>11} {figures:>24} {ideal:>7.0f} {median / ideal:>12.2f} {again:>14}")
        passed = passed and again == 0 and median / ideal >= TARGET
    print("PASS" if passed else "FAIL")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
