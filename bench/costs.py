"""The dry run's estimate against the usage a run reports, on the full synthetic set.

`u2eval run --model gpt-4o --dry-run` estimates every case of the set (7,241: images of realistic sizes); then the
same run is made against the OpenAI stand-in (tests/openai_server.py in its own process), which bills each request
by OpenAI's rules (every word and mark of the text, 3 tokens a message; each image by the 512-pixel tile rule at its
real size) and answers with the benchmarks' mix of answers. Per task and in total it prints the estimated and the
reported input tokens, output tokens and cost, and how far the estimate was off ((estimate - actual) / actual), and
the dry run's own time.

    python bench/costs.py [--limit N] [--quick]

PASS when the total cost's estimate is within 25% of the reported cost (the estimate is for planning, not billing).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import KEY, Server, full_set, synthetic_set  # bench/ is the script's own folder

from u2eval.run.estimate import estimate_run
from u2eval.run.options import RunOptions

TOLERANCE = 0.25


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="at most N cases per dataset")
    parser.add_argument("--quick", action="store_true", help="the 200-case sample-sized set (a smoke test)")
    args = parser.parse_args()
    data = synthetic_set(200) if args.quick else full_set()
    options = RunOptions(model="gpt-4o", data=str(data), limit=args.limit)
    started = time.perf_counter()
    estimate = estimate_run(options)
    dry_s = time.perf_counter() - started
    server = Server()
    try:
        server.call("/_reset", {"latency_s": 0.0, "answers": "varied"})
        with tempfile.TemporaryDirectory(prefix="u2eval-costs-") as tmp:
            command = [sys.executable, "-m", "u2eval", "run", "--model", "gpt-4o", "--data", str(data), "--out", tmp]
            command += ["--concurrency", "64"] + (["--limit", str(args.limit)] if args.limit else [])
            env = {**os.environ, "OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": server.url + "/v1"}
            done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
            if done.returncode != 0:
                raise RuntimeError(f"the run failed: {done.stderr[-2000:]}")
            cost = json.loads((Path(tmp) / "summary.json").read_text())["cost"]
    finally:
        server.stop()
    print(f"{estimate.total.cases:,} cases of {data.name}; the dry run took {dry_s:.1f} s")
    print(
        f"{'task':>6} {'input est / reported':>24} {'off':>6} {'output est / reported':>22} "
        f"{'cost est / reported':>22} {'off':>6}"
    )
    rows = [(k, estimate.tasks[k], cost["tasks"][k]) for k in cost["tasks"]] + [
        ("total", estimate.total, cost["total"])
    ]
    for name, est, actual in rows:
        usd_est = est.cost(estimate.price) or 0.0
        usd = actual["cost_usd"] or 0.0
        off_in = (est.input_tokens - actual["input_tokens"]) / actual["input_tokens"]
        off_usd = (usd_est - usd) / usd if usd else 0.0
        print(
            f"{name.upper():>6} {est.input_tokens:>11,} / {actual['input_tokens']:>10,} {off_in:>+6.0%} "
            f"{est.output_tokens:>10,} / {actual['output_tokens']:>9,} ${usd_est:>9.2f} / ${usd:>9.2f} {off_usd:>+6.0%}"
        )
    total_off = (estimate.total.cost(estimate.price) or 0.0) / cost["total"]["cost_usd"] - 1
    print("PASS" if abs(total_off) <= TOLERANCE else "FAIL")
    return 0 if abs(total_off) <= TOLERANCE else 1


if __name__ == "__main__":
    sys.exit(main())
