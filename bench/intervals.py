"""Bootstrap intervals at full scale: 7,241 judged cases x 1,000 resamples, in each scoring mode.

The cases are a skilled stand-in model's answers on the bundled sample, repeated (with their own case ids) up
to the benchmark's 7,241, so every task, metric and dataset block is exercised as on the real set. Prints the
time of ``case_table`` + ``run_intervals`` (what ``u2eval leaderboard`` and ``u2eval score --by`` spend per
run) over several repetitions: min / median / max. Target: a median under 5 s per run per mode on this 2-core machine.

    python bench/intervals.py [--repeat 5] [--resamples 1000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the stand-in model lives there

from fake_models import Oracle  # noqa: E402

from u2eval.benchmark.tasks import select_tasks  # noqa: E402
from u2eval.reports.uncertainty import case_table, run_intervals  # noqa: E402
from u2eval.run.runner import RunOptions, run  # noqa: E402
from u2eval.run.scoring_pass import judge_folder  # noqa: E402
from u2eval.scoring.aggregate import summarise  # noqa: E402

TARGET_S = 5.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--resamples", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "oracle"
        run(RunOptions(model="oracle", out=folder), adapter=Oracle(skill=0.6))
        sample = judge_folder(folder)
    copies = -(-7241 // len(sample))
    cases = [j.model_copy(update={"case_id": f"{j.case_id}#{n}"}) for n in range(copies) for j in sample][:7241]
    ok = True
    for mode in ("strict", "reference"):
        summary = summarise(cases, select_tasks(None)).modes[mode]
        times = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            intervals = run_intervals(case_table(cases, mode), summary, args.resamples, 0)
            times.append(time.perf_counter() - started)
        median = statistics.median(times)
        ok &= median <= TARGET_S and intervals.u2.low is not None
        print(
            f"{mode:9s} {len(cases):,} cases x {args.resamples:,} resamples: "
            f"min {min(times):.2f} s, median {median:.2f} s, max {max(times):.2f} s "
            f"(target median <= {TARGET_S:g} s; U2 {intervals.u2.estimate} [{intervals.u2.low:.4f}, "
            f"{intervals.u2.high:.4f}])"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
